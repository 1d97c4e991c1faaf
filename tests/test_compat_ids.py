"""Layer ids: the facade's are WeightWatcher 0.7.7's framework counters (WeightWatcher, run on
the same model in the same test, is the oracle); htsr's own do not depend on pool/min_evals."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os

import numpy as np
import pytest

import htsr
from htsr.compat import WeightWatcher

ww = pytest.importorskip("weightwatcher")
torch = pytest.importorskip("torch")
import tv_models as tv  # noqa: E402  (tests/ helper: torchvision's module structure)

logging.getLogger("weightwatcher").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records")


def theirs(model, method="describe", **kw):
    """WeightWatcher 0.7.7 on the same input (its stdout and INFO logging silenced)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)          # SafeTensorDict logs INFO on the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return getattr(ww.WeightWatcher(model=model), method)(**kw)
    finally:
        root.setLevel(level)


def ours(model, method="describe", **kw):
    return getattr(WeightWatcher(model=model), method)(**kw)


def same_rows(a, b):
    assert list(a["layer_id"]) == list(b["layer_id"])
    assert list(a["longname"]) == list(b["longname"])
    assert list(a["num_evals"]) == list(b["num_evals"])


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return tv.vgg11(width=1 / 8, hidden=64)       # torchvision's modules, small channels


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return tv.resnet18(width=1 / 4)


@pytest.fixture(scope="module")
def resnet_sd(resnet):
    return {k: v.contiguous() for k, v in resnet.state_dict().items()}


# --------------------------------------------------------------------------------------------
# facade ids = WeightWatcher's
# --------------------------------------------------------------------------------------------
def test_vgg11_module_ids_are_weightwatchers(vgg):
    t, o = theirs(vgg), ours(vgg)
    same_rows(o, t)
    assert list(o["layer_id"]) == [2, 5, 8, 10, 13, 15, 18, 20, 25, 28, 31]
    assert list(o["name"])[-3:] == ["classifier.0", "classifier.3", "classifier.6"]
    for layers in ([5], [25, 28, 31], [-2, -31], "conv2d", ["dense", 5]):
        same_rows(ours(vgg, layers=layers), theirs(vgg, layers=layers))
    for kw in ({"start_ids": 10}, {"pool": False, "min_evals": 1},
               {"pool": False, "layers": [2, 28]}):
        o, t = ours(vgg, **kw), theirs(vgg, **kw)
        same_rows(o, t)
        if not kw.get("pool", True):
            assert list(o["slice_id"]) == list(t["slice_id"])


def test_vgg11_state_dict_ids_count_weight_keys_from_one(vgg):
    sd = vgg.state_dict()
    for kw in ({}, {"start_ids": 10}, {"layers": [2, 10]}):
        same_rows(ours(sd, **kw), theirs(sd, **kw))
    assert list(ours(sd)["layer_id"]) == list(range(1, 12))
    assert list(ours(sd, start_ids=10)["layer_id"]) == list(range(10, 21))


def test_resnet18_layer_67_is_fc(resnet, resnet_sd):
    t, o = theirs(resnet), ours(resnet)
    same_rows(o, t)
    assert len(o) == 21 and o["layer_id"].iloc[0] == 1
    fc = ours(resnet, layers=[67])
    assert list(fc["longname"]) == list(theirs(resnet, layers=[67])["longname"]) == ["fc"]
    a = ours(resnet, "analyze", layers=[67])
    b = theirs(resnet, "analyze", layers=[67])
    assert list(a["layer_id"]) == [67]
    for c in ("alpha", "D", "norm", "lambda_max"):
        np.testing.assert_allclose(a[c], b[c], rtol=1e-9, err_msg=c)
    np.testing.assert_allclose(WeightWatcher(model=resnet).get_ESD(layer=67),
                               np.sort(theirs(resnet, "get_ESD", layer=67)), rtol=1e-9)
    # its state_dict: 1-D BatchNorm weights take ids too (conv1=1, layer1.0.conv1=3, fc=41)
    same_rows(ours(resnet_sd), theirs(resnet_sd))
    assert list(ours(resnet_sd, layers=[41])["longname"]) == ["fc"]


def test_get_framework_layer_by_weightwatcher_id(resnet, resnet_sd):
    for model, layer in ((resnet, 67), (resnet, 7), (resnet, "fc"), (resnet_sd, 41)):
        got = ours(model, "get_framework_layer", layer=layer)
        want = theirs(model, "get_framework_layer", layer=layer)
        assert got is want if isinstance(model, torch.nn.Module) else got == want
    assert ours(resnet, "get_framework_layer", layer=67) is resnet.fc
    with pytest.raises(ValueError, match="layer id 2"):        # bn1: not a layer WW lists
        ours(resnet, "get_framework_layer", layer=2)


def _save_shards(d, sd, kind, index=False):
    from safetensors.torch import save_file
    keys = list(sd)
    parts = [keys[:40], keys[40:80], keys[80:]]
    wm = {}
    for i, p in enumerate(parts):
        if kind == "safetensors":
            fn = f"model-0000{i + 1}-of-00003.safetensors"
            save_file({k: sd[k] for k in p}, os.path.join(d, fn))
        else:
            fn = f"pytorch_model-0000{i + 1}-of-00003.bin"
            torch.save({k: sd[k] for k in p}, os.path.join(d, fn))
        wm.update({k: fn for k in p})
    if index:
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as fh:
            json.dump({"metadata": {}, "weight_map": wm}, fh)


@pytest.mark.parametrize("kind,index", [("safetensors", False), ("safetensors", True),
                                        ("bin", False)])
def test_sharded_folder_ids_are_weightwatchers(tmp_path, resnet_sd, kind, index):
    """Shard counters as PyStateDictDir: 0-based, index order or sorted keys per shard, and its
    running-sum start per file (ids jump from the third shard on)."""
    _save_shards(str(tmp_path), resnet_sd, kind, index)
    for kw in ({}, {"start_ids": 3}, {"layers": "dense"}):
        same_rows(ours(str(tmp_path), **kw), theirs(str(tmp_path), **kw))


def test_single_file_numbered_as_a_folder_holding_it(tmp_path, resnet_sd):
    from safetensors.torch import save_file
    save_file(resnet_sd, str(tmp_path / "model.safetensors"))
    t = theirs(str(tmp_path))                        # WeightWatcher reads folders only
    same_rows(ours(str(tmp_path / "model.safetensors")), t)
    same_rows(ours(str(tmp_path)), t)
    assert list(t["longname"])[:3] == ["conv1", "fc", "layer1.0.conv1"]   # keys sorted


def test_npz_keeps_htsr_ids_plus_start_ids(tmp_path, vgg):
    """WeightWatcher cannot read .npz: the facade numbers it as htsr does (+ start_ids)."""
    p = tmp_path / "w.npz"
    np.savez(p, **{k: v.numpy() for k, v in vgg.state_dict().items()})
    assert list(ours(str(p), start_ids=5)["layer_id"]) == \
        [i + 5 for i in htsr.describe(str(p), min_evals=8)["layer_id"]]


def test_tensors_weightwatcher_does_not_read_are_left_out():
    class Att(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.att = torch.nn.MultiheadAttention(32, 4)
            self.fc = torch.nn.Linear(32, 16)

    torch.manual_seed(0)
    m = Att()
    t, o = theirs(m), ours(m)
    same_rows(o, t)
    assert list(o["longname"]) == ["att.out_proj", "fc"]
    assert "att.in_proj_weight" in set(htsr.describe(m, split_fused=False)["name"])


# --------------------------------------------------------------------------------------------
# empty selection
# --------------------------------------------------------------------------------------------
def test_empty_selection_is_weightwatchers_empty_frame(vgg):
    for method in ("analyze", "describe"):
        t = theirs(vgg, method, layers=[999])
        o = ours(vgg, method, layers=[999])
        assert o.shape == t.shape == (0, 0)
        assert list(o.columns) == list(t.columns) == []
    w = WeightWatcher(model=vgg)
    w.analyze(layers=[999])
    assert w.get_summary() == ww.WeightWatcher().get_summary(t) == {}
    assert w.get_details().shape == (0, 0)


# --------------------------------------------------------------------------------------------
# htsr's own ids
# --------------------------------------------------------------------------------------------
def test_htsr_ids_do_not_depend_on_pool_or_min_evals(vgg):
    """VGG-11's first conv (3 input channels: 27 pooled eigenvalues, 3 per slice) keeps id 0
    whether or not pool=False / min_evals drop it, so id 1 is features.3 in every table."""
    every = htsr.describe(vgg, min_evals=0)
    assert list(every["layer_id"]) == list(range(11))
    by_id = dict(zip(every["layer_id"], every["name"]))
    for kw in ({}, {"pool": False}, {"min_evals": 100}, {"min_evals": 0, "pool": False}):
        d = htsr.describe(vgg, **kw)
        assert all(by_id[i] == n for i, n in zip(d["layer_id"], d["name"])), kw
    assert 0 not in set(htsr.describe(vgg, pool=False)["layer_id"])         # 3 evals per slice
    assert set(htsr.describe(vgg, pool=False, layers=[1])["name"]) == {"features.3"}
    a = htsr.analyze(vgg, layers=[1])
    b = htsr.analyze(vgg, layers=[1], pool=False)
    assert list(a["name"]) == ["features.3"] and set(b["name"]) == {"features.3"}
    assert len(b) == 9 and (b["layer_id"] == 1).all()
