"""Eigenvalues of X = W^T W (htsr.eigenvalues / spectrum / *_batch) against independent float64 oracles.

Oracle: ``np.linalg.svd(W.astype(float64), compute_uv=False) ** 2`` (LAPACK dgesdd through numpy,
a different library build than htsr's scipy-openblas32), cross-checked once with
``scipy.linalg.eigvalsh`` of the float64 Gram. The oracle always sees the exact matrix htsr sees
(the float32 / bf16 / f16 values widened exactly to float64).

Tolerances (spectral_methods.md §3.1):

* precision="float64": |lambda_i - ref_i| <= 1e-12 * lambda_max for every i (measured ~5e-15).
* precision="float32": the top 10 % to 1e-5 *relative* (measured <= 3e-6); every eigenvalue only to
  1e-5 * lambda_max. A float32 Gram has a normwise backward error ~ eps32 * ||X||, so lambda_i is
  perturbed by ~ c * eps32 * lambda_max: small eigenvalues of square / rank-deficient layers lose
  all relative accuracy (lambda_max / lambda_min ~ 1e7..1e9 there), the tail used by the power-law
  fit does not. svd/float32 has the same bound (sgesdd on W is ~eps32 * sigma_max absolute).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import scipy.linalg

import htsr

F64_TOL = 1e-12   # relative to lambda_max, everywhere
F32_TOP = 1e-5    # relative, top 10 %
F32_ALL = 1e-5    # relative to lambda_max, everywhere


# ----------------------------------------------------------------------------- matrices

def _pareto_matrix(rng, n, m, a=2.5):
    """Heavy-tailed elements: sign * (1 + Pareto(a)) (classic Pareto with xmin = 1, tail index a)."""
    return rng.choice([-1.0, 1.0], size=(n, m)) * (1.0 + rng.pareto(a, size=(n, m)))


RANK = 40  # inner rank of the rank-deficient matrix


@functools.lru_cache(maxsize=None)
def matrix(name: str) -> np.ndarray:
    """Float64 test matrices (cached; callers must not modify them)."""
    rng = np.random.default_rng(sum(map(ord, name)))  # a fixed seed per matrix
    if name == "gaussian":
        W = rng.standard_normal((300, 200))
    elif name == "pareto":
        W = _pareto_matrix(rng, 400, 150)
    elif name == "square":
        W = _pareto_matrix(rng, 256, 256)
    elif name == "tall":
        W = rng.standard_normal((20000, 64))
    elif name == "wide":
        W = rng.standard_normal((120, 300))
    elif name == "rankdef":
        W = rng.standard_normal((300, RANK)) @ rng.standard_normal((RANK, 200))
    else:
        raise KeyError(name)
    W.setflags(write=False)
    return W


NAMES = ["gaussian", "pareto", "square", "tall", "wide", "rankdef"]


def reference(W) -> np.ndarray:
    """Ascending eigenvalues of W^T W over the smaller side, from a float64 SVD of the exact values."""
    s = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    return np.sort(s * s)


def assert_spectrum_close(ev, ref, precision):
    ev, ref = np.asarray(ev), np.asarray(ref)
    assert ev.dtype == np.float64
    assert ev.shape == ref.shape
    lmax = ref[-1]
    err = np.abs(ev - ref)
    if precision == "float64":
        assert err.max() <= F64_TOL * lmax, f"max abs err {err.max() / lmax:.2e} * lambda_max"
    else:
        top = slice(len(ref) - max(1, len(ref) // 10), None)
        rel_top = (err[top] / ref[top]).max()
        assert rel_top <= F32_TOP, f"top-10% relative error {rel_top:.2e}"
        assert err.max() <= F32_ALL * lmax, f"max abs err {err.max() / lmax:.2e} * lambda_max"


# ----------------------------------------------------------------------------- accuracy grid

@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("name", NAMES)
def test_exact_methods_match_float64_svd(name, method, precision):
    W64 = matrix(name)
    # float32 arithmetic is fed the float32 matrix (its exact values are the reference); float64
    # arithmetic is fed the float64 matrix.
    W = W64.astype(np.float32) if precision == "float32" else W64
    ref = reference(W)
    s = htsr.spectrum(W, method=method, precision=precision)
    ev = s.eigenvalues
    M, N = min(W.shape), max(W.shape)
    assert (s.N, s.M) == (N, M)
    assert s.complete
    assert len(ev) == M
    assert np.all(np.diff(ev) >= 0), "not ascending"
    assert np.all(ev >= 0), "negative eigenvalues must be clipped to 0"
    assert_spectrum_close(ev, ref, precision)


def test_oracles_agree_eigvalsh():
    """The two float64 oracles agree, and htsr float64 matches scipy.linalg.eigvalsh of W^T W too."""
    W = matrix("pareto")
    ref_eig = np.clip(scipy.linalg.eigvalsh(W.T @ W), 0, None)
    assert np.max(np.abs(ref_eig - reference(W))) <= 1e-12 * ref_eig[-1]
    ev = htsr.eigenvalues(W, precision="float64")
    assert np.max(np.abs(ev - ref_eig)) <= 1e-12 * ref_eig[-1]


@pytest.mark.parametrize("precision, tol", [("float32", F32_ALL), ("float64", F64_TOL)])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_rank_deficient_has_M_minus_r_zeros(method, precision, tol):
    W64 = matrix("rankdef")
    W = W64.astype(np.float32) if precision == "float32" else W64
    M = min(W.shape)
    ref = reference(W)
    ev = htsr.eigenvalues(W, method=method, precision=precision)
    lmax = ref[-1]
    # The M - r smallest are zero up to rounding (relative to lambda_max), the r largest are not.
    assert np.all(ev[: M - RANK] <= tol * lmax)
    assert ev[M - RANK] > 1e-3 * lmax
    assert np.count_nonzero(ev > 1e-4 * lmax) == RANK
    np.testing.assert_allclose(ev[M - RANK:], ref[M - RANK:], rtol=10 * tol)


def test_float32_small_eigenvalues_are_only_accurate_relative_to_lambda_max():
    """Documents why the float32 bottom tolerance is relative to lambda_max: on a square layer
    the float32 Gram's smallest eigenvalue is far off relative to itself, float64 is not."""
    W = matrix("square").astype(np.float32)
    ref = reference(W)
    ev32 = htsr.eigenvalues(W, precision="float32")
    ev64 = htsr.eigenvalues(W, precision="float64")
    assert ref[-1] / ref[0] > 1e6
    assert abs(ev32[0] - ref[0]) / ref[0] > 1e-3          # garbage relative to itself ...
    assert abs(ev32[0] - ref[0]) <= F32_ALL * ref[-1]     # ... but fine relative to lambda_max
    assert abs(ev64[0] - ref[0]) / ref[0] < 1e-6          # float64 keeps it


# ----------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_normalize_divides_by_N(method, precision):
    # N = 256 (a power of two): the scaled values must equal the unscaled ones / N bit for bit.
    rng = np.random.default_rng(11)
    W = rng.standard_normal((256, 96)).astype(np.float32)
    raw = htsr.spectrum(W, method=method, precision=precision)
    nrm = htsr.spectrum(W, method=method, precision=precision, normalize=True)
    np.testing.assert_array_equal(nrm.eigenvalues, raw.eigenvalues / 256)
    assert nrm.trace == raw.trace / 256
    # N not a power of two (wide: N = cols): equal to within one rounding.
    W = matrix("wide")
    raw = htsr.spectrum(W, method=method, precision=precision)
    nrm = htsr.spectrum(W, method=method, precision=precision, normalize=True)
    N = W.shape[1]
    np.testing.assert_allclose(nrm.eigenvalues, raw.eigenvalues / N, rtol=4.5e-16, atol=0)
    np.testing.assert_allclose(nrm.trace, raw.trace / N, rtol=4.5e-16)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["gram", "svd", "randomized"])
def test_trace_is_squared_frobenius_norm(name, method):
    W = matrix(name).astype(np.float32)
    fro2 = float(np.sum(W.astype(np.float64) ** 2))
    k = 8 if method == "randomized" else None
    s = htsr.spectrum(W, method=method, k=k)
    # gram: the trace is the Gram diagonal, summed in double from entries of the working
    # precision (float32 here: ~1e-7 relative); svd/randomized sum the squares in double.
    assert s.trace == pytest.approx(fro2, rel=1e-6 if method == "gram" else 1e-13)
    if method != "randomized":
        assert s.eigenvalues.sum() == pytest.approx(fro2, rel=1e-5)
        s64 = htsr.spectrum(W, method=method, precision="float64")
        assert s64.trace == pytest.approx(fro2, rel=1e-13)
        assert s64.eigenvalues.sum() == pytest.approx(fro2, rel=1e-12)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_wide_equals_transpose(method, precision):
    W = matrix("wide")
    if precision == "float32":
        W = W.astype(np.float32)
    a = htsr.eigenvalues(W, method=method, precision=precision)
    b = htsr.eigenvalues(np.ascontiguousarray(W.T), method=method, precision=precision)
    assert len(a) == min(W.shape)
    tol = F64_TOL if precision == "float64" else F32_ALL
    assert np.max(np.abs(a - b)) <= tol * b[-1]


# ----------------------------------------------------------------------------- input dtypes

def _bf16_bits(W32: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of W32 by truncation (independent of torch); exact float32 values
    are (bits << 16)."""
    return (np.ascontiguousarray(W32, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


# 17000 x 300: more rows than one conversion block (2^22 / 300 = 13981), so the blocked
# accumulation path of non-native dtypes is exercised; 300 x 200 fits in one block.
@functools.lru_cache(maxsize=None)
def _dtype_matrix(shape):
    rng = np.random.default_rng(shape[0])
    W = _pareto_matrix(rng, *shape) * 0.01
    W.setflags(write=False)
    return W


@pytest.mark.parametrize("shape", [(300, 200), (17000, 300), (200, 300)])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_input_dtypes_equal_float32_conversion(shape, precision):
    W64 = _dtype_matrix(shape)
    tol = F64_TOL if precision == "float64" else 2e-6  # blocked vs in-place float32 SYRK: rounding order only
    # float64 input: same values as converting to float32 first (for float32 arithmetic) or exact.
    if precision == "float32":
        base = htsr.eigenvalues(W64.astype(np.float32), precision=precision)
        got = htsr.eigenvalues(W64, precision=precision)
        assert np.max(np.abs(got - base)) <= tol * base[-1]
    else:
        assert_spectrum_close(htsr.eigenvalues(W64, precision=precision), reference(W64), "float64")
    # bfloat16 raw bits and float16 (numpy array and raw bits): exact in float32.
    bits = _bf16_bits(W64.astype(np.float32))
    W16 = W64.astype(np.float16)
    cases = {
        "bf16 raw": (bits, "bfloat16", _bf16_values(bits)),
        "f16 numpy": (W16, None, W16.astype(np.float32)),
        "f16 raw": (W16.view(np.uint16), "float16", W16.astype(np.float32)),
    }
    for label, (arr, dtype, exact32) in cases.items():
        base = htsr.eigenvalues(exact32, precision=precision)
        got = htsr.eigenvalues(arr, dtype=dtype, precision=precision)
        assert np.max(np.abs(got - base)) <= tol * base[-1], label
        if precision == "float64":  # and against the independent oracle
            assert_spectrum_close(got, reference(exact32), "float64")


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_torch_tensors(precision):
    torch = pytest.importorskip("torch")
    W64 = _dtype_matrix((300, 200))
    t32 = torch.from_numpy(W64.astype(np.float32))
    base = htsr.eigenvalues(t32.numpy(), precision=precision)
    np.testing.assert_array_equal(htsr.eigenvalues(t32, precision=precision), base)
    tol = F64_TOL if precision == "float64" else 2e-6
    for tdtype in (torch.bfloat16, torch.float16):
        t = t32.to(tdtype)
        exact32 = t.float().numpy()  # bf16/f16 -> f32 is exact
        base = htsr.eigenvalues(exact32, precision=precision)
        for label, arg in (("tensor", t), ("non-contiguous tensor", t.T), ("requires_grad", t.clone().requires_grad_())):
            got = htsr.eigenvalues(arg, precision=precision)
            assert np.max(np.abs(got - base)) <= tol * base[-1], (tdtype, label)
        # raw bits through torch agree with the numpy truncation path for bf16
        if tdtype is torch.bfloat16:
            raw = t.view(torch.int16).numpy().view(np.uint16)
            np.testing.assert_array_equal(htsr.eigenvalues(raw, dtype="bfloat16", precision=precision),
                                          htsr.eigenvalues(t, precision=precision))


def test_every_float16_pattern_converts_exactly():
    """All 63488 finite binary16 patterns (subnormals, signed zeros, max), one row vector per
    exponent: the single eigenvalue is the sum of squares, which must equal numpy's exact
    float16 -> float64 widening to float64 rounding (a one-ulp conversion error in any element
    changes it by > 1e-7 relative)."""
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    exponent = (patterns >> 10) & 0x1F
    rows = [patterns[exponent == e][None, :] for e in range(31)]
    spectra = htsr.spectrum_batch(rows, dtype="float16", precision="float64")
    for e, (row, s) in enumerate(zip(rows, spectra)):
        expect = float(np.sum(row.view(np.float16).astype(np.float64) ** 2))
        assert s.M == 1 and len(s.eigenvalues) == 1
        assert s.trace == pytest.approx(expect, rel=1e-14, abs=0), e
        assert s.eigenvalues[0] == pytest.approx(expect, rel=1e-13, abs=0), e
        svd = htsr.eigenvalues(row, dtype="float16", method="svd", precision="float64")
        assert svd[0] == pytest.approx(expect, rel=1e-13, abs=0), e


def test_every_bfloat16_pattern_converts_exactly():
    """Same for all finite bfloat16 patterns (255 exponents x 256), reference by bit shifting."""
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    exponent = (patterns >> 7) & 0xFF
    rows = [patterns[exponent == e][None, :] for e in range(255)]
    spectra = htsr.spectrum_batch(rows, dtype="bfloat16", precision="float64")
    for e, (row, s) in enumerate(zip(rows, spectra)):
        expect = float(np.sum(_bf16_values(row).astype(np.float64) ** 2))
        assert s.trace == pytest.approx(expect, rel=1e-14, abs=0), e
        assert s.eigenvalues[0] == pytest.approx(expect, rel=1e-13, abs=0), e


# ----------------------------------------------------------------------------- memory layouts

_VIEWS = {
    "column slice W[:, 30:230] (ld > cols)": lambda B: B[:, 30:230],
    "row slice + column slice": lambda B: B[10:250, 5:255],
    "every other row W[::2]": lambda B: B[::2],
    "full W[:, ::1]": lambda B: B[:, ::1],
    "every other column (copied)": lambda B: B[:, ::2],
    "transpose view (copied)": lambda B: B.T,
    "negative row stride (copied)": lambda B: B[::-1],
}


@functools.lru_cache(maxsize=None)
def _buffer(dtype):
    big = np.random.default_rng(5).standard_normal((300, 260))
    if dtype == "bfloat16":
        return _bf16_bits(big.astype(np.float32))
    return big.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("label", list(_VIEWS))
def test_strided_views_equal_contiguous_copies(label, method, dtype):
    V = _VIEWS[label](_buffer(dtype))
    kwargs = {"dtype": "bfloat16"} if dtype == "bfloat16" else {}
    if "copied" not in label:
        assert not V.flags.c_contiguous or label.startswith("full")  # really a strided view
    for precision in ("float32", "float64"):
        a = htsr.eigenvalues(V, method=method, precision=precision, **kwargs)
        b = htsr.eigenvalues(np.ascontiguousarray(V), method=method, precision=precision, **kwargs)
        # the same numbers in the same order reach the same kernels: bitwise equal
        np.testing.assert_array_equal(a, b)
    ref = reference(_bf16_values(np.ascontiguousarray(V)) if dtype == "bfloat16" else V)
    assert_spectrum_close(a, ref, "float64")


def test_row_permutation_does_not_change_spectrum():
    W = matrix("pareto")
    a = htsr.eigenvalues(W[::-1], precision="float64")
    b = htsr.eigenvalues(W, precision="float64")
    assert np.max(np.abs(a - b)) <= F64_TOL * b[-1]


# ----------------------------------------------------------------------------- randomized top-k

@functools.lru_cache(maxsize=None)
def _heavy(shape=(1200, 240)):
    W = _pareto_matrix(np.random.default_rng(2024), *shape).astype(np.float32)
    W.setflags(write=False)
    return W


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True])
def test_randomized_top_k_accuracy(precision, transpose):
    W = _heavy()
    if transpose:
        W = np.ascontiguousarray(W.T)
    M = min(W.shape)
    k = M // 4
    exact = reference(W)
    s = htsr.spectrum(W, method="randomized", k=k, oversample=k, power_iters=4, seed=0, precision=precision)
    ev = s.eigenvalues
    assert not s.complete
    assert (s.N, s.M) == (max(W.shape), M)
    assert len(ev) == k
    assert np.all(np.diff(ev) >= 0)
    top = exact[-k:]
    rel = np.abs(ev - top) / top
    assert rel[-10:].max() <= 1e-3, f"top-10 relative error {rel[-10:].max():.2e}"
    # documented: the k-th value is biased low by at most a few percent
    assert rel.max() <= 5e-2
    assert np.all(ev <= top * (1 + 1e-5)), "Rayleigh-Ritz values cannot exceed the exact ones"
    fro2 = float(np.sum(W.astype(np.float64) ** 2))
    assert s.trace == pytest.approx(fro2, rel=1e-12)


def test_randomized_seed_determinism():
    W = _heavy()
    k = 60
    opts = dict(method="randomized", k=k, oversample=k, power_iters=4)
    a = htsr.eigenvalues(W, seed=7, **opts)
    b = htsr.eigenvalues(W, seed=7, **opts)
    c = htsr.eigenvalues(W, seed=8, **opts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # but both seeds are accurate at the top
    np.testing.assert_allclose(a[-10:], c[-10:], rtol=2e-3)
    # with few power iterations the seed matters more, and normalize scales exactly
    n = htsr.eigenvalues(W, seed=7, normalize=True, **opts)
    np.testing.assert_allclose(n, a / max(W.shape), rtol=4.5e-16)


def test_randomized_k_equals_M_is_exact():
    """With k = M the sketch spans the whole row space: the values are exact (to rounding)."""
    W = matrix("pareto")
    M = min(W.shape)
    ev = htsr.eigenvalues(W, method="randomized", k=M, precision="float64", power_iters=1)
    ref = reference(W)
    assert np.max(np.abs(ev - ref)) <= 1e-10 * ref[-1]


# ----------------------------------------------------------------------------- batch

def _mixed_list():
    rng = np.random.default_rng(99)
    return [
        rng.standard_normal((120, 80)).astype(np.float32),
        _pareto_matrix(rng, 64, 200).astype(np.float32),        # wide
        rng.standard_normal((90, 90)),                            # float64, square
        rng.standard_normal((2000, 16)).astype(np.float32),       # very tall
        rng.standard_normal((300, 150)).astype(np.float32)[:, 20:120],  # strided view
        rng.standard_normal((7, 3)).astype(np.float16),           # float16 (numpy)
        _pareto_matrix(rng, 150, 150).astype(np.float32),
    ]


@pytest.mark.parametrize("method", ["gram", "svd", "randomized"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_batch_equals_one_by_one(method, precision):
    Ws = _mixed_list()
    opts = dict(method=method, precision=precision)
    if method == "randomized":
        opts.update(k=3, oversample=5, seed=3)
    singles = [htsr.spectrum(W, **opts) for W in Ws]
    for threads in (1, 2, 0):
        batch = htsr.spectrum_batch(Ws, threads=threads, **opts)
        assert len(batch) == len(Ws)
        for i, (a, b) in enumerate(zip(singles, batch)):
            np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues, err_msg=f"matrix {i}, threads {threads}")
            assert (a.trace, a.N, a.M, a.complete) == (b.trace, b.N, b.M, b.complete)
        evs = htsr.eigenvalues_batch(Ws, threads=threads, **opts)
        for a, b in zip(singles, evs):
            np.testing.assert_array_equal(a.eigenvalues, b)


def _batch_in_child(Ws):
    return [sp.eigenvalues for sp in htsr.spectrum_batch(Ws, threads=2)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_batch_after_fork():
    """The native worker threads and their OpenMP teams do not survive fork(): a forked child
    must start its own instead of waiting on the parent's (a hang)."""
    import multiprocessing
    Ws = _mixed_list()
    parent = [sp.eigenvalues for sp in htsr.spectrum_batch(Ws, threads=2)]  # parent's workers exist
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_batch_in_child, (Ws,)).get(timeout=60)
    for a, b in zip(parent, child):
        np.testing.assert_array_equal(a, b)


def test_concurrent_batches_from_python_threads():
    """Batches called from several Python threads at once (each gets its own pooled native
    worker) give the serial results."""
    from concurrent.futures import ThreadPoolExecutor
    Ws = _mixed_list()
    serial = [sp.eigenvalues for sp in htsr.spectrum_batch(Ws, threads=1)]
    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda _: htsr.spectrum_batch(Ws, threads=1), range(12)))
    for run in runs:
        for a, b in zip(serial, run):
            np.testing.assert_array_equal(a, b.eigenvalues)


def test_batch_3d_array_and_raw_dtype():
    rng = np.random.default_rng(4)
    stack = rng.standard_normal((6, 50, 30)).astype(np.float32)
    singles = [htsr.eigenvalues(W) for W in stack]
    for threads in (1, 2, 0):
        for a, b in zip(singles, htsr.eigenvalues_batch(stack, threads=threads)):
            np.testing.assert_array_equal(a, b)
    bits = _bf16_bits(stack)
    singles = [htsr.eigenvalues(W, dtype="bfloat16", precision="float64") for W in bits]
    batch = htsr.eigenvalues_batch(bits, dtype="bfloat16", precision="float64", threads=2)
    for a, b, W in zip(singles, batch, _bf16_values(bits)):
        np.testing.assert_array_equal(a, b)
        assert_spectrum_close(b, reference(W), "float64")
    assert htsr.eigenvalues_batch([]) == []


def test_single_matrix_blas_threads_do_not_change_values():
    """threads= on the single API is the BLAS thread count: values agree to rounding."""
    W = matrix("gaussian").astype(np.float32)
    base = htsr.eigenvalues(W, threads=1)
    for threads in (2, 0):
        got = htsr.eigenvalues(W, threads=threads)
        assert np.max(np.abs(got - base)) <= 2e-6 * base[-1]
    base64 = htsr.eigenvalues(W, threads=1, precision="float64")
    got64 = htsr.eigenvalues(W, threads=2, precision="float64")
    assert np.max(np.abs(got64 - base64)) <= 1e-13 * base64[-1]
