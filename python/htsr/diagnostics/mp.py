"""Marchenko-Pastur bulk, its edge and the spikes above it (``mp_fit=True``).

All estimators take the eigenvalues of X = W^T W of one (pooled) ESD and the slice shape
N >= M, and work on WeightWatcher's rescaled spectrum ``x = evals * n / sum(evals)`` (mean 1,
``W_scale = sqrt(n / sum(evals))``), so that a pure-noise layer has sigma_mp ~ 1 and the MP
law of ratio gamma = M/N = 1/Q has support [(1 - sqrt(gamma))^2, (1 + sqrt(gamma))^2] sigma^2.

``method``:

* ``'ww'`` -- WeightWatcher 0.7.7 (``weightwatcher.mp_fit``, ``RMT_Util.fit_density_with_range``,
  ``resid_mp``): sigma by ``scipy.optimize.brute`` over [0.05, 2) s0 step 0.01 s0 (s0 =
  sqrt(max x)/(1 + 1/sqrt(Q))) with its Nelder-Mead polish, minimising the squared residual
  between the MP density (quarter circle on sqrt(x) when Q == 1) and a linear-kernel KDE
  (bandwidth 0.1, 1000 grid points on [0, max + 0.5], points with density <= 0.01 dropped,
  residual 1000 when the edge misses the KDE mode).  The KDE does not depend on sigma, so it is
  evaluated once, exactly, by prefix sums (WeightWatcher refits it ~200 times); spikes are
  ``x > bulk_max + sqrt(TW)``, ``TW = Q^-1/2 bulk_max^2/3 M^-2/3`` (its margin is ~10-16 TW
  units, shared/reference/features_research.md section 6).
* ``'median'`` (htsr's default) -- sigma^2 = median(x) / m_gamma, m_gamma the median of
  MP(gamma, 1); spikes are ``x > sigma^2 [(1 + sqrt(gamma))^2 + q s_TW]`` with q the TW1
  quantile at ``tw_level`` and s_TW = (sqrt(N-1/2) + sqrt(M-1/2)) (1/sqrt(N-1/2) +
  1/sqrt(M-1/2))^(1/3) / N (Johnstone 2001 with Ma's 2012 half shift).
* ``'bema'`` -- Ke, Ma & Lin (JASA 2023): sigma^2 = sum q_k x_(k) / sum q_k^2 over the middle
  ranks k in [0.2 n, 0.8 n], q_k the MP(gamma, 1) quantile at (k + 1/2)/n; same edge.
* ``'kn'`` -- Kritchman & Nadler (2009): sequential tests of the k-th largest value against
  the TW law of the remaining noise, sigma^2 re-estimated for every k; ``num_spikes`` is the
  number of signals detected.

Columns (WeightWatcher's names): ``num_spikes, sigma_mp, mp_softrank = bulk_max / max(x),
bulk_max, bulk_min`` (un-rescaled, i.e. on the eigenvalue scale) and ``W_scale``; ``spike_edge``
(eigenvalue scale) is the threshold above which an eigenvalue counts as a spike.
With heavy-tailed entries the MP null fails and ``num_spikes`` is descriptive ("eigenvalues
beyond the fitted bulk edge"), not a signal rank.
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["MP_METHODS", "TW_QUANTILES", "mp_fit", "mp_median", "mp_quantiles", "mp_density",
           "kde_linear", "tw_scale"]

MP_METHODS = ("ww", "median", "bema", "kn")
#: Tracy-Widom (beta = 1) quantiles, from shared/reference/features_research.md section 6
#: (Bornemann's tables): P(TW1 <= q) = level.
TW_QUANTILES = {0.90: 0.4501, 0.95: 0.9793, 0.99: 2.0234, 0.995: 2.4224, 0.999: 3.2724}
_KDE_BW, _KDE_POINTS, _KDE_THRESH, _PENALTY = 0.1, 1000, 0.01, 1000.0


def tw_quantile(level: float) -> float:
    try:
        return TW_QUANTILES[float(level)]
    except KeyError:
        raise ValueError(f"mp_tw_level must be one of {sorted(TW_QUANTILES)}, got {level!r}") from None


def tw_scale(N: int, M: int) -> float:
    """Johnstone's TW scale of the largest eigenvalue of X/N (sigma = 1), Ma's half shift."""
    a, b = math.sqrt(N - 0.5), math.sqrt(M - 0.5)
    return (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / N


def mp_density(x, Q: float, sigma: float = 1.0) -> np.ndarray:
    """WeightWatcher's ``marchenko_pastur_fun``: sqrt((b-x)(x-a)) / (2 pi sigma^2 x / Q), 0 outside."""
    x = np.asarray(x, dtype=np.float64)
    y = 1.0 / Q
    b = (sigma * (1 + math.sqrt(y))) ** 2
    a = (sigma * (1 - math.sqrt(y))) ** 2
    with np.errstate(all="ignore"):
        return np.nan_to_num((1 / (2 * np.pi * sigma * sigma * x * y)) * np.sqrt((b - x) * (x - a)))


@functools.lru_cache(maxsize=256)
def _mp_cdf_table(gamma: float, points: int = 8193):
    """(x, F(x)) of MP(gamma, 1), gamma <= 1, by the midpoint rule in theta, x = a + (b-a)(1-cos theta)/2
    (the integrand ((b-a)/2)^2 sin^2 theta / (2 pi gamma x) is smooth, also at gamma = 1)."""
    a, b = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    th = np.linspace(0.0, math.pi, points)
    mid = (th[1:] + th[:-1]) / 2
    xm = a + (b - a) * (1 - np.cos(mid)) / 2
    f = ((b - a) / 2) ** 2 * np.sin(mid) ** 2 / (2 * math.pi * gamma * xm)
    F = np.concatenate([[0.0], np.cumsum(f * np.diff(th))])
    F /= F[-1]   # removes the O(h^2) quadrature error of the total mass
    return a + (b - a) * (1 - np.cos(th)) / 2, F


def mp_quantiles(gamma: float, probs) -> np.ndarray:
    """Quantiles of the MP law of ratio gamma = M/N <= 1 and unit variance."""
    x, F = _mp_cdf_table(float(gamma))
    return np.interp(np.asarray(probs, dtype=np.float64), F, x)


def mp_median(gamma: float) -> float:
    return float(mp_quantiles(gamma, 0.5))


def kde_linear(data: np.ndarray, grid: np.ndarray, bw: float) -> np.ndarray:
    """Exact linear-kernel (triangular) KDE, sklearn's ``KernelDensity(kernel='linear')`` in 1-D:
    (1/(n bw)) sum max(0, 1 - |g - x_i| / bw), by prefix sums over the sorted data."""
    x = np.sort(np.asarray(data, dtype=np.float64))
    n = x.size
    cs = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.searchsorted(x, grid - bw, side="right")   # first x > g - bw
    mid = np.searchsorted(x, grid, side="right")       # first x > g
    hi = np.searchsorted(x, grid + bw, side="left")    # first x >= g + bw
    left = (mid - lo) * (1 - grid / bw) + (cs[mid] - cs[lo]) / bw     # x in (g-bw, g]
    right = (hi - mid) * (1 + grid / bw) - (cs[hi] - cs[mid]) / bw    # x in (g, g+bw)
    return (left + right) / (n * bw)


def _ww_sigma(x: np.ndarray, Q: float) -> float:
    """WeightWatcher's brute-force sigma (fit_density_with_range) with the KDE computed once."""
    from scipy import optimize

    to_fit = np.sqrt(x) if Q == 1 else x
    xde = np.linspace(0, float(np.max(to_fit)) + 0.5, _KDE_POINTS)
    yde = kde_linear(to_fit, xde, _KDE_BW)
    good = yde > _KDE_THRESH
    xg, yg = xde[good], yde[good]
    mode = xg[np.argmax(yg)] if xg.size else 0.0
    xmax_grid = float(np.max(xg)) if xg.size else 0.0

    def resid(p, *_):
        sigma = float(np.asarray(p).ravel()[0])
        if Q == 1:
            with np.errstate(all="ignore"):
                ymp = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - xg ** 2))
        else:
            b = (sigma * (1 + math.sqrt(1 / Q))) ** 2
            a = (sigma * (1 - math.sqrt(1 / Q))) ** 2
            if b < mode or b > xmax_grid or a > mode:
                return _PENALTY ** 2 * xg.size
            ymp = mp_density(xg, Q, sigma)
        return float(np.sum((ymp - yg) ** 2))

    s0 = math.sqrt(float(np.max(x))) / (1 + 1 / math.sqrt(Q))
    rng = (slice(0.05 * s0, 2.0 * s0, 0.01 * s0),)
    return float(np.asarray(optimize.brute(resid, rng, full_output=True)[0]).ravel()[0])


def _kn_count(x: np.ndarray, N: int, M: int, level: float, max_iter: int = 30) -> int:
    """Kritchman-Nadler sequential detection on eigenvalues ``x`` (any scale) of X/N."""
    lam = np.sort(np.asarray(x, dtype=np.float64))[::-1]
    p = lam.size
    s = tw_quantile(level)
    kmax = min(p - 1, N - 1)
    for k in range(1, kmax + 1):
        tail = lam[k:]
        sig2 = float(np.sum(tail)) / ((p - k) * (1 - k / N))
        for _ in range(max_iter):
            b = lam[:k] + sig2 - sig2 * (p - k) / N
            disc = np.maximum(b * b - 4 * lam[:k] * sig2, 0.0)
            rho = (b + np.sqrt(disc)) / 2
            new = (float(np.sum(tail)) + float(np.sum(lam[:k] - rho))) / (p - k)
            if abs(new - sig2) <= 1e-5 * abs(sig2):
                sig2 = new
                break
            sig2 = new
        pk = p - k + 1      # dimension of the noise when testing the k-th value
        mu = (math.sqrt(N - 0.5) + math.sqrt(pk - 0.5)) ** 2
        sd = math.sqrt(mu) * (1 / math.sqrt(N - 0.5) + 1 / math.sqrt(pk - 0.5)) ** (1 / 3)
        if not N * lam[k - 1] > sig2 * (mu + s * sd):
            return k - 1
    return kmax


def mp_fit(evals, N: int, M: int, method: str = "median", tw_level: float = 0.99) -> dict:
    """MP columns of one ESD (see the module docstring). ``N >= M``: the slice shape."""
    ev = np.asarray(evals, dtype=np.float64)
    nan = float("nan")
    out = dict(num_spikes=-1, sigma_mp=nan, mp_softrank=nan, bulk_min=nan, bulk_max=nan, W_scale=nan,
               spike_edge=nan)
    total = float(np.sum(ev)) if ev.size else 0.0
    if ev.size < 2 or not total > 0 or not np.all(np.isfinite(ev)):
        return out
    if method not in MP_METHODS:
        raise ValueError(f"mp_method must be one of {MP_METHODS}, got {method!r}")
    W_scale = math.sqrt(ev.size) / math.sqrt(total)
    x = W_scale * W_scale * ev
    lmax = float(np.max(x))
    Q = N / M
    gamma = M / N
    if method == "ww":
        sigma = _ww_sigma(x, Q)
        bulk_max = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
        bulk_min = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
        TW = 1 / math.sqrt(Q) * bulk_max ** (2 / 3) * M ** (-2 / 3)
        edge = bulk_max + math.sqrt(TW)
    else:
        xs = np.sort(x)
        if method == "bema":
            k = np.arange(xs.size)
            keep = (k >= 0.2 * xs.size) & (k <= 0.8 * xs.size)
            q = mp_quantiles(gamma, (k[keep] + 0.5) / xs.size)
            sig2 = float(np.sum(q * xs[keep]) / np.sum(q * q))
        else:   # median (also the sigma reported by 'kn')
            sig2 = float(np.median(xs)) / mp_median(gamma)
        sigma = math.sqrt(sig2)
        bulk_max = sig2 * (1 + math.sqrt(gamma)) ** 2
        bulk_min = sig2 * (1 - math.sqrt(gamma)) ** 2
        edge = bulk_max + sig2 * tw_quantile(tw_level) * tw_scale(N, M)
        if method == "kn":   # the edge: just above the largest value not detected
            k = _kn_count(x, N, M, tw_level)
            edge = float(xs[xs.size - 1 - k])
    num_spikes = int(np.count_nonzero(x > edge))
    s2 = W_scale * W_scale
    return dict(num_spikes=num_spikes, sigma_mp=sigma, mp_softrank=bulk_max / lmax,
                bulk_min=bulk_min / s2, bulk_max=bulk_max / s2, W_scale=W_scale, spike_edge=edge / s2)
