"""Element-shuffled spectra and correlation traps (``randomize=True``, ``htsr.traps``).

Shuffling the entries of W (a uniform permutation, Fisher-Yates in the native kernel
``cpp/src/shuffle.cpp``) keeps their distribution and destroys every correlation, so the
shuffled ESD is the random-matrix baseline of the layer.  A spike of the *shuffled* ESD above
its MP bulk edge is a **correlation trap** (Martin & Mahoney): a few unusually large entries
that no shuffling removes.

Seeds: the permutation of slice ``s`` of layer ``layer_id`` in draw ``d`` (0: the draw that is
MP-fitted, 1: WeightWatcher's second, independent draw), replica ``r`` is driven by
``stream_seed(seed, layer_id, s, d, r)`` -- fixed by the options alone, whatever the batch
composition or the thread count.

Columns (WeightWatcher 0.7.7 ``apply_random_esd`` definitions, shared/reference/weightwatcher.md
section 2.7): ``max_rand_eval`` = max of the first draw (5 replicas concatenated when the
layer has fewer than 100 eigenvalues, as WeightWatcher); ``rand_distance`` = Jensen-Shannon
distance (nats) between the sorted ESD and the sorted second draw, each vector normalised to
sum 1 (index by index, *not* a distance between densities); ``ww_softrank`` = max(second
draw) / max(evals); ``ww_maxdist`` = max(evals) - max(second draw); the MP fit of the first
draw: ``rand_num_spikes`` (= ``num_traps``), ``rand_sigma_mp``, ``rand_mp_softrank``,
``rand_W_scale``, ``rand_bulk_max``, ``rand_bulk_min``.
htsr adds ``rand_ks_distance``: the two-sample Kolmogorov-Smirnov statistic
sup_x |F_esd(x) - F_rand(x)| between the ESD and the first draw -- a distance between the two
distributions (scipy.stats.ks_2samp's statistic), scale-free and in [0, 1].
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from .mp import mp_fit

__all__ = ["stream_seed", "replicas", "jensen_shannon_distance", "ks_distance", "random_columns",
           "shuffled_spectra", "shuffle_permutation"]

RAND_COLUMNS = ("max_rand_eval", "rand_distance", "rand_ks_distance", "ww_softrank", "ww_maxdist",
                "rand_num_spikes", "num_traps", "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale",
                "rand_bulk_max", "rand_bulk_min")


def stream_seed(seed: int, *ids: int) -> int:
    """A 64-bit seed fixed by (seed, ids): blake2b of their little-endian int64 encoding."""
    h = hashlib.blake2b(struct.pack(f"<{len(ids) + 1}q", int(seed), *map(int, ids)), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def replicas(n_comp: int) -> int:
    """WeightWatcher: 5 replicas of the first draw when the layer has fewer than 100 components."""
    return 5 if n_comp < 100 else 1


def shuffled_spectra(mats, seeds, *, precision: str = "float64", method: str = "gram", threads: int = 0):
    """Eigenvalues (ascending float64) of X = W_s^T W_s for each matrix shuffled with its seed
    (native: the shuffle, Gram and eigensolver run in one batch, no Python copies)."""
    from .. import core as _core, _core as _native

    pairs = [_core._matrix(W, None, what=f"matrix {i}") for i, W in enumerate(mats)]
    method = "svd" if method == "svd" else "gram"
    res = _native.shuffled_spectrum_batch([a for a, _ in pairs], [d for _, d in pairs],
                                          [int(s) for s in seeds], method, precision, int(threads))
    return [np.asarray(r.eigenvalues, dtype=np.float64) for r in res]


def shuffle_permutation(count: int, seed: int) -> np.ndarray:
    """The permutation the native shuffle applies: shuffled.ravel()[k] = W.ravel()[index[k]]."""
    from .. import _core as _native

    return np.asarray(_native.shuffle_permutation(int(count), int(seed)))


def jensen_shannon_distance(p, q) -> float:
    """WeightWatcher's ``RMT_Util.jensen_shannon_distance``: sqrt((KL(p||m) + KL(q||m)) / 2) with
    m = (p + q)/2 of the *raw* vectors, then p, q and m each normalised to sum 1 (what
    scipy.stats.entropy does), natural log, 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    p, q, m = p / p.sum(), q / q.sum(), m / m.sum()

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log(a / b), 0.0)
        return float(np.sum(t))

    return float(np.sqrt((kl(p, m) + kl(q, m)) / 2))


def ks_distance(a, b) -> float:
    """Two-sample KS statistic sup |F_a - F_b| over the pooled sample (scipy.stats.ks_2samp)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if not a.size or not b.size:
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def random_columns(evals, rand_first, rand_second, N: int, M: int, *, mp_method: str,
                   tw_level: float) -> dict:
    """The randomize columns of one ESD from its two shuffled draws (see the module docstring)."""
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    r1 = np.sort(np.asarray(rand_first, dtype=np.float64))
    r2 = np.sort(np.asarray(rand_second, dtype=np.float64))
    lmax, r2max = float(ev[-1]), float(r2[-1])
    fit = mp_fit(r1, N, M, mp_method, tw_level)
    out = {"max_rand_eval": float(r1[-1]),
           "rand_distance": jensen_shannon_distance(ev, r2) if ev.size == r2.size else float("nan"),
           "rand_ks_distance": ks_distance(ev, r1),
           "ww_softrank": r2max / lmax if lmax > 0 else float("nan"),
           "ww_maxdist": lmax - r2max,
           "rand_num_spikes": fit["num_spikes"], "num_traps": fit["num_spikes"]}
    for c in ("sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min"):
        out["rand_" + c] = fit[c]
    out["_rand_edge"] = fit["spike_edge"]
    return out


def random_esd(model_or_path, layer, options=None, **kwargs) -> np.ndarray:
    """The first shuffled draw of one layer (id or exact name), ascending, on the scale
    ``analyze`` fits (conv2d_norm / normalize applied): the ESD that ``randomize=True`` MP-fits,
    with the same seeds (WeightWatcher's ``get_ESD(random=True)``, seeded)."""
    from ..analysis import _eval_scale, _plan
    from ..options import AnalysisOptions
    from . import prepare

    opts = AnalysisOptions.build(options, **kwargs).replace(layers=(layer,), randomize=True)
    plan = _plan(model_or_path, opts)
    if not plan:
        raise ValueError(f"no analysable layer {layer!r}")
    item = plan[0]
    mats = item.spec.load()
    mats = list(mats) if isinstance(mats, (list, tuple)) else [mats]
    spec_kw = {"method": "svd" if opts.method == "svd" else "gram", "precision": opts.precision}
    rand = prepare([(item, mats, 0.0)], [(0, si) for si in range(len(mats))], mats, opts, spec_kw)["rand"]
    scale = _eval_scale(item, opts.pool, opts.conv2d_norm, opts.normalize)
    return np.sort(np.concatenate([e for si in range(len(mats)) for e in rand[(0, si)][0]]) * scale)
