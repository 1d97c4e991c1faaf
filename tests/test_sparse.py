"""scipy.sparse input (LSA / TF-IDF) through method='randomized' (htsr.sparse) and the LSA
component rule (htsr.diagnostics.lsa_components).

Oracles: numpy's float64 SVD of the densified matrix (exact eigenvalues of W^T W), the dense
float64 sum of squares (trace), the native dense randomized route (same algorithm, its own
bounds), and fit_power_law on the exact spectrum (n_tail).

Tolerances: the top 20 values of a decaying spectrum (q = 6) within 1e-7 relative (float64;
measured 2e-8) and 1e-6 (float32; measured 3.8e-7); the bounds must hold up to the oracle's
rounding, 1e-12 * lambda_max (float64) and 1e-6 * lambda_max (float32); the trace within
1e-12 relative (both are float64 sums).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import htsr
from htsr.diagnostics.lsa import _ANALYZE_FIT, lsa_components


@pytest.fixture(autouse=True)
def _one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


def _tfidf_like(N=1000, M=1200, r=40, alpha=2.5, density=0.01, seed=0):
    """Sparse noise (uniform [0, 1) entries) plus a planted sparse rank-r part whose scales follow
    a power law s_i ~ i^(-1/(alpha-1)) (about 5 % of the entries, like topic words in TF-IDF)."""
    rng = np.random.default_rng(seed)
    noise = sp.random(N, M, density=density, random_state=rng, format="csr")
    U = sp.random(N, r, density=0.05, random_state=rng, format="csr", data_rvs=rng.standard_normal)
    V = sp.random(M, r, density=0.02, random_state=rng, format="csr", data_rvs=rng.standard_normal)
    s = 3.0 * np.arange(1, r + 1) ** (-1.0 / (alpha - 1))
    return (noise + U @ sp.diags(s) @ V.T).tocsr()


def _exact(W) -> np.ndarray:
    """All eigenvalues of W^T W, ascending (numpy float64 SVD of the dense form)."""
    return np.linalg.svd(np.asarray(W.toarray(), dtype=np.float64), compute_uv=False)[::-1] ** 2


@pytest.fixture(scope="module")
def planted():
    W = _tfidf_like(N=600, M=800, r=30)
    return W, _exact(W)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("precision,dtype,rtol,slack", [("float64", np.float64, 1e-7, 1e-12),
                                                        ("float32", np.float32, 1e-6, 1e-6)])
@pytest.mark.parametrize("transpose", [False, True])
def test_top_k_matches_exact_svd(planted, fmt, precision, dtype, rtol, slack, transpose):
    W, ex = planted
    W = (W.T if transpose else W).asformat(fmt).astype(dtype)
    ex = _exact(W)
    k = 20
    s = htsr.spectrum(W, method="randomized", k=k, precision=precision, power_iters=6, seed=3)
    assert isinstance(s, htsr.Spectrum) and not s.complete
    assert (s.N, s.M, s.k_computed) == (800, 600, k)
    np.testing.assert_allclose(s.eigenvalues, ex[-k:], rtol=rtol)
    assert np.all(ex[-k:] <= s.eigenvalues + s.errors + slack * ex[-1])
    np.testing.assert_allclose(s.trace, float(np.sum(W.toarray().astype(np.float64) ** 2)), rtol=1e-12)
    again = htsr.eigenvalues(W, method="randomized", k=k, precision=precision, power_iters=6, seed=3)
    assert np.array_equal(again, s.eigenvalues)


@pytest.mark.parametrize("precision,slack", [("float64", 1e-12), ("float32", 1e-6)])
@pytest.mark.parametrize("q", [2, 4, 6])
def test_error_bounds_hold_and_agree_with_the_dense_route(precision, slack, q):
    """A flat spectrum (uniform sparse noise): values far from converged, bounds loose but valid.
    Both routes return Ritz values theta <= lambda <= theta + err of the same lambda, so they
    differ by at most max(err_sparse, err_dense). The bounds assume the sketch missed no
    eigenvalue (README); q = 2..6 as in test_randomized.py (at q = 0 this seed's sparse sketch
    does miss lambda_1: theta_1 + err_1 = 40.5 < 44.8, the documented failure mode)."""
    W = sp.random(500, 300, density=0.03, random_state=7, format="csr")
    ex = _exact(W)[-15:]
    tol = slack * ex[-1]
    sp_s = htsr.spectrum(W, method="randomized", k=15, power_iters=q, precision=precision, seed=1)
    de_s = htsr.spectrum(W.toarray(), method="randomized", k=15, power_iters=q, precision=precision, seed=1)
    for s in (sp_s, de_s):
        assert np.all(s.errors >= 0)
        assert np.all(s.eigenvalues <= ex + tol)
        assert np.all(ex <= s.eigenvalues + s.errors + tol)
    assert np.all(np.abs(sp_s.eigenvalues - de_s.eigenvalues) <= np.maximum(sp_s.errors, de_s.errors) + 2 * tol)


def test_converged_bounds_are_tight_and_match_the_dense_route(planted):
    W, ex = planted
    sp_s = htsr.spectrum(W, method="randomized", k=10, precision="float64", power_iters=6)
    de_s = htsr.spectrum(W.toarray(), method="randomized", k=10, precision="float64", power_iters=6)
    assert np.all(sp_s.errors[-5:] <= 1e-10 * sp_s.eigenvalues[-5:])  # measured <= 3e-12
    assert np.all(ex[-10:] <= sp_s.eigenvalues + sp_s.errors + 1e-12 * ex[-1])
    np.testing.assert_allclose(sp_s.eigenvalues[-5:], de_s.eigenvalues[-5:], rtol=1e-10)
    assert np.all(np.abs(sp_s.eigenvalues - de_s.eigenvalues) <= np.maximum(sp_s.errors, de_s.errors) + 1e-12 * ex[-1])
    np.testing.assert_allclose(sp_s.trace, de_s.trace, rtol=1e-12)


def test_seeded_reproducible_and_normalize():
    W = sp.random(400, 250, density=0.03, random_state=2, format="csr")
    a = htsr.spectrum(W, method="randomized", k=10, power_iters=1, seed=11)
    b = htsr.spectrum(W, method="randomized", k=10, power_iters=1, seed=11)
    c = htsr.spectrum(W, method="randomized", k=10, power_iters=1, seed=12)
    assert np.array_equal(a.eigenvalues, b.eigenvalues) and np.array_equal(a.errors, b.errors)
    assert not np.array_equal(a.eigenvalues, c.eigenvalues)  # not converged at q = 1: the seed shows
    n = htsr.spectrum(W, method="randomized", k=10, power_iters=1, seed=11, normalize=True)
    np.testing.assert_allclose(n.eigenvalues, a.eigenvalues / 400, rtol=1e-15)
    np.testing.assert_allclose(n.trace, a.trace / 400, rtol=1e-15)


def test_duplicates_summed_and_input_untouched():
    rows, cols, vals = np.array([0, 0, 3, 3]), np.array([1, 1, 2, 4]), np.array([1.0, 2.0, -1.0, 0.5])
    W = sp.coo_matrix((vals, (rows, cols)), shape=(6, 5))
    s = htsr.spectrum(W, method="randomized", k=2, precision="float64")
    assert s.trace == 3.0 ** 2 + 1.0 + 0.25
    np.testing.assert_allclose(s.eigenvalues, _exact(W)[-2:], rtol=1e-12)
    assert W.nnz == 4  # the caller's COO keeps its duplicates
    C = sp.csr_matrix((vals, cols, [0, 2, 2, 2, 4, 4, 4]), shape=(6, 5))  # CSR with duplicates
    assert not C.has_canonical_format
    assert htsr.spectrum(C, method="randomized", k=2).trace == s.trace and C.nnz == 4


def test_huge_values_rescaled_in_float32():
    W = sp.random(300, 200, density=0.05, random_state=4, format="csr")
    base = htsr.spectrum(W, method="randomized", k=5, precision="float32", seed=0)
    big = htsr.spectrum(W * 1e30, method="randomized", k=5, precision="float32", seed=0)
    assert np.all(np.isfinite(big.eigenvalues)) and np.all(np.isfinite(big.errors))
    np.testing.assert_allclose(big.eigenvalues, base.eigenvalues * 1e60, rtol=1e-5)


def test_bad_input_gives_clear_errors():
    W = sp.random(40, 30, density=0.1, random_state=0, format="csr")
    with pytest.raises(ValueError, match="does not hold real floats"):
        htsr.spectrum(W.astype(np.int64), method="randomized", k=3)
    with pytest.raises(ValueError, match="does not hold real floats"):
        htsr.spectrum(W.astype(np.complex128), method="randomized", k=3)
    with pytest.raises(ValueError, match="empty sparse matrix"):
        htsr.spectrum(sp.csr_matrix((0, 5)), method="randomized", k=1)
    bad = W.copy()
    bad.data[bad.indptr[7]] = np.nan  # first stored value of row 7 (rows 0..6 may be empty)
    row = int(np.searchsorted(bad.indptr, bad.indptr[7], side="right") - 1)
    with pytest.raises(ValueError, match=rf"NaN or Inf \(row {row}\)"):
        htsr.spectrum(bad, method="randomized", k=3)
    for method in ("gram", "svd"):
        with pytest.raises(ValueError, match="method='randomized'.*toarray"):
            htsr.spectrum(W, method=method)
    with pytest.raises(ValueError, match="k='auto' is not available"):
        htsr.spectrum(W, method="randomized", k="auto")
    with pytest.raises(ValueError, match=r"1 <= k <= M = 30"):
        htsr.spectrum(W, method="randomized", k=31)
    with pytest.raises(ValueError, match="needs k >= 1"):
        htsr.spectrum(W, method="randomized")
    with pytest.raises(ValueError, match="one matrix at a time"):
        htsr.spectrum_batch([W], method="randomized", k=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lsa_components_recovers_the_exact_tail(seed):
    W = _tfidf_like(seed=seed)
    fe = htsr.fit_power_law(_exact(W), **_ANALYZE_FIT)
    assert fe.status == "success" and 20 <= fe.n_tail <= 40  # the planted topics, not the noise bulk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n, f, s = lsa_components(W, k_max=128, seed=seed)
    assert n == f.n_tail == fe.n_tail
    assert abs(f.alpha - fe.alpha) <= 1e-6 and s.eigenvalues.size == 128


def test_lsa_components_warns_when_k_max_is_too_small():
    W = _tfidf_like(seed=0)
    with pytest.warns(RuntimeWarning, match="raise k_max"):
        lsa_components(W, k_max=32)
    with pytest.warns(RuntimeWarning, match="raise power_iters"):
        lsa_components(W, k_max=128, power_iters=0)
