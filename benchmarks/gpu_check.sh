#!/usr/bin/env bash
# On a machine WITH an NVIDIA GPU: builds htsr with the native CUDA backend, runs the GPU tests
# (native CUDA kernels and the torch backend on device="cuda") and `htsr bench` with the GPU
# methods, and records everything in benchmarks/results/gpu_<host>_<date>.txt. Needs a CUDA
# build of torch for the torch tests (the native backend alone needs no torch).
# Usage: bash benchmarks/gpu_check.sh [extra htsr bench args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p benchmarks/results
OUT="benchmarks/results/gpu_$(hostname)_$(date -u +%Y%m%dT%H%M%SZ).txt"
exec > >(tee "$OUT") 2>&1
echo "== $(date -u) $(hostname)"; uptime; nvidia-smi || true
# cuBLAS/cuSOLVER: the toolkit's, else NVIDIA's PyPI wheels (as in cuda_compile_check.sh)
EXTRA=""
if ! ls /usr/local/cuda/lib64/libcusolver.so* > /dev/null 2>&1; then
  "$PY" -m pip install -q nvidia-cublas nvidia-cusolver
  EXTRA=$("$PY" -c "import nvidia, os; p = os.path.dirname(nvidia.__path__[0]); import glob; print(sorted(glob.glob(p + '/nvidia/cu*'))[-1])")
  for lib in "$EXTRA"/lib/*.so.*; do ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"; done
fi
"$PY" -m pip install -q --no-build-isolation -e . -Ccmake.define.HTSR_CUDA=ON -Ccmake.define.HTSR_CUDA_EXTRA_ROOT="$EXTRA" \
  -Cbuild-dir=build/gpu
"$PY" -c "import htsr; i = htsr.core.build_info(); print(i); assert i['cuda_device_visible'], 'htsr sees no GPU'"
"$PY" -m pytest -q -rs tests/test_cuda_backend.py tests/test_torch_backend.py tests/test_randomized.py
"$PY" - <<'PYEOF'
import numpy as np, htsr, time
# GPU tests with device="cuda" through the torch backend: equal to the native CPU path
rng = np.random.default_rng(0)
for shape in [(4096, 1024), (2048, 2048), (256, 2048)]:
    W = rng.standard_normal(shape).astype(np.float32)
    for prec, tol in [("float64", 1e-12), ("float32", 1e-5)]:
        a = htsr.spectrum(W, precision=prec)
        t0 = time.perf_counter(); b = htsr.spectrum(W, precision=prec, device="cuda"); dt = time.perf_counter() - t0
        err = np.max(np.abs(a.eigenvalues - b.eigenvalues)) / a.eigenvalues[-1]
        print(f"torch cuda {shape} {prec}: max err / lambda_max {err:.1e} (tol {tol}) {dt:.3f} s")
        assert err <= tol
PYEOF
htsr bench --synthetic 2048x2048 256x2048 5632x2048 32000x2048 \
  --methods gram32 gram64 rand:k=64,q=4,p=64 rand:auto torch-cpu torch-cuda --threads "$(nproc)" \
  --out "${OUT%.txt}_bench" "$@"
echo "== done $(date -u); results in $OUT"
