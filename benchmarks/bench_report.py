"""Size and open time of the HTML report of a 7B-shaped model, in headless Chromium.

No 7B checkpoint is computed: the table is synthesized with Llama-2-7B's 226 matrices (32 blocks
x q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008, plus embed_tokens and lm_head
32000x4096), each with its true number of eigenvalues (M = 4096).  Each ESD is the
Marchenko-Pastur law of its shape (c = M/N, sigma^2 = 1; eigenvalues at the MP quantiles
(i + 1/2)/M, inverse CDF on a fine grid) with its top 3 % replaced by a Pareto tail of a
per-layer exponent drawn in [1.6, 7] (seed 0).  The rows are then filled by the real pipeline
pieces: ``fit_power_law_batch`` (WeightWatcher settings) and ``metrics.layer_row``, so the
report sees exactly what ``analyze`` would give for such spectra.

    python benchmarks/bench_report.py [--out /tmp/report7b.html] [--workers 2]

Prints: build seconds, file size, the page's DOMContentLoaded / load times (performance
navigation timing) and the wall time from navigation to the load event, over --repeat
openings, plus the time to open one drill-down, and the self-check (no console errors, every
image decodes, sorting).  The machine load (``os.getloadavg``) is printed with the figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def mp_quantiles(M: int, N: int, sigma2: float = 1.0) -> np.ndarray:
    c = M / N
    a, b = sigma2 * (1 - np.sqrt(c)) ** 2, sigma2 * (1 + np.sqrt(c)) ** 2
    u = np.linspace(0, 1, 200_001)
    x = a + (b - a) * u ** 2                      # dense near a (the c = 1 singularity)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * np.pi * sigma2 * c * x)
    rho[~np.isfinite(rho)] = 0
    cdf = np.concatenate([[0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.interp((np.arange(M) + 0.5) / M, cdf, x)


def llama7b_shapes():
    out = [("model.embed_tokens", 32000, 4096, "embedding")]
    for i in range(32):
        p = f"model.layers.{i}."
        for x in ("q", "k", "v", "o"):
            out.append((p + f"self_attn.{x}_proj", 4096, 4096, "dense"))
        for x in ("gate", "up", "down"):
            out.append((p + f"mlp.{x}_proj", 11008, 4096, "dense"))
    out.append(("lm_head", 32000, 4096, "dense"))
    return out


def synthetic_table(seed: int = 0):
    import pandas as pd
    import htsr
    from htsr import metrics
    from htsr.depth import add_depth
    rng = np.random.default_rng(seed)
    shapes = llama7b_shapes()
    cache: dict = {}
    evs = []
    for name, N, M, _t in shapes:
        bulk = cache.setdefault((N, M), mp_quantiles(M, N)).copy()
        k = int(0.03 * M)
        alpha = rng.uniform(1.6, 7.0)
        tail = bulk[-1] * (1 - rng.random(k)) ** (-1 / (alpha - 1))
        ev = np.sort(np.concatenate([bulk[:-k], tail])) * N   # WeightWatcher scale: W^T W
        evs.append(ev)
    fits = htsr.fit_power_law_batch(evs, floor=1e-5, small_n=True, every_position=True)
    rows, esds = [], {}
    for i, ((name, N, M, t), ev, fit) in enumerate(zip(shapes, evs, fits)):
        meta = {"layer_id": i, "name": name, "longname": name, "layer_type": t, "part": None,
                "source": "synthetic-7b/model.safetensors", "stored_dtype": "bfloat16"}
        rows.append(metrics.layer_row(ev, fit, meta, N=N, M=M, rf=1))
        esds[(i, None)] = ev
    df = pd.DataFrame(rows)
    return add_depth(df), esds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/htsr-report-7b.html")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ns = ap.parse_args()
    import htsr
    from chromium import Browser

    t0 = time.perf_counter()
    df, esds = synthetic_table()
    t1 = time.perf_counter()
    rep = htsr.report(df, esds=esds, path=ns.out, title="synthetic Llama-2-7B-shaped model",
                      workers=ns.workers)
    t2 = time.perf_counter()
    size = os.path.getsize(ns.out)
    print(f"load average before opening: {os.getloadavg()}")
    print(f"matrices: {len(df)}; table {t1 - t0:.1f} s; report build {t2 - t1:.1f} s; "
          f"file {size / 1e6:.2f} MB ({ns.out})")
    with Browser() as b:
        for r in range(ns.repeat):
            b.console.clear()
            wall = b.open(ns.out)
            nav = b.evaluate("(function(){var n=performance.getEntriesByType('navigation')[0];"
                             "return [n.domContentLoadedEventEnd, n.loadEventEnd];})()")
            print(f"open {r + 1}: DOMContentLoaded {nav[0]:.0f} ms, load {nav[1]:.0f} ms, "
                  f"navigate->load wall {wall * 1000:.0f} ms; load average {os.getloadavg()[0]:.2f}")
        drill = b.evaluate("(function(){var tr=document.querySelector('#layers tbody tr:nth-child(100)');"
                           "var t=performance.now(); tr.click(); "
                           "var im=document.querySelector('#detail img');"
                           "return im.decode().then(function(){return performance.now()-t;});})()")
        print(f"drill-down of one layer (clone + decode its PNG): {drill:.0f} ms")
        res = b.evaluate("htsrSelfTest()")
        print(f"self-check: rows {res['rows']}, images {res['images']} (broken {len(res['broken'])}), "
              f"sorted {res['sorted']}, console errors {len(b.console) + len(res['errors'])}")
    print(f"load average after: {os.getloadavg()}")
    return 0 if size < 20e6 and not res["broken"] and res["sorted"] and not b.console else 1


if __name__ == "__main__":
    sys.exit(main())
