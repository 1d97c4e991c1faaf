"""``htsr bench``: time and accuracy of the spectral methods on your matrices.

Every method runs on the same matrices and is compared with the exact float64 route
(``method="gram", precision="float64"``, itself timed as ``gram64``):

* ``seconds``: wall time, the minimum over ``repeat`` runs, BLAS/OpenMP/torch pinned to
  ``threads`` threads for the whole bench (threadpoolctl);
* ``topk_rel_err``: max |lambda_i - exact_i| / exact_i over the top ``min(values returned,
  ceil(M/10))`` eigenvalues;
* ``dalpha``: alpha fitted on the method's values minus alpha on the exact spectrum (the
  WeightWatcher fit of ``htsr.analyze``: floor 1e-5, its small-n path, every position);
* ``mem_bytes``: the working memory of the method by its formula (Gram M^2, SVD copy N M,
  sketch 3 (N + M) l, torch input + Gram), not a measurement.

Methods: ``gram32 gram64 svd32 svd64 rand[:k=K,q=Q,p=P] rand:auto torch-cpu torch-cuda``
(torch-* in float32; torch-cuda only where torch sees a GPU). The output records the seeds,
thread counts, BLAS (threadpoolctl), htsr's build, and the load average before and after.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

DEFAULT_METHODS = ("gram32", "gram64", "svd64", "rand:k=64,q=4,p=64", "rand:auto", "torch-cpu")
WW_FIT = dict(floor=1e-5, small_n=True, every_position=True)


@dataclass
class Method:
    name: str
    run: object           # callable(W) -> (eigenvalues ascending, k_computed)
    mem: object           # callable(N, M, itemsize) -> bytes


def _parse_method(spec: str, seed: int, threads: int = 1) -> Method:
    """One method of the --methods list (see the module docstring)."""
    from . import core

    def native(**kw):
        def run(W):
            s = core.spectrum(W, seed=seed, threads=threads, **kw)
            return s.eigenvalues, int(s.k_computed) or len(s.eigenvalues)
        return run

    m = re.fullmatch(r"(gram|svd)(32|64)", spec)
    if m:
        prec = "float32" if m.group(2) == "32" else "float64"
        size = 4 if m.group(2) == "32" else 8
        if m.group(1) == "gram":
            return Method(spec, native(method="gram", precision=prec), lambda N, M, s: M * M * size)
        return Method(spec, native(method="svd", precision=prec), lambda N, M, s: N * M * size + M * size)
    if spec == "rand:auto":
        return Method(spec, native(method="randomized", k="auto", fit=WW_FIT),
                      lambda N, M, s: 3 * (N + M) * max(16, M // 8) * 4)
    m = re.fullmatch(r"rand(?::(.*))?", spec)
    if m:
        opts = dict(k=64, q=4, p=10)
        for part in filter(None, (m.group(1) or "").split(",")):
            key, _, value = part.partition("=")
            if key not in opts or not value.isdigit():
                raise ValueError(f"bad randomized method {spec!r}: expected rand:k=K,q=Q,p=P")
            opts[key] = int(value)
        name = f"rand:k={opts['k']},q={opts['q']},p={opts['p']}"
        l_cols = opts["k"] + opts["p"]
        return Method(name, native(method="randomized", k=opts["k"], power_iters=opts["q"], oversample=opts["p"]),
                      lambda N, M, s: 3 * (N + M) * min(l_cols, M) * 4)
    m = re.fullmatch(r"torch-(cpu|cuda|mps)", spec)
    if m:
        def run(W, dev=m.group(1)):
            s = core.spectrum(W, precision="float32", device=dev)
            return s.eigenvalues, len(s.eigenvalues)
        return Method(spec, run, lambda N, M, s: N * M * (s + 4) + 2 * M * M * 4)
    raise ValueError(f"unknown method {spec!r}; expected gram32, gram64, svd32, svd64, rand[:k=K,q=Q,p=P], "
                     "rand:auto, torch-cpu, torch-cuda or torch-mps")


def available_methods(specs, seed: int, threads: int = 1) -> list[Method]:
    """The requested methods that can run here (torch-cuda/mps only where torch sees the device)."""
    out = []
    for spec in specs:
        if spec.startswith("torch-"):
            try:
                import torch
            except ImportError:
                continue
            if spec == "torch-cuda" and not torch.cuda.is_available():
                continue
            if spec == "torch-mps" and not torch.backends.mps.is_available():
                continue
        out.append(_parse_method(spec, seed, threads))
    return out


def synthetic(shape: str, seed: int, kind: str = "pareto") -> np.ndarray:
    """A float32 heavy-tailed matrix ROWSxCOLS: ``pareto``: entries sign * (1 + Pareto(2.5))
    (spectral_methods.md §1.3); ``spiked``: Gaussian bulk / sqrt(N) plus 32 heavy-tailed spikes."""
    m = re.fullmatch(r"(\d+)x(\d+)", shape)
    if not m:
        raise ValueError(f"synthetic shape must be ROWSxCOLS, got {shape!r}")
    rows, cols = int(m.group(1)), int(m.group(2))
    rng = np.random.default_rng(seed)
    if kind == "pareto":
        W = rng.standard_normal((rows, cols), dtype=np.float32)
        np.sign(W, out=W)
        W *= 1.0 + rng.pareto(2.5, size=(rows, cols)).astype(np.float32)
        return W
    if kind == "spiked":
        n, mm, r = max(rows, cols), min(rows, cols), min(32, min(rows, cols))
        G = rng.standard_normal((n, mm), dtype=np.float32) / np.float32(math.sqrt(n))
        U = np.linalg.qr(rng.standard_normal((n, r)))[0]
        V = np.linalg.qr(rng.standard_normal((mm, r)))[0]
        s = np.sort(3.0 * (1 + rng.pareto(2.0, r)))[::-1]
        G += ((U * s) @ V.T).astype(np.float32)
        return G if rows >= cols else np.ascontiguousarray(G.T)
    raise ValueError(f"unknown synthetic kind {kind!r}; expected 'pareto' or 'spiked'")


def checkpoint_matrices(path: str, max_matrices: int, distinct: bool = True):
    """(name, float32 matrix) from a checkpoint: the first matrix of each distinct shape."""
    from .sources import iter_layers
    seen, out = set(), []
    for spec in iter_layers(path):
        if distinct and tuple(spec.shape) in seen:
            continue
        seen.add(tuple(spec.shape))
        out.append((spec.name, np.ascontiguousarray(spec.load()[0])))
        if len(out) >= max_matrices:
            break
    return out


def cpu_has_avx512() -> bool | None:
    """Whether the CPU offers the AVX-512 subsets OpenBLAS's SkylakeX kernels use (Linux
    /proc/cpuinfo; None elsewhere): with OPENBLAS_CORETYPE=Haswell such a CPU runs AVX2 kernels."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= set(flags)


def blas_summary() -> str:
    """One line: each BLAS pool's library, kernel architecture and threads, OPENBLAS_CORETYPE, AVX-512."""
    try:
        import threadpoolctl
        pools = [f"{os.path.basename(p.get('filepath', ''))} {p.get('architecture', '')} x{p.get('num_threads')}"
                 for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pools = ["threadpoolctl not installed"]
    return (f"BLAS: {'; '.join(pools)}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
            f"CPU AVX-512: {cpu_has_avx512()}")


def environment(threads: int, seed: int) -> dict:
    """What the figures depend on: seeds, threads, BLAS libraries, build, machine, load."""
    from . import core
    info = {"seed": seed, "threads": threads, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "htsr_build": core.build_info(),
            "loadavg_start": list(os.getloadavg()), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import threadpoolctl
        info["threadpools"] = [dict(pool, filepath=os.path.basename(pool.get("filepath", "")))
                               for pool in threadpoolctl.threadpool_info()]  # no machine paths
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["openblas_coretype_env"] = os.environ.get("OPENBLAS_CORETYPE")  # overrides OpenBLAS's CPU detection
    info["cpu_avx512"] = cpu_has_avx512()
    try:
        import torch
        info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                         "cuda": torch.cuda.is_available(),
                         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        info["torch"] = None
    return info


def _fit_alpha(values):
    from . import core
    f = core.fit_power_law(values, **WW_FIT)
    return f.alpha if f.status == "success" else math.nan


def run(matrices, methods: list[Method], *, repeat: int = 1, threads: int = 1) -> list[dict]:
    """Rows of (matrix, method) figures; the exact reference is gram64 of each matrix."""
    from . import core
    rows = []
    for name, W in matrices:
        N, M = max(W.shape), min(W.shape)
        exact = core.spectrum(W, method="gram", precision="float64", threads=threads).eigenvalues
        alpha_exact = _fit_alpha(exact)
        for meth in methods:
            best, values, k = math.inf, None, None
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                values, k = meth.run(W)
                best = min(best, time.perf_counter() - t0)
            n_top = min(len(values), max(1, math.ceil(M / 10)))
            ref = exact[-n_top:]
            err = float(np.max(np.abs(values[-n_top:] - ref) / np.where(ref > 0, ref, 1.0)))
            alpha = _fit_alpha(values)
            rows.append(dict(matrix=name, N=N, M=M, method=meth.name, seconds=best, topk_rel_err=err,
                             alpha=alpha, alpha_exact=alpha_exact, dalpha=alpha - alpha_exact,
                             values=len(values), k_computed=k, mem_bytes=int(meth.mem(N, M, W.itemsize))))
            print(f"  {name} {meth.name}: {best:.4f} s, dalpha {rows[-1]['dalpha']:.1e}", file=sys.stderr, flush=True)
    return rows


def fastest_within(rows, tol: float) -> dict:
    """Per matrix: the fastest method with |dalpha| <= tol."""
    best = {}
    for r in rows:
        if abs(r["dalpha"]) <= tol and (r["matrix"] not in best or r["seconds"] < best[r["matrix"]]["seconds"]):
            best[r["matrix"]] = r
    return {m: (r["method"], r["seconds"]) for m, r in best.items()}


def table(rows) -> str:
    head = f"{'matrix':<28} {'N x M':>12} {'method':<20} {'seconds':>9} {'topk_err':>9} {'dalpha':>10} {'MiB':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['matrix'][-28:]:<28} {str(r['N']) + 'x' + str(r['M']):>12} {r['method']:<20} "
                     f"{r['seconds']:9.4f} {r['topk_rel_err']:9.1e} {r['dalpha']:10.1e} {r['mem_bytes'] / 2**20:8.1f}")
    return "\n".join(lines)


def plot(rows, path: str) -> bool:
    """Time vs |dalpha| (log-log), one marker per method; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for meth in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["seconds"], max(abs(r["dalpha"]), 1e-16)) for r in rows if r["method"] == meth]
        ax.scatter(*zip(*pts), label=meth)
    ax.set(xscale="log", yscale="log", xlabel="seconds", ylabel="|alpha - alpha_exact| (floored at 1e-16)",
           title="htsr bench: time vs alpha error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(ns) -> int:
    """``htsr bench`` (arguments from cli.py)."""
    matrices = []
    if ns.path:
        matrices += checkpoint_matrices(ns.path, ns.max_matrices)
    for i, shape in enumerate(ns.synthetic or []):
        matrices.append((f"{ns.kind}-{shape}", synthetic(shape, ns.seed + i, ns.kind)))
    if not matrices:
        raise ValueError("nothing to bench: give a PATH or --synthetic ROWSxCOLS ...")
    methods = available_methods(ns.methods or DEFAULT_METHODS, ns.seed, ns.threads)
    with contextlib.ExitStack() as pins:
        try:
            import threadpoolctl
            pins.enter_context(threadpoolctl.threadpool_limits(ns.threads))
        except ImportError:
            pass
        try:
            import torch
            pins.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(ns.threads)
        except ImportError:
            pass
        env = environment(ns.threads, ns.seed)  # thread pools as pinned for the run
        blas = blas_summary()
        rows = run(matrices, methods, repeat=ns.repeat, threads=ns.threads)
    env["loadavg_end"] = list(os.getloadavg())
    best = fastest_within(rows, ns.alpha_tol)
    print(table(rows))
    print()
    for name, (meth, sec) in best.items():
        print(f"fastest with |dalpha| <= {ns.alpha_tol:g} on {name}: {meth} ({sec:.4f} s)")
    print(f"threads {ns.threads}, seed {ns.seed}, load average {env['loadavg_start']} -> {env['loadavg_end']}")
    print(blas)
    if ns.out:
        import csv
        os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
        with open(ns.out + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        with open(ns.out + ".json", "w") as f:
            json.dump({"environment": env, "rows": rows, "fastest_within": {"alpha_tol": ns.alpha_tol, **best}},
                      f, indent=1, default=str)
        wrote = [ns.out + ".csv", ns.out + ".json"]
        if plot(rows, ns.out + ".png"):
            wrote.append(ns.out + ".png")
        print("wrote " + ", ".join(wrote))
    return 0
