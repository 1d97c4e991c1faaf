"""Per-layer metrics from eigenvalues and a power-law fit (pure functions, no I/O).

Every column follows WeightWatcher 0.7.7 (``weightwatcher.py: apply_esd``,
``apply_powerlaw``, ``fit_powerlaw``, ``apply_norm_metrics`` and
``RMT_Util.matrix_rank / calc_rank_loss / matrix_entropy``); the formula and its
source are given next to each column below and in ``COLUMN_DOCS``.  Deliberate
departures are listed in ``docs/DEPARTURES.md``:

* a failed fit has ``status='failed'``, ``warning=''`` and NaN in every fit
  column (``alpha, alpha_weighted, log_alpha_norm, D, sigma, xmin, xmax``) and
  ``num_pl_spikes=0`` -- WeightWatcher writes -1 and labels it 'over-trained';
* ``sv_min`` of a pooled Conv2D layer is the true smallest singular value over
  all slices (WeightWatcher: the max over slices of each slice's minimum).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "EPSILON", "EVALS_THRESH", "WEAK_RANK_LOSS_TOLERANCE", "OVER_TRAINED_THRESH",
    "UNDER_TRAINED_THRESH", "OVER_TRAINED", "UNDER_TRAINED", "SUMMARY_METRICS",
    "ID_COLUMNS", "METRIC_COLUMNS", "TRAILING_COLUMNS", "COLUMN_DOCS",
    "matrix_rank", "rank_loss", "matrix_entropy", "fit_warning", "layer_row",
    "order_columns", "summary",
]

#: RMT_Util.EPSILON on CPU (WeightWatcher rebinds it to 6e-5 when torch sees CUDA; we never do).
EPSILON = 1e-10
#: constants.EVALS_THRESH: eigenvalues <= this are dropped before the power-law fit.
EVALS_THRESH = 1e-5
#: constants.WEAK_RANK_LOSS_TOLERANCE (analyze(tolerance=...)).
WEAK_RANK_LOSS_TOLERANCE = 1e-6
OVER_TRAINED_THRESH = 2.0
UNDER_TRAINED_THRESH = 6.0
OVER_TRAINED = "over-trained"
UNDER_TRAINED = "under-trained"

_EPS64 = float(np.finfo(np.float64).eps)

#: keys of ``summary`` (WeightWatcher.get_summary), in its order.
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank", "mp_softrank")

#: identification / shape columns, in table order (after ``layer_id, name``).
ID_COLUMNS = ("layer_id", "name", "longname", "layer_type", "part", "block", "depth", "slice_id",
              "source", "stored_dtype", "N", "M", "Q", "rf", "num_evals", "has_esd")
#: metric columns in table order (semantic: fit, then scale, then rank).
METRIC_COLUMNS = ("status", "warning", "alpha", "alpha_weighted", "log_alpha_norm",
                  "D", "sigma", "xmin", "xmax", "num_pl_spikes",
                  "norm", "log_norm", "spectral_norm", "log_spectral_norm",
                  "lambda_max", "sv_max", "sv_min", "stable_rank",
                  "matrix_rank", "rank_loss", "weak_rank_loss", "entropy")
TRAILING_COLUMNS = ("seconds",)

COLUMN_DOCS: dict[str, str] = {
    "layer_id": "contiguous id in model order (htsr); WeightWatcher ids are sparse framework counters",
    "name": "full tensor/module path without '.weight' (plus '[part]' for a split fused tensor)",
    "longname": "same as name (WeightWatcher's longname)",
    "layer_type": "dense | conv1d | conv2d | embedding",
    "part": "logical part of a fused tensor ('q', 'k', 'v', 'gate', 'up', 'expert.3', ...) or None",
    "block": "transformer block number from the name (layers.N, h.N, ...), -1 outside blocks (htsr.depth)",
    "depth": "position in network order: embeddings, blocks (attention q/k/v/o, MLP gate/up/down, experts), head (htsr.depth)",
    "slice_id": "kernel position of a Conv2D slice (pool=False only)",
    "source": "file the weights were read from, or '<module>' / '<state_dict>'",
    "stored_dtype": "dtype of the stored tensor (float32, bfloat16, ...)",
    "N": "larger dimension of one (slice) matrix",
    "M": "smaller dimension of one (slice) matrix",
    "Q": "N / M",
    "rf": "number of slices (kh*kw for Conv2D, 1 otherwise)",
    "num_evals": "len(evals): M, or M*rf for a pooled Conv2D",
    "has_esd": "True",
    "status": "'success' | 'failed' (power-law fit)",
    "warning": "'over-trained' if alpha < 2, 'under-trained' if alpha > 6, else ''",
    "alpha": "Clauset MLE exponent of the ESD tail (WWFit)",
    "alpha_weighted": "alpha * log10(lambda_max)",
    "log_alpha_norm": "log10(sum_all evals ** alpha)",
    "D": "KS distance of the selected fit",
    "sigma": "(alpha - 1) / sqrt(n_tail)",
    "xmin": "start of the power-law tail",
    "xmax": "largest eigenvalue used by the fit",
    "num_pl_spikes": "#{evals >= xmin} (tail size)",
    "norm": "sum(evals) = ||W||_F^2",
    "log_norm": "log10(norm)",
    "spectral_norm": "max(evals) = sigma_max^2",
    "log_spectral_norm": "log10(spectral_norm)",
    "lambda_max": "max(evals)",
    "sv_max": "sqrt(lambda_max)",
    "sv_min": "smallest singular value (over all slices)",
    "stable_rank": "norm / lambda_max",
    "matrix_rank": "#{sv > max(sv) * N * eps64} over the pooled ESD (Gram: sv > max(sv) * sqrt(4 sqrt(M) eps))",
    "rank_loss": "sum over slices of (len(sv) - #{sv > max(sv) * N * eps64})",
    "weak_rank_loss": "#{evals < tolerance} (tolerance 1e-6)",
    "entropy": "-sum p ln p / ln(matrix_rank + EPSILON), p = evals/sum(evals) + EPSILON",
    "seconds": "wall-clock seconds attributed to this row (read + spectrum + fit)",
}


def matrix_rank(sv: np.ndarray, N: int, rtol: float | None = None) -> int:
    """Hard rank ``#{sv > max(sv) * N * eps64}`` (RMT_Util.matrix_rank = numpy's tolerance).

    ``rtol``: a larger relative tolerance on the *eigenvalues* (``sv**2 > max(sv**2) * rtol``),
    used when the spectrum comes from a Gram matrix, whose zero eigenvalues come out as
    rounding noise of ~eps * lambda_max (WeightWatcher's tolerance would count them)."""
    sv = np.asarray(sv, dtype=np.float64)
    if sv.size == 0:
        return 0
    smax = float(np.max(sv))
    tol = smax * N * _EPS64
    if rtol is not None:
        tol = max(tol, smax * math.sqrt(rtol))
    return int(np.count_nonzero(sv > tol))


def rank_loss(slices: Iterable[np.ndarray], N: int, rtol: float | None = None) -> int:
    """``sum_slices len(sv) - matrix_rank(sv, N)`` (weightwatcher.combined_eigenvalues / RMT_Util.calc_rank_loss).

    ``slices`` are the eigenvalues (sv**2) of each slice; the rank test is scale invariant.
    """
    total = 0
    for ev in slices:
        sv = np.sqrt(np.asarray(ev, dtype=np.float64))
        total += int(sv.size) - matrix_rank(sv, N, rtol)
    return total


def matrix_entropy(evals: np.ndarray, N: int, epsilon: float = EPSILON,
                   rtol: float | None = None) -> float:
    """Normalised matrix entropy (RMT_Util.matrix_entropy on sv = sqrt(evals)):
    ``p = evals/sum(evals) + eps``; ``-sum(p ln p) / ln(matrix_rank + eps)``."""
    evals = np.asarray(evals, dtype=np.float64)
    if evals.size == 0:
        return float("nan")
    rank = matrix_rank(np.sqrt(evals), N, rtol) + epsilon
    total = float(np.sum(evals))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = evals / total + epsilon
        return float(-np.sum(p * np.log(p)) / np.log(rank))


def fit_warning(alpha: float) -> str:
    """'over-trained' if alpha < 2, 'under-trained' if alpha > 6, else '' (weightwatcher.fit_powerlaw).
    NaN (failed fit) gives '' -- WeightWatcher's -1 would give 'over-trained'."""
    if alpha is None or not np.isfinite(alpha):
        return ""
    if alpha < OVER_TRAINED_THRESH:
        return OVER_TRAINED
    if alpha > UNDER_TRAINED_THRESH:
        return UNDER_TRAINED
    return ""


def _log10(x: float) -> float:
    if not np.isfinite(x):
        return float("nan")
    if x <= 0:
        return float("-inf") if x == 0 else float("nan")
    return math.log10(x)


def _fit_value(fit: Any, name: str, default: float = float("nan")) -> float:
    v = getattr(fit, name, None) if fit is not None else None
    if v is None:
        return default
    return float(v)


def layer_row(evals: np.ndarray | Sequence[np.ndarray], fit: Any,
              spec_meta: Mapping[str, Any] | None = None, *, N: int, M: int, rf: int,
              tolerance: float = WEAK_RANK_LOSS_TOLERANCE, complete: bool = True,
              trace: float | None = None, epsilon: float = EPSILON,
              rank_rtol: float | None = None) -> dict:
    """One WeightWatcher-compatible table row.

    ``evals``: eigenvalues of X = W^T W (already scaled: conv2d_norm, normalize), either one
    ascending array (the pooled ESD) or a list of per-slice arrays (then ``rank_loss`` is summed
    per slice as WeightWatcher does and ``sv_min`` is the smallest value over all slices).
    ``fit``: a ``PowerLawFit``-like object (``alpha, xmin, xmax, D, sigma, status``), or None.
    ``spec_meta``: identification columns (layer_id, name, layer_type, ...), copied first.
    ``complete=False`` (a randomized top-k spectrum): ``norm`` comes from ``trace`` and the
    rank / entropy / sv_min columns, which need the whole spectrum, are NaN.
    ``rank_rtol``: relative eigenvalue tolerance of the rank test when it must exceed
    WeightWatcher's (see ``matrix_rank``); None = WeightWatcher's.
    """
    if isinstance(evals, np.ndarray) and evals.ndim == 1:
        slices = [evals]
    else:
        slices = [np.asarray(e, dtype=np.float64).ravel() for e in evals]
    if len(slices) == 1:
        ev = np.sort(np.asarray(slices[0], dtype=np.float64).ravel())
    else:
        ev = np.sort(np.concatenate(slices))
    n = int(ev.size)

    row: dict[str, Any] = dict(spec_meta or {})
    row["N"] = int(N)
    row["M"] = int(M)
    row["Q"] = float(N) / float(M) if M > 0 else -1.0
    row["rf"] = int(rf)
    row["num_evals"] = n
    row["has_esd"] = True

    # --- apply_esd
    lambda_max = float(ev[-1]) if n else float("nan")
    # --- apply_powerlaw / fit_powerlaw
    ok = fit is not None and getattr(fit, "status", "failed") == "success" \
        and np.isfinite(_fit_value(fit, "alpha"))
    if ok:
        alpha = _fit_value(fit, "alpha")
        xmin = _fit_value(fit, "xmin")
        row["status"] = "success"
        row["warning"] = fit_warning(alpha)
        row["alpha"] = alpha
        row["D"] = _fit_value(fit, "D")
        row["sigma"] = _fit_value(fit, "sigma")
        row["xmin"] = xmin
        row["xmax"] = _fit_value(fit, "xmax")
        # num_pl_spikes = len(evals[evals >= fit.xmin]) on the full ESD
        row["num_pl_spikes"] = int(n - np.searchsorted(ev, xmin, side="left"))
    else:
        alpha = float("nan")
        row["status"] = "failed"
        row["warning"] = ""
        for c in ("alpha", "D", "sigma", "xmin", "xmax"):
            row[c] = float("nan")
        row["num_pl_spikes"] = 0

    # --- apply_norm_metrics
    norm = float(np.sum(ev)) if complete or trace is None else float(trace)
    log_spectral_norm = _log10(lambda_max)
    row["alpha_weighted"] = alpha * log_spectral_norm          # alpha * log10(lambda_max)
    if ok:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            row["log_alpha_norm"] = _log10(float(np.sum(ev ** alpha)))  # log10(sum evals**alpha)
    else:
        row["log_alpha_norm"] = float("nan")
    row["norm"] = norm                                         # sum(evals) = ||W||_F^2
    row["log_norm"] = _log10(norm)
    row["spectral_norm"] = lambda_max                          # max(evals)
    row["log_spectral_norm"] = log_spectral_norm
    row["lambda_max"] = lambda_max
    row["sv_max"] = math.sqrt(lambda_max) if n and lambda_max >= 0 else float("nan")
    row["stable_rank"] = norm / lambda_max if n and lambda_max > 0 else float("nan")
    if complete and n:
        row["sv_min"] = math.sqrt(max(float(ev[0]), 0.0))      # true min over all slices
        row["matrix_rank"] = matrix_rank(np.sqrt(ev), N, rank_rtol)
        row["rank_loss"] = rank_loss(slices, N, rank_rtol)
        row["weak_rank_loss"] = int(np.count_nonzero(ev < tolerance))
        row["entropy"] = matrix_entropy(ev, N, epsilon, rank_rtol)
    else:
        for c in ("sv_min", "matrix_rank", "rank_loss", "weak_rank_loss", "entropy"):
            row[c] = float("nan")
    return row


def order_columns(columns: Iterable[str]) -> list[str]:
    """Semantic column order: ``layer_id, name``, identification, fit, scale, rank, extras, ``seconds``."""
    cols = list(dict.fromkeys(columns))
    known = [c for c in ID_COLUMNS + METRIC_COLUMNS if c in cols]
    extra = sorted(c for c in cols if c not in known and c not in TRAILING_COLUMNS)
    trailing = [c for c in TRAILING_COLUMNS if c in cols]
    return known + extra + trailing


def summary(df) -> dict:
    """Model summary (WeightWatcher.get_summary): the mean over rows of ``log_norm, alpha,
    alpha_weighted, log_alpha_norm, log_spectral_norm, stable_rank`` (+ ``mp_softrank`` when
    present), skipping NaN (failed fits) -- WeightWatcher averages its -1 in."""
    out: dict[str, float] = {}
    if df is None:
        return out
    cols = getattr(df, "columns", ())
    for metric in SUMMARY_METRICS:
        if metric in cols:
            vals = np.asarray(df[metric], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            out[metric] = float(np.mean(vals)) if vals.size else float("nan")
    return out
