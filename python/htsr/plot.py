"""Figures of HT-SR results (matplotlib, optional: ``pip install htsr[plot]``).

Every function returns a ``matplotlib.figure.Figure`` and takes an optional ``ax=`` to draw
into an existing Axes.  Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas,
never through ``pyplot``: nothing pops up, no global figure state, no backend switch, and
nothing is written unless ``save_ww_figures`` or the caller saves it.  ``import htsr`` never
imports this module.

Per-layer inputs are the ESD (``evals``: eigenvalues of X = W^T W on the scale ``analyze``
fits, e.g. ``htsr.esd(model, layer)``) and that layer's table row (a dict or a pandas row).
The fit drawn is the row's (``alpha, xmin, xmax, D, sigma``); without a row it is refitted
with WeightWatcher's settings (eigenvalues <= 1e-5 dropped, its small-n estimator).

Optional columns drawn when present (from the diagnostics options):

* TPL: ``TPL_alpha`` + ``TPL_Lambda`` (or WeightWatcher's ``fit='TPL'`` pair ``alpha`` +
  ``Lambda``): p(x) ~ x^-alpha exp(-lambda x) on x >= xmin, normalised numerically;
* lognormal: ``lognormal_mu`` + ``lognormal_sigma``: lognormal pdf conditioned on x >= xmin;
* Marchenko-Pastur: ``bulk_min`` + ``bulk_max`` (WeightWatcher's names).  The MP law with
  edges a < b has sigma^2 = ((sqrt a + sqrt b)/2)^2 and ratio c = ((sqrt b - sqrt a)/(sqrt b +
  sqrt a))^2, density sqrt((b-x)(x-a)) / (2 pi sigma^2 c x) (Marchenko & Pastur 1967), drawn
  with the mass of the eigenvalues inside [a, b].  Without these columns the reference drawn
  is the MP law of a random matrix of the same shape and Frobenius norm: c = M/N and
  sigma^2 = mean eigenvalue (the MP mean), edges sigma^2 (1 +- sqrt c)^2;
* randomization: ``max_rand_eval`` (the trap threshold; else the largest randomized eigenvalue).
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np

__all__ = [
    "esd_loglog", "esd_linear", "esd_loglin", "fit_candidates", "randomized_esd",
    "level_spacings", "correlation_flow", "alpha_histogram", "alpha_over_steps", "compare_flow",
    "layer_panel", "save_ww_figures", "save_ww_plots", "shuffled_eigenvalues", "ROLE_COLORS", "WW_TAGS",
]

_trapz = getattr(np, "trapezoid", None) or getattr(np, "trapz")   # numpy 2 renamed it
FLOOR = 1e-5                       # WeightWatcher's EVALS_THRESH
_FIT_KW = dict(floor=FLOOR, small_n=True, every_position=True)
#: colour per role family (see htsr.depth.role_family); others cycle through the tab10 greys
ROLE_COLORS = {"q": "#1f77b4", "k": "#17becf", "v": "#9467bd", "qkv": "#6a3d9a", "kv": "#aec7e8",
               "o": "#2ca02c", "gate": "#ff7f0e", "up": "#d62728", "gate_up": "#e377c2",
               "down": "#8c564b", "experts": "#bcbd22", "router": "#7f7f7f",
               "embedding": "#000000", "head": "#e6550d", "other": "#999999"}
#: WeightWatcher 0.7.7 plot tags (file ww.layer{id}.{tag}.png), by the option that adds them
WW_TAGS = {"plot": ("esd", "esd2", "esd3", "esd4", "esd5"), "mp_fit": ("mpfit1", "mpfit2"),
           "randomize": ("randesd1", "randesd2"), "deltas": ("deltaEs", "level-stats")}


# ------------------------------------------------------------------------------------ helpers
def _new_ax(ax, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    _need_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("htsr.plot needs matplotlib: pip install 'htsr[plot]'") from None


def _get(row, key, default=float("nan")):
    if row is None:
        return default
    try:
        v = row[key]
    except (KeyError, IndexError, TypeError):
        return default
    if v is None:
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _has(row, *keys) -> bool:
    return all(np.isfinite(_get(row, k)) for k in keys)


def _evals(evals) -> np.ndarray:
    ev = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if ev.size == 0:
        raise ValueError("empty ESD: nothing to plot")
    if not np.isfinite(ev).all():
        raise ValueError("ESD has NaN/Inf eigenvalues")
    return ev


def _fit_of(ev: np.ndarray, row):
    """(alpha, xmin, xmax, D, sigma) from the row, else a WeightWatcher-settings refit."""
    if row is not None and _has(row, "alpha", "xmin"):
        return tuple(_get(row, k) for k in ("alpha", "xmin", "xmax", "D", "sigma"))
    from .core import fit_power_law
    f = fit_power_law(ev, **_FIT_KW) if (ev > FLOOR).sum() >= 2 else None
    if f is None or f.status != "success":
        return (float("nan"),) * 5
    return (f.alpha, f.xmin, f.xmax, f.D, f.sigma)


def _title(row, what: str) -> str:
    if row is None:
        return what
    lid, name = row.get("layer_id", None) if hasattr(row, "get") else None, \
        row.get("name", None) if hasattr(row, "get") else None
    if name is None:
        return what
    return f"{what}: layer {lid} ({name})" if lid is not None else f"{what}: {name}"


def _logbins(lo: float, hi: float, n: int) -> np.ndarray:
    if hi <= lo:
        hi = lo * 10.0
    e = np.logspace(math.log10(lo), math.log10(hi), n + 1)
    e[0], e[-1] = lo, hi          # exact ends: 10**log10(x) may round above x
    return e


def _tail_pdfs(ax, x, row, alpha, xmin, frac):
    """TPL / lognormal overlays (columns documented in the module docstring)."""
    from scipy import stats
    if _has(row, "TPL_alpha", "TPL_Lambda"):
        ta, tl = _get(row, "TPL_alpha"), _get(row, "TPL_Lambda")
    elif _has(row, "Lambda"):
        ta, tl = alpha, _get(row, "Lambda")
    else:
        ta = tl = None
    if ta is not None and tl is not None and tl >= 0:
        g = np.logspace(math.log10(xmin), math.log10(max(x[-1], xmin) * 10), 2000)
        w = (g / xmin) ** (-ta) * np.exp(-tl * (g - xmin))
        z = _trapz(w, g)
        if z > 0:
            ax.plot(x, frac * (x / xmin) ** (-ta) * np.exp(-tl * (x - xmin)) / z, "-",
                    color="#9467bd", lw=1.5, label=f"TPL α={ta:.2f}, λ={tl:.3g}")
    if _has(row, "lognormal_mu", "lognormal_sigma"):
        mu, s = _get(row, "lognormal_mu"), _get(row, "lognormal_sigma")
        if s > 0:
            d = stats.lognorm(s, scale=math.exp(mu))
            tail = d.sf(xmin)
            if tail > 0:
                ax.plot(x, frac * d.pdf(x) / tail, "-.", color="#2ca02c", lw=1.5,
                        label=f"lognormal μ={mu:.2f}, σ={s:.2f}")


# --------------------------------------------------------------------------- per-layer figures
def esd_loglog(evals, row=None, *, ax=None, bins: int = 80, title: str | None = None):
    """Log-log ESD: log-binned density of the eigenvalues > 1e-5, the fitted power law
    (n_tail/n) (alpha-1)/xmin (x/xmin)^-alpha on [xmin, xmax] (red dashed), xmin (red) and
    xmax (orange) lines, and the TPL / lognormal tails when the row has them."""
    ev = _evals(evals)
    fig, ax = _new_ax(ax)
    pos = ev[ev > FLOOR]
    if pos.size == 0:
        raise ValueError("ESD has no eigenvalue > 1e-5: nothing to draw on log axes")
    alpha, xmin, xmax, D, sigma = _fit_of(ev, row)
    edges = _logbins(pos[0], pos[-1] * 1.0001, bins)
    cnt, _ = np.histogram(pos, edges)
    dens = cnt / (pos.size * np.diff(edges))
    ax.stairs(np.where(dens > 0, dens, np.nan), edges, color="#4c72b0", fill=False, lw=1.2,
              label="ESD")
    if np.isfinite(alpha) and np.isfinite(xmin) and xmin > 0:
        hi = xmax if np.isfinite(xmax) and xmax > xmin else pos[-1]
        x = np.logspace(math.log10(xmin), math.log10(hi), 200)
        frac = float((pos >= xmin).sum()) / pos.size
        ax.plot(x, frac * (alpha - 1) / xmin * (x / xmin) ** (-alpha), "--", color="red", lw=2,
                label=f"PL α={alpha:.2f}", gid="pl-fit")
        _tail_pdfs(ax, x, row, alpha, xmin, frac)
        ax.axvline(xmin, color="red", lw=1, label=f"xmin={xmin:.3g}", gid="xmin")
        if np.isfinite(xmax):
            ax.axvline(xmax, color="orange", lw=1, label=f"xmax={xmax:.3g}", gid="xmax")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density")
    sub = f"α={alpha:.3f}, D={D:.3f}, σ={sigma:.3f}" if np.isfinite(alpha) else "fit failed"
    ax.set_title(title or f"{_title(row, 'Log-log ESD')}\n{sub}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def _mp_edges(ev: np.ndarray, row):
    """(a, b, sigma2, c, estimated) of the MP law to draw (module docstring)."""
    if _has(row, "bulk_min", "bulk_max") and 0 <= _get(row, "bulk_min") < _get(row, "bulk_max"):
        a, b = _get(row, "bulk_min"), _get(row, "bulk_max")
        sa, sb = math.sqrt(a), math.sqrt(b)
        return a, b, ((sa + sb) / 2) ** 2, ((sb - sa) / (sb + sa)) ** 2, False
    N, M = _get(row, "N"), _get(row, "M")
    c = M / N if np.isfinite(N) and np.isfinite(M) and N > 0 else 1.0
    s2 = float(np.mean(ev))
    return s2 * (1 - math.sqrt(c)) ** 2, s2 * (1 + math.sqrt(c)) ** 2, s2, c, True


def esd_linear(evals, row=None, *, ax=None, bins: int = 100, title: str | None = None):
    """Linear ESD histogram (density) with the Marchenko-Pastur density over the bulk and the
    eigenvalues above the bulk edge (spikes) marked as ticks; xmin line when fitted."""
    ev = _evals(evals)
    fig, ax = _new_ax(ax)
    ax.hist(ev, bins=bins, density=True, color="#4c72b0", alpha=0.6, label="ESD")
    a, b, s2, c, est = _mp_edges(ev, row)
    inside = float(((ev >= a) & (ev <= b)).sum()) / ev.size
    if b > a and s2 > 0 and c > 0:
        x = np.linspace(max(a, 1e-300), b, 400)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * math.pi * s2 * c * x)
        lab = ("MP, same norm (estimate)" if est else "MP fit") + f": σ²={s2:.3g}, Q={1 / c:.3g}"
        ax.plot(x, inside * rho, color="black", lw=1.5, label=lab, gid="mp")
        ax.axvline(b, color="black", ls=":", lw=1)
        spikes = ev[ev > b]
        if spikes.size:
            ax.plot(spikes, np.zeros_like(spikes), "|", color="red", ms=14, mew=1.5,
                    label=f"{spikes.size} spikes > bulk edge", gid="spikes")
    alpha, xmin = _fit_of(ev, row)[:2]
    if np.isfinite(xmin):
        ax.axvline(xmin, color="red", lw=1, label=f"xmin={xmin:.3g}")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.set_title(title or _title(row, "ESD and Marchenko-Pastur bulk"), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")   # "best" is slow on big ESDs
    return fig


def esd_loglin(evals, row=None, *, ax=None, bins: int = 100, title: str | None = None):
    """Histogram of log10 λ (WeightWatcher's ``esd3``) with xmin (red) and xmax (orange)."""
    ev = _evals(evals)
    fig, ax = _new_ax(ax)
    pos = ev[ev > FLOOR]
    ax.hist(np.log10(pos), bins=bins, density=True, color="#4c72b0", alpha=0.7)
    _alpha, xmin, xmax = _fit_of(ev, row)[:3]
    if np.isfinite(xmin) and xmin > 0:
        ax.axvline(math.log10(xmin), color="red", label="xmin")
    if np.isfinite(xmax) and xmax > 0:
        ax.axvline(math.log10(xmax), color="orange", label="xmax")
    ax.set_xlabel("log10 λ")
    ax.set_ylabel("density")
    ax.set_title(title or _title(row, "Log-lin ESD"), fontsize=9)
    return fig


def fit_candidates(evals, row=None, *, ax=None, which: str = "both", title: str | None = None):
    """KS distance D and alpha of the power-law fit at every candidate xmin
    (``fit_power_law(..., candidates=True)``, WeightWatcher settings) with the chosen xmin as a
    dashed line.  ``which``: ``"both"`` (D on the left axis, alpha on a twin right axis, the
    last of ``fig.axes``), ``"D"`` (WeightWatcher's ``esd4``) or ``"alpha"`` (its ``esd5``)."""
    from .core import fit_power_law
    if which not in ("both", "D", "alpha"):
        raise ValueError(f"fit_candidates: which must be 'both', 'D' or 'alpha', got {which!r}")
    ev = _evals(evals)
    fig, ax = _new_ax(ax)
    f = fit_power_law(ev, candidates=True, **_FIT_KW)
    xs, Ds, als = (np.asarray(v if v is not None else [], dtype=np.float64)
                   for v in (f.xmins, f.Ds, f.alphas))
    ok = np.isfinite(Ds) & np.isfinite(als) & (xs > 0)
    ax.set_xscale("log")
    ax.set_xlabel("candidate xmin")
    if which in ("both", "D"):
        ax.plot(xs[ok], Ds[ok], color="#1f77b4", lw=1, label="D (KS)", gid="D")
        ax.set_ylabel("D", color="#1f77b4")
    ax2 = ax.twinx() if which == "both" else ax
    if which in ("both", "alpha"):
        ax2.plot(xs[ok], als[ok], color="#d62728", lw=1, label="α", gid="alpha")
        ax2.set_ylabel("α", color="#d62728")
        if ok.any():
            ax2.set_ylim(max(0.0, float(np.min(als[ok]))), min(float(np.max(als[ok])), 12.0))
    if f.status == "success":
        ax.axvline(f.xmin, color="black", ls="--", lw=1, gid="xmin")
    ax.set_title(title or _title(row, {"both": "D and α", "D": "D", "alpha": "α"}[which]
                                 + " against xmin"), fontsize=9)
    return fig


def shuffled_eigenvalues(W, seed: int = 0, *, precision: str = "float64") -> np.ndarray:
    """Eigenvalues of W with its elements shuffled (numpy ``default_rng(seed).permutation``),
    the randomized twin WeightWatcher compares against; ``evals`` of a conv layer should be
    compared on the same scale."""
    from .core import eigenvalues
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"shuffled_eigenvalues: W must be 2-D, got shape {W.shape}")
    flat = np.random.default_rng(seed).permutation(W.ravel())
    return eigenvalues(np.ascontiguousarray(flat.reshape(W.shape), dtype=np.float64),
                       precision=precision)


def randomized_esd(evals, rand_evals, row=None, *, ax=None, log: bool = True, bins: int = 100,
                   title: str | None = None):
    """Original (green) against randomized (red) ESD, as histograms of log10 λ (``log=True``,
    WeightWatcher's ``randesd2``) or of λ (``randesd1``), and the trap threshold (orange): the
    row's ``max_rand_eval`` or the largest randomized eigenvalue.  Original eigenvalues above it
    are correlation traps candidates and are counted in the legend."""
    ev = _evals(evals)
    rv = _evals(rand_evals)
    fig, ax = _new_ax(ax)
    thr = _get(row, "max_rand_eval")
    if not np.isfinite(thr):
        thr = float(rv[-1])
    f = (lambda v: np.log10(v[v > FLOOR])) if log else (lambda v: v)
    a, r = f(ev), f(rv)
    lo, hi = min(a.min(), r.min()), max(a.max(), r.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    ax.hist(a, bins=edges, density=True, color="green", alpha=0.5, label="original")
    ax.hist(r, bins=edges, density=True, color="red", alpha=0.5, label="randomized")
    n_above = int((ev > thr).sum())
    ax.axvline(math.log10(thr) if log and thr > 0 else thr, color="orange", lw=1.5,
               label=f"max rand λ={thr:.3g} ({n_above} above)", gid="trap")
    ax.set_xlabel("log10 λ" if log else "λ")
    ax.set_ylabel("density")
    ax.set_title(title or _title(row, "ESD vs randomized"), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")   # "best" is slow on big ESDs
    return fig


def level_spacings(evals, row=None, *, ax=None, hist: bool = False, title: str | None = None):
    """log10 of consecutive eigenvalue gaps Δλ in order (WeightWatcher's ``deltaEs``) or their
    histogram (``hist=True``, its ``level-stats``)."""
    ev = _evals(evals)
    fig, ax = _new_ax(ax)
    d = np.diff(ev[ev > FLOOR])
    d = np.log10(d[d > 0]) if d.size else d
    if hist:
        ax.hist(d, bins=100, density=True, color="#4c72b0")
        ax.set_xlabel("log10 Δλ")
    else:
        ax.plot(d, ".", ms=2, color="#4c72b0")
        ax.set_xlabel("index")
        ax.set_ylabel("log10 Δλ")
    ax.set_title(title or _title(row, "level statistics" if hist else "eigenvalue gaps"), fontsize=9)
    return fig


# ------------------------------------------------------------------------- whole-model figures
def _with_places(df):
    from .depth import layer_places, role_family
    names = list(df["name"].astype(str))
    places = layer_places(names, list(df["part"]) if "part" in df else None,
                          list(df["layer_type"]) if "layer_type" in df else None)
    depth = np.asarray(df["depth"]) if "depth" in df else np.array([p.depth for p in places])
    fams = [role_family(p.role) for p in places]
    return depth, fams


def _bands(ax, horizontal=True):
    span = ax.axhspan if horizontal else ax.axvspan
    span(0, 2, color="red", alpha=0.07, lw=0)
    span(6, 50, color="orange", alpha=0.07, lw=0)
    line = ax.axhline if horizontal else ax.axvline
    line(2, color="red", lw=0.8, ls="--", gid="band-2")
    line(6, color="orange", lw=0.8, ls="--", gid="band-6")


def correlation_flow(df, column: str = "alpha", *, ax=None, color_by: str = "role",
                     title: str | None = None):
    """``column`` (alpha by default) against depth (network order, ``htsr.depth``), one point
    per matrix coloured by role family (q/k/v/o, gate/up/down, experts, embedding, head) or by
    any other column (``color_by``); a grey line follows the depth order; alpha gets the
    over-trained (< 2) and under-trained (> 6) bands."""
    if column not in df.columns:
        raise ValueError(f"correlation_flow: no column {column!r} in the table")
    fig, ax = _new_ax(ax, figsize=(7.8, 3.6))
    depth, fams = _with_places(df)
    y = np.asarray(df[column], dtype=np.float64)
    order = np.argsort(depth, kind="stable")
    ax.plot(depth[order], y[order], "-", color="#cccccc", lw=0.8, zorder=1)
    groups = fams if color_by == "role" else [str(v) for v in df[color_by]]
    cyc = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
    for i, g in enumerate(dict.fromkeys(groups)):
        sel = np.array([x == g for x in groups])
        col = ROLE_COLORS.get(g, cyc[i % len(cyc)]) if color_by == "role" else cyc[i % len(cyc)]
        ax.scatter(depth[sel], y[sel], s=14, color=col, label=g, zorder=2, gid=f"flow-{g}")
    if column == "alpha":
        lo, hi = np.nanmin(y) if np.isfinite(y).any() else 0, np.nanmax(y) if np.isfinite(y).any() else 8
        _bands(ax)
        ax.set_ylim(max(0.0, min(lo, 2.0) - 0.3), max(hi, 6.0) + 0.3)
    ax.set_xlabel("depth (network order: embeddings, blocks, head)")
    ax.set_ylabel(column)
    ax.set_title(title or f"correlation flow: {column} by depth", fontsize=10)
    ax.legend(fontsize=7, ncol=min(8, len(set(groups))), loc="upper left", frameon=False)
    return fig


def alpha_histogram(df, *, ax=None, column: str = "alpha", bins: int = 30,
                    title: str | None = None):
    """Histogram of ``column`` across layers with the alpha < 2 (over-trained, red) and
    alpha > 6 (under-trained, orange) bands; failed fits (NaN) are left out and counted."""
    fig, ax = _new_ax(ax, figsize=(4.0, 3.6))
    a = np.asarray(df[column], dtype=np.float64)
    ok = a[np.isfinite(a)]
    if ok.size:
        ax.hist(ok, bins=bins, color="#4c72b0", gid="alpha-hist")
    _bands(ax, horizontal=False)
    lo = min(float(ok.min()) if ok.size else 2.0, 1.5)
    hi = max(float(ok.max()) if ok.size else 6.0, 6.5)
    ax.set_xlim(lo - 0.2, hi + 0.2)
    ax.set_xlabel(column)
    ax.set_ylabel("layers")
    nf = int(a.size - ok.size)
    ax.set_title(title or f"{column} across {ok.size} layers" + (f" ({nf} failed)" if nf else ""),
                 fontsize=10)
    return fig


def alpha_over_steps(df, *, ax=None, column: str = "alpha", max_lines: int = 400,
                     title: str | None = None):
    """``column`` against training ``step``, one line per layer (matched by name) coloured by
    depth (viridis: shallow = dark), for the tables of ``htsr.analyze(RUN_DIR)``."""
    if "step" not in df.columns:
        raise ValueError("alpha_over_steps: the table has no 'step' column")
    import matplotlib as mpl
    fig, ax = _new_ax(ax, figsize=(9.0, 3.6))
    depth, _ = _with_places(df)
    dmax = max(int(np.max(depth)), 1) if len(depth) else 1
    cmap = mpl.colormaps["viridis"]
    names = list(dict.fromkeys(df["name"]))[:max_lines]
    dmap = dict(zip(df["name"], depth))
    for nm in names:
        sub = df[df["name"] == nm].sort_values("step")
        ax.plot(sub["step"], sub[column], "-", lw=0.8, color=cmap(dmap[nm] / dmax), alpha=0.8)
    if column == "alpha":
        _bands(ax)
        y = np.asarray(df[column], dtype=np.float64)
        if np.isfinite(y).any():
            ax.set_ylim(max(0.0, min(np.nanmin(y), 2.0) - 0.3), max(np.nanmax(y), 6.0) + 0.3)
    sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, dmax))
    fig.colorbar(sm, ax=ax, label="depth")
    ax.set_xlabel("step")
    ax.set_ylabel(column)
    ax.set_title(title or f"{column} per layer over training steps", fontsize=10)
    return fig


def compare_flow(cmp, *, ax=None, title: str | None = None):
    """A comparison (``htsr.compare``) by depth: alpha of the base (grey) and the other
    (blue) table, the change d_alpha as bars on a twin axis, the flagged layers ringed red."""
    for c in ("depth", "alpha_a", "alpha_b", "d_alpha"):
        if c not in cmp.columns:
            raise ValueError(f"compare_flow: the comparison has no column {c!r}")
    fig, ax = _new_ax(ax, figsize=(9.0, 3.8))
    d = np.asarray(cmp["depth"], dtype=np.float64)
    o = np.argsort(d, kind="stable")
    a, b = (np.asarray(cmp[c], dtype=np.float64) for c in ("alpha_a", "alpha_b"))
    ax2 = ax.twinx()
    ax2.bar(d, np.asarray(cmp["d_alpha"], dtype=np.float64), width=0.8, color="#9ecae1",
            alpha=0.6, gid="d-alpha")
    ax2.set_ylabel("Δα (other − base)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(d[o], a[o], ".-", color="#888888", lw=0.8, ms=4, label="base α", gid="alpha-a")
    ax.plot(d[o], b[o], ".-", color="#1f77b4", lw=0.8, ms=4, label="other α", gid="alpha-b")
    if "moved" in cmp.columns:
        mv = np.asarray(cmp["moved"], dtype=bool)
        ax.scatter(d[mv], b[mv], s=60, facecolors="none", edgecolors="red", lw=1.2,
                   label="moved most", gid="moved")
    _bands(ax)
    y = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    if y.size:
        ax.set_ylim(max(0.0, min(y.min(), 2.0) - 0.3), max(y.max(), 6.0) + 0.3)
    ax.set_xlabel("depth (network order)")
    ax.set_ylabel("α")
    ax.set_title(title or "alpha by depth: base vs other, and the change", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return fig


def layer_panel(evals, row=None, rand_evals=None, *, fig=None):
    """The report's drill-down: 2 x 2 panels (log-log ESD with fit, linear ESD with MP,
    D and alpha against xmin, randomized ESD or the log-lin histogram)."""
    if fig is None:
        _need_matplotlib()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(10.0, 7.0), dpi=72)   # fixed margins: 2x faster than a layout engine
        FigureCanvasAgg(fig)
    axs = fig.subplots(2, 2, gridspec_kw=dict(left=0.08, right=0.94, bottom=0.08, top=0.95,
                                              wspace=0.32, hspace=0.3))
    esd_loglog(evals, row, ax=axs[0, 0], title="log-log ESD, power-law fit")
    esd_linear(evals, row, ax=axs[0, 1], title="linear ESD, MP bulk")
    fit_candidates(evals, row, ax=axs[1, 0], title="D and α against xmin")
    if rand_evals is not None:
        randomized_esd(evals, rand_evals, row, ax=axs[1, 1], title="original vs randomized")
    else:
        esd_loglin(evals, row, ax=axs[1, 1], title="log10 λ histogram")
    return fig


# ------------------------------------------------------------------ WeightWatcher file parity
def save_ww_figures(evals, row, plot_id, savedir: str = "ww-img", *, mp_fit: bool = False,
                    randomize: bool = False, deltas: bool = False, rand_evals=None) -> list[str]:
    """Write WeightWatcher 0.7.7's per-layer files ``{savedir}/ww.layer{plot_id}.{tag}.png``:
    ``esd`` (log-log + fit), ``esd2`` (linear), ``esd3`` (log-lin), ``esd4`` (D vs xmin),
    ``esd5`` (alpha vs xmin); ``mpfit1`` (only when Q == 1) and ``mpfit2`` with ``mp_fit``;
    ``randesd1`` / ``randesd2`` with ``randomize`` (needs ``rand_evals``); ``deltaEs`` and
    ``level-stats`` with ``deltas``.  ``savedir`` is created (parents too).  Returns the paths."""
    os.makedirs(savedir, exist_ok=True)
    out = []

    def save(fig, tag):
        p = os.path.join(savedir, f"ww.layer{plot_id}.{tag}.png")
        fig.savefig(p, metadata={"Software": None})
        out.append(p)

    save(esd_loglog(evals, row), "esd")
    fig, ax = _new_ax(None)
    ax.hist(_evals(evals), bins=100, density=True, color="#4c72b0")
    xmin = _fit_of(_evals(evals), row)[1]
    if np.isfinite(xmin):
        ax.axvline(xmin, color="red")
    ax.set_title(_title(row, "Lin-Lin ESD"), fontsize=9)
    save(fig, "esd2")
    save(esd_loglin(evals, row), "esd3")
    save(fit_candidates(evals, row, which="D"), "esd4")
    save(fit_candidates(evals, row, which="alpha"), "esd5")
    if mp_fit:
        if _get(row, "Q") == 1.0:
            save(esd_linear(np.sqrt(_evals(evals)), None, title=_title(row, "singular values")),
                 "mpfit1")
        save(esd_linear(evals, row), "mpfit2")
    if randomize:
        if rand_evals is None:
            raise ValueError(f"layer {plot_id}: randomize plots need the randomized ESD")
        save(randomized_esd(evals, rand_evals, row, log=False), "randesd1")
        save(randomized_esd(evals, rand_evals, row, log=True), "randesd2")
    if deltas:
        save(level_spacings(evals, row), "deltaEs")
        save(level_spacings(evals, row, hist=True), "level-stats")
    return out



def save_ww_plots(df, esds: Mapping, savedir: str = "ww-img", *,
                  mp_fit: bool = False, randomize: bool = False, deltas: bool = False,
                  rand_esds: Mapping | None = None) -> list[str]:
    """``save_ww_figures`` for every row of an ``analyze(..., esds=esds)`` table, named as
    WeightWatcher names them: ``plot_id`` = the row's ``layer_id``, ``"id:slice"`` per slice."""
    out = []
    for r in df.to_dict("records"):
        sid = r.get("slice_id")
        sid = None if sid is None or sid != sid else int(sid)
        key = (int(r["layer_id"]), sid)
        if key not in esds:
            raise ValueError(f"layer '{r.get('name')}' (layer_id {key[0]}): no ESD to plot")
        plot_id = f"{key[0]}:{sid}" if sid is not None else f"{key[0]}"
        out += save_ww_figures(esds[key], r, plot_id, savedir, mp_fit=mp_fit, randomize=randomize,
                               deltas=deltas, rand_evals=(rand_esds or {}).get(key))
    return out
