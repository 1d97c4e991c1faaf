"""The analysis pipeline's reader thread: loads the planned matrices ahead of the native work,
bounded both in count (``ahead``) and in bytes of float32 data loaded but not yet released
(``budget``), so memory is bounded by a few matrices, not by the model."""
from __future__ import annotations

import queue
import threading
import time

from .sources import prefetch_mapped_pages

__all__ = ["Reader", "MIN_BUDGET", "load_matrices"]

MIN_BUDGET = 64 << 20   # bytes in flight allowed however small the matrices


def load_matrices(spec, raw: bool) -> tuple[list, str | None]:
    """(the spec's matrices, their ``spectrum_batch`` dtype): ``load_raw()`` when ``raw`` and
    the spec has it (uint16 patterns, 'bfloat16' | 'float16'), else ``load()`` (float32, None)."""
    if raw and getattr(spec, "load_raw", None) is not None:
        mats, dtype = spec.load_raw()
        return list(mats), dtype
    mats = spec.load()
    return (list(mats) if isinstance(mats, (list, tuple)) else [mats]), None


def _prefetch(mats: list) -> list:
    """In the reader thread: start reading memory-mapped matrices from storage (MADV_WILLNEED)
    so the I/O overlaps the native work on earlier ones. The native code then reads the mapped
    float32 data in place (no copy) and the main thread drops the pages once the batch is done
    (``release_mapped_pages``), so resident memory stays bounded by the matrices in flight."""
    for W in mats:
        prefetch_mapped_pages(W)
    return mats


class Reader:
    """Loads plan items in a background thread, at most ``ahead`` items loaded (or loading) but
    not yet taken by the main thread, and at most ``budget`` bytes of float32 matrices loaded
    but not yet released (always at least one item)."""

    _END = object()

    def __init__(self, plan: list, ahead: int, budget: int, raw: bool = False):
        self.plan, self.ahead_max, self.budget = plan, max(1, int(ahead)), budget
        self.raw = raw          # load_matrices(raw=): 16-bit weights as stored
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
                    while not self.stop.is_set() and (
                            self.ahead >= self.ahead_max
                            or (self.inflight > 0 and self.inflight + mem > self.budget)):
                        self.cond.wait(0.5)
                    if self.stop.is_set():
                        return
                    self.ahead += 1
                    self.inflight += mem
                t0 = time.perf_counter()
                try:
                    mats, dtype = load_matrices(it.spec, self.raw)
                    mats = _prefetch(mats)
                except Exception as exc:  # noqa: BLE001 -- an error row or re-raised by a worker
                    self.q.put((idx, exc, 0.0, None))
                    continue
                except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread
                    self.q.put((idx, exc, 0.0, None))
                    return
                self.q.put((idx, mats, time.perf_counter() - t0, dtype))
                del mats
        finally:
            self.q.put(self._END)

    def get(self, block=True):
        obj = self.q.get(block=block)
        if obj is not self._END:
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
