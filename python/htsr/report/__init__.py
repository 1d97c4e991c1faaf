"""One self-contained, offline HTML report of an analysis (``htsr report PATH -o report.html``).

``report(data, other=None, path=None, ...)`` -> :class:`Report` (``.html``, ``.save(path)``,
``_repr_html_`` for notebooks).  ``data`` is a table from ``analyze``, a checkpoint path (or a
run folder of ``checkpoint-N/``), or a live model; with ``other`` the report compares the two
(``htsr.compare``).

What is in the file (no CDN, no server; CSS and ~150 lines of vanilla JS from this package):
summary cards, the correlation flow (alpha by depth) and the alpha histogram as inline SVG
(alpha per layer over steps for a training run, base vs other for a comparison), the
per-layer table (sortable, filterable, warnings highlighted), one drill-down per layer (its
2 x 2 figure panel and every column), and the run parameters with the htsr version.

Size and speed on big models: the drill-down figures are PNGs (palette-quantized to 64
colours, 720 x 504 px, ~15-25 kB each) inside ``<template>`` elements, which the browser
parses but does not decode or lay out until a row is clicked; the ESD itself is never
embedded, so a layer's cost is independent of its size.  ~25 kB x 224 matrices of a 7B model
is ~6 MB.  Deterministic bytes: SVG hash salt fixed, no dates in the metadata, element ids
prefixed per figure, no timings (``seconds`` is left out) and no wall-clock anywhere.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import sys
import types
from importlib import resources
from string import Template
from typing import Any, Mapping

import numpy as np

__all__ = ["report", "Report", "figure_svg", "figure_png"]

_TABLE = ["depth", "layer_id", "step", "name", "layer_type", "block", "N", "M", "num_evals",
          "alpha", "D", "xmin", "num_pl_spikes", "log_norm", "log_spectral_norm",
          "alpha_weighted", "stable_rank", "entropy", "num_spikes", "mp_softrank", "num_traps",
          "rand_num_spikes", "best_fit", "warning"]
_COMPARE_TABLE = ["depth", "name", "layer_type", "present", "alpha_a", "alpha_b", "d_alpha",
                  "d_alpha_weighted", "d_log_norm", "d_log_spectral_norm", "d_stable_rank",
                  "warning_a", "warning_b", "moved"]
_HIDDEN = {"seconds"}
_SALT = "htsr-report"


# ----------------------------------------------------------------------------- figures
def _rc():
    import matplotlib
    return matplotlib.rc_context({"svg.hashsalt": _SALT, "svg.fonttype": "none",
                                  "path.simplify": True, "font.family": "DejaVu Sans"})


def figure_svg(fig, prefix: str) -> str:
    """Inline ``<svg>`` of a Figure: no XML prolog, no date, ids prefixed with ``prefix``."""
    buf = io.StringIO()
    with _rc():
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    s = buf.getvalue()
    s = s[s.index("<svg"):]
    ids = set(re.findall(r'id="([^"]+)"', s))
    if ids:
        pat = re.compile(r'(id="|href="#|url\(#)(' + "|".join(map(re.escape, sorted(ids, key=len, reverse=True))) + r')(?=["\)])')
        s = pat.sub(lambda m: m.group(1) + prefix + "-" + m.group(2), s)
    return s


def figure_png(fig, dpi: int = 72, colors: int = 64) -> str:
    """``data:`` URI of a Figure as PNG, palette-quantized (``colors``) when Pillow is there."""
    buf = io.BytesIO()
    with _rc():
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = buf.getvalue()
    try:
        from PIL import Image
        im = Image.open(io.BytesIO(data)).convert("RGB").quantize(
            colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        im.save(out, format="PNG", optimize=True)
        data = out.getvalue()
    except ImportError:
        pass
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- formatting
def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> tuple[str, str | None]:
    """(display text, sort key or None) of one cell."""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else ""), ("1" if v else "0")
    if isinstance(v, (int, np.integer)):
        return str(int(v)), str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "", "nan"
        return (f"{f:.4g}" if abs(f) < 1e5 else f"{f:.3e}"), repr(f)
    if v is None:
        return "", None
    return str(v), None


def _row_class(r: Mapping) -> str:
    cls = []
    w = str(r.get("warning", "") or "")
    if w:
        cls.append(w)
    if r.get("status") == "failed":
        cls.append("failed")
    if r.get("moved") is True or r.get("moved") is np.True_:
        cls.append("moved")
    for k in ("warning_a", "warning_b"):
        w = str(r.get(k, "") or "")
        if w and w not in cls and w != "nan":
            cls.append(w)
    return " ".join(cls)


def _table_html(df, cols) -> tuple[str, str]:
    thead = "".join(f'<th data-col="{_esc(c)}" scope="col">{_esc(c)}</th>' for c in cols)
    body = []
    for i, r in enumerate(df.to_dict("records")):
        tds = []
        for c in cols:
            text, key = _fmt(r.get(c))
            if c in ("warning", "warning_a", "warning_b") and text and text != "nan":
                tds.append(f'<td><span class="tag {_esc(text)}">{_esc(text)}</span></td>')
            elif c == "moved" and r.get(c):
                tds.append('<td data-v="1"><span class="tag moved">moved</span></td>')
            elif key is not None:
                tds.append(f'<td class="num" data-v="{key}">{_esc(text)}</td>')
            else:
                klass = ' class="name"' if c == "name" else ""
                tds.append(f'<td{klass} title="{_esc(text)}">{_esc(text)}</td>' if c == "name"
                           else f"<td>{_esc(text)}</td>")
        body.append(f'<tr tabindex="0" class="{_row_class(r)}" data-key="{i}" '
                    f'data-name="{_esc(r.get("name", ""))}">' + "".join(tds) + "</tr>")
    return thead, "\n".join(body)


def _kv_html(r: Mapping) -> str:
    items = []
    for k, v in r.items():
        if k in _HIDDEN:
            continue
        text, _ = _fmt(v)
        items.append(f"<div><span>{_esc(k)}</span><span>{_esc(text)}</span></div>")
    return '<div class="kv">' + "".join(items) + "</div>"


def _spark(xs, ys, w=360, h=90) -> str:
    """Tiny hand-written SVG line (alpha of one layer over steps)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = np.isfinite(ys)
    if ok.sum() < 1:
        return ""
    xs, ys = xs[ok], ys[ok]
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = min(float(ys.min()), 2.0), max(float(ys.max()), 6.0)
    sx = lambda x: 30 + (w - 40) * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5)  # noqa: E731
    sy = lambda y: 10 + (h - 30) * (1 - (y - y0) / (y1 - y0))  # noqa: E731
    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    band = "".join(f'<line x1="30" x2="{w - 10}" y1="{sy(b):.1f}" y2="{sy(b):.1f}" stroke="{c}" '
                   f'stroke-dasharray="4 3"/><text x="2" y="{sy(b) + 4:.1f}" font-size="10">{b}</text>'
                   for b, c in ((2, "#d62728"), (6, "#ff7f0e")))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
            f'aria-label="alpha over steps">{band}<polyline fill="none" stroke="#1f77b4" '
            f'stroke-width="1.5" points="{pts}"/><text x="30" y="{h - 4}" font-size="10">step '
            f'{int(x0)}</text><text x="{w - 10}" y="{h - 4}" font-size="10" text-anchor="end">'
            f'{int(x1)}</text></svg>')


# ----------------------------------------------------------------------------- the report
class Report:
    """A built report: ``html`` (str), ``save(path)``, and ``_repr_html_`` (an iframe) for
    Jupyter.  ``table`` is the frame shown (network order)."""

    def __init__(self, html_text: str, table, title: str):
        self.html, self.table, self.title = html_text, table, title

    def save(self, path) -> str:
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValueError(f"{path}: output folder {parent} does not exist")
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(self.html)
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe title="{_esc(self.title)}" srcdoc="{_esc(self.html)}" '
                'style="width:100%;height:720px;border:1px solid #ccc"></iframe>')

    def __repr__(self):
        return f"<htsr.Report {self.title!r}: {len(self.table)} rows, {len(self.html)} bytes>"


def _load(data, esds, analyze_kw):
    import pandas as pd
    if isinstance(data, pd.DataFrame):
        return data, esds, None
    from ..analysis import analyze
    e: dict = {} if esds is None else esds
    return analyze(data, esds=e, **analyze_kw), e, data


def _name(src, fallback: str) -> str:
    if isinstance(src, (str, os.PathLike)):
        p = os.path.abspath(os.fspath(src)).rstrip("/")
        base = os.path.basename(p) or p
        if base.lower() in ("model", "models", "weights", "model.safetensors", "snapshot"):
            base = os.path.basename(os.path.dirname(p)) + "/" + base   # e.g. all_minilm/model
        return base
    return fallback if src is None else type(src).__name__


def _cards(items) -> str:
    out = []
    for label, value, cls in items:
        out.append(f'<div class="card {cls}"><b>{_esc(value)}</b><span>{_esc(label)}</span></div>')
    return '<div class="cards">' + "".join(out) + "</div>"


def _summary_items(df, suffix=""):
    from ..metrics import summary
    n = len(df)
    over = int((df.get("warning") == "over-trained").sum()) if "warning" in df else 0
    under = int((df.get("warning") == "under-trained").sum()) if "warning" in df else 0
    failed = int((df.get("status") == "failed").sum()) if "status" in df else 0
    items = [(f"matrices{suffix}", n, ""),
             (f"over-trained α<2{suffix}", over, "bad" if over else ""),
             (f"under-trained α>6{suffix}", under, "warn" if under else ""),
             (f"failed fits{suffix}", failed, "warn" if failed else "")]
    for k, v in summary(df).items():
        items.append((f"mean {k}{suffix}", f"{v:.4g}", ""))
    return items


def _params_html(params: Mapping) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in params.items())
    return f'<table class="params">{rows}</table>'


def _asset(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _panel_png(job) -> str:
    from ..plot import layer_panel
    ev, row, rv = job
    return figure_png(layer_panel(ev, row, rv))


def _render_panels(jobs: list, workers: int) -> list[str]:
    """PNG data URIs of the drill-down panels, in ``workers`` forked processes when > 1
    (matplotlib is single-threaded; each figure is independent, so the bytes are the same)."""
    if workers > 1 and len(jobs) > 8:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        if "fork" in mp.get_all_start_methods():
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
                return list(ex.map(_panel_png, jobs, chunksize=4))
    return [_panel_png(j) for j in jobs]


def _esd_for(esds, r) -> Any:
    if not esds:
        return None
    sid = r.get("slice_id")
    sid = None if sid is None or (isinstance(sid, float) and math.isnan(sid)) else int(sid)
    return esds.get((int(r["layer_id"]), sid)) if "layer_id" in r else None


def report(data, other=None, path=None, *, esds: dict | None = None,
           other_esds: dict | None = None, rand_esds: dict | None = None,
           title: str | None = None, params: Mapping | None = None, figures: bool = True,
           top: int | None = None, workers: int = 0, **analyze_kw) -> Report:
    """Build (and with ``path`` write) the HTML report; see the module docstring.

    ``data`` / ``other``: tables or checkpoints (``analyze_kw`` are passed to ``analyze``).
    ``esds`` / ``other_esds``: ``{(layer_id, slice_id): eigenvalues}`` from ``analyze(...,
    esds=...)`` for tables, to draw the per-layer panels (collected automatically for paths).
    ``rand_esds``: same keys, randomized eigenvalues (the panel then shows the trap plot).
    ``params``: run parameters to list (the analyze options are listed for paths).
    ``figures=False``: table only (no matplotlib needed).  ``top``: layers flagged as moved
    in a comparison.  ``title``: page title (default: the path's base name).  ``workers``:
    processes drawing the per-layer panels (0 = the number of cores, at most 4)."""
    from .. import __version__
    from ..depth import add_depth

    df, esds, src = _load(data, esds, analyze_kw)
    if "depth" not in df.columns:
        df = add_depth(df.copy())
    run = "step" in df.columns
    if run:
        last = df["step"].max()
        view = df[df["step"] == last]
    else:
        view = df
    view = view.sort_values("depth", kind="stable").reset_index(drop=True)
    user_title = title
    title = title or _name(src, "htsr report")
    pars = dict(params or {})
    if src is not None:
        pars = {"source": os.fspath(src) if isinstance(src, (str, os.PathLike)) else type(src).__name__,
                **{k: repr(v) for k, v in sorted(analyze_kw.items())}, **pars}
    pars["htsr version"] = __version__
    fig_mod = None
    if figures:
        from .. import plot as fig_mod
        fig_mod._need_matplotlib()

    overview, legend = [], ("Depth is the network order (embeddings, then each block's attention "
                            "q/k/v/o and MLP gate/up/down and experts, the head last). Red band: "
                            "α < 2 (over-trained), orange: α > 6 (under-trained).")
    templates = []
    jobs: list = []          # (ev, row, rand_ev) per panel; placeholders \x00P<i>\x00 in templates

    def panel(ev, row, rv=None) -> str:
        jobs.append((np.asarray(ev, dtype=np.float64), row, rv))
        return f"\x00P{len(jobs) - 1}\x00"

    if other is not None:
        from ..comparison import compare
        db, other_esds, src_b = _load(other, other_esds, analyze_kw)
        cmp = compare(view, db, top=top)
        title = user_title or f"{_name(src, 'base')} vs {_name(src_b, 'other')}"
        cards = _cards(_summary_items(view, " (base)") + _summary_items(db, " (other)")
                       + [("layers moved most (flagged)", int(cmp["moved"].sum()), "")])
        if fig_mod is not None:
            overview.append("<figure>" + figure_svg(fig_mod.compare_flow(cmp), "cmpflow") + "</figure>")
        table = cmp
        cols = [c for c in _COMPARE_TABLE if c in cmp.columns]
        rows_a = {r["name"]: r for r in view.to_dict("records")}
        rows_b = {r["name"]: r for r in db.to_dict("records")}
        for i, r in enumerate(cmp.to_dict("records")):
            parts = [f"<h3>{_esc(r['name'])}</h3>", _kv_html(r)]
            for lab, rows, es in (("base", rows_a, esds), ("other", rows_b, other_esds)):
                rr = rows.get(r["name"])
                ev = _esd_for(es, rr) if rr is not None else None
                if fig_mod is not None and ev is not None:
                    parts.append(f'<figure><figcaption>{lab}</figcaption><img alt="{lab} plots" '
                                 f'src="{panel(ev, rr)}"></figure>')
            templates.append(f'<template id="L{i}">' + "".join(parts) + "</template>")
        overview_title = "Alpha by depth: base vs other"
    else:
        cards = _cards(_summary_items(view))
        if fig_mod is not None and len(view):
            overview.append("<figure>" + figure_svg(fig_mod.correlation_flow(view), "flow") + "</figure>")
            overview.append("<figure>" + figure_svg(fig_mod.alpha_histogram(view), "hist") + "</figure>")
            if run:
                overview.insert(0, '<figure><img alt="alpha over steps" src="'
                                + figure_png(fig_mod.alpha_over_steps(df), dpi=80) + '"></figure>')
        table = view
        cols = [c for c in _TABLE if c in view.columns]
        for i, r in enumerate(view.to_dict("records")):
            parts = [f"<h3>{_esc(r.get('name', ''))}</h3>"]
            if run:
                sub = df[df["name"] == r["name"]].sort_values("step")
                parts.append(_spark(sub["step"], sub["alpha"]))
            ev = _esd_for(esds, r)
            if fig_mod is not None and ev is not None and len(ev):
                rv = _esd_for(rand_esds, r)
                parts.append(f'<img alt="plots of {_esc(r.get("name", ""))}" src="{panel(ev, r, rv)}">')
            parts.append(_kv_html(r))
            templates.append(f'<template id="L{i}">' + "".join(parts) + "</template>")
        overview_title = "Alpha over training steps and by depth" if run else \
            "Correlation flow: alpha by depth"
    if jobs:
        uris = _render_panels(jobs, workers or min(4, os.cpu_count() or 1))
        templates = [re.sub("\x00P(\\d+)\x00", lambda m: uris[int(m.group(1))], t) for t in templates]
    thead, tbody = _table_html(table, cols)
    only = ['<option value="over-trained">over-trained (α&lt;2)</option>',
            '<option value="under-trained">under-trained (α&gt;6)</option>',
            '<option value="failed">failed fits</option>']
    if other is not None:
        only.insert(0, '<option value="moved">moved most</option>')
    sub = f"{len(table)} matrices" + (f", {df['step'].nunique()} checkpoints" if run else "") + \
        f" · htsr {__version__}"
    page = Template(_asset("template.html")).substitute(
        version=_esc(__version__), title=_esc(title), subtitle=_esc(sub), css=_asset("report.css"),
        cards=cards, overview_title=_esc(overview_title), overview="\n".join(overview),
        legend=_esc(legend), only_options="".join(only), thead=thead, tbody=tbody,
        params=_params_html(pars), templates="\n".join(templates), js=_asset("report.js"),
        footer=_esc(f"htsr {__version__}: heavy-tailed self-regularization diagnostics. "
                    "Offline file: no network access needed."))
    rep = Report(page, table, title)
    if path is not None:
        rep.save(path)
    return rep


class _CallableModule(types.ModuleType):
    """``htsr.report(...)`` works although ``htsr.report`` is this package."""

    def __call__(self, *args, **kwargs):
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
