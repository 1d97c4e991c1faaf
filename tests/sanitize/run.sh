#!/usr/bin/env bash
# Builds the C++ core with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# HTSR_SANITIZE=ON) and runs under them: the C++ example through ctest, then the native-facing
# Python tests against the instrumented extension module (libasan preloaded into Python,
# leak detection off: CPython's own allocations are not ours). Any report aborts the process,
# so the script fails on the first one. Run by .ci/run; about 2-4 minutes on 2 cores.
#   usage: tests/sanitize/run.sh            (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
CXX=${CXX:-c++}
B=build/sanitize
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" -DHTSR_SANITIZE=ON -DHTSR_EXAMPLES=ON \
  -DHTSR_PYTHON=ON -DHTSR_CUDA=OFF -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$B"
ctest --test-dir "$B" --output-on-failure

# The Python package from the sources with the instrumented module, ahead of any installed htsr.
PKG="$B/python"
rm -rf "$PKG" && mkdir -p "$PKG" && cp -r python/htsr "$PKG/" && cp "$B"/_core*.so "$PKG/htsr/"
# An editable install's import hook (sys.meta_path) would win over PYTHONPATH: drop it here
# and in every child process.
echo 'import sys; sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]' \
  > "$PKG/sitecustomize.py"
# libstdc++ preloaded too: ASan's __cxa_throw interceptor needs it resolved at start-up (python is not C++)
export LD_PRELOAD="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libstdc++.so)" PYTHONPATH="$PWD/$PKG"
"$PY" -c "import htsr._core as c, sys; sys.exit(0 if c.__file__.startswith('$PWD/$PKG/') else 'not the instrumented module: ' + c.__file__)"
"$PY" -m pytest -q -p no:cacheprovider tests/test_spectrum.py tests/test_native_errors.py tests/test_interrupt.py \
  tests/test_threads.py tests/test_powerlaw.py tests/test_scratch.py -k "not analyze_tables and (not test_powerlaw or prune or adversarial or batch)"
