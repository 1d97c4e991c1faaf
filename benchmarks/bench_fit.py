"""Power-law fit speed: htsr.fit_power_law vs powerlaw 2.0.0 (powerlaw.Fit) and WeightWatcher 0.7.7 (WWFit).

    python benchmarks/bench_fit.py            # n = 1e3, 4096, 1e4, 1e5 (powerlaw up to 1e4)
    python benchmarks/bench_fit.py --full     # also powerlaw at n = 1e5 (minutes)
    pytest benchmarks/bench_fit.py            # pytest-benchmark rows for htsr only

Data: Pareto alpha = 2.5, x = (1 - u)^(-1/(alpha-1)), numpy default_rng(1) (power_law_fitting.md §5).
htsr rows: best of several runs, one thread (threads=1 and BLAS pinned by threadpoolctl) and all
cores (threads=0). Oracles run once (single-threaded code). Ratios are oracle time / htsr
single-thread time, measured in the same run. Answers are compared in the same run: htsr
ks='distinct' vs powerlaw.Fit, htsr ks='all_points' vs WWFit (xmin equal, |d alpha|, |d D|).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import warnings

import numpy as np

import htsr

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def pareto(n: int, alpha: float = 2.5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1 - rng.random(n)) ** (-1 / (alpha - 1))


def quiet(f, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*a, **k)


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


def best_time(f, repeat: int, budget: float = 5.0):
    """Best wall time of up to `repeat` runs (stops early once `budget` seconds are spent)."""
    best, out, spent = float("inf"), None, 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > budget:
            break
    return best, out


def run_powerlaw(x):
    import powerlaw

    def fit():
        p = powerlaw.Fit(x, verbose=False)
        p.power_law
        return p

    return quiet(fit)


def run_ww(x):
    from weightwatcher.WW_powerlaw import WWFit

    return quiet(WWFit, x)


def fmt_t(t):
    if t is None:
        return "-"
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def fmt_r(r):
    return "-" if r is None else f"{r:,.0f}x"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="also run powerlaw.Fit at n = 1e5 (several minutes)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 4096, 10000, 100000])
    args = ap.parse_args(argv)

    pl_sizes = {1000, 10000} | ({100000} if args.full else set())
    ww_sizes = {1000, 4096, 10000}
    try:
        import powerlaw  # noqa: F401
    except ImportError:
        pl_sizes = set()
    try:
        from weightwatcher.WW_powerlaw import WWFit  # noqa: F401
    except ImportError:
        ww_sizes = set()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_fit  python {platform.python_version()}  numpy {np.__version__}  cores {os.cpu_count()}  "
          f"load {load:.2f}  Pareto alpha=2.5 seed 1")
    htsr.fit_power_law(pareto(20000), threads=0)  # warm up the OpenMP pool
    head = ("| n | htsr all_points 1T | htsr all_points all | htsr distinct 1T | powerlaw 2.0.0 | speedup vs powerlaw "
            "| WWFit 0.7.7 | speedup vs WWFit | agreement |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    results = {}
    for n in args.sizes:
        x = pareto(n)
        reps = 20 if n <= 10000 else 3
        with one_thread():
            t_ap1, ap1 = best_time(lambda: htsr.fit_power_law(x, threads=1), reps)
            t_di1, di1 = best_time(lambda: htsr.fit_power_law(x, ks="distinct", threads=1), reps)
        t_apN, apN = best_time(lambda: htsr.fit_power_law(x, threads=0), reps)
        assert apN.to_dict() == ap1.to_dict()
        notes = []
        t_pl = r_pl = t_ww = r_ww = None
        if n in pl_sizes:
            with one_thread():
                t_pl, p = best_time(lambda: run_powerlaw(x), 1)
            r_pl = t_pl / t_di1
            notes.append(f"pl: xmin {'==' if p.xmin == di1.xmin else '!='}, "
                         f"dα {abs(p.alpha - di1.alpha):.0e}, dD {abs(p.D - di1.D):.0e}")
        if n in ww_sizes:
            with one_thread():
                t_ww, w = best_time(lambda: run_ww(x), 3 if n <= 4096 else 1)
            r_ww = t_ww / t_ap1
            notes.append(f"WW: xmin {'==' if w.xmin == ap1.xmin else '!='}, "
                         f"dα {abs(w.alpha - ap1.alpha):.0e}, dD {abs(w.D - ap1.D):.0e}")
        results[n] = dict(ap1=t_ap1, apN=t_apN, di1=t_di1, pl=t_pl, ww=t_ww, r_pl=r_pl, r_ww=r_ww)
        print(f"| {n:,} | {fmt_t(t_ap1)} | {fmt_t(t_apN)} | {fmt_t(t_di1)} | {fmt_t(t_pl)} | {fmt_r(r_pl)} "
              f"| {fmt_t(t_ww)} | {fmt_r(r_ww)} | {'; '.join(notes) or '-'} |")
        sys.stdout.flush()

    print()
    targets = []
    if 10000 in results and results[10000]["r_pl"]:
        targets.append(("htsr >= 100x faster than powerlaw 2.0.0 at n=1e4", results[10000]["r_pl"] >= 100,
                        fmt_r(results[10000]["r_pl"])))
    if 4096 in results and results[4096]["r_ww"]:
        targets.append(("htsr >= 30x faster than WWFit at n=4096", results[4096]["r_ww"] >= 30,
                        fmt_r(results[4096]["r_ww"])))
    if 100000 in results:
        targets.append(("htsr n=1e5 < 2 s single thread", results[100000]["ap1"] < 2, fmt_t(results[100000]["ap1"])))
    for label, ok, value in targets:
        print(f"target: {label}: {value} -> {'PASS' if ok else 'FAIL'}")
    return results


# ------------------------------------------------------------------ pytest-benchmark (htsr only)

def test_bench_fit_1e4_all_points(benchmark):
    x = pareto(10000)
    r = benchmark(lambda: htsr.fit_power_law(x, threads=1))
    assert r.status == "success"


def test_bench_fit_1e5_all_points(benchmark):
    x = pareto(100000)
    r = benchmark.pedantic(lambda: htsr.fit_power_law(x, threads=1), rounds=3)
    assert r.status == "success"


if __name__ == "__main__":
    main()
