"""Python entry points of the native core: argument checking, dtype mapping, defaults.

Numerical conventions (also in the README):

* W is N x M with N = max(rows, cols), M = min(rows, cols). The spectrum is the M eigenvalues of
  X = W^T W over the smaller side (WeightWatcher's convention, no 1/N), ascending, float64.
  ``normalize=True`` divides by N (the random-matrix-theory convention X = W^T W / N).
* ``method="gram"`` forms X with BLAS ?syrk and takes its eigenvalues with LAPACK's two-stage
  values-only solver (?sytrd_sy2sb + ?sytrd_sb2st + ?sterf, band 64 from n = 3072); ``precision`` is the arithmetic of X and of the solver. A float32
  Gram keeps the top eigenvalues to ~1e-5 relative but destroys the smallest ones of square
  layers (relative error ~ 1e-7 * lambda_max / lambda): use ``precision="float64"`` for rank and
  small-eigenvalue metrics. Negative rounding values are clipped to 0.
* ``method="svd"`` squares the singular values of ?gesdd (the accuracy reference, 2-4x slower).
* ``method="randomized"`` returns only the top ``k`` (Halko-Martinsson-Tropp, ``power_iters``
  re-orthonormalised power steps, ``oversample`` extra columns, seeded), with the exact trace.
  scipy.sparse W (LSA / TF-IDF) takes this route only, through sparse products (htsr.sparse).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from . import _core

Spectrum = _core.Spectrum
PowerLawFit = _core.PowerLawFit

_METHODS = ("gram", "svd", "randomized")
_PRECISIONS = ("float32", "float64")
_STORED = ("float32", "float64", "bfloat16", "float16")
_KS = ("all_points", "distinct")


def build_info() -> dict:
    """How the native core was built: BLAS/LAPACK configuration, OpenMP, CUDA."""
    return dict(_core.build_info())


def _matrix(W, dtype: str | None, what: str = "W") -> tuple[np.ndarray, str]:
    """W as a 2-D numpy array the native code can read in place, and its stored dtype name."""
    if not isinstance(W, np.ndarray) and hasattr(W, "detach"):  # a torch tensor
        t = W.detach().cpu()
        name = str(t.dtype).removeprefix("torch.")
        if name in ("bfloat16", "float16"):
            import torch

            W, dtype = t.contiguous().view(torch.int16).numpy().view(np.uint16), name
        else:
            W = t.numpy()
    from .sparse import is_sparse
    if is_sparse(W):
        raise ValueError(f"{what}: scipy.sparse input is taken one matrix at a time: "
                         "htsr.spectrum(W, method='randomized', k=...)")
    a = np.asarray(W)
    if dtype is None:
        if a.dtype in (np.float32, np.float64):
            dtype = a.dtype.name
        elif a.dtype == np.float16:
            dtype = "float16"
        elif a.dtype.name == "bfloat16":  # ml_dtypes
            dtype = "bfloat16"
        else:
            raise ValueError(
                f"{what}: unsupported dtype {a.dtype}; expected float32, float64, float16 or bfloat16 "
                "(or raw uint16 bit patterns with dtype='bfloat16'/'float16')"
            )
    elif dtype not in _STORED:
        raise ValueError(f"{what}: unknown dtype {dtype!r}; expected one of {_STORED}")
    # What may hold `dtype` values: the native float itself, or (16-bit types) raw uint16/int16
    # bits; never integers or byte-swapped floats reinterpreted bit for bit.
    native = a.dtype.byteorder in "=|"
    if dtype in ("float32", "float64"):
        ok = native and a.dtype == np.dtype(dtype)
    else:
        ok = native and (a.dtype in (np.uint16, np.int16) or a.dtype.name == dtype)
    if not ok:
        raise ValueError(f"{what}: array dtype {a.dtype} does not hold {dtype} values")
    itemsize = a.dtype.itemsize
    if dtype in ("bfloat16", "float16"):
        a = a.view(np.uint16)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D matrix, got an array of shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{what}: empty matrix of shape {a.shape}")
    if a.strides[1] != itemsize or a.strides[0] <= 0 or a.strides[0] % itemsize:
        a = np.ascontiguousarray(a)
    return a, dtype


_INT64_SAFE = 2 ** 62  # larger counts are clamped here (the native side clamps further, to M)
_MAX_POWER_ITERS = 100  # q beyond ~10 gains nothing; a huge q would run for hours


def _spectrum_args(method, precision, normalize, k, oversample, power_iters, seed, rtol=1e-4, margin=0.5, fit=None):
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {_METHODS}")
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {_PRECISIONS}")
    adaptive = {}
    if method == "randomized":
        if isinstance(k, str) and k.startswith("auto"):
            # "auto" or "auto:K" (K = the first k)
            first = k.partition(":")[2]
            adaptive = dict(rtol=float(rtol), margin=float(margin),
                            fit=_fit_args(**{**_FIT_DEFAULTS, **(fit or {})}))
            k = int(first) if first else 0
            if not (adaptive["rtol"] > 0 and adaptive["margin"] >= 0):
                raise ValueError(f"k='auto' needs rtol > 0 and margin >= 0, got rtol={rtol}, margin={margin}")
        elif k is None or int(k) < 1:
            raise ValueError("method='randomized' needs k >= 1 (the number of top eigenvalues) or k='auto'")
        if int(oversample) < 0:
            raise ValueError(f"oversample must be >= 0, got {oversample}")
        if not 0 <= int(power_iters) <= _MAX_POWER_ITERS:
            raise ValueError(f"power_iters must be in [0, {_MAX_POWER_ITERS}], got {power_iters}")
    elif k is not None:
        raise ValueError("k applies only to method='randomized'")
    return dict(method=method, precision=precision, normalize=bool(normalize), k=min(int(k or 0), _INT64_SAFE),
                oversample=min(int(oversample), _INT64_SAFE), power_iters=int(power_iters), seed=int(seed) % 2**64,
                adaptive=adaptive)


def spectrum(W, *, method: str = "gram", precision: str = "float32", normalize: bool = False, k: int | str | None = None,
             oversample: int = 10, power_iters: int = 4, seed: int = 0, dtype: str | None = None,
             threads: int = 1, rtol: float = 1e-4, margin: float = 0.5, fit: dict | None = None,
             device: str | None = None) -> Spectrum:
    """Eigenvalues of X = W^T W (or /N) of one matrix, with the trace ||W||_F^2 and N, M.

    ``threads`` is the number of BLAS threads for this one matrix (0 = all cores).
    method="randomized": ``.errors`` bounds lambda_i - value_i (>= 0) per returned value;
    ``k="auto"`` (or ``"auto:K"``, K the first k) doubles k until the values with
    errors <= rtol * value (from the top) hold the tail fitted with ``fit`` (fit_power_law's
    keyword arguments) with n_tail * (1 + margin) <= their number, and returns only those
    (the exact Gram route once the sketch would exceed M/6 columns or 2x its flops).
    ``device``: "cpu" | "cuda" | "mps" runs the Gram route through torch (htsr.backends.torch).
    """
    from . import sparse as _sparse
    if _sparse.is_sparse(W):  # scipy.sparse: randomized route driven by sparse products (htsr.sparse)
        return _sparse.spectrum(W, method=method, precision=precision, normalize=normalize, k=k, oversample=oversample,
                                power_iters=power_iters, seed=seed, dtype=dtype, device=device)
    if device is not None:
        from .backends import torch as _torch_backend
        return _torch_backend.spectrum(W, method=method, precision=precision, normalize=normalize,
                                       k=k, dtype=dtype, device=device)
    a, stored = _matrix(W, dtype)
    args = _spectrum_args(method, precision, normalize, k, oversample, power_iters, seed, rtol, margin, fit)
    return _core.spectrum(a, stored, threads=int(threads), **args)


def eigenvalues(W, **options) -> np.ndarray:
    """The eigenvalues of X = W^T W, ascending float64 (all M, or the top k): ``spectrum(W).eigenvalues``."""
    return spectrum(W, **options).eigenvalues


def _matrices(Ws, dtype):
    if isinstance(Ws, np.ndarray) and Ws.ndim == 3:
        Ws = list(Ws)
    elif isinstance(Ws, np.ndarray) or not isinstance(Ws, Iterable):
        raise ValueError("expected a list of 2-D matrices or a 3-D array")
    pairs = [_matrix(W, dtype, what=f"matrix {i}") for i, W in enumerate(Ws)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def spectrum_batch(Ws: Sequence, *, method: str = "gram", precision: str = "float32", normalize: bool = False,
                   k: int | str | None = None, oversample: int = 10, power_iters: int = 4, seed: int = 0,
                   dtype: str | None = None, threads: int = 0, rtol: float = 1e-4, margin: float = 0.5,
                   fit: dict | None = None, device: str | None = None) -> list[Spectrum]:
    """:func:`spectrum` of many matrices, in parallel across matrices (OpenMP, one BLAS thread
    each, ``threads=0`` = all cores; randomized and ``k="auto"`` too). Results keep the input
    order; Ctrl-C stops between matrices. ``device``: see :func:`spectrum` (same-shape matrices
    share one batched torch eigensolver call)."""
    if device is not None:
        from .backends import torch as _torch_backend
        return _torch_backend.spectrum_batch(Ws, method=method, precision=precision, normalize=normalize,
                                             k=k, dtype=dtype, device=device)
    arrays, stored = _matrices(Ws, dtype)
    args = _spectrum_args(method, precision, normalize, k, oversample, power_iters, seed, rtol, margin, fit)
    return _core.spectrum_batch(arrays, stored, threads=int(threads), **args)


def eigenvalues_batch(Ws: Sequence, **options) -> list[np.ndarray]:
    """The eigenvalues of each matrix (see :func:`spectrum_batch`)."""
    return [s.eigenvalues for s in spectrum_batch(Ws, **options)]


def _sample(x, what="x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{what}: expected real numbers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


_FIT_DEFAULTS = dict(ks="all_points", xmin=None, xmin_range=None, xmax=None, min_tail=2, floor=None,
                     small_n=False, every_position=False, candidates=False, prune=True)


def _fit_args(ks, xmin, xmin_range, xmax, min_tail, floor, small_n, every_position, candidates, prune):
    if ks not in _KS:
        raise ValueError(f"unknown ks convention {ks!r}; expected one of {_KS}")
    if xmin is not None and xmin_range is not None:
        raise ValueError("give either a fixed xmin or an xmin_range, not both")
    if xmin is not None and not (math.isfinite(xmin) and xmin > 0):
        raise ValueError(f"xmin must be a positive finite number, got {xmin}")
    for name, value in (("xmax", xmax), ("floor", floor)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    lo, hi = (-math.inf, math.inf) if xmin_range is None else map(float, xmin_range)
    nan = math.nan
    return dict(ks=ks, xmin=nan if xmin is None else float(xmin), xmin_lo=lo, xmin_hi=hi,
                xmax=nan if xmax is None else float(xmax), min_tail=int(min_tail),
                floor=nan if floor is None else float(floor), small_n=bool(small_n),
                every_position=bool(every_position),
                candidates=bool(candidates), prune=bool(prune))


def fit_power_law(x, *, ks: str = "all_points", xmin: float | None = None, xmin_range=None, xmax: float | None = None,
                  min_tail: int = 2, floor: float | None = None, small_n: bool = False, every_position: bool = False,
                  candidates: bool = False, prune: bool = True, threads: int = 1) -> PowerLawFit:
    """Continuous power-law fit p(x) ~ x^-alpha for x >= xmin (Clauset, Shalizi & Newman 2009).

    For each candidate xmin: alpha = 1 + n / sum_{x_i >= xmin} ln(x_i / xmin) (CSN eq. 3.1) and
    the KS distance D = max |F(x) - S(x)| with F(x) = 1 - (x / xmin)^(1 - alpha); the smallest D
    wins, the earliest candidate on exact ties; sigma = (alpha - 1) / sqrt(n_tail).

    ks="all_points" (default) is Clauset's plfit.m: the distinct values but the largest are the
    candidates, the tail is every x >= xmin, S = k/n at every tail point (ties included), D = 1
    when alpha <= 1. WeightWatcher's WWFit is identical on tie-free data; every_position=True
    reproduces it on tied data too (every sorted position but the last is a candidate). ks="distinct" is the ``powerlaw`` package 2.0.0: candidates are the distinct
    values but the two largest, S(u) = #(tail < u)/n at the distinct tail values, alpha <= 1
    invalid (but unlike powerlaw 2.0.0 alpha > 3 is valid). The scan is exact: early
    abandoning only skips candidates whose partial KS maximum already exceeds the best D.

    xmin fixes xmin (no scan); xmin_range=(lo, hi) restricts candidates; xmax drops larger
    values (ks="distinct" then uses powerlaw's truncated CDF in D); min_tail skips shorter tails;
    floor drops values <= floor first (WeightWatcher: 1e-5); small_n=True reproduces
    WeightWatcher 0.7.7's estimator for fewer than 20 points (alpha = 1 + (n-1)/sum, tails
    shorter than 8 skipped); candidates=True keeps the per-candidate arrays xmins, alphas, Ds,
    sigmas (full scan). threads: OpenMP threads across candidates (0 = all).
    """
    args = _fit_args(ks, xmin, xmin_range, xmax, min_tail, floor, small_n, every_position, candidates, prune)
    return _core.fit_power_law(_sample(x), threads=int(threads), **args)


def fit_power_law_batch(xs: Sequence, *, ks: str = "all_points", xmin: float | None = None, xmin_range=None,
                        xmax: float | None = None, min_tail: int = 2, floor: float | None = None,
                        small_n: bool = False, every_position: bool = False, candidates: bool = False,
                        prune: bool = True, threads: int = 0) -> list[PowerLawFit]:
    """:func:`fit_power_law` of many samples in parallel (one thread per sample, ``threads=0`` = all cores)."""
    args = _fit_args(ks, xmin, xmin_range, xmax, min_tail, floor, small_n, every_position, candidates, prune)
    samples = [_sample(x, what=f"sample {i}") for i, x in enumerate(xs)]
    return _core.fit_power_law_batch(samples, threads=int(threads), **args)
