"""Alternative tail models at the fitted xmin and likelihood-ratio tests against the power law.

For the tail x >= xmin (n points) of an ESD, with exact continuous likelihoods
(Clauset, Shalizi & Newman 2009, appendix; shared/reference/features_research.md section 7):

* power law       p(x) = (alpha-1)/xmin (x/xmin)^-alpha
* truncated PL    p(x) = Lambda^(1-alpha) / Gamma(1-alpha, Lambda xmin) x^-alpha e^(-Lambda x)
* exponential     p(x) = lambda e^(-lambda (x - xmin))                  (closed-form MLE)
* stretched exp.  p(x) = beta lambda^beta x^(beta-1) e^(-(lambda x)^beta + (lambda xmin)^beta)
* lognormal       p(x) = phi((ln x - mu)/s) / (s x Phi(-(ln xmin - mu)/s))

The TPL normaliser needs the upper incomplete gamma of a non-positive order, which scipy does
not provide: ``log_gammaincc_upper`` evaluates ln Gamma(s, x) for any real s, in log space --
Legendre's continued fraction (modified Lentz) for x >= 1, the downward recurrence
Gamma(s, x) = (Gamma(s+1, x) - x^s e^-x) / s from s0 in [0, 1) (scipy's gammaincc, or E1 at
s0 = 0) for x < 1.  Non-PL MLEs are numerical (L-BFGS-B from moment starts, several starts).

Vuong's test (Vuong 1989; ``powerlaw.loglikelihood_ratio``): d_i = ln p_PL(x_i) - ln p_alt(x_i),
R = sum d_i, normalised R_n = R / (s sqrt(n)) with s the population std of d, two-sided
p = erfc(|R| / (s sqrt(2 n))).  R > 0 favours the power law.  The TPL contains the PL
(Lambda -> 0, a boundary point), so for it p = 1/2 P(chi2_1 >= 2 |R|) (Self & Liang 1987)
when the TPL is better, 1 otherwise.
``best_fit``: 'power_law' unless an alternative is better with p < 0.1; then the significant
alternative with the largest total log-likelihood.

Hill estimator: alpha_Hill = 1 + 1/H_k, H_k = (1/k) sum_{i<=k} ln(x_(n-i+1) / x_(n-k)) over the
k largest of all the values, with k = ceil(sqrt(n)) (documented rule: k -> inf, k/n -> 0).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["log_gammaincc_upper", "tpl_loglik", "fit_tail_models", "vuong", "hill", "TAIL_COLUMNS"]

TAIL_COLUMNS = ("TPL_alpha", "TPL_Lambda", "TPL_R", "TPL_p", "lognormal_R", "lognormal_p",
                "exponential_R", "exponential_p", "stretched_exp_R", "stretched_exp_p", "best_fit",
                "hill_alpha", "hill_k")
_ALTS = ("truncated_power_law", "lognormal", "exponential", "stretched_exponential")
_PREFIX = {"truncated_power_law": "TPL", "lognormal": "lognormal", "exponential": "exponential",
           "stretched_exponential": "stretched_exp"}


def _log_cf(s: float, x: np.ndarray) -> np.ndarray:
    """ln Gamma(s, x) = -x + s ln x + ln CF(s, x), Legendre's continued fraction, modified Lentz."""
    tiny = 1e-300
    b = x + 1.0 - s
    c = np.full_like(x, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    for i in range(1, 5000):
        an = -i * (i - s)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if np.all(np.abs(delta - 1.0) < 1e-16):
            break
    return -x + s * np.log(x) + np.log(h)


def _small_x(s: float, x: np.ndarray) -> np.ndarray:
    """ln Gamma(s, x) for 0 < x < 1: scipy for s > 0, else downward recurrence from s0 in [0, 1)."""
    from scipy import special

    if s > 0:
        return np.log(special.gammaincc(s, x)) + special.gammaln(s)
    m = int(math.ceil(-s))
    s0 = s + m
    if s0 >= 1.0:          # s integer (s0 == 1 only by rounding)
        s0, m = s0 - 1.0, m - 1
    g = special.exp1(x) if s0 == 0 else special.gammaincc(s0, x) * special.gamma(s0)
    t = s0
    with np.errstate(over="ignore"):
        for _ in range(m):          # Gamma(t-1, x) = (Gamma(t, x) - x^(t-1) e^-x) / (t-1)
            g = (g - np.power(x, t - 1.0) * np.exp(-x)) / (t - 1.0)
            t -= 1.0
        out = np.log(g)
    # x^s overflowed: the leading term of the expansion at x -> 0 is x^s / (-s)
    bad = ~np.isfinite(out)
    if np.any(bad):
        out[bad] = s * np.log(x[bad]) - math.log(-s)
    return out


def log_gammaincc_upper(s: float, x) -> np.ndarray:
    """ln Gamma(s, x) (upper incomplete gamma, not regularised) for any real s and x > 0."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    out = np.empty_like(x)
    big = x >= 1.0
    if np.any(big):
        out[big] = _log_cf(float(s), x[big])
    if np.any(~big):
        out[~big] = _small_x(float(s), x[~big])
    return out


# -- per-point log-likelihoods ---------------------------------------------------------------
def pl_loglik(x, xmin, alpha):
    return math.log(alpha - 1) - math.log(xmin) - alpha * np.log(x / xmin)


def tpl_loglik(x, xmin, alpha, lam):
    """ln p_TPL(x_i) = (1-alpha) ln Lambda - ln Gamma(1-alpha, Lambda xmin) - alpha ln x - Lambda x."""
    c = (1 - alpha) * math.log(lam) - float(log_gammaincc_upper(1 - alpha, lam * xmin)[0])
    return c - alpha * np.log(x) - lam * x


def exp_loglik(x, xmin, lam):
    return math.log(lam) - lam * (x - xmin)


def sexp_loglik(x, xmin, lam, beta):
    return (math.log(beta) + beta * math.log(lam) + (beta - 1) * np.log(x)
            - (lam * x) ** beta + (lam * xmin) ** beta)


def lognormal_loglik(x, xmin, mu, sigma):
    from scipy import special

    z = (math.log(xmin) - mu) / sigma
    lx = np.log(x)
    return (-lx - math.log(sigma * math.sqrt(2 * math.pi)) - (lx - mu) ** 2 / (2 * sigma ** 2)
            - float(special.log_ndtr(-z)))


# -- MLEs ----------------------------------------------------------------------------------
def _maximise(f, starts, bounds):
    from scipy import optimize

    best = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            r = optimize.minimize(lambda p: -f(p), x0, method="L-BFGS-B", bounds=bounds,
                                  options={"ftol": 1e-15, "gtol": 1e-9})
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    return best


def _safe(f):
    def g(p):
        try:
            v = float(np.sum(f(p)))
        except (ValueError, OverflowError, FloatingPointError, ZeroDivisionError):
            return -np.inf
        return v if np.isfinite(v) else -1e300
    return g


def fit_tpl(x, xmin, alpha0):
    """(alpha, Lambda) MLE of the TPL on the tail x >= xmin (Lambda = e^t, t bounded)."""
    xm = float(np.mean(x))
    lo, hi = math.log(1e-8 / float(np.max(x))), math.log(1e3 / xmin)
    f = _safe(lambda p: tpl_loglik(x, xmin, p[0], math.exp(p[1])))
    r = _maximise(f, [(alpha0, math.log(1e-3 / xm)), (max(alpha0 - 1, 0.5), math.log(0.5 / xm)),
                      (alpha0, math.log(0.05 / xm))], [(-2.0, 30.0), (lo, hi)])
    return float(r.x[0]), math.exp(float(r.x[1]))


def fit_lognormal(x, xmin):
    lx = np.log(x)
    m, s = float(np.mean(lx)), float(np.std(lx)) or 1.0
    f = _safe(lambda p: lognormal_loglik(x, xmin, p[0], math.exp(p[1])))
    r = _maximise(f, [(m, math.log(s)), (m - 2 * s, math.log(2 * s)), (math.log(xmin), math.log(3 * s))],
                  [(m - 50 * s - 50, m + 50 * s + 50), (math.log(s) - 12, math.log(s) + 6)])
    return float(r.x[0]), math.exp(float(r.x[1]))


def fit_exponential(x, xmin):
    return 1.0 / (float(np.mean(x)) - xmin)


def fit_stretched_exp(x, xmin):
    xm = float(np.mean(x))
    f = _safe(lambda p: sexp_loglik(x, xmin, math.exp(p[0]), math.exp(p[1])))
    r = _maximise(f, [(math.log(1 / xm), 0.0), (math.log(1 / xm), math.log(0.3)), (math.log(0.1 / xm), math.log(0.1))],
                  [(math.log(1e-12 / xm), math.log(1e6 / xm)), (math.log(1e-3), math.log(20))])
    return math.exp(float(r.x[0])), math.exp(float(r.x[1]))


def vuong(l1, l2, nested: bool = False) -> tuple[float, float, float]:
    """(R, normalised R, p) of the log-likelihood ratio of model 1 vs model 2 (see module doc)."""
    from scipy import special, stats

    d = np.asarray(l1, dtype=np.float64) - np.asarray(l2, dtype=np.float64)
    n = d.size
    R = float(np.sum(d))
    sd = float(np.std(d))
    Rn = R / (sd * math.sqrt(n)) if sd > 0 else 0.0
    if nested:   # model 2 contains model 1 on its boundary
        p = 0.5 * float(stats.chi2.sf(-2 * R, 1)) if R < 0 else 1.0
    else:
        p = float(special.erfc(abs(R) / (sd * math.sqrt(2 * n)))) if sd > 0 else 1.0
    return R, Rn, p


def hill(evals) -> tuple[float, int]:
    """(alpha_Hill, k) with k = ceil(sqrt(n)) (see module doc)."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > 0]
    n = x.size
    k = int(math.ceil(math.sqrt(n)))
    if n < 3 or k >= n:
        return float("nan"), k
    H = float(np.mean(np.log(x[n - k:] / x[n - k - 1])))
    return (1.0 + 1.0 / H if H > 0 else float("nan")), k


def fit_tail_models(evals, xmin: float, alpha: float, xmax: float | None = None) -> dict:
    """TPL / lognormal / exponential / stretched-exponential fits on the tail [xmin, xmax] and
    their Vuong tests against the PL fit (alpha, xmin); columns ``TAIL_COLUMNS``."""
    ev = np.asarray(evals, dtype=np.float64)
    out: dict = {c: float("nan") for c in TAIL_COLUMNS}
    out["best_fit"] = ""
    out["hill_alpha"], out["hill_k"] = hill(ev)
    if not (np.isfinite(xmin) and np.isfinite(alpha) and alpha > 1):
        return out
    x = ev[ev >= xmin]
    if xmax is not None and np.isfinite(xmax):
        x = x[x <= xmax]
    if x.size < 3 or float(np.max(x)) == float(np.min(x)):
        return out
    lpl = pl_loglik(x, xmin, alpha)
    a, lam = fit_tpl(x, xmin, alpha)
    out["TPL_alpha"], out["TPL_Lambda"] = a, lam
    ll = {"truncated_power_law": tpl_loglik(x, xmin, a, lam)}
    ll["lognormal"] = lognormal_loglik(x, xmin, *fit_lognormal(x, xmin))
    ll["exponential"] = exp_loglik(x, xmin, fit_exponential(x, xmin))
    ll["stretched_exponential"] = sexp_loglik(x, xmin, *fit_stretched_exp(x, xmin))
    best, best_ll = "power_law", float(np.sum(lpl))
    for name in _ALTS:
        R, _Rn, p = vuong(lpl, ll[name], nested=name == "truncated_power_law")
        out[_PREFIX[name] + "_R"], out[_PREFIX[name] + "_p"] = R, p
        if R < 0 and p < 0.1 and float(np.sum(ll[name])) > best_ll:
            best, best_ll = name, float(np.sum(ll[name]))
    out["best_fit"] = best
    return out
