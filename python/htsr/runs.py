"""Training runs: a folder of checkpoints analysed into one table, and in-training monitoring.

* ``analyze_run(RUN_DIR)``: every ``checkpoint-500/``, ``checkpoint-1000/`` ... (also
  ``step-N``, ``step_N``, ``global_stepN``, ``iter-N``, ``ckpt-N``) analysed in step order, one
  table with a ``step`` column.  ``htsr.analyze`` calls it for such folders.
* ``Monitor`` / ``htsr.monitor(model, step)``: every ``every`` steps, a snapshot of the weights
  (copied to CPU float32 numpy on the calling thread -- the only time training waits) is
  analysed in one background thread; alpha per layer and the summary metrics go to a CSV
  (``<logdir>/htsr.csv``, one row per layer and step) and to TensorBoard
  (``torch.utils.tensorboard.SummaryWriter`` when importable: ``htsr/alpha/<layer>``,
  ``htsr/summary/<metric>``, ``htsr/over_trained``, ``htsr/under_trained``).  While an
  analysis runs, a new request is skipped (counted in ``skipped``), so snapshots never pile up.
"""
from __future__ import annotations

import csv
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

__all__ = ["checkpoint_dirs", "is_run_dir", "analyze_run", "Monitor", "monitor"]

_CKPT = re.compile(r"^(?:checkpoint|step|global_step|iter|ckpt)[-_]?(\d+)$")
_LOG_COLUMNS = ("step", "layer_id", "name", "depth", "alpha", "D", "log_norm",
                "log_spectral_norm", "stable_rank", "warning")


def checkpoint_dirs(run_dir) -> list[tuple[int, str]]:
    """``[(step, path), ...]`` of the checkpoint sub-folders of ``run_dir``, by step."""
    run_dir = os.fspath(run_dir)
    out = []
    for e in os.listdir(run_dir):
        m = _CKPT.match(e)
        p = os.path.join(run_dir, e)
        if m and os.path.isdir(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def is_run_dir(path) -> bool:
    """A folder with checkpoint sub-folders and no weights of its own."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        return False
    weights = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".gguf", ".onnx")
    if any(f.endswith(weights) for f in os.listdir(path)):
        return False
    return bool(checkpoint_dirs(path))


def analyze_run(run_dir, options=None, *, esds: dict | None = None, **analyze_kw):
    """One table over all checkpoints of ``run_dir`` with ``step`` after ``layer_id``;
    ``esds`` (see ``analyze``) is filled for the last checkpoint only; ``out=`` receives the
    whole table at the end (no per-matrix streaming or ``resume`` across a run)."""
    import pandas as pd
    from .analysis import analyze
    ckpts = checkpoint_dirs(run_dir)
    out = analyze_kw.pop("out", None) or getattr(options, "out", None)
    if analyze_kw.pop("resume", False) or getattr(options, "resume", False):
        raise ValueError(f"{run_dir}: resume= works per checkpoint; analyze each checkpoint-N/ "
                         "with its own out=")
    if options is not None:
        options = options.replace(out=None)
    if not ckpts:
        raise ValueError(f"{run_dir}: no checkpoint-N sub-folders")
    frames = []
    for i, (step, path) in enumerate(ckpts):
        try:
            df = analyze(path, options, esds=esds if i == len(ckpts) - 1 else None, **analyze_kw)
        except ValueError as exc:
            raise ValueError(f"{path} (step {step}): {exc}") from exc
        df.insert(1, "step", step)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if out is not None:
        _write_table(table, os.fspath(out))
    return table


def _write_table(df, out: str):
    ext = os.path.splitext(out)[1].lower()
    if ext in (".csv", ".tsv"):
        df.to_csv(out, index=False, sep="\t" if ext == ".tsv" else ",")
    elif ext in (".json", ".jsonl"):
        df.to_json(out, orient="records", lines=ext == ".jsonl", indent=None if ext == ".jsonl" else 1)
    elif ext == ".parquet":
        df.to_parquet(out, index=False)
    else:
        raise ValueError(f"{out}: unknown table format {ext!r}")


# ------------------------------------------------------------------------------ monitoring
def _snapshot(model) -> dict:
    """CPU float32 numpy copies of every weight with >= 2 dims (a module, or a state_dict)."""
    sd = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    out = {}
    for k, v in sd.items():
        if getattr(v, "ndim", 0) < 2:
            continue
        if hasattr(v, "detach"):
            v = v.detach().to("cpu").float().numpy()
        out[k] = np.array(v, dtype=np.float32, copy=True)
    return out


class Monitor:
    """Analyse a model every ``every`` steps in a background thread; log to CSV and TensorBoard.

    ``logdir``: folder for ``htsr.csv`` and the TensorBoard events; ``tensorboard``: True
    (when importable), False, or a ``SummaryWriter``-like object (``add_scalar``);
    ``analyze_kw``: options for ``htsr.analyze`` (default ``precision='float32'``, 1 thread).
    ``results`` holds every analysed row (with ``step``)."""

    def __init__(self, logdir: str = "htsr-logs", *, every: int = 1, csv_file: bool = True,
                 tensorboard=True, **analyze_kw):
        if int(every) < 1:
            raise ValueError(f"Monitor: every must be >= 1, got {every}")
        self.logdir, self.every = os.fspath(logdir), int(every)
        os.makedirs(self.logdir, exist_ok=True)
        self.csv_path = os.path.join(self.logdir, "htsr.csv") if csv_file else None
        self.analyze_kw = {"precision": "float32", "threads": 1, **analyze_kw}
        self.writer = None
        if tensorboard is True:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(self.logdir)
            except Exception:  # noqa: BLE001 -- tensorboard optional
                self.writer = None
        elif tensorboard:
            self.writer = tensorboard
        self.skipped = 0
        self.frames: list = []
        self.errors: list = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-monitor")
        self._busy: Future | None = None
        self._lock = threading.Lock()

    def __call__(self, model, step: int) -> Future | None:
        """Snapshot and queue an analysis when ``step % every == 0`` and none is running;
        returns its Future (result: the step's table) or None."""
        step = int(step)
        if step % self.every:
            return None
        with self._lock:
            if self._busy is not None and not self._busy.done():
                self.skipped += 1
                return None
            snap = _snapshot(model)
            self._busy = self._pool.submit(self._analyze, snap, step)
            return self._busy

    def _analyze(self, snap: dict, step: int):
        from .analysis import analyze
        from .metrics import summary
        try:
            df = analyze(snap, **self.analyze_kw)
        except Exception as exc:  # noqa: BLE001 -- kept for the caller, training goes on
            self.errors.append((step, exc))
            raise
        df.insert(1, "step", step)
        self.frames.append(df)
        if self.csv_path:
            new = not os.path.exists(self.csv_path)
            with open(self.csv_path, "a", newline="") as fh:
                w = csv.writer(fh)
                if new:
                    w.writerow(_LOG_COLUMNS)
                for r in df[[c for c in _LOG_COLUMNS if c in df.columns]].itertuples(index=False):
                    w.writerow(r)
        if self.writer is not None:
            for name, a in zip(df["name"], df["alpha"]):
                if np.isfinite(a):
                    self.writer.add_scalar(f"htsr/alpha/{name}", float(a), step)
            for k, v in summary(df).items():
                self.writer.add_scalar(f"htsr/summary/{k}", float(v), step)
            self.writer.add_scalar("htsr/over_trained", int((df["warning"] == "over-trained").sum()), step)
            self.writer.add_scalar("htsr/under_trained", int((df["warning"] == "under-trained").sum()), step)
            if hasattr(self.writer, "flush"):
                self.writer.flush()
        return df

    def wait(self):
        """Block until the running analysis (if any) is done; re-raises its error."""
        busy = self._busy
        if busy is not None:
            busy.result()

    @property
    def results(self):
        import pandas as pd
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def close(self):
        """Wait for the running analysis, close the TensorBoard writer."""
        self._pool.shutdown(wait=True)
        if self.writer is not None and hasattr(self.writer, "close"):
            self.writer.close()


_MONITORS: dict = {}


def monitor(model, step: int, *, logdir: str = "htsr-logs", every: int = 100, **kw):
    """``htsr.monitor(model, step)`` in a training loop: one shared :class:`Monitor` per
    ``logdir`` (created on first call with ``every`` and ``kw``); returns its Future or None.
    ``htsr.runs.monitor.get(logdir)`` gives the Monitor (``.results``, ``.close()``)."""
    key = os.path.abspath(logdir)
    mon = _MONITORS.get(key)
    if mon is None:
        mon = _MONITORS[key] = Monitor(logdir, every=every, **kw)
    return mon(model, step)


monitor.get = lambda logdir="htsr-logs": _MONITORS.get(os.path.abspath(logdir))  # type: ignore[attr-defined]
