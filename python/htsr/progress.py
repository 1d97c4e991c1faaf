"""Progress reporting of long analyses: a tqdm bar when tqdm is installed, else a plain bar on
stderr, or the caller's ``callable(done, total, bytes_read, name)``.  Rate and ETA follow the
bytes read (steady when matrix sizes vary)."""
from __future__ import annotations

import sys
import time

__all__ = ["make_progress"]


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
        # ETA by bytes read (~ matrix sizes), not matrix count: steady when sizes vary
        if self.total_bytes and nbytes:
            eta = el / nbytes * (self.total_bytes - nbytes)
        else:
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
    """tqdm over the bytes to read (its rate and ETA follow matrix sizes, which vary 100x in
    an LLM), matrices done as postfix."""

    def __init__(self, total: int, total_bytes: int):
        from tqdm.auto import tqdm
        self.by_bytes = total_bytes > 0
        self.bar = tqdm(total=total_bytes if self.by_bytes else total,
                        unit="B" if self.by_bytes else "mat", unit_scale=self.by_bytes,
                        file=sys.stderr, desc="htsr", dynamic_ncols=True, leave=True)
        self.total, self.pos = total, 0

    def update(self, done: int, nbytes: int, name: str):
        self.bar.set_postfix_str(f"{done}/{self.total} matrices", refresh=False)
        pos = nbytes if self.by_bytes else done
        self.bar.update(pos - self.pos)
        self.pos = pos

    def close(self):
        self.bar.close()


def make_progress(progress, total: int, total_bytes: int):
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
