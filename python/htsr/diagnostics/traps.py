"""``htsr.traps``: one row per correlation trap -- a spike of the element-shuffled ESD above
its MP edge (see ``randomize``) -- with the singular vectors of the shuffled matrix that carry
it and the weights that cause it.

For each trap of a layer (same seeds, so the same shuffles, as ``analyze(randomize=True)``):
the shuffled matrix W_s is rebuilt from the native permutation, its top singular triplets
(sigma, u, v) found by a float64 SVD, and for the triplet of the trap eigenvalue lambda = sigma^2
(conv scaling applied):

* ``eigenvalue``, ``spike_edge`` (the shuffled ESD's spike threshold), ``excess`` = lambda /
  spike_edge, ``rand_bulk_max``;
* ``u_localization``, ``v_localization`` = ||.||_1/||.||_inf, ``u_participation``,
  ``v_participation`` = 1 / sum x_i^4 (inverse participation ratio: the number of entries the
  unit vector effectively occupies);
* the entry of W_s with the largest contribution |u_i w_ij v_j| to sigma = u^T W_s v, mapped
  back to its position in W: ``row``, ``col``, ``weight`` (w_ij) and ``share`` = u_i w_ij v_j /
  sigma, and ``weight_zscore`` = (w_ij - mean W) / std W.
"""
from __future__ import annotations

import numpy as np

from . import randomize

__all__ = ["traps", "TRAP_COLUMNS"]

TRAP_COLUMNS = ("layer_id", "name", "slice_id", "replica", "rank", "eigenvalue", "spike_edge", "excess",
                "rand_bulk_max", "u_localization", "v_localization", "u_participation",
                "v_participation", "row", "col", "weight", "weight_zscore", "share")


def _trap_rows(item, mats, scale, opts, spec_kw):
    from . import prepare

    members = [(0, si) for si in range(len(mats))]
    pre = prepare([(item, mats, 0.0)], members, mats, opts.replace(randomize=True, vectors=False), spec_kw)
    rand = pre["rand"]
    sids = [si for _, si in members] if item.slice_ids is None else None
    units = [sids] if sids is not None else [[si] for si in item.slice_ids]
    s = item.spec
    rows = []
    for unit in units:
        first = np.concatenate([e for si in unit for e in rand[(0, si)][0]]) * scale
        second = np.concatenate([e for si in unit for e in rand[(0, si)][1]]) * scale
        ev = first  # the ESD itself is not needed for the edge
        cols = randomize.random_columns(ev, first, second, int(s.N), int(s.M),
                                        mp_method=opts.mp_method, tw_level=opts.mp_tw_level)
        edge = cols["_rand_edge"]
        if not cols["rand_num_spikes"] or not np.isfinite(edge):
            continue
        for si in unit:
            W = np.asarray(mats[si], dtype=np.float64)
            for r, evr in enumerate(rand[(0, si)][0]):
                k = int(np.count_nonzero(evr * scale > edge))
                if not k:
                    continue
                seed = randomize.stream_seed(opts.seed, item.layer_id, si, 0, r)
                perm = randomize.shuffle_permutation(W.size, seed)
                Ws = W.ravel()[perm].reshape(W.shape)
                U, S, Vt = np.linalg.svd(Ws, full_matrices=False)
                for j in range(k):
                    u, v, sig = U[:, j], Vt[j], S[j]
                    contrib = (u[:, None] * Ws) * v[None, :]
                    flat = int(np.argmax(np.abs(contrib)))
                    orig = int(perm[flat])
                    row, col = divmod(orig, W.shape[1])
                    lam = sig * sig * scale
                    rows.append(dict(
                        layer_id=item.layer_id, name=item.name,
                        slice_id=si if int(s.rf) > 1 else None, replica=r, rank=j, eigenvalue=lam,
                        spike_edge=edge, excess=lam / edge, rand_bulk_max=cols["rand_bulk_max"],
                        u_localization=float(np.abs(u).sum() / np.abs(u).max()),
                        v_localization=float(np.abs(v).sum() / np.abs(v).max()),
                        u_participation=float(1 / np.sum(u ** 4)), v_participation=float(1 / np.sum(v ** 4)),
                        row=row, col=col, weight=float(W.flat[orig]),
                        weight_zscore=float((W.flat[orig] - W.mean()) / W.std()),
                        share=float(contrib.flat[flat] / sig)))
    return rows


def traps(model_or_path, options=None, **kwargs):
    """One row per correlation trap of every selected layer (a pandas DataFrame with
    ``TRAP_COLUMNS``; empty when there is none).  Takes ``analyze``'s options (``seed``,
    ``mp_method``, ``mp_tw_level``, the layer selection, ``precision``, ...)."""
    import pandas as pd

    from ..analysis import _eval_scale, _layer_error, _plan
    from ..options import AnalysisOptions

    opts = AnalysisOptions.build(options, **kwargs)
    spec_kw = {"method": opts.method if opts.method != "randomized" else "gram", "precision": opts.precision}
    rows = []
    for item in _plan(model_or_path, opts):
        mats = item.spec.load()
        mats = list(mats) if isinstance(mats, (list, tuple)) else [mats]
        try:
            rows.extend(_trap_rows(item, mats, _eval_scale(item, opts.pool, opts.conv2d_norm, opts.normalize),
                                   opts, spec_kw))
        except ValueError as exc:
            raise _layer_error(item, exc) from exc
    return pd.DataFrame(rows, columns=list(TRAP_COLUMNS))
