"""The native CUDA backend's orchestration (cpp/src/cuda/orchestrate.hpp), run with CPU kernels
here, against the native CPU batch; and, on a machine with a GPU, the GPU kernels themselves.

Oracle: ``htsr.spectrum_batch`` (OpenBLAS ?syrk + LAPACK ?syevd per matrix). The CPU-kernel
orchestration uses the same kernels on a differently laid-out copy (another summation order):
1e-13 * lambda_max in float64 (measured: bitwise equal), 1e-5 * lambda_max in float32 (as any two
float32 Grams, tests/test_spectrum.py); the trace is sum w_ij^2 in double (1e-14 vs numpy). The
GPU (cuBLAS/cuSOLVER): 1e-12 * lambda_max in float64, 1e-5 * lambda_max in float32.
Nothing here has run on a GPU in this repository's CI (no device): the GPU tests skip.
"""
from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr import _core

SHAPES = [(50, 20), (20, 50), (50, 20), (24, 24), (24, 24), (24, 24), (300, 100), (100, 300), (300, 100)]


def _mats(dtype=np.float64):
    rng = np.random.default_rng(0)
    return [(rng.choice([-1.0, 1.0], size=s) * (1 + rng.pareto(2.5, size=s))).astype(dtype) for s in SHAPES]


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_orchestration_with_cpu_kernels_equals_native(precision):
    Ws = _mats(np.float32 if precision == "float32" else np.float64)
    got, solvers = _core.orchestrate_on_cpu(Ws, [W.dtype.name for W in Ws], precision, False)
    ref = htsr.spectrum_batch(Ws, precision=precision)
    tol = 1e-13 if precision == "float64" else 1e-5
    for g, r, W in zip(got, ref, Ws):
        assert g.eigenvalues.shape == r.eigenvalues.shape
        assert np.max(np.abs(g.eigenvalues - r.eigenvalues)) <= tol * r.eigenvalues[-1]
        assert (g.N, g.M) == (r.N, r.M)
        np.testing.assert_allclose(g.trace, np.sum(np.asarray(W, np.float64) ** 2), rtol=1e-14)
    # groups of same-shape matrices with n <= 32 go to the batched solver; single ones and larger n to syevd
    assert solvers == ["syevjBatched", "syevd", "syevjBatched", "syevjBatched", "syevjBatched", "syevjBatched",
                       "syevd", "syevd", "syevd"]


def test_orchestration_normalizes_and_converts_16_bit():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 16)).astype(np.float32)
    bits = (W.view(np.uint32) >> 16).astype(np.uint16)          # bf16 truncation of W
    got, _ = _core.orchestrate_on_cpu([bits], ["bfloat16"], "float64", True)
    ref = htsr.spectrum(bits, dtype="bfloat16", precision="float64", normalize=True)
    np.testing.assert_array_equal(got[0].eigenvalues, ref.eigenvalues)


def test_build_info_reports_cuda():
    info = htsr.core.build_info()
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_device_visible"], bool)
    assert not info["cuda_device_visible"] or info["cuda"]


gpu = pytest.mark.skipif(not htsr.core.build_info()["cuda_device_visible"], reason="no CUDA device visible to htsr")


@gpu
@pytest.mark.parametrize("precision, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_gpu_kernels_equal_cpu(precision, tol):  # pragma: no cover - runs only on a GPU machine
    Ws = _mats(np.float32 if precision == "float32" else np.float64)
    got = htsr.spectrum_batch(Ws, precision=precision)           # dispatched to the GPU
    ref, _ = _core.orchestrate_on_cpu(Ws, [W.dtype.name for W in Ws], precision, False)
    for g, r in zip(got, ref):
        assert np.max(np.abs(g.eigenvalues - r.eigenvalues)) <= tol * r.eigenvalues[-1]
