"""Per-matrix tasks on any ``concurrent.futures.Executor`` (a Dask cluster, a process pool, Ray).

``htsr.analyze(path, executor=ex)`` submits one task per matrix, largest first.  A task
receives ``(checkpoint path, layer_id, row name, options)`` -- never an array: the worker opens
the checkpoint itself (shared storage), reads only that matrix (memory-mapped shards), analyses
it on ``threads`` native threads (passed explicitly, so the ``OMP_NUM_THREADS=1`` /
``OPENBLAS_NUM_THREADS=1`` a Dask nanny sets does not cap it; default 1: one single-threaded
worker per core) and returns its rows (a few hundred bytes).  Rows are emitted as tasks
finish, into the same resumable results file as a local run.  The worker caches the layer list
of a checkpoint (metadata only) across tasks.

With Dask, ``cli_executor('dask', ...)`` returns ``client.get_executor(retries=3, pure=False)``:
a task on a worker that dies is run again elsewhere (Dask's ``allowed-failures`` and the task
retries), so a killed worker loses nothing.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import time

from .options import AnalysisOptions

__all__ = ["run_on_executor", "analyse_task", "cli_executor"]

TASK_RETRIES = 3


def _cost(item) -> float:
    """Flops of a matrix (Gram N M^2 + tridiagonalisation 4/3 M^3, per slice): largest first."""
    s = item.spec
    N, M, rf = float(s.N), float(s.M), float(s.rf)
    return rf * (N * M * M + 4.0 / 3.0 * M ** 3)


@functools.lru_cache(maxsize=8)
def _worker_plan(path: str, min_evals: int, pool: bool, split_fused: bool) -> dict:
    """layer_id -> plan item of a checkpoint (metadata only), cached per worker process."""
    from .analysis import _plan
    opts = AnalysisOptions(min_evals=min_evals, pool=pool, split_fused=split_fused)
    return {it.layer_id: it for it in _plan(path, opts)}


def analyse_task(path: str, layer_id: int, name: str, opts: AnalysisOptions,
                 threads: int = 1) -> list[dict]:
    """The rows of one matrix, computed where this runs (a worker): reads the matrix from
    ``path`` and analyses it on ``threads`` native threads."""
    from .analysis import _ItemWork, raw_allowed, release_mapped_pages
    from .reader import load_matrices
    items = _worker_plan(os.fspath(path), opts.min_evals, opts.pool, opts.split_fused)
    item = items.get(layer_id)
    if item is None or item.name != name:
        raise ValueError(f"{path}: layer_id {layer_id} is not {name!r} on this worker "
                         "(a different checkpoint at the same path?)")
    t0 = time.perf_counter()
    dtype = None
    try:
        mats, dtype = load_matrices(item.spec, raw_allowed(opts))
    except Exception as exc:  # noqa: BLE001 -- an error row (or raised) by _ItemWork
        mats = exc
    try:
        return _ItemWork(opts, threads=threads)(item, mats, time.perf_counter() - t0, dtype)
    finally:
        if not isinstance(mats, BaseException):
            for W in mats:
                release_mapped_pages(W)


def run_on_executor(model_or_path, plan: list, opts: AnalysisOptions, emit) -> None:
    """Submit one ``analyse_task`` per plan item to ``opts.executor`` (largest first) and
    ``emit(item, rows)`` as each finishes.  ``opts.threads`` is each task's native thread count
    (0 -> 1).  With ``errors='raise'`` the first failing task's exception is raised (the other
    tasks are cancelled); Ctrl-C cancels the pending tasks."""
    if not isinstance(model_or_path, (str, bytes)) and not hasattr(model_or_path, "__fspath__"):
        raise ValueError("executor= needs a checkpoint path that the workers can read, not an "
                         f"in-memory {type(model_or_path).__name__}")
    path = os.path.abspath(os.fspath(model_or_path))
    task_opts = opts.replace(progress=None, executor=None, out=None, resume=False, layers=(),
                             names=(), exclude=(), layer_types=())
    threads = opts.threads if opts.threads > 0 else 1
    futures = {}
    try:
        for item in sorted(plan, key=_cost, reverse=True):
            fut = opts.executor.submit(analyse_task, path, item.layer_id, item.name, task_opts,
                                       threads)
            futures[fut] = item
        for fut in cf.as_completed(futures):
            emit(futures[fut], fut.result())
    finally:
        for fut in futures:
            fut.cancel()


@contextlib.contextmanager
def cli_executor(kind: str, scheduler: str | None = None, local_cluster: int | None = None,
                 threads: int = 0):
    """The executor of ``htsr analyze --executor``: None for ``threads`` (in process), else a
    Dask client's executor (``--scheduler ADDRESS`` or ``--local-cluster N`` single-threaded
    worker processes on 127.0.0.1), closed on exit."""
    if kind != "dask":
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--executor dask needs the 'distributed' package "
                         "(pip install 'dask[distributed]')") from None
    with contextlib.ExitStack() as stack:
        if local_cluster is not None:
            if local_cluster < 1:
                raise ValueError(f"--local-cluster needs N >= 1 workers, got {local_cluster}")
            cluster = stack.enter_context(LocalCluster(
                n_workers=local_cluster, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler, timeout="60s"))
        yield client.get_executor(retries=TASK_RETRIES, pure=False)
