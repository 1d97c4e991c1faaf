"""Timing helper shared by the benchmark scripts (run them from any directory)."""
from __future__ import annotations

import time


def best_time(f, repeat):
    """(best wall time over ``repeat`` calls of f, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out
