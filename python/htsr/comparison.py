"""Layer-by-layer comparison of two analyses (base vs fine-tune, before vs after quantization).

``compare(a, b)`` matches rows by ``name`` (and ``slice_id`` when both tables have it) and
returns one row per matrix with ``<col>_a``, ``<col>_b`` and ``d_<col> = b - a`` for alpha and
the norms, ``present`` ('both' | 'a' | 'b'), and ``moved``: the ``top`` matched layers with the
largest |d_alpha| (default: 10 % of the matched layers, at least 1; only non-zero moves).
Rows come in network order (``depth``).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["compare", "COMPARE_COLUMNS"]

#: columns compared by default
COMPARE_COLUMNS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


def _table(x, what: str, analyze_kw: dict):
    import pandas as pd
    if isinstance(x, pd.DataFrame):
        return x
    from .analysis import analyze
    return analyze(x, **analyze_kw)


def compare(a, b, *, columns=COMPARE_COLUMNS, top: int | None = None, **analyze_kw):
    """Per-layer deltas between two tables (or two checkpoints, analysed with ``analyze_kw``).

    Raises ValueError when the tables share no layer name (different architectures)."""
    import pandas as pd
    from .depth import add_depth

    da, db = _table(a, "a", analyze_kw), _table(b, "b", analyze_kw)
    for df, what in ((da, "first"), (db, "second")):
        if "name" not in df.columns:
            raise ValueError(f"compare: the {what} table has no 'name' column")
    keys = ["name"] + (["slice_id"] if "slice_id" in da.columns and "slice_id" in db.columns else [])
    cols = [c for c in columns if c in da.columns and c in db.columns]
    info = [c for c in ("layer_type", "N", "M", "warning") if c in da.columns or c in db.columns]
    left = da[keys + [c for c in info + cols if c in da.columns]]
    right = db[keys + [c for c in info + cols if c in db.columns]]
    m = pd.merge(left, right, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True, sort=False)
    if not (m["_merge"] == "both").any():
        raise ValueError(f"compare: no layer name in common ({len(da)} and {len(db)} layers); "
                         "compare checkpoints of one architecture")
    m["present"] = m.pop("_merge").map({"both": "both", "left_only": "a", "right_only": "b"}).astype(str)
    for c in ("layer_type", "N", "M"):
        if c + "_a" in m.columns:
            m[c] = m[c + "_a"].where(m[c + "_a"].notna(), m.get(c + "_b"))
            m = m.drop(columns=[x for x in (c + "_a", c + "_b") if x in m.columns])
    for c in cols:
        m["d_" + c] = m[c + "_b"].astype(float) - m[c + "_a"].astype(float)
    add_depth(m)
    m = m.sort_values("depth", kind="stable").reset_index(drop=True)
    moved = np.zeros(len(m), dtype=bool)
    if "d_alpha" in m.columns:
        d = np.abs(m["d_alpha"].to_numpy(dtype=float))
        ok = np.isfinite(d) & (d > 0)
        k = top if top is not None else max(1, math.ceil(0.1 * int((m["present"] == "both").sum())))
        idx = np.argsort(np.where(ok, -d, np.inf), kind="stable")[:int(k)]
        moved[idx[ok[idx]]] = True
        m["abs_d_alpha"] = d
    m["moved"] = moved
    lead = keys + ["present", "layer_type", "block", "depth", "N", "M"]
    lead = [c for c in lead if c in m.columns]
    return m[lead + [c for c in m.columns if c not in lead]]
