"""Stored bfloat16 / float16 safetensors weights reach the native core as raw 16-bit patterns
(``LayerSpec.load_raw``, converted exactly in C++): the tables equal those of the float32 path
(numpy conversion, ``load()``) bit for bit, errors read the same, and the raw path is taken."""
from __future__ import annotations

import json

import numpy as np
import pytest

import htsr
from htsr import analysis
from htsr.sources import specs as _specs
from htsr.sources.dtypes import to_float32
from htsr.sources.pages import mapped_root

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _heavy(g, *shape):
    """Student-t(3)-like heavy-tailed weights (ratio of normals), scaled like an LLM's."""
    x = torch.randn(*shape, generator=g) / torch.randn(*shape, generator=g).abs().clamp_min(0.3)
    return x * 0.02


def _checkpoint(tmp_path, dtype, nan_at=None):
    """A small Llama/Mixtral-shaped checkpoint: embeddings, fused qkv and gate_up (row splits),
    a 3-D expert tensor, a dense layer, a norm vector (not analysed) and the LM head."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(3)
    sd = {"model.embed_tokens.weight": _heavy(g, 300, 48),
          "model.layers.0.self_attn.qkv_proj.weight": _heavy(g, 3 * 48, 48),
          "model.layers.0.mlp.gate_up_proj.weight": _heavy(g, 2 * 80, 48),
          "model.layers.0.mlp.down_proj.weight": _heavy(g, 48, 80),
          "model.layers.0.block_sparse_moe.experts.w1": _heavy(g, 3, 40, 48),
          "model.layers.0.input_layernorm.weight": torch.ones(48),
          "lm_head.weight": _heavy(g, 300, 48)}
    sd = {k: v.to(DTYPES[dtype]) for k, v in sd.items()}
    if nan_at is not None:
        key, value = nan_at
        sd[key][1, 2] = value
    d = tmp_path / dtype
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"hidden_size": 48, "num_attention_heads": 4,
                                               "num_key_value_heads": 4,
                                               "intermediate_size": 80}))
    return d


def _analyze(path, raw, monkeypatch, **kw):
    monkeypatch.setattr(analysis, "_RAW_16BIT", raw)
    return htsr.analyze(path, **kw).drop(columns="seconds")


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_load_raw_is_the_stored_bits_in_place(tmp_path, dtype):
    path = _checkpoint(tmp_path, dtype)
    specs = list(htsr.iter_layers(path))
    assert len(specs) == 11 and all(s.load_raw is not None for s in specs)
    for s in specs:
        mats, stored = s.load_raw()
        assert stored == s.stored_dtype == {"bf16": "bfloat16", "fp16": "float16"}[dtype]
        (W,) = mats
        assert W.dtype == np.uint16 and W.shape == s.matrix_shape and W.strides[1] == 2
        assert mapped_root(W) is not None          # a view of the file mapping, not a copy
        np.testing.assert_array_equal(to_float32(W, stored), s.load()[0])


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kw", [dict(precision="float64"), dict(precision="float32"),
                                dict(method="svd"), dict(method="randomized", k=30),
                                dict(pool=False, normalize=True, ww_parity=False)])
def test_tables_equal_the_float32_path_bit_for_bit(tmp_path, monkeypatch, dtype, kw):
    path = _checkpoint(tmp_path, dtype)
    raw = _analyze(path, True, monkeypatch, threads=2, **kw)
    ref = _analyze(path, False, monkeypatch, threads=2, **kw)
    assert len(ref) == 11 and (ref["status"] != "error").all()
    assert set(ref["stored_dtype"]) == {{"bf16": "bfloat16", "fp16": "float16"}[dtype]}
    import pandas as pd
    pd.testing.assert_frame_equal(raw, ref, check_exact=True)


def test_raw_path_is_taken_and_the_switch_turns_it_off(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path, "bf16")
    calls = []

    def counting_load(*args):
        calls.append(args[0].key)
        raise AssertionError("load() called")

    monkeypatch.setattr(_specs, "_load", counting_load)
    t = _analyze(path, True, monkeypatch)
    assert len(t) == 11 and (t["status"] == "success").all() and calls == []
    # off: every matrix goes through load() (here failing), so the test above can fail
    t = _analyze(path, False, monkeypatch, errors="row")
    assert (t["status"] == "error").all() and len(calls) == 11
    # options that need float32 matrices keep load(): diagnostics
    calls.clear()
    t = _analyze(path, True, monkeypatch, errors="row", randomize=True)
    assert (t["status"] == "error").all() and len(calls) == 11


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_reported_as_before(tmp_path, monkeypatch, dtype, value):
    key = "model.layers.0.mlp.down_proj.weight"
    path = _checkpoint(tmp_path, dtype, nan_at=(key, value))
    msgs = []
    for raw in (True, False):
        monkeypatch.setattr(analysis, "_RAW_16BIT", raw)
        with pytest.raises(ValueError) as exc:
            htsr.analyze(path)
        msgs.append(str(exc.value))
        t = htsr.analyze(path, errors="row")
        bad = t[t["status"] == "error"]
        assert list(bad["name"]) == ["model.layers.0.mlp.down_proj"] and len(t) == 11
        assert bad["message"].iloc[0] == msgs[-1]
    assert msgs[0] == msgs[1]
    assert msgs[0].startswith("layer 'model.layers.0.mlp.down_proj' (layer_id ")
    assert str(path / "model.safetensors") in msgs[0] and "NaN or Inf (row 1)" in msgs[0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("shape", [(70000, 64), (64, 70000)])
def test_native_16bit_gram_is_its_float32_conversion_bit_for_bit(dtype, shape):
    """Past the C++ conversion block (2**22 / M rows of the summed side) a 16-bit W in float32
    is still summed like its float32 conversion (one SYRK), so the raw path keeps the values."""
    rng = np.random.default_rng(5)
    w = (rng.standard_t(3, size=shape) * 0.02).astype(np.float32)
    raw = (w.view(np.uint32) >> 16).astype(np.uint16) if dtype == "bfloat16" \
        else w.astype(np.float16).view(np.uint16)
    f32 = to_float32(raw, dtype)
    for precision in ("float32", "float64"):
        a = htsr.spectrum(f32, precision=precision, threads=1)
        b = htsr.spectrum(raw, dtype=dtype, precision=precision, threads=1)
        np.testing.assert_array_equal(b.eigenvalues, a.eigenvalues)
        assert a.trace == b.trace
