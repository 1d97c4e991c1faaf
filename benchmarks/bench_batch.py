"""Batch throughput: htsr.eigenvalues_batch over 64 mixed float32 matrices, threads=1 vs all cores.

    python benchmarks/bench_batch.py              # shapes of bench_eigenvalues.py scaled by 1/4
    python benchmarks/bench_batch.py --scale 0.5  # bigger (about 8x the work)
    pytest benchmarks/bench_batch.py              # pytest-benchmark row

The 64 shapes are drawn (seeded) from 768^2, 3072x768, 4096x1024, 2048^2, 4096^2, 11008x4096, each
dimension multiplied by --scale. Rows: htsr batch (OpenMP across matrices, one BLAS thread each)
with threads=1 and threads=0 (all cores); a Python loop of htsr.eigenvalues with one BLAS thread
and with all BLAS threads (parallelism inside each matrix); scipy eigvalsh(W.T @ W) in a loop,
pinned to one thread and unpinned. Times are the best of --repeat runs, measured in this run; the
batch results are checked bitwise against the one-by-one loop.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys

import numpy as np
import scipy.linalg

import htsr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_time  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

BASE_SHAPES = [(768, 768), (3072, 768), (4096, 1024), (2048, 2048), (4096, 4096), (11008, 4096)]


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


def make_batch(count=64, scale=0.25, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [BASE_SHAPES[i] for i in rng.integers(0, len(BASE_SHAPES), count)]
    shapes = [(max(1, int(r * scale)), max(1, int(c * scale))) for r, c in shapes]
    # transpose some so the batch also holds wide matrices
    shapes = [(c, r) if rng.random() < 0.25 else (r, c) for r, c in shapes]
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)

    Ws = make_batch(args.count, args.scale)
    flops = sum(max(W.shape) * min(W.shape) ** 2 + 4 / 3 * min(W.shape) ** 3 for W in Ws)  # SYRK + tridiagonalisation
    mb = sum(W.nbytes for W in Ws) / 2**20
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_batch  python {platform.python_version()}  numpy {np.__version__}  cores {os.cpu_count()}  load {load:.2f}")
    print(f"# {len(Ws)} float32 matrices, scale {args.scale}: {mb:.0f} MiB, shapes "
          f"{sorted({W.shape for W in Ws})}, ~{flops / 1e9:.0f} GFLOP (SYRK + 4/3 M^3)")

    htsr.eigenvalues_batch(Ws[:4], threads=0)  # warm up the OpenMP pool
    rows = []
    with one_thread():
        t, loop1 = best_time(lambda: [htsr.eigenvalues(W, threads=1) for W in Ws], args.repeat)
        rows.append(("htsr.eigenvalues loop, 1 BLAS thread", t))
        t, b1 = best_time(lambda: htsr.eigenvalues_batch(Ws, threads=1), args.repeat)
        rows.append(("htsr.eigenvalues_batch threads=1", t))
    t, bN = best_time(lambda: htsr.eigenvalues_batch(Ws, threads=0), args.repeat)
    rows.append(("htsr.eigenvalues_batch threads=0 (all)", t))
    t, loopN = best_time(lambda: [htsr.eigenvalues(W, threads=0) for W in Ws], args.repeat)
    rows.append(("htsr.eigenvalues loop, all BLAS threads", t))
    with one_thread():
        t, _ = best_time(lambda: [scipy.linalg.eigvalsh(W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T) for W in Ws], 1)
        rows.append(("scipy eigvalsh(W.T@W) loop, 1 thread", t))
    t, sc = best_time(lambda: [scipy.linalg.eigvalsh(W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T) for W in Ws], 1)
    rows.append(("scipy eigvalsh(W.T@W) loop, all threads", t))

    same = all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(loop1, b1, bN))
    err = max(float(np.max(np.abs(a - np.clip(np.sort(s), 0, None))) / s.max()) for a, s in zip(bN, sc))
    base = dict(rows)["htsr.eigenvalues_batch threads=1"]

    print()
    print("| run | wall time | matrices / s | GFLOP/s | speedup vs batch threads=1 |")
    print("|---|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} s | {len(Ws) / t:.1f} | {flops / t / 1e9:.1f} | {base / t:.2f}x |")
    print()
    print(f"batch == one-by-one (bitwise, threads=1 and all): {same}; "
          f"max |dlambda|/lambda_max vs scipy eigvalsh: {err:.1e}")
    return rows


def test_bench_batch(benchmark):
    Ws = make_batch(16, 0.125)
    out = benchmark.pedantic(lambda: htsr.eigenvalues_batch(Ws, threads=0), rounds=3)
    assert len(out) == 16


if __name__ == "__main__":
    main()
