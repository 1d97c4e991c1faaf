"""htsr.plot: each figure draws what it says (checked against numpy / closed forms), returns a
Figure, accepts ax=, writes nothing unless asked; the facade's plot=True writes WeightWatcher's
file set."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import trapezoid

matplotlib = pytest.importorskip("matplotlib")

import htsr  # noqa: E402
from htsr import plot  # noqa: E402


@pytest.fixture(scope="module")
def heavy():
    """A heavy-tailed ESD (W with Student-t entries) and its analyze-style row."""
    rng = np.random.default_rng(1)
    W = rng.standard_t(3, size=(400, 200))
    ev = htsr.eigenvalues(W, precision="float64")
    f = htsr.fit_power_law(ev, floor=1e-5, small_n=True, every_position=True)
    row = {"layer_id": 3, "name": "blk.0.attn_q", "N": 400, "M": 200, "Q": 2.0, "alpha": f.alpha,
           "xmin": f.xmin, "xmax": f.xmax, "D": f.D, "sigma": f.sigma}
    return W, ev, row


def _line(ax, gid):
    found = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert found, f"no line {gid!r}"
    return found[0]


def test_import_htsr_does_not_import_matplotlib():
    code = ("import sys, numpy as np, htsr; htsr.analyze({'w': np.ones((16, 8), np.float32)}); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_esd_loglog_fit_line_starts_at_xmin_with_the_pl_density(heavy):
    _W, ev, row = heavy
    fig = plot.esd_loglog(ev, row)
    ax = fig.axes[0]
    assert isinstance(fig, matplotlib.figure.Figure)
    pl = _line(ax, "pl-fit")
    x, y = pl.get_data()
    assert x[0] == pytest.approx(row["xmin"]) and x[-1] == pytest.approx(row["xmax"])
    pos = ev[ev > 1e-5]
    frac = (pos >= row["xmin"]).sum() / pos.size
    # closed form: tail fraction x (alpha-1)/xmin (x/xmin)^-alpha
    assert y[0] == pytest.approx(frac * (row["alpha"] - 1) / row["xmin"])
    assert y[-1] == pytest.approx(y[0] * (x[-1] / x[0]) ** (-row["alpha"]))
    assert _line(ax, "xmin").get_xdata()[0] == pytest.approx(row["xmin"])
    assert _line(ax, "xmax").get_xdata()[0] == pytest.approx(row["xmax"])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the drawn histogram is a density: sum(height * width) == 1
    st = [p for p in ax.patches if type(p).__name__ == "StepPatch"][0]
    vals, edges = st.get_data()[:2]
    assert np.nansum(vals * np.diff(edges)) == pytest.approx(1.0)


def test_esd_loglog_without_row_refits_and_draws_tpl_and_lognormal(heavy):
    _W, ev, row = heavy
    ax = plot.esd_loglog(ev).axes[0]
    assert _line(ax, "xmin").get_xdata()[0] == pytest.approx(row["xmin"])
    extra = dict(row, TPL_alpha=row["alpha"] - 0.3, TPL_Lambda=0.01, lognormal_mu=1.0,
                 lognormal_sigma=1.5)
    labels = [ln.get_label() for ln in plot.esd_loglog(ev, extra).axes[0].get_lines()]
    assert any(lab.startswith("TPL") for lab in labels)
    assert any(lab.startswith("lognormal") for lab in labels)


def test_esd_linear_mp_from_bulk_columns_and_fallback(heavy):
    _W, ev, row = heavy
    a, b = 50.0, 700.0
    ax = plot.esd_linear(ev, dict(row, bulk_min=a, bulk_max=b)).axes[0]
    x, y = _line(ax, "mp").get_data()
    assert x[0] == pytest.approx(a) and x[-1] == pytest.approx(b)
    inside = ((ev >= a) & (ev <= b)).mean()
    # the MP density integrates to 1 (drawn with the mass inside the bulk)
    assert trapezoid(y, x) == pytest.approx(inside, rel=0.02)
    spikes = _line(ax, "spikes").get_xdata()
    assert len(spikes) == int((ev > b).sum())
    # fallback: MP of a random matrix with the same shape and norm
    x, _ = _line(plot.esd_linear(ev, row).axes[0], "mp").get_data()
    s2, c = ev.mean(), 200 / 400
    assert x[-1] == pytest.approx(s2 * (1 + math.sqrt(c)) ** 2)
    assert x[0] == pytest.approx(s2 * (1 - math.sqrt(c)) ** 2)


def test_fit_candidates_are_the_closed_form_alphas(heavy):
    _W, ev, row = heavy
    fig = plot.fit_candidates(ev, row)
    ax, ax2 = fig.axes[0], fig.axes[-1]
    xs, als = _line(ax2, "alpha").get_data()
    x = ev[ev > 1e-5]
    for i in (0, len(xs) // 2, len(xs) - 5):   # alpha = 1 + n / sum ln(x / xmin) (CSN 3.1)
        t = x[x >= xs[i]]
        assert als[i] == pytest.approx(1 + t.size / np.log(t / xs[i]).sum(), rel=1e-9)
    Ds = _line(ax, "D").get_ydata()
    assert xs[np.argmin(Ds)] == pytest.approx(row["xmin"])
    assert _line(ax, "xmin").get_xdata()[0] == pytest.approx(row["xmin"])
    assert len(plot.fit_candidates(ev, which="D").axes) == 1


def test_randomized_esd_trap_line(heavy):
    W, ev, row = heavy
    rv = plot.shuffled_eigenvalues(W, seed=0)
    assert rv.shape == ev.shape and rv.sum() == pytest.approx(ev.sum(), rel=1e-9)  # same norm
    ax = plot.randomized_esd(ev, rv, row).axes[0]
    trap = _line(ax, "trap")
    assert trap.get_xdata()[0] == pytest.approx(math.log10(rv[-1]))
    assert f"({int((ev > rv[-1]).sum())} above)" in trap.get_label()
    ax = plot.randomized_esd(ev, rv, dict(row, max_rand_eval=10.0), log=False).axes[0]
    assert _line(ax, "trap").get_xdata()[0] == 10.0


def test_correlation_flow_and_histogram_from_a_table(heavy):
    import pandas as pd
    names = ["lm_head", "model.embed_tokens", "model.layers.0.mlp.down_proj",
             "model.layers.0.self_attn.q_proj"]
    df = pd.DataFrame({"name": names, "alpha": [7.0, 1.5, 3.0, 4.0]})
    fig = plot.correlation_flow(df)
    ax = fig.axes[0]
    pts = {c.get_gid(): c.get_offsets() for c in ax.collections if c.get_gid()}
    assert pts["flow-embedding"].tolist() == [[0.0, 1.5]]
    assert pts["flow-q"].tolist() == [[1.0, 4.0]]
    assert pts["flow-down"].tolist() == [[2.0, 3.0]]
    assert pts["flow-head"].tolist() == [[3.0, 7.0]]
    assert {"band-2", "band-6"} <= {ln.get_gid() for ln in ax.get_lines()}
    with pytest.raises(ValueError, match="no column 'nope'"):
        plot.correlation_flow(df, "nope")
    vals = [1.5, 3.0, 3.1, np.nan, 7.0]
    hist_ax = plot.alpha_histogram(pd.DataFrame({"alpha": vals}), bins=4).axes[0]
    heights = [p.get_height() for p in hist_ax.containers[0]]
    assert heights == np.histogram([1.5, 3.0, 3.1, 7.0], bins=4)[0].tolist()
    assert "(1 failed)" in hist_ax.get_title()


def test_ax_argument_draws_into_the_given_axes(heavy):
    from matplotlib.figure import Figure
    _W, ev, row = heavy
    fig = Figure()
    axs = fig.subplots(1, 2)
    assert plot.esd_loglog(ev, row, ax=axs[1]) is fig
    assert axs[1].get_lines() and not axs[0].get_lines()
    assert len(plot.layer_panel(ev, row).axes) == 5   # 2x2 + the twin axis of the xmin scan


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="empty ESD"):
        plot.esd_loglog([])
    with pytest.raises(ValueError, match="NaN"):
        plot.esd_linear([1.0, np.nan])
    with pytest.raises(ValueError, match="which"):
        plot.fit_candidates([1.0, 2.0, 3.0], which="x")


def _ww_files(folder):
    return sorted(os.listdir(folder))


def test_facade_plot_writes_weightwatchers_file_set(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    ww = pytest.importorskip("weightwatcher")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32))
    ww.WeightWatcher(model=model).analyze(plot=True, savefig="ref")
    ours = htsr.WeightWatcher(model=model)
    ours.analyze(plot=True, savefig="ours")
    ours.analyze(plot=True, savefig=False)          # no files, nothing shown
    ours.analyze(plot=True, savefig="deltas", deltas=True)
    ref, got = _ww_files("ref"), _ww_files("ours")
    assert got == ref and len(got) == 10       # same names: WeightWatcher's ids 1, 3 and tags
    assert sorted(os.listdir(tmp_path)) == ["deltas", "ours", "ref"]
    assert "ww.layer1.deltaEs.png" in _ww_files("deltas") and \
        "ww.layer3.level-stats.png" in _ww_files("deltas")
