"""htsr.sources: fused q/k/v and gate/up tensors, MoE experts, block-scaled FP8.

The fused tensors are built from known pieces the way each model family lays them out
(the inverse of the split under test), so a wrong split shows as a mismatch.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from htsr import sources as S

iter_layers = S.iter_layers
RNG = np.random.default_rng(7)


def rnd(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def parts_of(specs):
    return {(s.name, s.part): s for s in specs}


def check(specs, name, expected: dict):
    """expected: part -> matrix; the specs of `name` must be exactly those, in that order."""
    got = [s for s in specs if s.name == name]
    assert [s.part for s in got] == list(expected), name
    for s in got:
        (W,) = s.load()
        want = expected[s.part]
        assert W.shape == want.shape and s.matrix_shape == want.shape, (name, s.part)
        assert (s.N, s.M) == (max(want.shape), min(want.shape))
        assert np.array_equal(W, want), (name, s.part)


# ---------------------------------------------------------------------------------------------
# attention q/k/v
# ---------------------------------------------------------------------------------------------
def test_phi3_qkv_proj_gqa_from_config():
    # head_dim * n_heads != hidden: only the config gives the right sizes
    H, nh, nkv, d = 32, 4, 2, 16
    q, k, v = rnd(nh * d, H), rnd(nkv * d, H), rnd(nkv * d, H)
    gate, up = rnd(48, H), rnd(48, H)
    sd = {"model.layers.0.self_attn.qkv_proj.weight": np.concatenate([q, k, v]),
          "model.layers.0.mlp.gate_up_proj.weight": np.concatenate([gate, up])}
    cfg = {"model_type": "phi3", "hidden_size": H, "num_attention_heads": nh,
           "num_key_value_heads": nkv, "head_dim": d}
    specs = list(iter_layers(sd, config=cfg))
    check(specs, "model.layers.0.self_attn.qkv_proj", {"q": q, "k": k, "v": v})
    check(specs, "model.layers.0.mlp.gate_up_proj", {"gate": gate, "up": up})
    assert all(s.shape == sd[s.name + ".weight"].shape for s in specs)
    # nested text_config works the same (multimodal configs)
    specs = list(iter_layers(sd, config={"model_type": "x", "text_config": cfg}))
    check(specs, "model.layers.0.self_attn.qkv_proj", {"q": q, "k": k, "v": v})
    # no splitting
    specs = list(iter_layers(sd, config=cfg, split_fused=False))
    assert [(s.part, s.shape) for s in specs] == [(None, (128, 32)), (None, (96, 32))]


def test_qkv_without_config_assumes_q_is_hidden():
    H, kv = 24, 8  # bigcode-like multi-query / GQA with q == hidden
    q, k, v = rnd(H, H), rnd(kv, H), rnd(kv, H)
    W = np.concatenate([q, k, v])
    check(list(iter_layers({"blocks.0.attn.qkv.weight": W})), "blocks.0.attn.qkv",
          {"q": q, "k": k, "v": v})
    check(list(iter_layers({"transformer.h.0.attn.c_attn.weight": W},
                           config={"model_type": "gpt_bigcode"})),
          "transformer.h.0.attn.c_attn", {"q": q, "k": k, "v": v})


def _interleaved(q, k, v, nh):
    d, H = q.shape[0] // nh, q.shape[1]
    return np.stack([q.reshape(nh, d, H), k.reshape(nh, d, H), v.reshape(nh, d, H)],
                    axis=1).reshape(3 * nh * d, H)


@pytest.mark.parametrize("model_type", ["gpt_neox", "bloom"])
def test_neox_bloom_query_key_value_per_head_interleave(model_type):
    H, nh = 32, 4
    q, k, v = rnd(H, H), rnd(H, H), rnd(H, H)
    name = "gpt_neox.layers.3.attention.query_key_value"
    sd = {name + ".weight": _interleaved(q, k, v, nh)}
    cfg = {"model_type": model_type, "hidden_size": H, "num_attention_heads": nh}
    check(list(iter_layers(sd, config=cfg)), name, {"q": q, "k": k, "v": v})
    # no model_type: the layout is unknown -> analysed whole, not guessed
    (s,) = iter_layers(sd)
    assert s.part is None and s.shape == (96, 32)


def test_falcon_query_key_value_layouts():
    H, nh = 32, 4
    d = H // nh
    name = "transformer.h.0.self_attention.query_key_value"
    # multi-query (falcon-7b): q | k | v with one kv head
    q, k, v = rnd(H, H), rnd(d, H), rnd(d, H)
    specs = list(iter_layers({name + ".weight": np.concatenate([q, k, v])},
                             config={"model_type": "falcon", "hidden_size": H,
                                     "num_attention_heads": nh, "multi_query": True}))
    check(specs, name, {"q": q, "k": k, "v": v})
    # classic multi-head falcon: per-head interleave like NeoX
    q, k, v = rnd(H, H), rnd(H, H), rnd(H, H)
    specs = list(iter_layers({name + ".weight": _interleaved(q, k, v, nh)},
                             config={"model_type": "falcon", "hidden_size": H,
                                     "num_attention_heads": nh, "multi_query": False}))
    check(specs, name, {"q": q, "k": k, "v": v})
    # new_decoder_architecture (falcon-40b): per kv group [q_0 .. q_{g-1}, k, v]
    nkv = 2
    g = nh // nkv
    q, k, v = rnd(nh * d, H), rnd(nkv * d, H), rnd(nkv * d, H)
    groups = []
    for j in range(nkv):
        groups += [q[(j * g + i) * d:(j * g + i + 1) * d] for i in range(g)]
        groups += [k[j * d:(j + 1) * d], v[j * d:(j + 1) * d]]
    specs = list(iter_layers({name + ".weight": np.concatenate(groups)},
                             config={"model_type": "falcon", "hidden_size": H,
                                     "num_attention_heads": nh, "num_kv_heads": nkv,
                                     "new_decoder_architecture": True}))
    check(specs, name, {"q": q, "k": k, "v": v})


def test_config_json_next_to_weights_is_used(tmp_path):
    from safetensors.numpy import save_file

    H, nh = 16, 2
    q, k, v = rnd(H, H), rnd(H, H), rnd(H, H)
    name = "gpt_neox.layers.0.attention.query_key_value"
    save_file({name + ".weight": _interleaved(q, k, v, nh)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt_neox", "hidden_size": H, "num_attention_heads": nh}))
    check(list(iter_layers(tmp_path)), name, {"q": q, "k": k, "v": v})
    check(list(iter_layers(tmp_path / "model.safetensors")), name, {"q": q, "k": k, "v": v})


# ---------------------------------------------------------------------------------------------
# MoE experts
# ---------------------------------------------------------------------------------------------
def test_v5_in_memory_experts_without_config():
    E, H, inter = 3, 16, 12
    gate, up, down = rnd(E, inter, H), rnd(E, inter, H), rnd(E, H, inter)
    pre = "model.layers.0.mlp.experts."
    sd = {pre + "gate_up_proj": np.concatenate([gate, up], axis=1),  # [E, 2I, H]
          pre + "down_proj": down,
          "model.layers.0.mlp.gate.weight": rnd(E, H)}  # router: kept, analysis filters
    specs = list(iter_layers(sd))
    assert [(s.name.rsplit(".", 1)[-1], s.part) for s in specs] == (
        [("gate_up_proj", f"expert.{e}.{p}") for e in range(E) for p in ("gate", "up")]
        + [("down_proj", f"expert.{e}") for e in range(E)] + [("gate", None)])
    check(specs, pre + "gate_up_proj",
          {f"expert.{e}.{p}": m[e] for e in range(E) for p, m in (("gate", gate), ("up", up))})
    check(specs, pre + "down_proj", {f"expert.{e}": down[e] for e in range(E)})
    assert all(s.shape == (E, 2 * inter, H) for s in specs if s.name == pre + "gate_up_proj")
    assert specs[0].nbytes == inter * H * 4  # one expert's gate block only
    # split_fused=False: still one matrix per expert
    specs = list(iter_layers(sd, split_fused=False))
    check(specs, pre + "gate_up_proj",
          {f"expert.{e}": np.concatenate([gate[e], up[e]]) for e in range(E)})


@pytest.mark.parametrize("model_type", ["gpt_oss", "llama4_text", None])
def test_input_major_fused_experts(model_type):
    E, H, inter = 2, 16, 24
    gate, up = rnd(E, H, inter), rnd(E, H, inter)
    if model_type == "gpt_oss":  # interleaved along the last axis
        fused = np.empty((E, H, 2 * inter), np.float32)
        fused[..., 0::2], fused[..., 1::2] = gate, up
    else:  # Llama-4: concatenated (chunk(2, -1))
        fused = np.concatenate([gate, up], axis=-1)
    name = "model.layers.1.feed_forward.experts.gate_up_proj"
    cfg = {"model_type": model_type, "hidden_size": H, "intermediate_size": inter} \
        if model_type else None
    specs = list(iter_layers({name: fused}, config=cfg))
    check(specs, name, {f"expert.{e}.{p}": m[e] for e in range(E)
                        for p, m in (("gate", gate), ("up", up))})


def test_per_expert_2d_names_are_plain_dense():
    sd = {f"model.layers.0.mlp.experts.{e}.{p}_proj.weight": rnd(12, 8)
          for e in (0, 1, 10, 2) for p in ("down", "gate", "up")}
    specs = list(iter_layers(sd))  # in-memory: insertion order, no parts
    assert all(s.part is None and s.layer_type == "dense" for s in specs)
    assert len(specs) == 12


# ---------------------------------------------------------------------------------------------
# FP8 block scales
# ---------------------------------------------------------------------------------------------
def _fp8(shape, dtype="float8_e4m3fn"):
    torch = pytest.importorskip("torch")
    return (torch.from_numpy(rnd(*shape)) * 8).to(getattr(torch, dtype))


def _block_reference(Wf, s, br, bc):
    out = np.empty_like(Wf)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            out[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = (
                Wf[i * br:(i + 1) * br, j * bc:(j + 1) * bc] * s[i, j])
    return out


@pytest.mark.parametrize("block", [None, (64, 100)])
def test_fp8_block_scaled_dequantization(tmp_path, block):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    r, c = 200, 300  # edge blocks are partial
    br, bc = block or (128, 128)
    W8 = _fp8((r, c))
    s = torch.from_numpy(np.abs(rnd(-(-r // br), -(-c // bc))) + 0.5)
    name = "model.layers.0.mlp.down_proj.weight"
    save_file({name: W8, name + "_scale_inv": s,
               "model.layers.0.mlp.up_proj.weight": W8.clone()},
              str(tmp_path / "model.safetensors"))
    if block:
        (tmp_path / "config.json").write_text(json.dumps(
            {"quantization_config": {"quant_method": "fp8", "weight_block_size": list(block)}}))
    specs = list(iter_layers(tmp_path))
    assert [s_.name for s_ in specs] == ["model.layers.0.mlp.down_proj",
                                         "model.layers.0.mlp.up_proj"]  # no scale tensor
    down, up = specs
    Wf = W8.to(torch.float32).numpy()
    (D,) = down.load()
    assert np.array_equal(D, _block_reference(Wf, s.numpy(), br, bc))
    assert down.scale == name + "_scale_inv" and down.stored_dtype == "float8_e4m3fn"
    assert down.nbytes == r * c + s.numel() * 4
    (U,) = up.load()  # no sibling scale: raw values
    assert up.scale is None and np.array_equal(U, Wf)
    # a block size that does not fit the scale shape is an error naming the tensor
    if block is None:
        (tmp_path / "config.json").write_text(json.dumps(
            {"quantization_config": {"weight_block_size": [32, 32]}}))
        (bad, _) = iter_layers(tmp_path)
        with pytest.raises(ValueError, match="down_proj.weight"):
            bad.load()


def test_fp8_scales_experts_and_per_tensor():
    torch = pytest.importorskip("torch")
    E, r, c = 2, 130, 70
    W8 = _fp8((E, r, c))
    s = torch.from_numpy(np.abs(rnd(E, 2, 1)) + 0.5)
    name = "model.layers.0.mlp.experts.down_proj"
    Wt = _fp8((16, 8), "float8_e5m2")
    st = torch.tensor(0.125)
    sd = {name: W8, name + "_scale_inv": s, "lin.weight": Wt, "lin.weight_scale": st}
    specs = list(iter_layers(sd))
    Wf = W8.to(torch.float32).numpy()
    check(specs, name, {f"expert.{e}": _block_reference(Wf[e], s[e].numpy(), 128, 128)
                        for e in range(E)})
    assert specs[0].nbytes == r * c + 2 * 4
    check(specs, "lin", {None: Wt.to(torch.float32).numpy() * np.float32(0.125)})
