"""Finger fixes and xmax handling of the power-law fit (``fix_fingers``, ``xmax``).

"Fingers" are a few outlying top eigenvalues that pull the Clauset fit to a spuriously large
alpha.  WeightWatcher 0.7.7 (``weightwatcher.fit_powerlaw``, ``RMT_Util.fit_clipped_powerlaw``;
shared/reference/weightwatcher.md sections 2.4.4 and 6.9-6.10) offers two fixes, both broken
there; htsr implements what they intend (docs/DEPARTURES.md):

* ``'clip_xmax'``: refit with the top k eigenvalues dropped, k = 1 .. ``max_fingers``; the
  first refit whose alpha is smaller than the unclipped one by more than ``finger_thresh`` is
  kept (``num_fingers = k``); the search stops, keeping the unclipped fit, as soon as a refit
  has alpha <= 2.  (WeightWatcher never tries k = 1, resets ``max_fingers`` to 10 and reports
  k - 1.)  ``raw_alpha`` is the unclipped alpha.
* ``'xmin_peak'``: xmin restricted to [0.95 p, ``xmin_max``] (default 1.5 p), p = 10^(left edge
  of the fullest of 100 bins of the log10 histogram of the eigenvalues above 1e-5 -- the ESD's
  peak).  (WeightWatcher mixes a log10 lower bound with a linear upper bound and fails with its
  own fitter.)

``xmax``: None (fit to the largest eigenvalue), ``'force'`` (pass xmax = max(evals) to the
fitter: only ``ks='distinct'`` changes, by its truncated CDF), or an integer -k: drop the k
largest eigenvalues before fitting (an error when k > n/2, as WeightWatcher), with
``num_pl_spikes`` then counted on the clipped ESD.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

__all__ = ["FIX_FINGERS", "clip_xmax", "xmin_peak_range", "apply_xmax", "as_fit"]

FIX_FINGERS = (None, "clip_xmax", "xmin_peak")
_MIN_ALPHA = 2.0
_FIT_FIELDS = ("alpha", "xmin", "xmax", "D", "sigma", "n_tail", "n", "status", "message")


def as_fit(fit) -> SimpleNamespace:
    """A mutable copy of a PowerLawFit's scalar fields."""
    return SimpleNamespace(**{k: getattr(fit, k, None) for k in _FIT_FIELDS})


def apply_xmax(ev: np.ndarray, xmax) -> tuple[np.ndarray, dict]:
    """(the values to fit, extra fitter keywords) for WeightWatcher's ``xmax`` (see module doc)."""
    if xmax is None or xmax is False:
        return ev, {}
    if isinstance(xmax, str):
        return ev, ({"xmax": float(ev[-1])} if ev.size else {})
    k = abs(int(xmax))
    if k > ev.size / 2:
        raise ValueError(f"xmax={xmax}: cannot drop {k} of {ev.size} eigenvalues (at most half)")
    return ev[: ev.size - k], {}


def clip_xmax(ev: np.ndarray, fit_one, max_fingers: int, finger_thresh: float):
    """(chosen fit, num_fingers, raw fit): ``fit_one(values)`` refits a sorted array."""
    raw = fit_one(ev)
    if raw.status != "success":
        return raw, 0, raw
    for k in range(1, int(max_fingers) + 1):
        if ev.size - k < 2:
            break
        f = fit_one(ev[: ev.size - k])
        if f.status != "success":
            break
        if f.alpha + finger_thresh < raw.alpha:
            return f, k, raw
        if f.alpha <= _MIN_ALPHA:
            break
    return raw, 0, raw


def xmin_peak_range(ev: np.ndarray, xmin_max: float | None = None, floor: float = 1e-5):
    """(lo, hi) xmin range around the peak of the log10 histogram (100 bins) of ev > floor."""
    nz = ev[ev > floor]
    if nz.size < 2:
        return None
    counts, edges = np.histogram(np.log10(nz), bins=100)
    peak = 10 ** edges[int(np.argmax(counts))]
    hi = 1.5 * peak if xmin_max is None else float(xmin_max)
    return 0.95 * peak, hi
