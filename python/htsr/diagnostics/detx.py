"""det X = 1 tail-size criterion (``detX=True``; WeightWatcher's ``apply_detX`` /
``RMT_Util.detX_constraint``, shared/reference/weightwatcher.md section 2.8).

On the rescaled ESD x = evals * n / sum(evals) (mean 1), the tail that satisfies det X = 1 is
the shortest top segment x[idx:] whose product is < 1, scanning idx = n-1 down to 1.  The
product is evaluated as a suffix sum of logs (O(n), no overflow; WeightWatcher's np.prod is
O(n^2) and overflows).  When no segment qualifies, ``detX_num = n`` and idx = 1
(WeightWatcher's loop end state); fewer than 2 values or a non-ascending input give (0, 0).

Columns: ``detX_num`` = ``num_ERG_spikes`` = n - idx; ``detX_val`` = evals[idx] on the
eigenvalue scale; ``detX_val_unrescaled`` = x[idx], the *rescaled* value (WeightWatcher's
name is inverted; kept for parity, docs/DEPARTURES.md); ``ERG_gap = detX_num - num_pl_spikes``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["detx_constraint", "detx_columns"]


def detx_constraint(x: np.ndarray) -> tuple[int, int]:
    """(detX_num, idx) on already rescaled ascending values x."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 2 or not x[0] < x[-1]:
        return 0, 0
    with np.errstate(divide="ignore"):
        suffix = np.cumsum(np.log(x)[::-1])[::-1]      # suffix[i] = sum_{j >= i} ln x_j
    hits = np.nonzero(suffix[1:] < 0.0)[0] + 1          # idx in 1..n-1 with prod(x[idx:]) < 1
    if hits.size == 0:
        return n, 1
    idx = int(hits[-1])
    return n - idx, idx


def detx_columns(evals, num_pl_spikes) -> dict:
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    total = float(np.sum(ev))
    scale = ev.size / total if total > 0 else 1.0
    x = ev * scale
    num, idx = detx_constraint(x)
    gap = num - num_pl_spikes if num_pl_spikes is not None else float("nan")
    return {"detX_num": num, "num_ERG_spikes": num, "ERG_gap": gap,
            "detX_val": float(x[idx] / scale) if ev.size else float("nan"),
            "detX_val_unrescaled": float(x[idx]) if ev.size else float("nan")}
