#!/usr/bin/env bash
# Compiles and link-checks the native CUDA backend (cpp/src/cuda/) on a machine without a GPU:
# cuBLAS/cuSOLVER headers and libraries from NVIDIA's PyPI wheels (nvidia-cublas, nvidia-cusolver,
# CUDA 13; pip's cache keeps the ~700 MB of wheels after the first run), the CUDA runtime from the
# installed toolkit (nvcc 13 at /usr/local/cuda). Builds htsr_core with HTSR_CUDA=ON and links it
# into a shared object with --no-undefined against libcublas/libcusolver/libcudart, so every
# CUDA symbol htsr calls must exist. Nothing runs on a GPU. Usage: bash benchmarks/cuda_compile_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
"$PY" -m pip download -q --no-deps -d "$WORK/wheels" nvidia-cublas nvidia-cusolver
for whl in "$WORK"/wheels/*.whl; do  # headers and the two libraries only (not the 550 MB cublasLt)
  "$PY" - "$whl" "$WORK/nv" <<'PYEOF'
import sys, zipfile
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/include/" in n or n.rsplit("/", 1)[-1].startswith(("libcublas.so", "libcusolver.so")):
            z.extract(n, dest)
PYEOF
done
ROOT=$(ls -d "$WORK"/nv/nvidia/cu*)
for lib in "$ROOT"/lib/*.so.*; do ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"; done
cmake -S . -B "$WORK/build" -DHTSR_PYTHON=OFF -DHTSR_CUDA=ON -DHTSR_CUDA_EXTRA_ROOT="$ROOT" \
      -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" > "$WORK/cmake.log" \
  || { cat "$WORK/cmake.log"; exit 1; }
grep -q "CUDA backend ON" "$WORK/cmake.log" || { cat "$WORK/cmake.log"; echo "CUDA backend not configured"; exit 1; }
cmake --build "$WORK/build" --target htsr_core -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" > "$WORK/build.log" \
  || { cat "$WORK/build.log"; exit 1; }
OPENBLAS_LIB=$("$PY" -c "import scipy_openblas32 as s; print(s.get_lib_dir())")
CUDA_LIB=$(dirname "$(find /usr/local/cuda/ -name 'libcudart.so' | head -1)")
g++ -shared -o "$WORK/libhtsr_cuda_check.so" -Wl,--whole-archive "$WORK/build/libhtsr_core.a" -Wl,--no-whole-archive \
    -Wl,--no-undefined -L"$ROOT/lib" -lcublas -lcusolver -L"$CUDA_LIB" -lcudart -L"$OPENBLAS_LIB" -lscipy_openblas -fopenmp
nm -D --undefined-only "$WORK/libhtsr_cuda_check.so" | grep -E "cublas|cusolver|cuda" | awk '{print $2}' | sort | tr '\n' ' '
echo
echo "cuda_compile_check: OK (compiled and linked with CUDA backend, $(($(date +%s) - start)) s; nothing ran on a GPU)"
