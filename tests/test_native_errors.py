"""Bad input gives a clear exception naming the problem, never a crash or a silent wrong answer.

Every case goes through the public API (python/htsr/core.py -> htsr._core). Messages are matched
on the words a user needs (what is wrong, and where: 'matrix 2', 'sample 3', 'row 1').
"""
from __future__ import annotations

import numpy as np
import pytest

import htsr

W = np.arange(1, 13, dtype=np.float32).reshape(4, 3) / 7
X = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0])


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


# ----------------------------------------------------------------------------- matrices: values

@pytest.mark.parametrize("method, extra", [("gram", {}), ("svd", {}), ("randomized", {"k": 2})])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("bad, row", [(np.nan, 1), (np.inf, 3), (-np.inf, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_in_matrix(method, extra, precision, bad, row, dtype):
    Wb = _with(W.astype(dtype), (row, 2), bad)
    with pytest.raises(ValueError, match=rf"NaN or Inf \(row {row}\)"):
        htsr.eigenvalues(Wb, method=method, precision=precision, **extra)


@pytest.mark.parametrize("dtype, pattern", [("float16", 0x7E00), ("float16", 0x7C00), ("bfloat16", 0x7FC0), ("bfloat16", 0xFF80)])
def test_nan_inf_in_16bit_patterns(dtype, pattern):
    raw = np.full((4, 3), 0x3C00 if dtype == "float16" else 0x3F80, np.uint16)  # ones
    assert np.allclose(htsr.eigenvalues(raw, dtype=dtype, precision="float64"), [0, 0, 12])
    raw[2, 1] = pattern
    with pytest.raises(ValueError, match=r"NaN or Inf \(row 2\)"):
        htsr.eigenvalues(raw, dtype=dtype)


def test_nan_in_torch_bf16_tensor():
    torch = pytest.importorskip("torch")
    t = torch.ones(5, 4, dtype=torch.bfloat16)
    t[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(row 4\)"):
        htsr.eigenvalues(t)


# ----------------------------------------------------------------------------- matrices: shapes

@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty_matrix(shape):
    with pytest.raises(ValueError, match=r"empty matrix"):
        htsr.eigenvalues(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 3), (1, 1, 2, 2)])
def test_not_two_dimensional(shape):
    with pytest.raises(ValueError, match=r"expected a 2-D matrix.*shape"):
        htsr.eigenvalues(np.ones(shape, np.float32))
    with pytest.raises(ValueError, match=r"expected a 2-D matrix"):
        htsr.spectrum(np.ones(shape, np.float64))


def test_one_by_one_and_vectors_as_matrices_work():
    assert htsr.eigenvalues(np.array([[3.0]])) == pytest.approx([9.0])
    assert htsr.eigenvalues(np.ones((1, 5), np.float32)) == pytest.approx([5.0])
    assert htsr.eigenvalues(np.ones((5, 1), np.float32), method="svd") == pytest.approx([5.0])


# ----------------------------------------------------------------------------- matrices: dtypes

@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64, np.complex64,
                                   np.complex128, object, bool, "U3", np.float128 if hasattr(np, "float128") else np.longdouble])
def test_unsupported_matrix_dtype(dtype):
    a = np.ones((3, 3)).astype(dtype)
    with pytest.raises(ValueError, match=r"unsupported dtype"):
        htsr.eigenvalues(a)


@pytest.mark.parametrize("bad", ["int8", "float8", "bf16", "half", "", "Float32"])
def test_unknown_dtype_string(bad):
    with pytest.raises(ValueError, match=rf"unknown dtype '{bad}'"):
        htsr.eigenvalues(np.ones((3, 3), np.uint16), dtype=bad)


@pytest.mark.parametrize("array_dtype, dtype", [(np.float32, "bfloat16"), (np.float64, "float32"),
                                                (np.complex64, "float64"), (np.float32, "float64"),
                                                (np.uint8, "float16")])
def test_dtype_string_that_does_not_fit_the_array(array_dtype, dtype):
    with pytest.raises(ValueError, match=r"does not hold"):
        htsr.eigenvalues(np.ones((3, 3), array_dtype), dtype=dtype)


@pytest.mark.parametrize("array_dtype, dtype", [(np.int32, "float32"), (np.uint32, "float32"),
                                                (np.int64, "float64"), (">f4", "float32"), (">f8", "float64")])
def test_integer_array_is_not_reinterpreted_as_float(array_dtype, dtype):
    with pytest.raises(ValueError):
        htsr.eigenvalues(np.ones((3, 3), array_dtype), dtype=dtype)


def test_float16_array_is_not_reinterpreted_as_bfloat16():
    with pytest.raises(ValueError):
        htsr.eigenvalues(np.ones((3, 3), np.float16), dtype="bfloat16")


def test_float64_square_overflow_is_not_called_nan():
    with pytest.raises((OverflowError, ValueError), match=r"(?i)overflow"):
        htsr.eigenvalues(W.astype(np.float64) * 1e160, precision="float64")


def test_byte_swapped_arrays_are_rejected_or_converted():
    be = W.astype(">f4")
    with pytest.raises(ValueError, match=r"unsupported dtype >f4"):
        htsr.eigenvalues(be)


# ----------------------------------------------------------------------------- matrices: options

@pytest.mark.parametrize("method", ["Gram", "eig", "lanczos", ""])
def test_unknown_method(method):
    with pytest.raises(ValueError, match=rf"unknown method '{method}'"):
        htsr.eigenvalues(W, method=method)
    with pytest.raises(ValueError, match=r"unknown method"):
        htsr.eigenvalues_batch([W], method=method)


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "double", "fp32"])
def test_unknown_precision(precision):
    with pytest.raises(ValueError, match=rf"unknown precision '{precision}'"):
        htsr.eigenvalues(W, precision=precision)


def test_randomized_needs_valid_k():
    with pytest.raises(ValueError, match=r"randomized.*needs k"):
        htsr.eigenvalues(W, method="randomized")
    with pytest.raises(ValueError, match=r"needs k >= 1"):
        htsr.eigenvalues(W, method="randomized", k=0)
    with pytest.raises(ValueError, match=r"1 <= k <= M = 3 \(got k = 4\)"):
        htsr.eigenvalues(W, method="randomized", k=4)
    with pytest.raises(ValueError, match=r"1 <= k <= M = 3"):
        htsr.eigenvalues(W.T.copy(), method="randomized", k=4)  # wide: M is still 3
    with pytest.raises(ValueError, match=r"k applies only to method='randomized'"):
        htsr.eigenvalues(W, k=2)
    with pytest.raises(ValueError, match=r"power_iters must be in \[0, 100\]"):
        htsr.eigenvalues(W, method="randomized", k=2, power_iters=-1)
    assert len(htsr.eigenvalues(W, method="randomized", k=3)) == 3  # k = M is fine


@pytest.mark.parametrize("method", ["gram", "randomized"])
def test_float32_gram_overflow_suggests_float64(method):
    big = np.full((6, 4), 1e20, np.float32)  # finite in float32, (1e20)^2 * 6 is not
    kw = {"k": 2} if method == "randomized" else {}
    if method == "gram":
        with pytest.raises(OverflowError, match=r"float32 Gram.*overflow.*precision='float64'"):
            htsr.eigenvalues(big)
        with pytest.raises(OverflowError, match=r"matrix 1: .*precision='float64'"):
            htsr.eigenvalues_batch([W, big, W])
    ev = htsr.eigenvalues(big, method=method, precision="float64", **kw)
    assert ev[-1] == pytest.approx(24 * 1e40, rel=1e-6)
    assert np.all(np.isfinite(ev))


@pytest.mark.parametrize("shape, value", [((4, 3), 9e18), ((64, 64), 2.2e18)])
def test_float32_gram_eigenvalue_overflow_is_reported(shape, value):
    big = np.full(shape, value, np.float32)  # Gram diagonal finite in float32, lambda_max is not
    assert np.isfinite(np.float32(shape[0]) * np.float32(value) ** 2)
    try:
        ev = htsr.eigenvalues(big)
    except OverflowError as e:
        assert "float64" in str(e)
        return
    assert np.all(np.isfinite(ev)), ev


@pytest.mark.parametrize("method, kw", [("svd", {}), ("randomized", {"k": 2})])
def test_float32_large_values_without_gram_are_finite_or_raise(method, kw):
    """svd / randomized in float32 never form W^T W: the values must be finite and right, or an error."""
    big = np.full((6, 4), 1e20, np.float32)
    try:
        ev = htsr.eigenvalues(big, method=method, **kw)
    except (OverflowError, ValueError):
        return
    assert np.all(np.isfinite(ev))
    assert ev[-1] == pytest.approx(24e40, rel=1e-5)


# ----------------------------------------------------------------------------- matrices: batch

def test_batch_errors_name_the_matrix():
    good = [W, W.astype(np.float64), np.ones((5, 5), np.float32)]
    cases = [
        (_with(W, (1, 1), np.nan), r"matrix 2: .*NaN or Inf \(row 1\)"),
        (np.ones(3, np.float32), r"matrix 2: expected a 2-D matrix"),
        (np.zeros((0, 4), np.float32), r"matrix 2: empty matrix"),
        (np.ones((3, 3), np.int64), r"matrix 2: unsupported dtype int64"),
        (np.ones((3, 3), np.complex64), r"matrix 2: unsupported dtype complex64"),
    ]
    for bad, msg in cases:
        Ws = good[:2] + [bad] + good[2:]
        for threads in (1, 2):
            with pytest.raises(ValueError, match=msg):
                htsr.eigenvalues_batch(Ws, threads=threads)
    # the lowest failing index is reported, whatever the scheduling
    Ws = [W, W, _with(W, (0, 0), np.inf), W, _with(W, (3, 0), np.nan)]
    for threads in (1, 2, 0):
        with pytest.raises(ValueError, match=r"^matrix 2: "):
            htsr.spectrum_batch(Ws, threads=threads)
    with pytest.raises(ValueError, match=r"matrix 1: randomized method needs 1 <= k <= M = 3"):
        htsr.eigenvalues_batch([np.ones((9, 9), np.float32), W], method="randomized", k=4)


@pytest.mark.parametrize("bad", [W, np.ones((2, 2, 3, 3), np.float32), 3.0])
def test_batch_rejects_non_lists(bad):
    with pytest.raises(ValueError, match=r"list of 2-D matrices or a 3-D array"):
        htsr.eigenvalues_batch(bad)


# ----------------------------------------------------------------------------- power-law fit

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("ks", ["all_points", "distinct"])
def test_nan_inf_in_sample(bad, ks):
    x = _with(X, 4, bad)
    with pytest.raises(ValueError, match=r"NaN or Inf \(index 4\)"):
        htsr.fit_power_law(x, ks=ks)
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        htsr.fit_power_law(x, ks=ks, floor=1e-5)  # floor does not hide NaN/Inf


@pytest.mark.parametrize("value", [0.0, -1.0, -1e-300])
def test_non_positive_sample_values(value):
    x = _with(X, 2, value)
    with pytest.raises(ValueError, match=r"non-positive values \(index 2\).*floor="):
        htsr.fit_power_law(x)
    h = htsr.fit_power_law(x, floor=1e-5)  # accepted with a floor, which drops them
    assert h.status == "success" and h.n == len(X) - 1
    assert h.to_dict() == htsr.fit_power_law(np.delete(X, 2)).to_dict()


@pytest.mark.parametrize("x", [np.array([]), np.array([2.0]), [3.5]])
def test_too_few_points(x):
    with pytest.raises(ValueError, match=r"at least 2 values.*got [01]"):
        htsr.fit_power_law(x)


def test_too_few_points_after_floor_or_xmax_is_a_failed_fit_not_a_crash():
    h = htsr.fit_power_law(X, floor=100.0)
    assert h.status == "failed" and h.n == 0 and "fewer than 2" in h.message and np.isnan(h.alpha)
    h = htsr.fit_power_law(X, xmax=1.5)
    assert h.status == "failed" and h.n == 1
    h = htsr.fit_power_law(X, min_tail=100)
    assert h.status == "failed" and h.message
    h = htsr.fit_power_law(X, xmin_range=(100.0, 200.0))
    assert h.status == "failed" and "no candidate" in h.message


@pytest.mark.parametrize("shape", [(), (3, 3), (2, 1, 4)])
def test_sample_not_one_dimensional(shape):
    with pytest.raises(ValueError, match=r"expected a 1-D array"):
        htsr.fit_power_law(np.ones(shape))


@pytest.mark.parametrize("dtype", [np.complex128, object, bool, "U2", "S2"])
def test_sample_wrong_dtype(dtype):
    x = np.array([1, 2, 3, 4]).astype(dtype)
    with pytest.raises(ValueError, match=r"expected real numbers"):
        htsr.fit_power_law(x)


def test_integer_samples_are_fine():
    a = htsr.fit_power_law(np.array([1, 2, 3, 5, 8, 13, 21]))
    assert a.to_dict() == htsr.fit_power_law(X).to_dict()


@pytest.mark.parametrize("ks", ["All_points", "csn", "plfit", ""])
def test_unknown_ks(ks):
    with pytest.raises(ValueError, match=rf"unknown ks convention '{ks}'"):
        htsr.fit_power_law(X, ks=ks)


def test_bad_fit_options():
    with pytest.raises(ValueError, match=r"either a fixed xmin or an xmin_range"):
        htsr.fit_power_law(X, xmin=2.0, xmin_range=(1, 3))
    for xmin in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"xmin must be a positive finite number"):
            htsr.fit_power_law(X, xmin=xmin)
    with pytest.raises(ValueError, match=r"xmax must be > 0"):
        htsr.fit_power_law(X, xmax=-1.0)
    with pytest.raises(ValueError, match=r"floor must be >= 0"):
        htsr.fit_power_law(X, floor=-1.0)
    with pytest.raises(ValueError, match=r"min_tail must be >= 1"):
        htsr.fit_power_law(X, min_tail=0)
    with pytest.raises(ValueError):
        htsr.fit_power_law(X, xmin_range=(1.0,))


@pytest.mark.parametrize("option", ["floor", "xmax"])
def test_nan_options_are_rejected(option):
    with pytest.raises(ValueError):
        htsr.fit_power_law(X, **{option: float("nan")})


def test_batch_fit_errors_name_the_sample():
    xs = [X, X * 2, X * 3, X]
    cases = [
        (_with(X, 1, np.nan), r"sample 2: .*NaN or Inf \(index 1\)"),
        (-X, r"sample 2: .*non-positive"),
        (np.array([1.0]), r"sample 2: .*at least 2 values"),
        (np.ones((2, 2)), r"sample 2: expected a 1-D array"),
        (X.astype(complex), r"sample 2: expected real numbers"),
    ]
    for bad, msg in cases:
        for threads in (1, 2):
            with pytest.raises(ValueError, match=msg):
                htsr.fit_power_law_batch(xs[:2] + [bad] + xs[2:], threads=threads)
    with pytest.raises(ValueError, match=r"unknown ks"):
        htsr.fit_power_law_batch(xs, ks="bogus")
    assert htsr.fit_power_law_batch([]) == []


def test_degenerate_samples_do_not_crash():
    ones = np.ones(10)
    h = htsr.fit_power_law(ones)  # plfit.m: one distinct value, so no candidate xmin
    assert h.status == "failed" and "no candidate" in h.message
    h = htsr.fit_power_law(ones, every_position=True)  # WWFit: alpha = inf, D = (n-1)/n ... -> 0.5 at the last candidate
    assert h.status == "failed" and np.isinf(h.alpha) and h.D == 0.5
    h = htsr.fit_power_law(ones, ks="distinct")
    assert h.status == "failed" and h.message
    h = htsr.fit_power_law(np.array([1.0, 2.0]), ks="distinct")  # no candidate (top two dropped)
    assert h.status == "failed" and "no candidate" in h.message
    h = htsr.fit_power_law(np.array([1.0, 1e300, 1e-300]))
    assert np.isfinite(h.D)
