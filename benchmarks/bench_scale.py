"""LLM-scale analyze: wall time against the native floor, peak RSS, read rate, and the
WeightWatcher 0.7.7 estimate, all measured in the same run.

    python benchmarks/make_checkpoint.py ../ckpt/tinyllama --preset tinyllama
    python benchmarks/bench_scale.py ../ckpt/tinyllama --precision float32
    python benchmarks/bench_scale.py ../ckpt/llama7b --precision float32 --names 'layers\\.[0-3]\\.'
    python benchmarks/bench_scale.py ../ckpt/llama7b --compare-precision 'layers\\.0\\.|lm_head'

* wall: ``htsr.analyze`` in a fresh child process (``--threads``, default all cores), from
  the first byte read to the DataFrame; peak RSS is the child's VmHWM.
* native floor: for each distinct matrix shape, ``htsr.spectrum`` (Gram + eigensolve, the
  same precision, one thread, BLAS pinned to one thread) of an in-memory heavy-tailed float32
  matrix, measured once before and once after the analysis (the mean is used: the machine
  is shared), times the number of matrices of that shape, divided by the threads used.
  The same in CPU seconds is compared with the child's CPU time (user + system): on a
  machine shared with other jobs that ratio still says how much work the pipeline adds.
* MB/s: bytes the analysis read from the checkpoint / wall (warm page cache if the
  checkpoint was just written).
* WeightWatcher estimate: WeightWatcher 0.7.7 computes ``RMT_Util.svd_vals`` (a float64
  ``scipy.linalg.svd(W, compute_uv=False)``, LAPACK gesdd) per matrix, one matrix at a time
  with all BLAS threads; that call is timed once per distinct shape on a float64 copy and
  multiplied by the count (its fits and bookkeeping are left out, so the estimate is low).
  WeightWatcher skips N > 50000 or M > 15000 by default; none of these shapes is skipped.
* ``--compare-precision REGEX``: the selected matrices analysed in float32 and float64
  (in process), with the largest differences of every metric column.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

CHILD = """
import json, resource, sys, time
import htsr, pandas
path, precision, threads, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
df = htsr.analyze(path, precision=precision, threads=threads, names=names, errors="row")
wall = time.perf_counter() - t0
with open("/proc/self/status") as f:
    hwm = int(next(l.split()[1] for l in f if l.startswith("VmHWM:")))
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "rss_kb": hwm, "rows": len(df), "cpu": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime,
                  "errors": int((df["status"] == "error").sum()),
                  "row_seconds": float(df["seconds"].sum())}))
"""


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _shape_times(shapes, fn):
    """(wall, CPU) seconds of fn(W) per shape, on a heavy-tailed float32 W (the cost is
    data-independent)."""
    import numpy as np
    rng = np.random.default_rng(0)
    wall, cpu = {}, {}
    for N, M in shapes:
        W = (rng.standard_t(3, size=(N, M)) / np.sqrt(M)).astype(np.float32)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(W)
        wall[(N, M)], cpu[(N, M)] = time.perf_counter() - t0, time.process_time() - c0
        del W
    return wall, cpu


def native_floor(shapes, precision):
    """(wall, CPU) seconds of one single-threaded Gram + eigensolve per shape."""
    import htsr
    from threadpoolctl import threadpool_limits
    fn = lambda W: htsr.spectrum(W, precision=precision, threads=1)  # noqa: E731
    with threadpool_limits(limits=1):
        return _shape_times(shapes, fn)


def ww_svd_times(shapes):
    import numpy as np
    from weightwatcher.RMT_Util import svd_vals
    return _shape_times(shapes, lambda W: svd_vals(W.astype(np.float64)))


def compare_precision(path, names):
    import numpy as np
    import htsr
    r = {}
    htsr.analyze(path, names=names, max_N=1, min_evals=0)      # warm imports and page cache
    for p in ("float32", "float64"):
        t0, c0 = time.perf_counter(), time.process_time()
        r[p] = htsr.analyze(path, names=names, precision=p)
        r[p + "_wall"], r[p + "_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    a, b = r["float32"], r["float64"]
    print(f"precision comparison on {len(a)} matrices ({names}): float32 {r['float32_wall']:.1f} s "
          f"wall, {r['float32_cpu']:.1f} s CPU; float64 {r['float64_wall']:.1f} s wall, "
          f"{r['float64_cpu']:.1f} s CPU (CPU x{r['float64_cpu'] / r['float32_cpu']:.2f})")
    for col in ("alpha", "D", "xmin", "lambda_max", "log_norm", "stable_rank", "alpha_weighted",
                "entropy", "sv_min", "matrix_rank", "rank_loss", "weak_rank_loss", "num_pl_spikes"):
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        d = np.abs(x - y)
        rel = d / np.maximum(np.abs(y), 1e-300)
        print(f"  {col:<16} max |f32-f64| {np.nanmax(d):.3g}  max rel {np.nanmax(rel):.3g}  "
              f"rows differing {int(np.sum(d > 0))}/{len(d)}")
    return a, b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--precision", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--names", default=None, help="regex: analyse only these matrices")
    ap.add_argument("--no-ww", action="store_true")
    ap.add_argument("--compare-precision", metavar="REGEX", default=None)
    a = ap.parse_args(argv)
    import htsr
    if a.compare_precision:
        print(f"load {_load()}")
        compare_precision(a.path, a.compare_precision)
        print(f"load {_load()}")
        return 0

    threads = a.threads or os.cpu_count()
    d = htsr.describe(a.path, names=a.names)
    counts = Counter(zip(d["N"], d["M"]))
    selected = set(d["name"])
    nbytes = sum(int(s.nbytes) for s in htsr.iter_layers(a.path) if s.longname in selected)
    params = int((d["N"] * d["M"] * d["rf"]).sum())
    shapes = sorted(counts, key=lambda s: -s[0] * s[1])
    print(f"{a.path}: {len(d)} matrices, {params / 1e9:.3f} B parameters in them, "
          f"{len(shapes)} distinct shapes, precision {a.precision}, {threads} threads")
    from htsr.bench import blas_summary
    import scipy.linalg  # noqa: F401  (WeightWatcher's svd_vals runs on scipy's BLAS: list it too)
    print(blas_summary())
    print(f"load before: {_load()}")
    f1, c1 = native_floor(shapes, a.precision)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, a.path, a.precision, str(a.threads),
                        a.names or ""], capture_output=True, text=True)
    if r.returncode:
        print(r.stderr)
        return 1
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"load after analyze: {_load()} (child {time.perf_counter() - t0:.1f} s)")
    f2, c2 = native_floor(shapes, a.precision)
    per = {s: (f1[s] + f2[s]) / 2 for s in shapes}
    floor = sum(per[s] * counts[s] for s in shapes) / threads
    floor_cpu = sum((c1[s] + c2[s]) / 2 * counts[s] for s in shapes)
    wall = res["wall"]
    print(f"\n{'shape':>14} {'count':>5} {'floor wall s (before/after)':>28} {'CPU s (before/after)':>22}")
    for s in shapes:
        print(f"{s[0]:>7}x{s[1]:<6} {counts[s]:>5} {f1[s]:>13.3f} / {f2[s]:<12.3f} "
              f"{c1[s]:>9.3f} / {c2[s]:<9.3f}")
    print(f"\nwall                 {wall:9.1f} s  ({res['rows']} rows, {res['errors']} errors)")
    print(f"native floor         {floor:9.1f} s  (sum of per-matrix Gram+eigensolve / {threads})")
    print(f"wall / floor         {wall / floor:9.2f}")
    print(f"CPU: analyze child   {res['cpu']:9.1f} s  vs floor {floor_cpu:.1f} s CPU "
          f"(ratio {res['cpu'] / floor_cpu:.2f}: the pipeline's work beyond Gram+eigensolve, "
          "insensitive to other processes' load)")
    print(f"peak RSS             {res['rss_kb'] / 1024:9.0f} MB")
    print(f"read                 {nbytes / 1e6 / wall:9.0f} MB/s  ({nbytes / 1e9:.2f} GB checkpoint"
          + (", selection only" if a.names else "") + ")")
    print(f"per B parameters     {wall / (params / 1e9):9.1f} s on {threads} threads")
    if not a.no_ww:
        ww, ww_cpu = ww_svd_times(shapes)
        est = sum(ww[s] * counts[s] for s in shapes)
        est_cpu = sum(ww_cpu[s] * counts[s] for s in shapes)
        print(f"WeightWatcher est.   {est:9.1f} s  (float64 svd_vals per shape x count, all BLAS "
              "threads: " + ", ".join(f"{s[0]}x{s[1]} {ww[s]:.2f}s x{counts[s]}" for s in shapes)
              + ")")
        print(f"WW est. / wall       {est / wall:9.1f}x")
        print(f"WW est. CPU          {est_cpu:9.1f} s  (CPU / htsr child CPU: "
              f"{est_cpu / res['cpu']:.1f}x; on a quiet machine WeightWatcher's wall is at least "
              f"its CPU / {threads})")
    print(f"load end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
