"""Whole-model analysis: weight source -> matrices -> native spectra -> fits -> table.

``analyze`` returns one row per weight matrix (per Conv2D slice with ``pool=False``) with
WeightWatcher 0.7.7's columns (same definitions, see ``htsr.metrics``) plus ``source``,
``stored_dtype``, ``part`` and ``seconds``.  ``describe`` runs the same iteration and filters
without numerics.

Pipeline: the layer list is built from metadata only (nothing is read); a background thread
then reads / converts the selected matrices (``max(prefetch, threads)`` matrices ahead of the
analysis, and at most ``max(2 x largest, (threads + 1) x median matrix, 64 MiB)`` of float32
data loaded and not yet analysed, so memory is bounded by a few matrices, not by the model; memory-mapped float32
data is not copied, nor are stored bfloat16 / float16 safetensors weights (``LayerSpec.load_raw``:
the native code converts them exactly itself, see ``raw_allowed``): the reader asks the kernel to
read them ahead, the native code reads them in place, and their pages are dropped once analysed) while ``threads`` workers (the calling thread
and helper threads) each take the next loaded matrix and analyse it on one native thread
(``htsr.spectrum_batch`` + ``htsr.fit_power_law_batch``, GIL released): there is no barrier,
so every core stays busy until the last matrix and the ETA is steady.  Each finished
matrix's rows go to the results file at once (``out=``, ``htsr.results``: fsync'd,
resumable).  With ``executor=`` the matrices are tasks on that executor instead
(``htsr.distributed``).

Column order: ``layer_id, name, longname, layer_type, part, [slice_id], source, stored_dtype,
N, M, Q, rf, num_evals, has_esd, status, warning, alpha, alpha_weighted, log_alpha_norm, D,
sigma, xmin, xmax, num_pl_spikes, norm, log_norm, spectral_norm, log_spectral_norm,
lambda_max, sv_max, sv_min, stable_rank, matrix_rank, rank_loss, weak_rank_loss, entropy,
seconds`` (WeightWatcher sorts everything after ``name`` alphabetically).

Layer ids are contiguous (0, 1, 2, ...) in model order over every analysable matrix (dense,
conv1d, conv2d, embedding; any size) and depend on no option but ``split_fused`` (which decides
what a matrix is); the selection options (``layers``, ``names``, ``exclude``, ``layer_types``,
``min_evals``, ``max_evals``, ``max_N``) and ``pool`` keep the ids, so a filtered table has gaps
but the same id always names the same matrix.  WeightWatcher's ids are framework counters (every torch
module, every ``.weight`` key), sparse and different for a module and its state_dict.
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import diagnostics as _diag
from . import metrics as _metrics
from .depth import layer_places, source_config
from .options import LAYER_TYPES, AnalysisOptions
from .progress import make_progress
from .reader import MIN_BUDGET, Reader
from .sources import release_mapped_pages

__all__ = ["analyze", "describe", "esd", "AnalysisOptions", "LAYER_TYPES"]

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


def _compile(patterns) -> list:
    out = []
    for p in patterns:
        if isinstance(p, re.Pattern):
            out.append(p)
        else:
            try:
                out.append(re.compile(str(p)))
            except re.error as exc:
                raise ValueError(f"invalid layer regex {p!r}: {exc}") from None
    return out


def _plan(model_or_path, opts: AnalysisOptions, select: Callable | None = None) -> list[_Item]:
    """The matrices to analyse, from metadata only (nothing is read)."""
    from .sources import iter_layers

    keep_ids, keep_names = set(), set()
    for x in opts.layers:
        if isinstance(x, str):
            keep_names.add(x)
        else:
            keep_ids.add(int(x))
    types = set(opts.layer_types)
    inc, exc = _compile(opts.names), _compile(opts.exclude)
    min_evals, max_evals, max_N, pool = int(opts.min_evals or 0), opts.max_evals, opts.max_N, opts.pool

    items: list[_Item] = []
    every: list[tuple] = []         # (name, part, type) of every id'd matrix: for the depth
    next_id = 0
    base = None if opts.base_model is None else _diag.distances.base_index(opts.base_model, opts.split_fused)
    for spec in iter_layers(model_or_path, split_fused=opts.split_fused, conv2d_slices=True):
        ltype = str(spec.layer_type)
        if ltype not in LAYER_TYPES:
            continue
        M, N, rf = int(spec.M), int(spec.N), int(spec.rf)
        if M == 0:
            continue
        layer_id = next_id          # every analysable matrix gets an id, whatever the options
        next_id += 1
        name = _row_name(spec)
        every.append((name, getattr(spec, "part", None), ltype))
        n_ev = M if (not pool) else M * rf
        if n_ev < min_evals:
            continue
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
                "stored_dtype": str(spec.stored_dtype), **getattr(spec, "columns", {})}
        if select is not None and not select(meta):     # may renumber meta["layer_id"]
            continue
        if base is not None:      # base_model: analyse W - W_base
            spec = _diag.distances.delta_spec(spec, name, base)
        item = _Item(meta["layer_id"], name, spec, meta=meta)
        if not pool:
            item.slice_ids = list(range(rf))
        items.append(item)
    # network order over every matrix with an id, so a selection keeps each matrix's depth
    places = dict(zip((e[0] for e in every), layer_places(*zip(*every), source_config(model_or_path)))) \
        if every else {}
    for it in items:
        it.meta["block"], it.meta["depth"] = places[it.name].block, places[it.name].depth
    return items


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------
def describe(model_or_path, options: AnalysisOptions | None = None, *,
             _select: Callable | None = None, **kwargs):
    """The layers ``analyze`` would analyse, without reading any weights.

    Columns: ``layer_id, name, longname, layer_type, part, [slice_id], source, stored_dtype,
    N, M, Q, rf, num_evals``; one row per matrix (per Conv2D slice with ``pool=False``).
    Takes the same options as ``analyze`` (the numeric ones are accepted and ignored).
    """
    import pandas as pd

    opts = AnalysisOptions.build(options, **kwargs)
    pool = opts.pool
    plan = _plan(model_or_path, opts, select=_select)
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
_RAW_16BIT = True  # internal switch (tests): LayerSpec.load_raw used when the options allow it


def raw_allowed(opts: AnalysisOptions) -> bool:
    """Whether stored 16-bit weights go to the native core as they are (``LayerSpec.load_raw``,
    converted exactly in C++, no float32 copy): native device, no W - W_base, no diagnostics
    (they take float32 matrices)."""
    return (_RAW_16BIT and opts.device is None and opts.base_model is None
            and not _diag.active(opts))


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------
def _layer_error(item: _Item, exc: BaseException) -> ValueError:
    """``exc`` re-raised naming the layer and its file (an OverflowError stays one)."""
    cls = OverflowError if isinstance(exc, OverflowError) else ValueError
    return cls(f"layer '{item.name}' (layer_id {item.layer_id}) in {item.spec.source}: {exc}")


def _find_bad_matrix(mats: Sequence[np.ndarray], dtype: str | None = None) -> int | None:
    from .sources.dtypes import to_float32
    for i, W in enumerate(mats):
        try:
            if not np.isfinite(to_float32(W, dtype) if dtype else np.asarray(W, np.float32)).all():
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


def analyze(model_or_path, options: AnalysisOptions | None = None, *,
            esds: dict | None = None, _select: Callable | None = None, **kwargs):
    """Analyse every weight matrix of a model; returns a pandas DataFrame (one row per matrix).

    model_or_path: torch module, state_dict, or a path (safetensors file / sharded folder,
        ``.bin``/``.pt``, ``.npz``, ... -- whatever ``htsr.sources.iter_layers`` reads).
    layers: ids (ints) and/or exact names to keep.  names / exclude: regexes (``re.search``)
        to keep / drop.  layer_types: subset of ``('dense', 'conv1d', 'conv2d', 'embedding')``.
    min_evals: matrices with fewer eigenvalues (M*rf pooled, M per slice) are not analysed
        (they keep their id: ids do not depend on min_evals or pool).  max_evals / max_N:
        skip layers with more eigenvalues / a larger N
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
        per thread; the float32 bytes in flight are capped as described in the module docstring).
    progress: True for a bar on stderr, or ``callable(done, total, bytes_read, name)``.
    ww_parity: fit exactly as WeightWatcher 0.7.7 (eigenvalues <= 1e-5 dropped, its small-n
        path below 20 points); False drops only numerical zeros (<= lambda_max*M*eps).
    tolerance: weak_rank_loss threshold.
    errors: 'raise' (default) -- a matrix that cannot be analysed (NaN/Inf weights, unreadable
        data, a native error) raises ValueError naming the layer and its file; 'row' -- it gets
        a row with ``status='error'`` and ``message``, metrics NaN, and the run goes on (the
        CLI's choice).  Header problems (unknown dtype, truncated shard) are found while the
        layer list is built, before anything is computed, and always raise.
    out: a results file (.csv, .tsv, .jsonl, .json, .parquet) that receives each matrix's row
        as soon as it is done (``htsr.results``); the table returned is then read back from it.
    resume: with ``out``: skip the matrices already in the file (refused when it was written
        with different numeric options, ``AnalysisOptions.fingerprint``).
    executor: a ``concurrent.futures.Executor`` (e.g. a Dask client's ``get_executor()``, a
        ``ProcessPoolExecutor``): one task per matrix, which reads the matrix itself from the
        checkpoint path; ``threads`` is then each task's native thread count (0 -> 1).

    Diagnostics (``htsr.diagnostics``, extra columns; README "Diagnostics beyond alpha"):
    mp_fit / mp_method / mp_tw_level, randomize (seeded by ``seed``), fit ('PL', 'TPL',
    'E_TPL'), tail_models, bootstrap (replicates), fix_fingers / max_fingers / finger_thresh /
    xmin_max, xmax, detX, vectors, base_model (analyse W - W_base).
    esds: a dict to fill with each row's ESD (the eigenvalues fitted, float64 ascending, scaled
        as above) keyed by ``(layer_id, slice_id)`` (``slice_id`` None when pooled), for plots.

    options: an ``AnalysisOptions`` (``htsr.options``); keywords override its fields.

    A folder of ``checkpoint-N/`` sub-folders (a training run) gives one table with a ``step``
    column (``htsr.runs.analyze_run``).  ``block`` and ``depth`` (network order, ``htsr.depth``,
    over every matrix with an id, so a selection keeps them) come from the names and config.json.
    """
    import pandas as pd
    from . import runs as _runs

    if _runs.is_run_dir(model_or_path):
        return _runs.analyze_run(model_or_path, options, esds=esds, _select=_select, **kwargs)
    opts = AnalysisOptions.build(options, **kwargs)
    if esds is not None:
        opts = opts.replace(keep_esds=True)
    pool = opts.pool
    plan = _plan(model_or_path, opts, select=_select)

    sink = None
    if opts.out is not None:
        from .results import ResultsFile
        extra = list(dict.fromkeys([k for it in plan for k in it.meta]  # source columns (LoRA r)
                                   + _diag.columns(opts)))               # diagnostics columns
        sink = ResultsFile(opts.out, opts, resume=opts.resume, extra_columns=extra)
        plan = _not_done(plan, sink.done_keys())
    total_bytes = sum(int(getattr(it.spec, "nbytes", 0) or 0) for it in plan)
    update, close_bar = make_progress(opts.progress, len(plan), total_bytes)
    emit = _Emitter(sink, update)
    try:
        if plan and opts.executor is not None:
            from .distributed import run_on_executor
            run_on_executor(model_or_path, plan, opts, emit)
        elif plan:
            _stream(plan, opts, _ItemWork(opts), emit)
    finally:
        emit.close()
        if close_bar is not None:
            close_bar()
        if sink is not None:
            sink.close()
    if esds is not None:
        esds.update(emit.esds)
    if sink is not None:
        return sink.finish()
    rows = sorted(emit.rows, key=lambda r: (r["layer_id"], r.get("slice_id", -1)))
    cols_seen = list(dict.fromkeys(c for r in rows for c in r)) if rows else []
    if not rows:
        cols_seen = [c for c in _metrics.ID_COLUMNS + _metrics.METRIC_COLUMNS
                     + _metrics.TRAILING_COLUMNS if pool is False or c != "slice_id"]
    return pd.DataFrame(rows, columns=_metrics.order_columns(cols_seen))


def _not_done(plan: list[_Item], done: set) -> list[_Item]:
    """The plan without the items whose rows are all in ``done`` (keys of ``results.row_key``)."""
    if not done:
        return plan
    out = []
    for it in plan:
        s = it.spec
        base = (it.name, int(s.N), int(s.M), int(s.rf))
        sids = it.slice_ids if it.slice_ids is not None else [-1]
        if not all(base + (sid,) in done for sid in sids):
            out.append(it)
    return out


class _Emitter:
    """Receives each finished item's rows (from any worker thread): keeps them, appends them
    to the results file (durably) and moves the progress bar.  After ``close`` (the run
    ended or was interrupted) late rows from a helper thread are dropped."""

    def __init__(self, sink, update):
        self.sink, self.update = sink, update
        self.rows: list[dict] = []
        self.esds: dict = {}            # (layer_id, slice_id) -> ESD, from keep_esds rows
        self.lock = threading.Lock()
        self.done, self.bytes_read, self.closed = 0, 0, False

    def __call__(self, item: _Item, rows: list[dict], nbytes: int | None = None):
        with self.lock:
            if self.closed:
                return
            for r in rows:
                if "_esd" in r:
                    self.esds[(r["layer_id"], r.get("slice_id"))] = r.pop("_esd")
            self.rows.extend(rows)
            if self.sink is not None:
                self.sink.append(rows)
            self.done += 1
            self.bytes_read += int(nbytes if nbytes is not None
                                   else getattr(item.spec, "nbytes", 0) or 0)
            if self.update is not None:
                self.update(self.done, self.bytes_read, item.name)

    def close(self):
        with self.lock:
            self.closed = True


def _stream(plan: list[_Item], opts: AnalysisOptions, work: Callable, emit: _Emitter):
    """Analyse the plan with no barrier: ``threads`` workers (the calling thread and
    ``threads - 1`` helper threads) each take the next matrix the reader has loaded, analyse it
    on one native thread (``work``) and emit its rows, so every core stays busy until the last
    matrix and rows reach the results file as they finish.

    The calling thread's native calls see Ctrl-C; helpers finish (and drop) their current
    matrix.  The reader holds at most ``max(prefetch, threads)`` matrices loaded ahead and
    ``max(2 x largest, (threads + 1) x median matrix, 64 MiB)`` of float32 data not yet
    released."""
    threads = opts.threads if opts.threads > 0 else (os.cpu_count() or 1)
    nworkers = max(1, min(threads, len(plan)))
    ahead = max(int(opts.prefetch), threads)
    # bytes loaded and not yet released: two of the largest matrices, and on many cores one
    # median-sized matrix per worker plus one ahead (so that every worker stays fed)
    mems = sorted(it.mem for it in plan)
    budget = max(2 * mems[-1], (nworkers + 1) * mems[len(mems) // 2], MIN_BUDGET)
    reader = Reader(plan, ahead, budget, raw_allowed(opts))
    take = threading.Lock()
    stop = threading.Event()
    failure: list[BaseException] = []

    def next_entry():
        with take:
            while not stop.is_set():
                obj = reader.get(block=True)
                if obj is Reader._END:
                    stop.set()       # also tells the other workers
                    reader.q.put(obj)
                    return None
                return obj
            return None

    def loop():
        # this thread analyses matrix after matrix: its Gram/conversion buffers are reused
        # instead of fresh memory the kernel must zero (htsr/scratch.hpp), freed at the end
        from . import _core as native
        native.set_scratch_reuse(True)
        try:
            while True:
                obj = next_entry()
                if obj is None:
                    return
                idx, payload, t_read, dtype = obj
                item = plan[idx]
                try:
                    rows = work(item, payload, t_read, dtype)
                finally:
                    if not isinstance(payload, BaseException):
                        for W in payload:     # mapped pages of analysed matrices: not needed again
                            release_mapped_pages(W)
                    del payload, obj          # drop the matrices before releasing their budget
                    reader.release(item.mem)
                emit(item, rows)
        finally:
            native.set_scratch_reuse(False)

    def helper():
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 -- re-raised by the calling thread
            failure.append(exc)
            stop.set()
            reader.q.put(Reader._END)

    helpers = [threading.Thread(target=helper, name=f"htsr-worker-{i}", daemon=True)
               for i in range(1, nworkers)]
    try:
        for h in helpers:
            h.start()
        loop()
        for h in helpers:
            h.join()
    finally:
        stop.set()
        reader.close()
    if failure:
        raise failure[0]


_FATAL = (KeyboardInterrupt, SystemExit, FileNotFoundError, MemoryError)


def _native_kwargs(opts: AnalysisOptions) -> tuple[dict, dict]:
    """(spectrum_batch keywords, fit_power_law_batch keywords) of the options."""
    spec_kw: dict[str, Any] = {"method": opts.method, "precision": opts.precision}
    if opts.method == "randomized":
        spec_kw.update(k=int(opts.k), oversample=opts.oversample,
                       power_iters=opts.power_iters, seed=opts.seed)
    fit_kw: dict[str, Any] = {"ks": opts.ks}
    if opts.ww_parity:
        fit_kw.update(floor=_metrics.EVALS_THRESH, small_n=True, every_position=True)
    if opts.device is not None:  # exact spectra through torch (htsr.backends.torch)
        spec_kw["device"] = opts.device
    return spec_kw, fit_kw


class _ItemWork:
    """One item's rows: ``_process_batch`` on ``threads`` native threads (explicit, so an
    inherited OMP_NUM_THREADS does not cap it); with ``errors='row'`` a failure (reading,
    converting, non-finite weights, native errors) becomes an error row."""

    def __init__(self, opts: AnalysisOptions, threads: int = 1):
        from . import core as _core
        self.core = _core
        self.spec_kw, self.fit_kw = _native_kwargs(opts)
        self.opts = opts.replace(threads=max(1, int(threads)), progress=None, executor=None)
        self.errors = opts.errors

    def __call__(self, item: _Item, mats, t_read: float, dtype: str | None = None) -> list[dict]:
        """``dtype``: of raw 16-bit ``mats`` (``load_matrices``), None for float32 ones."""
        if isinstance(mats, BaseException):
            if self.errors == "raise" or isinstance(mats, _FATAL):
                if isinstance(mats, _FATAL):
                    raise mats
                raise _layer_error(item, mats) from mats
            return error_rows(item, mats, t_read)
        try:
            spec_kw = self.spec_kw if dtype is None else dict(self.spec_kw, dtype=dtype)
            return _process_batch([(item, mats, t_read)], self.core, spec_kw,
                                  self.fit_kw, self.opts)
        except Exception as exc:  # noqa: BLE001 -- an error row, or re-raised
            if self.errors == "raise":
                raise
            return error_rows(item, exc, t_read)


def error_rows(item: _Item, exc: BaseException, seconds: float = 0.0) -> list[dict]:
    """The rows of a matrix that could not be analysed: ``status='error'``, ``message`` (the
    exception, naming the layer and its file), metrics NaN."""
    msg = str(exc)
    if not msg.startswith("layer '"):
        msg = str(_layer_error(item, exc))
    s = item.spec
    N, M, rf = int(s.N), int(s.M), int(s.rf)
    base = dict(item.meta, N=N, M=M, Q=N / M if M else -1.0, rf=rf, has_esd=False)
    base.update({c: float("nan") for c in _metrics.METRIC_COLUMNS})
    base.update(status="error", warning="", num_pl_spikes=0, message=msg, seconds=seconds)
    if item.slice_ids is None:
        return [dict(base, num_evals=M * rf)]
    return [dict(base, slice_id=sid, num_evals=M) for sid in item.slice_ids]


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


def _fit_units(_core, fit_inputs, items, threads, fit_kw) -> list:
    """Power-law fits of the ESDs; None (a failed-fit row) for an ESD of fewer than 2
    eigenvalues, which has no tail to fit; an error names the layer and its file."""
    fits: list = [None] * len(fit_inputs)
    todo = [i for i, ev in enumerate(fit_inputs) if ev.size >= 2]
    try:
        done = _core.fit_power_law_batch([fit_inputs[i] for i in todo], threads=threads, **fit_kw) if todo else []
    except ValueError as exc:
        m = re.match(r"\s*sample\s+(\d+)\s*:\s*", str(exc))
        if m is None or int(m.group(1)) >= len(todo):
            raise
        raise _layer_error(items[todo[int(m.group(1))]], ValueError(str(exc)[m.end():])) from exc
    for i, fit in zip(todo, done):
        fits[i] = fit
    return fits


def _process_batch(batch, _core, spec_kw, fit_kw, opts: AnalysisOptions) -> list[dict]:
    """Spectra + fits + rows for a list of (item, mats, t_read).

    All matrices of the batch go to one ``spectrum_batch`` call (same-shape matrices together;
    the native side schedules them largest first, one BLAS thread each)."""
    threads, pool, ww_parity = opts.threads, opts.pool, opts.ww_parity
    members = [(bi, si) for bi, (_item, mats, _t) in enumerate(batch) for si in range(len(mats))]
    mats = [batch[bi][1][si] for bi, si in members]
    spectra: dict[tuple[int, int], Any] = {}
    spec_time = [0.0] * len(batch)
    t0 = time.perf_counter()
    try:
        res = _core.spectrum_batch(mats, threads=threads, **spec_kw)
    except (ValueError, OverflowError) as exc:  # float32 Gram overflow: OverflowError
        text = str(exc)
        m = re.match(r"\s*matrix\s+(\d+)\s*:\s*", text)
        bad = int(m.group(1)) if m and int(m.group(1)) < len(members) else None
        if m:
            text = text[m.end():] or text
        if bad is None:
            bad = _find_bad_matrix(mats, spec_kw.get("dtype"))
        if bad is None:
            raise _layer_error(batch[0][0], type(exc)(text)) from exc
        bi, si = members[bad]
        item = batch[bi][0]
        if int(item.spec.rf) > 1:
            text = f"slice {si}: {text}"
        raise _layer_error(item, type(exc)(text)) from exc
    dt = time.perf_counter() - t0
    flops = [float(batch[bi][0].spec.N) * float(batch[bi][0].spec.M) ** 2 for bi, _ in members]
    tot = sum(flops) or 1.0
    for (bi, si), sp, fl in zip(members, res, flops):
        spectra[(bi, si)] = sp
        spec_time[bi] += dt * fl / tot
    pre = _diag.prepare(batch, members, mats, opts, spec_kw) if _diag.active(opts) else None
    del mats

    # ESDs to fit: one per pooled layer, or one per slice
    units = []   # (bi, slice list, scaled eval list, slice_id or None)
    for bi, (item, mats, _t) in enumerate(batch):
        scale = _eval_scale(item, pool, opts.conv2d_norm, opts.normalize)
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
        if not ww_parity and ev.size:
            ev = ev[ev > ev[-1] * batch[bi][0].spec.M * _EPS64]
        fit_inputs.append(np.ascontiguousarray(ev, dtype=np.float64))
    t0 = time.perf_counter()
    fits = _fit_units(_core, fit_inputs, [batch[u[0]][0] for u in units], threads, fit_kw)
    if pre is not None:
        fits, fit_extra = _diag.refit(fit_inputs, fits, [(batch[u[0]][0].layer_id, u[4]) for u in units],
                                      opts, fit_kw)
    fit_dt = (time.perf_counter() - t0) / max(len(fit_inputs), 1)

    rows = []
    per_item_units: dict[int, int] = {}
    for bi, *_ in units:
        per_item_units[bi] = per_item_units.get(bi, 0) + 1
    for ui, ((bi, evs, tr, complete, sid), fit) in enumerate(zip(units, fits)):
        item, _mats, t_read = batch[bi]
        s = item.spec
        meta = dict(item.meta)
        if sid is not None:
            meta["slice_id"] = sid
        row = _metrics.layer_row(evs, fit, meta, N=int(s.N), M=int(s.M), rf=int(s.rf),
                                 tolerance=opts.tolerance, complete=complete, trace=tr,
                                 rank_rtol=_rank_rtol(spec_kw, int(s.N), int(s.M)))
        if pre is not None:
            row.update(fit_extra[ui])
            row.update(_diag.unit_columns(opts, pre, bi, range(len(evs)) if sid is None else [sid],
                                          _eval_scale(item, pool, opts.conv2d_norm, opts.normalize),
                                          np.sort(np.concatenate(evs)), fit, row, int(s.N), int(s.M)))
        nu = per_item_units[bi]
        row["seconds"] = (t_read + spec_time[bi]) / nu + fit_dt
        if opts.keep_esds:
            row["_esd"] = evs[0] if len(evs) == 1 else np.sort(np.concatenate(evs))
        rows.append(row)
    return rows


def esd(model_or_path, layer, *, pool: bool = True, conv2d_norm: bool = True,
        normalize: bool = False, precision: str = "float64", method: str = "gram",
        split_fused: bool = True, min_evals: int = 0, threads: int = 0, k: int | None = None):
    """Sorted (ascending) eigenvalues of one layer, chosen by id (int) or exact name (str), on
    the same scale ``analyze`` fits: conv2d_norm (x1/2 pooled) and ``normalize`` applied.
    With ``pool=False`` a Conv2D layer gives a list of rf per-slice arrays (x rf/2 each)."""
    from . import core as _core

    plan = _plan(model_or_path, AnalysisOptions(layers=(layer,), min_evals=min_evals, pool=pool,
                                                split_fused=split_fused))
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
