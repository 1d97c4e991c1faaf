"""Whole-model analysis: weight source -> matrices -> native spectra -> fits -> table.

``analyze`` returns one row per weight matrix (per Conv2D slice with ``pool=False``) with
WeightWatcher 0.7.7's columns (same definitions, see ``htsr.metrics``) plus ``source``,
``stored_dtype``, ``part`` and ``seconds``.  ``describe`` runs the same iteration and filters
without numerics.

Pipeline: the layer list is built from metadata only (nothing is read); a background thread
then reads / converts the selected matrices (``max(prefetch, threads)`` matrices ahead of the
analysis, and at most ``max(2 x largest matrix, 64 MiB)`` of float32 data loaded and not yet
analysed, so memory is bounded by a few matrices, not by the model; memory-mapped float32
data is not copied: the reader asks the kernel to read it ahead, the native code reads it in
place, and its pages are dropped once analysed) while the main thread hands batches -- as many
matrices as the reader may hold ahead, fewer when the memory budget or the plan ends first --
to one ``htsr.spectrum_batch`` call (parallel across matrices, largest first, one BLAS thread
each, GIL released) and the eigenvalues to ``htsr.fit_power_law_batch``.  Each batch ends
with a barrier, so batches are kept full rather than started with whatever happens to be
read (on MiniLM-L6, one batch of 39 instead of three took the analysis from 122 to 112 ms).

Column order: ``layer_id, name, longname, layer_type, part, [slice_id], source, stored_dtype,
N, M, Q, rf, num_evals, has_esd, status, warning, alpha, alpha_weighted, log_alpha_norm, D,
sigma, xmin, xmax, num_pl_spikes, norm, log_norm, spectral_norm, log_spectral_norm,
lambda_max, sv_max, sv_min, stable_rank, matrix_rank, rank_loss, weak_rank_loss, entropy,
seconds`` (WeightWatcher sorts everything after ``name`` alphabetically).

Layer ids are contiguous (0, 1, 2, ...) in model order over the matrices that have at least
``min_evals`` eigenvalues; the selection options (``layers``, ``names``, ``exclude``,
``layer_types``, ``max_evals``, ``max_N``) keep the ids, so a filtered table has gaps but the
same id always names the same matrix.  WeightWatcher's ids are framework counters (every torch
module, every ``.weight`` key), sparse and different for a module and its state_dict.
"""
from __future__ import annotations

import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import metrics as _metrics
from .depth import add_depth
from .sources import prefetch_mapped_pages, release_mapped_pages

__all__ = ["analyze", "describe", "esd", "LAYER_TYPES"]

LAYER_TYPES = ("dense", "conv1d", "conv2d", "embedding")
_MIN_BUDGET = 64 << 20
_EPS64 = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------
# plan: metadata only
# --------------------------------------------------------------------------------------------
@dataclass
class _Item:
    layer_id: int
    name: str
    spec: Any
    slice_ids: list | None = None      # pool=False conv2d: the slice ids of this spec (all)
    meta: dict = field(default_factory=dict)

    @property
    def mem(self) -> int:
        s = self.spec
        return 4 * int(s.N) * int(s.M) * int(s.rf)


def _row_name(spec) -> str:
    """``name[part]`` for a part of a fused tensor (LayerSpec.longname), else ``name``."""
    part = getattr(spec, "part", None)
    name = spec.name
    if part and not (name.endswith("." + str(part)) or name.endswith("[" + str(part) + "]")):
        name = f"{name}[{part}]"
    return name


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, bytes, int, np.integer, re.Pattern)):
        return [x]
    return list(x)


def _compile(patterns) -> list:
    out = []
    for p in _as_list(patterns):
        if isinstance(p, re.Pattern):
            out.append(p)
        else:
            try:
                out.append(re.compile(str(p)))
            except re.error as exc:
                raise ValueError(f"invalid layer regex {p!r}: {exc}") from None
    return out


def _plan(model_or_path, *, layers=None, min_evals=8, max_evals=None, max_N=None,
          layer_types=None, names=None, exclude=None, pool=True, split_fused=True,
          select: Callable | None = None) -> list[_Item]:
    from .sources import iter_layers

    keep_ids, keep_names = set(), set()
    for x in _as_list(layers):
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"layers: expected ints (layer ids) or strings (names), got {x!r}")
        if isinstance(x, (int, np.integer)):
            keep_ids.add(int(x))
        elif isinstance(x, str):
            keep_names.add(x)
        else:
            raise TypeError(f"layers: expected ints (layer ids) or strings (names), got {x!r}")
    types = {str(t).lower() for t in _as_list(layer_types)}
    bad = types - set(LAYER_TYPES)
    if bad:
        raise ValueError(f"unknown layer type(s) {sorted(bad)}; expected one of {list(LAYER_TYPES)}")
    inc, exc = _compile(names), _compile(exclude)
    min_evals = int(min_evals or 0)

    items: list[_Item] = []
    next_id = 0
    for spec in iter_layers(model_or_path, split_fused=split_fused, conv2d_slices=True):
        ltype = str(spec.layer_type)
        if ltype not in LAYER_TYPES:
            continue
        M, N, rf = int(spec.M), int(spec.N), int(spec.rf)
        n_ev = M if (not pool) else M * rf
        if n_ev < min_evals or M == 0:
            continue
        layer_id = next_id
        next_id += 1
        name = _row_name(spec)
        if keep_ids or keep_names:
            if layer_id not in keep_ids and name not in keep_names:
                continue
        if types and ltype not in types:
            continue
        if inc and not any(p.search(name) for p in inc):
            continue
        if exc and any(p.search(name) for p in exc):
            continue
        if max_evals is not None and n_ev > max_evals:
            continue
        if max_N is not None and N > max_N:
            continue
        meta = {"layer_id": layer_id, "name": name, "longname": name, "layer_type": ltype,
                "part": getattr(spec, "part", None), "source": str(spec.source),
                "stored_dtype": str(spec.stored_dtype)}
        if select is not None and not select(meta):
            continue
        item = _Item(layer_id, name, spec, meta=meta)
        if not pool:
            item.slice_ids = list(range(rf))
        items.append(item)
    return items


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------
_NUMERIC_OPTIONS = {"normalize", "precision", "method", "ks", "conv2d_norm", "threads",
                    "prefetch", "progress", "ww_parity", "tolerance", "k", "oversample",
                    "power_iters", "seed"}


def describe(model_or_path, *, layers=None, min_evals=8, max_evals=None, max_N=None,
             layer_types=None, names=None, exclude=None, pool=True, split_fused=True,
             _select: Callable | None = None, **numeric_options):
    """The layers ``analyze`` would analyse, without reading any weights.

    Columns: ``layer_id, name, longname, layer_type, part, [slice_id], source, stored_dtype,
    N, M, Q, rf, num_evals``; one row per matrix (per Conv2D slice with ``pool=False``).
    Accepts (and ignores) analyze's numeric options so the same keywords can be passed.
    """
    import pandas as pd

    unknown = set(numeric_options) - _NUMERIC_OPTIONS
    if unknown:
        raise TypeError(f"describe() got unexpected keyword argument(s) {sorted(unknown)}")
    plan = _plan(model_or_path, layers=layers, min_evals=min_evals, max_evals=max_evals,
                 max_N=max_N, layer_types=layer_types, names=names, exclude=exclude, pool=pool,
                 split_fused=split_fused, select=_select)
    rows = []
    for it in plan:
        s = it.spec
        N, M, rf = int(s.N), int(s.M), int(s.rf)
        base = dict(it.meta, N=N, M=M, Q=N / M if M else -1.0, rf=rf)
        if pool:
            rows.append(dict(base, num_evals=M * rf))
        else:
            for sid in it.slice_ids:
                rows.append(dict(base, slice_id=sid, num_evals=M))
    cols = ["layer_id", "name", "longname", "layer_type", "part"] + \
           ([] if pool else ["slice_id"]) + ["source", "stored_dtype", "N", "M", "Q", "rf", "num_evals"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------
class _StderrBar:
    """Minimal progress bar on stderr (used when tqdm is unavailable)."""

    def __init__(self, total: int, total_bytes: int):
        self.total, self.total_bytes, self.t0, self.last = total, total_bytes, time.time(), 0.0

    def update(self, done: int, nbytes: int, name: str):
        now = time.time()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        el = now - self.t0
        eta = el / done * (self.total - done) if done else float("nan")
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(24 * frac)
        sys.stderr.write(f"\rhtsr |{bar:<24}| {done}/{self.total} matrices, "
                         f"{nbytes / 1e6:.1f} MB read, {el:.1f}s elapsed, ETA {eta:.1f}s ")
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class _TqdmBar:
    def __init__(self, total: int, total_bytes: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, unit="mat", file=sys.stderr, desc="htsr",
                        dynamic_ncols=True, leave=True)
        self.done = 0

    def update(self, done: int, nbytes: int, name: str):
        self.bar.set_postfix_str(f"{nbytes / 1e6:.1f} MB read", refresh=False)
        self.bar.update(done - self.done)
        self.done = done

    def close(self):
        self.bar.close()


def _make_progress(progress, total: int, total_bytes: int):
    """-> (update(done, bytes_read, name), close())."""
    if not progress:
        return None, None
    if callable(progress) and progress is not True:
        return (lambda d, b, n: progress(d, total, b, n)), None
    try:
        bar = _TqdmBar(total, total_bytes)
    except Exception:  # tqdm missing or unusable
        bar = _StderrBar(total, total_bytes)
    return bar.update, bar.close


# --------------------------------------------------------------------------------------------
# reader thread
# --------------------------------------------------------------------------------------------
def _prefetch(mats: list) -> list:
    """In the reader thread: start reading memory-mapped matrices from storage (MADV_WILLNEED)
    so the I/O overlaps the native work on earlier ones. The native code then reads the mapped
    float32 data in place (no copy) and the main thread drops the pages once the batch is done
    (``release_mapped_pages``), so resident memory stays bounded by the matrices in flight."""
    for W in mats:
        prefetch_mapped_pages(W)
    return mats


class _Reader:
    """Loads plan items in a background thread, at most ``ahead`` items loaded (or loading) but
    not yet taken by the main thread, and at most ``budget`` bytes of float32 matrices loaded
    but not yet released (always at least one item)."""

    _END = object()
    _BLOCKED = object()  # the reader waits for the main thread to take or release matrices

    def __init__(self, plan: list[_Item], ahead: int, budget: int):
        self.plan, self.ahead_max, self.budget = plan, max(1, int(ahead)), budget
        self.q: queue.Queue = queue.Queue()
        self.cond = threading.Condition()
        self.ahead = 0          # loaded or loading, not yet taken
        self.inflight = 0       # bytes loaded or loading, not yet released
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="htsr-reader", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for idx, it in enumerate(self.plan):
                mem = it.mem
                with self.cond:
                    blocked = False
                    while not self.stop.is_set() and (
                            self.ahead >= self.ahead_max
                            or (self.inflight > 0 and self.inflight + mem > self.budget)):
                        if not blocked:  # tell _collect not to wait for more
                            self.q.put(self._BLOCKED)
                            blocked = True
                        self.cond.wait(0.5)
                    if self.stop.is_set():
                        return
                    self.ahead += 1
                    self.inflight += mem
                t0 = time.perf_counter()
                try:
                    mats = it.spec.load()
                    if not isinstance(mats, (list, tuple)):
                        mats = [mats]
                    mats = _prefetch(list(mats))
                except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread
                    self.q.put((idx, exc, 0.0))
                    return
                self.q.put((idx, mats, time.perf_counter() - t0))
                del mats
        finally:
            self.q.put(self._END)

    def get(self, block=True):
        obj = self.q.get(block=block)
        if obj is not self._END and obj is not self._BLOCKED:
            with self.cond:
                self.ahead -= 1
                self.cond.notify_all()
        return obj

    def release(self, mem: int):
        with self.cond:
            self.inflight -= mem
            self.cond.notify_all()

    def close(self):
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------
def _layer_error(item: _Item, exc: BaseException) -> ValueError:
    msg = str(exc)
    return ValueError(f"layer '{item.name}' (layer_id {item.layer_id}) in {item.spec.source}: {msg}")


def _find_bad_matrix(mats: Sequence[np.ndarray]) -> int | None:
    for i, W in enumerate(mats):
        try:
            if not np.isfinite(np.asarray(W, dtype=np.float32)).all():
                return i
        except Exception:  # noqa: BLE001
            return None
    return None


def _eval_scale(item: _Item, pool: bool, conv2d_norm: bool, normalize: bool) -> float:
    """conv2d_norm (weightwatcher.apply_normalize_Wmats): W * sqrt(conv2d_count/2), i.e. the
    eigenvalues x 1/2 pooled, x rf/2 per slice; normalize: X = W^T W / N."""
    s = item.spec
    scale = 1.0
    if conv2d_norm and str(s.layer_type) == "conv2d":
        scale = 0.5 if pool else int(s.rf) / 2.0
    if normalize:
        scale /= float(s.N)
    return scale


def analyze(model_or_path, *, layers=None, min_evals: int = 8, max_evals: int | None = None,
            max_N: int | None = None, layer_types=None, names=None, exclude=None,
            normalize: bool = False, precision: str = "float64", method: str = "gram",
            ks: str = "all_points", conv2d_norm: bool = True, pool: bool = True,
            split_fused: bool = True, threads: int = 0, prefetch: int = 64, progress=None,
            ww_parity: bool = True, tolerance: float = _metrics.WEAK_RANK_LOSS_TOLERANCE,
            k: int | None = None, oversample: int = 10, power_iters: int = 4, seed: int = 0,
            esds: dict | None = None, _select: Callable | None = None):
    """Analyse every weight matrix of a model; returns a pandas DataFrame (one row per matrix).

    model_or_path: torch module, state_dict, or a path (safetensors file / sharded folder,
        ``.bin``/``.pt``, ``.npz``, ... -- whatever ``htsr.sources.iter_layers`` reads).
    layers: ids (ints) and/or exact names to keep.  names / exclude: regexes (``re.search``)
        to keep / drop.  layer_types: subset of ``('dense', 'conv1d', 'conv2d', 'embedding')``.
    min_evals: matrices with fewer eigenvalues (M*rf pooled, M per slice) are not analysed
        and get no id.  max_evals / max_N: skip layers with more eigenvalues / a larger N
        (default: analyse everything -- WeightWatcher skips M*rf > 15000 and N > 50000).
    normalize: X = W^T W / N (default False: WeightWatcher's X = W^T W).
    precision: arithmetic of the Gram / SVD ('float64' default, 'float32' ~2x faster).
    method: 'gram' | 'svd' | 'randomized' (top-``k`` eigenvalues; norm from the exact trace,
        rank and entropy columns NaN).
    ks: power-law KS convention, 'all_points' (WeightWatcher) or 'distinct' (powerlaw 2.0).
    conv2d_norm: scale Conv2D eigenvalues by 1/2 pooled, rf/2 per slice (WeightWatcher).
    pool: pool the rf slices of a Conv2D into one ESD (False: one row per slice, ``slice_id``).
    split_fused: split fused tensors (qkv, gate_up, MoE experts) into their logical parts.
    threads: native threads (0 = all cores).  prefetch: matrices read ahead (at least one
        per thread; the bytes in flight are also capped at 2 x the largest matrix or 64 MiB).
    progress: True for a bar on stderr, or ``callable(done, total, bytes_read, name)``.
    ww_parity: fit exactly as WeightWatcher 0.7.7 (eigenvalues <= 1e-5 dropped, its small-n
        path below 20 points); False drops only numerical zeros (<= lambda_max*M*eps).
    tolerance: weak_rank_loss threshold.
    esds: a dict to fill with each row's ESD (the eigenvalues fitted, float64 ascending, scaled
        as above) keyed by ``(layer_id, slice_id)`` (``slice_id`` None when pooled), for plots.

    A folder of ``checkpoint-N/`` sub-folders (a training run) gives one table with a ``step``
    column (``htsr.runs.analyze_run``).  Adds ``block`` and ``depth`` (network order, ``htsr.depth``) to the table.

    Raises ValueError naming the layer and its source file for NaN/Inf weights.
    """
    import pandas as pd
    from . import core as _core
    from . import runs as _runs

    if _runs.is_run_dir(model_or_path):   # a folder of checkpoint-N/: one table with 'step'
        kw = {k: v for k, v in locals().items() if k in _ANALYZE_OPTIONS}
        return _runs.analyze_run(model_or_path, esds=esds, **kw)
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    if method not in ("gram", "svd", "randomized"):
        raise ValueError(f"method must be 'gram', 'svd' or 'randomized', got {method!r}")
    if method == "randomized" and not k:
        raise ValueError("method='randomized' needs k (the number of top eigenvalues)")

    plan = _plan(model_or_path, layers=layers, min_evals=min_evals, max_evals=max_evals,
                 max_N=max_N, layer_types=layer_types, names=names, exclude=exclude, pool=pool,
                 split_fused=split_fused, select=_select)
    total_bytes = sum(int(getattr(it.spec, "nbytes", 0) or 0) for it in plan)
    update, close_bar = _make_progress(progress, len(plan), total_bytes)

    spec_kw: dict[str, Any] = {"method": method, "precision": precision}
    if method == "randomized":
        spec_kw.update(k=int(k), oversample=oversample, power_iters=power_iters, seed=seed)
    fit_kw: dict[str, Any] = {"ks": ks}
    if ww_parity:
        fit_kw.update(floor=_metrics.EVALS_THRESH, small_n=True, every_position=True)

    rows: list[dict] = []
    done, bytes_read = 0, 0
    if plan:
        # read ahead at least one matrix per native thread, so a batch can keep them all busy;
        # bytes in flight: two of the largest matrices (or 64 MiB of small ones)
        ahead = max(int(prefetch), threads if threads > 0 else (os.cpu_count() or 1))
        budget = max(2 * max(it.mem for it in plan), _MIN_BUDGET)
        reader = _Reader(plan, ahead, budget)
    else:
        reader = None
    try:
        finished = reader is None
        while not finished:
            batch, finished = _collect(reader, plan, ahead)
            if not batch:
                continue
            rows.extend(_process_batch(batch, _core, spec_kw, fit_kw, threads, pool,
                                       conv2d_norm, normalize, ww_parity, tolerance, esds))
            items = [entry[0] for entry in batch]
            for _item, mats, _t in batch:  # mapped pages of analysed matrices are not needed again
                for W in mats:
                    release_mapped_pages(W)
            del batch, mats                # drop the matrices before releasing their budget
            for item in items:
                reader.release(item.mem)
                done += 1
                bytes_read += int(getattr(item.spec, "nbytes", 0) or 0)
                if update is not None:
                    update(done, bytes_read, item.name)
    finally:
        if reader is not None:
            reader.close()
        if close_bar is not None:
            close_bar()

    cols_seen = list(rows[0].keys()) if rows else []
    if not rows:
        cols_seen = [c for c in _metrics.ID_COLUMNS + _metrics.METRIC_COLUMNS
                     + _metrics.TRAILING_COLUMNS if pool is False or c != "slice_id"]
    df = pd.DataFrame(rows, columns=_metrics.order_columns(cols_seen))
    return _order_columns(add_depth(df, model_or_path))


_ANALYZE_OPTIONS = ("layers", "min_evals", "max_evals", "max_N", "layer_types", "names",
                    "exclude", "normalize", "precision", "method", "ks", "conv2d_norm", "pool",
                    "split_fused", "threads", "prefetch", "progress", "ww_parity", "tolerance",
                    "k", "oversample", "power_iters", "seed", "_select")


def _order_columns(df):
    return df[_metrics.order_columns(df.columns)]


def _collect(reader: _Reader, plan: list[_Item], cap: int):
    """The next batch: ``cap`` items, or fewer when the reader is held by its memory budget or
    the plan ends -> (batch, finished).  Full batches keep every native thread busy (the
    matrices of a batch are scheduled largest first; a batch ends with a barrier).
    A function of its own so no reference to a matrix outlives it."""
    got = []
    while len(got) < cap:
        obj = reader.get(block=True)
        if obj is _Reader._BLOCKED:
            if got:
                break
            continue
        got.append(obj)
        if obj is _Reader._END:
            break
    batch, finished = [], False
    for obj in got:
        if obj is _Reader._END:
            finished = True
            continue
        idx, payload, t_read = obj
        item = plan[idx]
        if isinstance(payload, BaseException):
            if isinstance(payload, (KeyboardInterrupt, SystemExit, FileNotFoundError,
                                    MemoryError)):
                raise payload
            raise _layer_error(item, payload) from payload
        batch.append((item, payload, t_read))
    return batch, finished


def _rank_rtol(spec_kw: dict, N: int, M: int) -> float | None:
    """Relative eigenvalue tolerance of the rank test, or None for WeightWatcher's
    (sv > sv_max * N * eps64).  Eigenvalues of a Gram matrix carry an absolute rounding error
    of a few eps * lambda_max, so a zero singular value comes out near sqrt(eps) * sv_max --
    far above WeightWatcher's tolerance; those are counted as zero below
    lambda_max * 4 sqrt(M) eps (eps of the arithmetic), 10-100x the observed noise.  An SVD's
    singular values carry ~eps * sv_max, the same rule squared."""
    eps = float(np.finfo(np.float32 if spec_kw.get("precision") == "float32" else np.float64).eps)
    noise = 4.0 * math.sqrt(M) * eps
    if spec_kw.get("method") == "svd":
        noise = noise * noise
    ww = (N * _EPS64) ** 2
    return noise if noise > ww else None


def _process_batch(batch, _core, spec_kw, fit_kw, threads, pool, conv2d_norm, normalize,
                   ww_parity, tolerance, esds=None) -> list[dict]:
    """Spectra + fits + rows for a list of (item, mats, t_read).

    All matrices of the batch go to one ``spectrum_batch`` call (same-shape matrices together;
    the native side schedules them largest first, one BLAS thread each)."""
    members = [(bi, si) for bi, (_item, mats, _t) in enumerate(batch) for si in range(len(mats))]
    mats = [batch[bi][1][si] for bi, si in members]
    spectra: dict[tuple[int, int], Any] = {}
    spec_time = [0.0] * len(batch)
    t0 = time.perf_counter()
    try:
        res = _core.spectrum_batch(mats, threads=threads, **spec_kw)
    except ValueError as exc:
        text = str(exc)
        m = re.match(r"\s*matrix\s+(\d+)\s*:\s*", text)
        bad = int(m.group(1)) if m and int(m.group(1)) < len(members) else None
        if m:
            text = text[m.end():] or text
        if bad is None:
            bad = _find_bad_matrix(mats)
        if bad is None:
            raise _layer_error(batch[0][0], ValueError(text)) from exc
        bi, si = members[bad]
        item = batch[bi][0]
        if int(item.spec.rf) > 1:
            text = f"slice {si}: {text}"
        raise _layer_error(item, ValueError(text)) from exc
    dt = time.perf_counter() - t0
    flops = [float(batch[bi][0].spec.N) * float(batch[bi][0].spec.M) ** 2 for bi, _ in members]
    tot = sum(flops) or 1.0
    for (bi, si), sp, fl in zip(members, res, flops):
        spectra[(bi, si)] = sp
        spec_time[bi] += dt * fl / tot
    del mats

    # ESDs to fit: one per pooled layer, or one per slice
    units = []   # (bi, slice list, scaled eval list, slice_id or None)
    for bi, (item, mats, _t) in enumerate(batch):
        scale = _eval_scale(item, pool, conv2d_norm, normalize)
        sps = [spectra[(bi, si)] for si in range(len(mats))]
        evs = [np.asarray(sp.eigenvalues, dtype=np.float64) * scale for sp in sps]
        traces = [float(getattr(sp, "trace", np.nan)) * scale for sp in sps]
        complete = all(bool(getattr(sp, "complete", True)) for sp in sps)
        if pool or item.slice_ids is None:
            units.append((bi, evs, sum(traces), complete, None))
        else:
            for sid, ev, tr in zip(item.slice_ids, evs, traces):
                units.append((bi, [ev], tr, complete, sid))
    fit_inputs = []
    for bi, evs, _tr, _c, _sid in units:
        ev = evs[0] if len(evs) == 1 else np.sort(np.concatenate(evs))
        if esds is not None:
            esds[(batch[bi][0].layer_id, _sid)] = ev
        if not ww_parity and ev.size:
            ev = ev[ev > ev[-1] * batch[bi][0].spec.M * _EPS64]
        fit_inputs.append(np.ascontiguousarray(ev, dtype=np.float64))
    t0 = time.perf_counter()
    fits = _core.fit_power_law_batch(fit_inputs, threads=threads, **fit_kw) if fit_inputs else []
    fit_dt = (time.perf_counter() - t0) / max(len(fit_inputs), 1)

    rows = []
    per_item_units: dict[int, int] = {}
    for bi, *_ in units:
        per_item_units[bi] = per_item_units.get(bi, 0) + 1
    for (bi, evs, tr, complete, sid), fit in zip(units, fits):
        item, _mats, t_read = batch[bi]
        s = item.spec
        meta = dict(item.meta)
        if sid is not None:
            meta["slice_id"] = sid
        row = _metrics.layer_row(evs, fit, meta, N=int(s.N), M=int(s.M), rf=int(s.rf),
                                 tolerance=tolerance, complete=complete, trace=tr,
                                 rank_rtol=_rank_rtol(spec_kw, int(s.N), int(s.M)))
        nu = per_item_units[bi]
        row["seconds"] = (t_read + spec_time[bi]) / nu + fit_dt
        rows.append(row)
    return rows


def esd(model_or_path, layer, *, pool: bool = True, conv2d_norm: bool = True,
        normalize: bool = False, precision: str = "float64", method: str = "gram",
        split_fused: bool = True, min_evals: int = 0, threads: int = 0, k: int | None = None):
    """Sorted (ascending) eigenvalues of one layer, chosen by id (int) or exact name (str), on
    the same scale ``analyze`` fits: conv2d_norm (x1/2 pooled) and ``normalize`` applied.
    With ``pool=False`` a Conv2D layer gives a list of rf per-slice arrays (x rf/2 each)."""
    from . import core as _core

    plan = _plan(model_or_path, layers=[layer], min_evals=min_evals, pool=pool,
                 split_fused=split_fused)
    if not plan:
        raise ValueError(f"no analysable layer {layer!r} in {_describe_source(model_or_path)}")
    item = plan[0]
    mats = item.spec.load()
    if not isinstance(mats, (list, tuple)):
        mats = [mats]
    kw: dict[str, Any] = {"method": method, "precision": precision}
    if method == "randomized":
        kw["k"] = int(k)
    try:
        sps = _core.spectrum_batch(list(mats), threads=threads, **kw)
    except ValueError as exc:
        raise _layer_error(item, exc) from exc
    scale = _eval_scale(item, pool, conv2d_norm, normalize)
    evs = [np.asarray(sp.eigenvalues, dtype=np.float64) * scale for sp in sps]
    if pool or item.slice_ids is None or len(evs) == 1:
        return np.sort(np.concatenate(evs)) if len(evs) > 1 else np.sort(evs[0])
    return [np.sort(e) for e in evs]


def _describe_source(model_or_path) -> str:
    if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
        return str(model_or_path)
    return f"<{type(model_or_path).__name__}>"
