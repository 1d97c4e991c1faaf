"""Top-k spectra of scipy.sparse matrices (LSA / TF-IDF document-term matrices, N docs x M terms).

``htsr.spectrum(W, method="randomized", k=K)`` with a scipy.sparse W (csr/csc/coo/..., matrix or
array; float32, float64 or longdouble data) runs here: the same Halko-Martinsson-Tropp range finder as the native
kernel (cpp/src/randomized.cpp, HMT 2011 Alg. 4.4), on B = W^T (p = cols x q = rows):

    Y = B Omega;  q times: Q = qr(Y), Z = qr(B^T Q), Y = B Z;  Q = qr(Y);  C = Q^T B = U S V^T,

theta_i = s_i^2 (Rayleigh-Ritz values of W^T W on range(Q), never too large), and the same
a-posteriori bounds: residual rho_i = s_i ||B v_i - s_i Q u_i||, Kato-Temple rho_i^2 / (theta_i - a)
where isolated, else the neighbour bound, plus 16 ulps of the working precision
(:func:`_bounds`, a line-by-line transcription of the native ``sketch``).

Why Python/scipy and not the native kernel: the kernel reads dense W. Here every product with W
is a sparse-times-dense product costing nnz * l flops (2q + 3 of them), against N M l for the
dense kernel: with TF-IDF densities of 1e-3..1e-2 that is 100-1000x less work, and W is never
densified (memory nnz + (N + M) l). The QRs and the small SVD are LAPACK through numpy.

Numerics: the arithmetic is ``precision`` (float32 default, as the dense route; float64 for
small values); the trace is the sum of squares of the stored values in float64 (duplicates of
non-canonical matrices summed first), exact up to float64 rounding of that sum. The test
matrix is ``numpy.random.default_rng(seed).standard_normal((rows, l))`` (the native kernel's
std::normal_distribution stream cannot be reproduced in numpy): the same seed gives the same
result here, not the same bits as the dense route. Huge or tiny matrices are rescaled by a
power of two first (as natively). Dense methods ('gram', 'svd') raise: they need the dense M x M
Gram or W itself; densify explicitly (``W.toarray()``) when the matrix is small.
"""
from __future__ import annotations

import sys

import numpy as np
import scipy.linalg

from . import core as _core


def is_sparse(W) -> bool:
    """True for a scipy.sparse matrix or array (without importing scipy when nobody did)."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(W)


def _checked(W, dtype):
    """W as canonical CSR (a copy only when W has duplicates or is not CSR), its float64 trace."""
    if len(W.shape) != 2:
        raise ValueError(f"W: expected a 2-D sparse matrix, got shape {W.shape}")
    if min(W.shape) == 0:
        raise ValueError(f"W: empty sparse matrix of shape {W.shape}")
    if dtype is not None:
        raise ValueError("dtype= applies to dense bit-pattern arrays, not to scipy.sparse input")
    if W.dtype.kind != "f":
        raise ValueError(f"W: sparse matrix of dtype {W.dtype} does not hold real floats; convert it "
                         "(e.g. W.astype(np.float32)): TF-IDF weights are floats")
    A = W.tocsr()
    if not A.has_canonical_format:
        A = A.copy() if A is W else A
        A.sum_duplicates()
    data = A.data.astype(np.float64)
    bad = ~np.isfinite(data)
    if bad.any():
        row = int(np.searchsorted(A.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(f"W: sparse matrix contains NaN or Inf (row {row})")
    trace = float(data @ data)
    if not np.isfinite(trace):
        raise OverflowError("W: squared entries overflow float64; rescale the matrix")
    return A, trace


def _safe_scale(trace: float, dtype) -> float:
    """Power of two s with ||s W||_F where no product of the sketch overflows (native safe_scale)."""
    limit = 40 if dtype == np.float32 else 400
    if not trace > 0:
        return 1.0
    e = int(np.floor(np.log2(np.sqrt(trace))))
    return 1.0 if abs(e) <= limit else float(np.ldexp(1.0, -e))


def _orth(Y):
    """Q of Y = QR by ?geqrf + ?orgqr in Y's precision, as the native orthonormalize (scipy's
    LAPACK: ~2x faster than numpy.linalg.qr on 1e5 x 110, measured)."""
    return scipy.linalg.qr(Y, mode="economic", check_finite=False)[0]


def _bounds(s: np.ndarray, resid: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values theta (descending) and their bounds on lambda_i - theta_i (randomized.cpp)."""
    s = s.astype(np.float64)
    theta, rho = s * s, s * resid
    l = theta.size
    err, temple = np.zeros(l), np.zeros(l, bool)
    for i in range(l - 1, -1, -1):  # bottom up: Kato-Temple where isolated
        e = rho[i]
        if i + 1 < l:
            a = theta[i + 1] + err[i + 1]
            if theta[i] > a and (i == 0 or theta[i] + rho[i] < theta[i - 1]):
                e, temple[i] = min(e, rho[i] * rho[i] / (theta[i] - a)), True
        err[i] = e
    for i in range(1, l):  # top down: lambda_i <= lambda_{i-1} <= theta_{i-1} + err_{i-1}
        if not temple[i]:
            err[i] = theta[i - 1] + err[i - 1] - theta[i]
    return theta, err + 16.0 * eps * np.sqrt(theta[0] * theta)


def spectrum(W, *, method="gram", precision="float32", normalize=False, k=None, oversample=10, power_iters=4,
             seed=0, dtype=None, device=None) -> _core.Spectrum:
    """:func:`htsr.spectrum` of a scipy.sparse W: top-k eigenvalues of W^T W (ascending), the exact
    trace, ``.errors`` bounds (see the module docstring). The QRs use numpy's BLAS threads
    (threadpoolctl pins them); scipy's sparse products are single-threaded."""
    if method != "randomized":
        raise ValueError(f"method={method!r} needs a dense matrix (W^T W or W in memory); for scipy.sparse input "
                         f"use method='randomized' with k=..., or densify a small matrix with W.toarray()")
    if device is not None:
        raise ValueError("device= runs dense routes through torch; scipy.sparse input takes device=None")
    if isinstance(k, str):
        raise ValueError("k='auto' is not available for scipy.sparse input: give k, or choose the number of "
                         "components with htsr.diagnostics.lsa_components")
    args = _core._spectrum_args(method, precision, normalize, k, oversample, power_iters, seed)
    A, trace = _checked(W, dtype)
    rows, cols = A.shape
    N, M = max(rows, cols), min(rows, cols)
    k = args["k"]
    if k > M:
        raise ValueError(f"randomized method needs 1 <= k <= M = {M} (got k = {k})")
    T = np.float32 if precision == "float32" else np.float64
    scale = _safe_scale(trace, T)
    B = (A.T * scale if scale != 1.0 else A.T).astype(T, copy=False)  # p = cols x q = rows (CSC view of A)
    l = k + min(args["oversample"], M - k)
    omega = np.random.default_rng(args["seed"]).standard_normal((rows, l)).astype(T)
    Y = B @ omega
    for _ in range(args["power_iters"]):
        Y = B @ _orth(B.T @ _orth(Y))
    Q = _orth(Y)
    C = np.asarray(B.T @ Q).T                               # Q^T B, l x q
    U, s, Vt = np.linalg.svd(C, full_matrices=False)        # ?gesdd
    X, BV = Q @ U, np.asarray(B @ Vt.T)                     # Ritz vectors, B V
    resid = np.linalg.norm(BV.astype(np.float64) - s.astype(np.float64) * X.astype(np.float64), axis=0)
    theta, err = _bounds(s, resid, float(np.finfo(T).eps))
    unit = (1.0 / N if normalize else 1.0) / (scale * scale)
    return _core.Spectrum(eigenvalues=theta[:k][::-1] * unit, trace=trace * (1.0 / N if normalize else 1.0),
                          N=N, M=M, complete=False, errors=err[:k][::-1] * unit, k_computed=k)
