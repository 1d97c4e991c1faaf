"""Page management of read-only file mappings (madvise): prefetch ahead, release after use."""
from __future__ import annotations

import mmap

import numpy as np


def mapped_root(a: np.ndarray):
    """The np.memmap that owns the file mapping behind ``a`` (walking ``.base``), or None."""
    b = a
    for _ in range(64):
        if b is None:
            return None
        if isinstance(b, np.memmap) and isinstance(getattr(b, "base", None), mmap.mmap):
            return b
        b = getattr(b, "base", None)
    return None


def _advise_mapped_pages(a: np.ndarray, advice: int) -> None:
    """madvise(advice) the whole pages behind ``a`` when it views a read-only file mapping."""
    root = mapped_root(a) if isinstance(a, np.ndarray) else None
    if root is None or not (root.mode in ("r", "c") or not root.flags.writeable):
        return
    mm = root.base
    if not hasattr(mm, "madvise"):
        return
    page = mmap.PAGESIZE
    mm_addr = root.ctypes.data - int(getattr(root, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    lo, hi = byte_bounds(a)
    start = max(0, (lo - mm_addr) // page * page)
    length = min(hi - mm_addr, len(mm)) - start
    if length > 0:
        try:
            mm.madvise(advice, start, length)
        except (OSError, ValueError):
            pass


def release_mapped_pages(a: np.ndarray) -> None:
    """Drop the resident pages behind ``a`` (a view of a read-only file mapping whose values were
    already used, copied or converted): a long-lived whole-file mapping would otherwise keep
    every page read resident, and RSS would grow with the checkpoint."""
    if hasattr(mmap, "MADV_DONTNEED"):
        _advise_mapped_pages(a, mmap.MADV_DONTNEED)


def prefetch_mapped_pages(a: np.ndarray) -> None:
    """Ask the kernel to read the pages behind ``a`` ahead (MADV_WILLNEED, asynchronous)."""
    if hasattr(mmap, "MADV_WILLNEED"):
        _advise_mapped_pages(a, mmap.MADV_WILLNEED)
