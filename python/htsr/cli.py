"""``htsr`` command line: ``htsr analyze PATH``, ``htsr describe PATH``, ``htsr bench`` and
``htsr report PATH [OTHER]``.

Errors are reported as one line ``htsr: error: <message>`` on stderr with exit code 1 (2 for
usage errors, from argparse); set ``HTSR_DEBUG=1`` to get the traceback.  A matrix that cannot
be analysed (NaN weights, a corrupt shard, an unknown dtype) does not stop ``analyze``: it gets
a row with ``status='error'`` and its message, the summary names it, and the exit code is 3.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["main", "entry", "build_parser"]

_OUT_FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
EXIT_ERROR_ROWS = 3
_TABLE_COLUMNS = ["layer_id", "step", "name", "layer_type", "N", "M", "num_evals", "alpha", "D",
                  "num_pl_spikes", "log_norm", "log_spectral_norm", "stable_rank", "warning"]
_DESCRIBE_COLUMNS = ["layer_id", "name", "layer_type", "N", "M", "rf", "num_evals", "stored_dtype"]


class _Error(Exception):
    """An error reported as one line, without traceback."""


def _version() -> str:
    try:
        from . import __version__
        return __version__
    except Exception:  # noqa: BLE001
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="htsr",
        description="Heavy-tailed self-regularization diagnostics of neural-network weights "
                    "(WeightWatcher-compatible metrics from the weights alone).")
    p.add_argument("--version", action="version", version=f"htsr {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def selection(sp):
        sp.add_argument("path", metavar="PATH",
                        help="checkpoint: safetensors file or folder (sharded), .bin/.pt, .npz, ...")
        sp.add_argument("--layers", nargs="+", metavar="REGEX", default=None,
                        help="analyse only layers whose name matches one of these regexes")
        sp.add_argument("--exclude", nargs="+", metavar="REGEX", default=None,
                        help="skip layers whose name matches one of these regexes")
        sp.add_argument("--types", nargs="+", metavar="TYPE", default=None,
                        choices=["dense", "conv1d", "conv2d", "embedding"],
                        help="layer types to keep (dense, conv1d, conv2d, embedding)")
        sp.add_argument("--min-evals", type=int, default=8, metavar="N",
                        help="skip matrices with fewer eigenvalues (default 8)")
        sp.add_argument("--max-evals", type=int, default=None, metavar="N",
                        help="skip matrices with more eigenvalues (default: no limit)")
        sp.add_argument("--max-N", type=int, default=None, metavar="N", dest="max_N",
                        help="skip matrices whose larger side exceeds N (default: no limit)")
        sp.add_argument("--no-pool", action="store_true",
                        help="one row per Conv2D slice instead of one pooled ESD per layer")
        sp.add_argument("--no-split-fused", action="store_true",
                        help="analyse fused tensors (qkv, gate_up, experts) as stored")
        sp.add_argument("--out", metavar="FILE", default=None,
                        help="write the full table: .csv, .tsv, .json, .jsonl or .parquet "
                             "(analyze: each row as soon as its matrix is done, fsync'd)")

    a = sub.add_parser("analyze", help="analyse every weight matrix and print a summary",
                       description="Analyse every weight matrix of a checkpoint: eigenvalues of "
                                   "W^T W, power-law fit of the tail, WeightWatcher metrics.")
    selection(a)
    a.add_argument("--threads", type=int, default=0, metavar="N",
                   help="native threads (default 0 = all cores); with --executor dask: "
                        "each task's native threads (default 1, for one single-threaded "
                        "worker per core)")
    a.add_argument("--precision", choices=["float32", "float64"], default="float64",
                   help="arithmetic of the Gram matrix / SVD (default float64)")
    a.add_argument("--method", choices=["gram", "svd", "randomized"], default="gram",
                   help="eigenvalue method (default gram); randomized: only the top --k "
                        "eigenvalues (alpha from that tail; norm from the exact trace; "
                        "entropy and rank metrics left empty)")
    a.add_argument("--k", type=int, default=None, metavar="K",
                   help="number of top eigenvalues for --method randomized")
    a.add_argument("--device", default=None, metavar="DEV",
                   help="compute the exact spectra with torch on DEV (cpu, cuda, cuda:N, mps); "
                        "default: the native CPU core")
    a.add_argument("--normalize", action="store_true", help="use X = W^T W / N")
    a.add_argument("--no-conv2d-norm", action="store_true",
                   help="do not scale Conv2D eigenvalues by 1/2 (WeightWatcher's conv2d_norm)")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    a.add_argument("--quiet", "-q", action="store_true", help="do not print the table")
    # -- long runs (issue 11): resumable results, executors
    a.add_argument("--resume", action="store_true",
                   help="with --out: skip the matrices already in the file (refused if it was "
                        "written with different numeric options); error rows are retried")
    a.add_argument("--executor", choices=["threads", "dask"], default="threads",
                   help="threads (default: this process) or dask (per-matrix tasks on a Dask "
                        "cluster; workers read the shards themselves)")
    a.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="Dask scheduler address (tcp://HOST:PORT) for --executor dask")
    a.add_argument("--local-cluster", type=int, metavar="N", default=None,
                   help="start a local Dask cluster of N single-threaded worker processes "
                        "(implies --executor dask)")
    _diagnostics_args(a)

    d = sub.add_parser("describe", help="list the matrices that would be analysed (no numerics)")
    selection(d)

    b = sub.add_parser("bench", help="time and accuracy of the spectral methods (htsr.bench)",
                       description="Compare gram float32/float64, svd, randomized (k, q, p), adaptive "
                                   "randomized, torch and the GPU where present against the exact "
                                   "float64 spectrum: time, top-k relative error, change in alpha, memory.")
    b.add_argument("path", nargs="?", metavar="PATH", help="checkpoint (one matrix per distinct shape)")
    b.add_argument("--synthetic", nargs="+", metavar="ROWSxCOLS", help="synthetic heavy-tailed matrices")
    b.add_argument("--kind", choices=["pareto", "spiked"], default="pareto", help="synthetic kind (default pareto)")
    b.add_argument("--methods", nargs="+", metavar="M",
                   help="gram32 gram64 svd32 svd64 rand[:k=K,q=Q,p=P] rand:auto torch-cpu torch-cuda "
                        "(default: gram32 gram64 svd64 rand:k=64,q=4,p=64 rand:auto torch-cpu)")
    b.add_argument("--max-matrices", type=int, default=8, metavar="N", help="matrices from PATH (default 8)")
    b.add_argument("--threads", type=int, default=1, metavar="N", help="BLAS/torch threads (default 1)")
    b.add_argument("--repeat", type=int, default=1, metavar="R", help="runs per method, the fastest counts")
    b.add_argument("--seed", type=int, default=0, help="seed of the synthetic matrices and sketches")
    b.add_argument("--alpha-tol", type=float, default=1e-3, help="accuracy for the fastest-method line")
    b.add_argument("--out", metavar="PREFIX", help="write PREFIX.csv, PREFIX.json and PREFIX.png")
    _report_parser(sub)
    return p


def _report_parser(sub):
    """``htsr report PATH [OTHER] -o report.html`` (htsr.report): one offline HTML file."""
    r = sub.add_parser("report", help="write one self-contained HTML report (two paths: a comparison)",
                       description="Analyse a checkpoint (or a run folder of checkpoint-N/, or read a "
                                   "results table .csv/.json/.parquet) and write one offline HTML "
                                   "report; with a second path, compare the two layer by layer.")
    r.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint, run folder or table; "
                   "a second PATH makes a comparison report (BASE TUNED)")
    r.add_argument("-o", "--out", default="report.html", metavar="FILE",
                   help="output HTML file (default report.html)")
    r.add_argument("--title", default=None, help="page title (default: the path's name)")
    r.add_argument("--top", type=int, default=None, metavar="K",
                   help="comparison: flag the K layers whose alpha moved most (default 10%%)")
    r.add_argument("--no-figures", action="store_true", help="table only (no matplotlib needed)")
    r.add_argument("--layers", nargs="+", metavar="REGEX", default=None,
                   help="analyse only layers whose name matches one of these regexes")
    r.add_argument("--exclude", nargs="+", metavar="REGEX", default=None,
                   help="skip layers whose name matches one of these regexes")
    r.add_argument("--threads", type=int, default=0, metavar="N", help="native threads (0 = all)")
    r.add_argument("--precision", choices=["float32", "float64"], default="float64",
                   help="arithmetic of the Gram matrix (default float64)")


def _run_report(ns) -> int:
    import pandas as pd
    from .report import report

    if len(ns.paths) > 2:
        raise _Error("report takes one PATH, or two (BASE TUNED) for a comparison")
    if not ns.out.lower().endswith((".html", ".htm")):
        raise _Error(f"{ns.out}: the report is HTML; name it .html")
    parent = os.path.dirname(os.path.abspath(ns.out))
    if not os.path.isdir(parent):
        raise _Error(f"{ns.out}: output folder {parent} does not exist")
    readers = {".csv": pd.read_csv, ".tsv": lambda f: pd.read_csv(f, sep="\t"),
               ".json": pd.read_json, ".parquet": pd.read_parquet}
    srcs = []
    for p in ns.paths:
        if not os.path.exists(p):
            raise _Error(f"{p}: no such file or directory")
        ext = os.path.splitext(p)[1].lower()
        srcs.append(readers[ext](p) if os.path.isfile(p) and ext in readers else p)
    kw = dict(names=ns.layers, exclude=ns.exclude, threads=ns.threads, precision=ns.precision)
    title = ns.title or (os.path.basename(ns.paths[0].rstrip("/")) if isinstance(srcs[0], pd.DataFrame)
                         and len(srcs) == 1 else None)
    rep = report(srcs[0], srcs[1] if len(srcs) > 1 else None, ns.out, title=title,
                 figures=not ns.no_figures, top=ns.top, **kw)
    print(f"wrote {ns.out} ({len(rep.table)} rows, {len(rep.html.encode()) / 1e6:.2f} MB)")
    return 0


def _check_out(out: str | None):
    if out is None:
        return
    ext = os.path.splitext(out)[1].lower()
    if ext not in _OUT_FORMATS:
        raise _Error(f"{out}: unknown output format {ext or '(none)'!r}; "
                     f"use one of {', '.join(_OUT_FORMATS)}")
    if ext == ".parquet":
        import importlib.util
        if not (importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet")):
            raise _Error(f"{out}: writing parquet needs pyarrow or fastparquet "
                         "(pip install pyarrow), or use .csv / .json")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise _Error(f"{out}: output folder {parent} does not exist")
    existed = os.path.exists(out)
    try:  # writable now, before the analysis (append: an existing file is left as it is)
        open(out, "ab").close()
    except OSError as exc:
        raise _Error(f"{out}: cannot write the output file: {exc.strerror or exc}") from None
    if not existed:
        os.remove(out)


def _write(df, out: str):
    ext = os.path.splitext(out)[1].lower()
    if ext == ".csv":
        df.to_csv(out, index=False)
    elif ext == ".tsv":
        df.to_csv(out, index=False, sep="\t")
    elif ext == ".json":
        df.to_json(out, orient="records", indent=1)
    elif ext == ".jsonl":
        df.to_json(out, orient="records", lines=True)
    else:
        df.to_parquet(out, index=False)


def _printable(text) -> str:
    """Non-printable characters (terminal escape sequences in tensor names) as Python escapes."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short(name: str, width: int = 52) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _table(df, columns) -> str:
    cols = [c for c in columns if c in df.columns]
    view = df[cols].copy()
    for c in cols:
        if view[c].dtype.kind not in "biufcmM":  # text columns (object or pandas str)
            view[c] = view[c].map(lambda v: v if v is None or v != v else _printable(v))
    if "name" in view:
        view["name"] = view["name"].map(_short)
    fmt = {c: (lambda v: "" if v != v else f"{v:.3f}")
           for c in cols if view[c].dtype.kind == "f"}
    return view.to_string(index=False, formatters=fmt, na_rep="")


def _summary_text(df) -> str:
    from .metrics import summary
    s = summary(df)
    n = len(df)
    failed = int((df["status"] == "failed").sum()) if "status" in df else 0
    errors = int((df["status"] == "error").sum()) if "status" in df else 0
    over = int((df["warning"] == "over-trained").sum()) if "warning" in df else 0
    under = int((df["warning"] == "under-trained").sum()) if "warning" in df else 0
    secs = float(df["seconds"].sum()) if "seconds" in df else float("nan")
    lines = [f"model summary ({n} matrices; {failed} failed fits; {over} over-trained "
             f"(alpha<2), {under} under-trained (alpha>6)"
             + (f"; {errors} errors" if errors else "") + ")"]
    for k, v in s.items():
        lines.append(f"  {k:<18} {v:10.4f}")
    if secs == secs:
        lines.append(f"  {'seconds (sum)':<18} {secs:10.3f}")
    return "\n".join(lines)


def _selection_kwargs(ns) -> dict:
    return dict(names=ns.layers, exclude=ns.exclude, layer_types=ns.types,
                min_evals=ns.min_evals, max_evals=ns.max_evals, max_N=ns.max_N,
                pool=not ns.no_pool, split_fused=not ns.no_split_fused)


# -- diagnostics (htsr.diagnostics, issue 8): one block
def _diagnostics_args(a):
    d = a.add_argument_group("diagnostics (columns added to the table; see README 'Diagnostics')")
    d.add_argument("--mp-fit", nargs="?", const="median", default=None, metavar="METHOD",
                   choices=["median", "bema", "kn", "ww"],
                   help="Marchenko-Pastur bulk and spikes (METHOD: median (default), bema, kn, ww)")
    d.add_argument("--tw-level", type=float, default=0.99, metavar="P",
                   help="Tracy-Widom level of the spike edge (0.9, 0.95, 0.99, 0.995, 0.999)")
    d.add_argument("--randomize", action="store_true",
                   help="element-shuffled spectra: correlation traps (rand_*, num_traps)")
    d.add_argument("--seed", type=int, default=0, help="seed of the shuffles and the bootstrap")
    d.add_argument("--fit", choices=["PL", "TPL", "E_TPL"], default="PL",
                   help="tail model of alpha: power law, truncated power law, TPL + xmin_peak")
    d.add_argument("--tail-models", action="store_true",
                   help="TPL/lognormal/exponential/stretched-exp fits, Vuong tests, best_fit, Hill")
    d.add_argument("--bootstrap", type=int, default=0, metavar="REPS",
                   help="CSN bootstrap goodness-of-fit p-value with REPS replicates (pl_pvalue)")
    d.add_argument("--detX", action="store_true", help="det X = 1 tail criterion (detX_num, detX_val)")
    d.add_argument("--vectors", action="store_true", help="eigenvector localization bulk/tail columns")
    d.add_argument("--fix-fingers", choices=["clip_xmax", "xmin_peak"], default=None,
                   help="refit without outlying top eigenvalues (num_fingers, raw_alpha)")
    d.add_argument("--max-fingers", type=int, default=10, metavar="K")
    d.add_argument("--finger-thresh", type=float, default=1.0, metavar="DALPHA")
    d.add_argument("--xmax", default=None, metavar="-K|force",
                   help="drop the K largest eigenvalues before fitting (-K), or 'force'")


def _diagnostics_options(ns) -> dict:
    xmax = ns.xmax
    if xmax is not None and xmax != "force":
        try:
            xmax = int(xmax)
        except ValueError:
            raise _Error(f"--xmax: expected -K (an integer) or 'force', got {xmax!r}") from None
    return dict(mp_fit=ns.mp_fit is not None, mp_method=ns.mp_fit or "median", mp_tw_level=ns.tw_level,
                randomize=ns.randomize, seed=ns.seed, fit=ns.fit, tail_models=ns.tail_models,
                bootstrap=ns.bootstrap, detX=ns.detX, vectors=ns.vectors, fix_fingers=ns.fix_fingers,
                max_fingers=ns.max_fingers, finger_thresh=ns.finger_thresh, xmax=xmax)


def _analysis_options(ns, **extra):
    """The ``AnalysisOptions`` of an ``htsr analyze`` command line."""
    from .options import AnalysisOptions
    return AnalysisOptions(threads=ns.threads, precision=ns.precision, method=ns.method, k=ns.k, device=ns.device,
                           normalize=ns.normalize, conv2d_norm=not ns.no_conv2d_norm,
                           **_selection_kwargs(ns), **_diagnostics_options(ns), **extra)


def _run(ns) -> int:
    import pandas as pd  # noqa: F401  (fail early and clearly if missing)

    if ns.command == "report":
        return _run_report(ns)
    path = ns.path
    if not os.path.exists(path):
        from .sources import hub
        if not hub.looks_like_id(path):
            raise _Error(f"{path}: no such file or directory")
        path = hub.resolve(path)  # a model id in the local Hugging Face cache
    _check_out(ns.out)
    from . import analysis

    if ns.command == "describe":
        df = analysis.describe(path, **_selection_kwargs(ns))
        if ns.out:
            _write(df, ns.out)
        print(_table(df, _DESCRIBE_COLUMNS) if len(df) else "no analysable matrices")
        print(f"{len(df)} matrices")
        return 0

    progress = ns.progress
    if progress is None:
        progress = sys.stderr.isatty()
    from .distributed import cli_executor
    with cli_executor(ns.executor, ns.scheduler, ns.local_cluster, ns.threads) as executor:
        df = analysis.analyze(path, _analysis_options(
            ns, progress=bool(progress), out=ns.out, resume=ns.resume, errors="row",
            executor=executor))
    if not ns.quiet:
        if len(df):
            print(_table(df, _TABLE_COLUMNS))
            print()
            print(_summary_text(df))
        else:
            print("no analysable matrices")
    if ns.out:
        print(f"wrote {len(df)} rows to {ns.out}")
    errors = df[df["status"] == "error"] if "status" in df else df.iloc[:0]
    if len(errors):
        sys.stderr.write(f"htsr: {len(errors)} matri{'x' if len(errors) == 1 else 'ces'} "
                         "could not be analysed:\n")
        for msg in errors["message"]:
            sys.stderr.write(f"  {_printable(msg)}\n")
        return EXIT_ERROR_ROWS
    return 0


def _message(exc: BaseException, path: str | None) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        msg = f"{exc.filename}: no such file or directory"
    else:
        msg = str(exc) or type(exc).__name__
    msg = _printable(" ".join(msg.split()))  # one line, no raw escape sequences
    if path and not isinstance(exc, _Error) and path not in msg and os.path.basename(path.rstrip("/")) not in msg:
        msg = f"{path}: {msg}"
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "command", None) == "analyze":
        if (ns.method == "randomized") != (ns.k is not None):
            parser.error("--method randomized needs --k K, and --k goes only with it")
        if ns.resume and not ns.out:
            parser.error("--resume needs --out FILE (the results file to resume)")
        if ns.local_cluster is not None:
            ns.executor = "dask"
        if ns.executor == "dask" and (ns.scheduler is None) == (ns.local_cluster is None):
            parser.error("--executor dask needs exactly one of --scheduler ADDRESS or "
                         "--local-cluster N")
    debug = os.environ.get("HTSR_DEBUG", "") not in ("", "0")
    try:
        if ns.command == "bench":
            from . import bench
            return bench.main(ns)
        return _run(ns)
    except KeyboardInterrupt:
        sys.stderr.write("htsr: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 -- one line unless HTSR_DEBUG
        if debug:
            import traceback
            traceback.print_exc()
        sys.stderr.write(f"htsr: error: {_message(exc, getattr(ns, 'path', None) or (getattr(ns, 'paths', None) or [None])[0])}\n")
        return 1


def entry(argv: Sequence[str] | None = None) -> None:
    """The ``htsr`` console script: ``main``, then exit with its code.  After Ctrl-C (130) it
    exits at once (``os._exit``, streams flushed): worker threads may still be inside native
    code, and interpreter finalization would tear them down while they wait to re-take the
    GIL, which aborts the process ("terminate called without an active exception").  Every
    finished row is already on disk (results files are fsync'd per matrix)."""
    code = main(argv)
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
