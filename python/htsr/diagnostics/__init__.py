"""HTSR diagnostics beyond alpha, one module per concept (issue 8):

* ``mp`` -- Marchenko-Pastur bulk, edge and spikes (``mp_fit``);
* ``randomize`` -- element-shuffled spectra, correlation traps (``randomize``), ``traps``;
* ``tail_models`` -- TPL / lognormal / exponential / stretched-exponential fits, Vuong tests,
  Hill estimator (``tail_models``, ``fit='TPL'|'E_TPL'``);
* ``bootstrap`` -- CSN bootstrap goodness-of-fit p-value (``bootstrap=reps``);
* ``fingers`` -- ``fix_fingers='clip_xmax'|'xmin_peak'`` and ``xmax``;
* ``detx`` -- the det X = 1 criterion (``detX``);
* ``vectors`` -- eigenvector localization (``vectors``, ``vector_metrics``);
* ``distances`` -- model-to-model distances, ``base_model`` deltas;
* ``lsa`` -- :func:`lsa_components`, the number of LSA components of a (sparse) document-term
  matrix from its power-law tail.

The pipeline (``htsr.analysis``) calls three hooks per batch: :func:`prepare` (native work on
the loaded matrices: shuffled spectra, eigensystems), :func:`refit` (fit changes: xmax,
fingers, TPL, bootstrap) and :func:`unit_columns` (the extra columns of one row).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import bootstrap, detx, distances, fingers, mp, randomize, tail_models, vectors
from .traps import traps
from .fingers import as_fit
from .lsa import lsa_components

__all__ = ["prepare", "refit", "unit_columns", "active", "columns", "traps", "mp", "randomize", "tail_models",
           "bootstrap", "fingers", "detx", "vectors", "distances", "lsa_components"]

_DRAW_FITTED, _DRAW_SECOND, _STREAM_BOOTSTRAP = 0, 1, 2


MP_COLUMNS = ("num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "W_scale")
DETX_COLUMNS = ("detX_num", "num_ERG_spikes", "ERG_gap", "detX_val", "detX_val_unrescaled")
VECTOR_COLUMNS = tuple(f"{w}_{s}_{n}" for w in ("bulk", "tail") for s in ("mean", "var")
                       for n in ("vec_entropy", "loc_ratio", "part_ratio"))


def columns(opts) -> list[str]:
    """The columns the options add to every row (announced to results files up front)."""
    cols: list[str] = []
    if opts.mp_fit:
        cols += MP_COLUMNS
    if opts.randomize:
        cols += randomize.RAND_COLUMNS
    if opts.fit in ("TPL", "E_TPL"):
        cols.append("Lambda")
    if opts.fix_fingers == "clip_xmax":
        cols += ("num_fingers", "raw_alpha")
    if opts.bootstrap:
        cols.append("pl_pvalue")
    if opts.tail_models:
        cols += tail_models.TAIL_COLUMNS
    if opts.detX:
        cols += DETX_COLUMNS
    if opts.vectors:
        cols += VECTOR_COLUMNS
    return cols


def active(opts) -> bool:
    return bool(opts.mp_fit or opts.randomize or opts.tail_models or opts.bootstrap or opts.detX
                or opts.vectors or opts.fix_fingers or opts.fit != "PL" or opts.xmax not in (None, False))


def _n_comp(item, n_mats: int) -> int:
    return int(item.spec.M) * (n_mats if item.slice_ids is None else 1)


def prepare(batch, members, mats, opts, spec_kw: dict) -> dict:
    """Native work that needs the matrices: {'rand': {(bi, si): ([draw-0 replicas], draw 1)},
    'eig': {(bi, si): (values, vectors, right)}} (unscaled eigenvalues)."""
    pre: dict[str, Any] = {}
    if opts.randomize:
        jobs, seeds, ms = [], [], []
        for k, (bi, si) in enumerate(members):
            item = batch[bi][0]
            reps = randomize.replicas(_n_comp(item, len(batch[bi][1])))
            for draw, count in ((_DRAW_FITTED, reps), (_DRAW_SECOND, 1)):
                for r in range(count):
                    jobs.append((bi, si, draw))
                    seeds.append(randomize.stream_seed(opts.seed, item.layer_id, si, draw, r))
                    ms.append(mats[k])
        evs = randomize.shuffled_spectra(ms, seeds, precision=spec_kw.get("precision", "float64"),
                                         method=spec_kw.get("method", "gram"), threads=opts.threads)
        rand: dict = {}
        for (bi, si, draw), ev in zip(jobs, evs):
            first, second = rand.setdefault((bi, si), ([], []))
            (first if draw == _DRAW_FITTED else second).append(ev)
        pre["rand"] = rand
    if opts.vectors:
        pre["eig"] = dict(zip(members, vectors.eigensystems(mats, opts.threads)))
    return pre


def refit(fit_inputs, fits, unit_ids, opts, fit_kw: dict):
    """Apply xmax, fix_fingers, fit='TPL'/'E_TPL' and the bootstrap to each unit's fit.
    ``unit_ids``: (layer_id, slice id or None) per unit.  Returns (fits, extra columns per unit)."""
    from .. import core as _core

    out_fits, extras = [], []
    for ev, fit, (layer_id, sid) in zip(fit_inputs, fits, unit_ids):
        extra: dict = {}
        if fit is None:          # fewer than 2 eigenvalues: a failed-fit row, nothing to refit
            out_fits.append(None)
            extras.append(extra)
            continue
        kw = dict(fit_kw)
        try:
            ev2, xkw = fingers.apply_xmax(ev, opts.xmax)
        except ValueError:
            out_fits.append(as_fit(fit))
            out_fits[-1].status, out_fits[-1].alpha = "failed", float("nan")
            extras.append(extra)
            continue
        kw.update(xkw)
        if opts.fix_fingers == "xmin_peak" or opts.fit == "E_TPL":
            rng = fingers.xmin_peak_range(ev2, opts.xmin_max)
            if rng is not None:
                kw["xmin_range"] = rng
        changed = ev2 is not ev or kw != fit_kw

        def fit_one(x):
            return _core.fit_power_law(x, **kw) if x.size >= 2 else as_fit(fit)

        f = as_fit(fit_one(ev2)) if changed and ev2.size >= 2 else as_fit(fit)
        if opts.fix_fingers == "clip_xmax":
            f, num, raw = fingers.clip_xmax(ev2, lambda x: as_fit(fit_one(x)), opts.max_fingers,
                                            opts.finger_thresh)
            extra["num_fingers"], extra["raw_alpha"] = num, raw.alpha
        if ev2 is not ev and f.status == "success":   # WeightWatcher: counted on the clipped ESD
            extra["num_pl_spikes"] = int(np.count_nonzero(ev2 >= f.xmin))
        if opts.fit in ("TPL", "E_TPL"):
            extra["Lambda"] = float("nan")
            if f.status == "success":
                tail = ev2[ev2 >= f.xmin]
                if tail.size >= 3:
                    f.alpha, extra["Lambda"] = tail_models.fit_tpl(tail, f.xmin, f.alpha)
        if opts.bootstrap:
            b = bootstrap.bootstrap_pvalue(
                ev2, reps=opts.bootstrap, seed=randomize.stream_seed(opts.seed, layer_id, -1 if sid is None else sid,
                                                         _STREAM_BOOTSTRAP),
                threads=opts.threads, **kw)
            extra["pl_pvalue"] = float(b["p"])
        out_fits.append(f)
        extras.append(extra)
    return out_fits, extras


def unit_columns(opts, pre: dict, bi: int, sids, scale: float, ev: np.ndarray, fit, row: dict,
                 N: int, M: int) -> dict:
    """Extra columns of one row: ``sids`` are the slice indices of the unit, ``ev`` its sorted
    (scaled) ESD, ``row`` the columns computed so far."""
    out: dict = {}
    if opts.mp_fit:
        r = mp.mp_fit(ev, N, M, opts.mp_method, opts.mp_tw_level)
        r.pop("spike_edge")
        out.update(r)
    if opts.randomize:
        rand = pre["rand"]
        first = np.concatenate([e for si in sids for e in rand[(bi, si)][0]]) * scale
        second = np.concatenate([e for si in sids for e in rand[(bi, si)][1]]) * scale
        r = randomize.random_columns(ev, first, second, N, M, mp_method=opts.mp_method,
                                     tw_level=opts.mp_tw_level)
        r.pop("_rand_edge")
        out.update(r)
    ok = row.get("status") == "success"
    if opts.tail_models:
        xmin, alpha = (row["xmin"], row["alpha"]) if ok else (float("nan"), float("nan"))
        if ok and opts.fit != "PL":     # the row holds the TPL alpha: the PL MLE at the same xmin
            tail = ev[ev >= xmin]
            alpha = 1.0 + tail.size / float(np.sum(np.log(tail / xmin)))
        out.update(tail_models.fit_tail_models(ev, xmin, alpha))
    if opts.detX:
        out.update(detx.detx_columns(ev, row.get("num_pl_spikes")))
    if opts.vectors:
        systems = [pre["eig"][(bi, si)] for si in sids]
        out.update(vectors.layer_vector_columns(systems, row["num_pl_spikes"] if ok else 0))
    return out
