"""htsr.sources.peft: LoRA adapters analysed through their low-rank factors.  Oracles: the dense
SVD of scaling*B@A (numpy, float64) for hand-built adapters, and PEFT's own
``get_delta_weight`` / ``merge_and_unload`` for adapters saved by ``peft``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import htsr
from htsr.sources import iter_layers
from htsr.sources.peft import lora_core

P = "base_model.model."


def _sv(M):
    return np.linalg.svd(np.asarray(M, np.float64), compute_uv=False)


def _core_sv(spec):
    return [np.sort(_sv(C))[::-1] for C in spec.load()]


def _write_adapter(d, tensors, cfg):
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **cfg}))


def test_lora_core_equals_dense_svd():
    rng = np.random.default_rng(0)
    for m, n, r in ((300, 200, 8), (64, 500, 16), (40, 30, 1), (20, 20, 32)):
        B, A = rng.standard_normal((m, r)), rng.standard_normal((r, n))
        s = np.sort(_sv(lora_core(A, B, 2.5)))[::-1]
        dense = _sv(2.5 * B @ A)
        k = min(m, n, r)
        np.testing.assert_allclose(s[:k], dense[:k], rtol=1e-12, atol=1e-12 * dense[0])


def test_hand_built_adapter_scaling_patterns_and_every_rank(tmp_path):
    rng = np.random.default_rng(1)
    shapes = {"model.layers.0.self_attn.q_proj": (48, 32, 8),
              "model.layers.0.mlp.down_proj": (32, 96, 4),   # rank_pattern: r=4, alpha 2
              "model.layers.1.self_attn.q_proj": (48, 32, 8)}
    t = {}
    for mod, (o, i, r) in shapes.items():
        t[P + mod + ".lora_A.weight"] = rng.standard_normal((r, i)).astype(np.float32)
        t[P + mod + ".lora_B.weight"] = rng.standard_normal((o, r)).astype(np.float32)
    t[P + "model.embed_tokens.lora_embedding_A"] = rng.standard_normal((8, 50)).astype(np.float32)
    t[P + "model.embed_tokens.lora_embedding_B"] = rng.standard_normal((32, 8)).astype(np.float32)
    t[P + "score.modules_to_save.weight"] = rng.standard_normal((3, 32)).astype(np.float32)
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"down_proj": 4},
           "alpha_pattern": {r"layers\.1\.self_attn\.q_proj": 32}}
    d = tmp_path / "adapter"
    _write_adapter(d, t, cfg)
    specs = {s.name: s for s in iter_layers(d)}
    assert sorted(specs) == sorted(list(shapes) + ["model.embed_tokens",
                                                   "score.modules_to_save"])
    want_scaling = {"model.layers.0.self_attn.q_proj": 16 / 8,
                    "model.layers.0.mlp.down_proj": 16 / 4,
                    "model.layers.1.self_attn.q_proj": 32 / 8}
    for mod, s in want_scaling.items():
        sp = specs[mod]
        A, B = t[P + mod + ".lora_A.weight"], t[P + mod + ".lora_B.weight"]
        assert sp.columns == {"r": A.shape[0], "lora_scaling": s}
        assert (sp.N, sp.M, sp.rf, sp.layer_type) == (max(B.shape[0], A.shape[1]),
                                                       min(B.shape[0], A.shape[1]), 1, "dense")
        dense = _sv(s * B.astype(np.float64) @ A)
        (got,) = _core_sv(sp)
        np.testing.assert_allclose(got, dense[:A.shape[0]], rtol=2e-6)
    emb = specs["model.embed_tokens"]
    assert emb.layer_type == "embedding" and (emb.N, emb.M) == (50, 32)
    A = t[P + "model.embed_tokens.lora_embedding_A"]
    B = t[P + "model.embed_tokens.lora_embedding_B"]
    np.testing.assert_allclose(_core_sv(emb)[0], _sv(2.0 * (B.astype(np.float64) @ A).T)[:8],
                               rtol=2e-6)
    assert specs["score.modules_to_save"].columns == {}

    df = htsr.analyze(d, min_evals=1)
    row = df.set_index("name").loc["model.layers.0.mlp.down_proj"]
    assert row["r"] == 4 and row["num_evals"] == 4  # rank 4 kept (WeightWatcher drops r < 8)
    B, A = t[P + "model.layers.0.mlp.down_proj.lora_B.weight"], \
        t[P + "model.layers.0.mlp.down_proj.lora_A.weight"]
    np.testing.assert_allclose(row["lambda_max"], _sv(4.0 * B.astype(np.float64) @ A)[0] ** 2,
                               rtol=1e-5)
    # rsLoRA: alpha / sqrt(r)
    _write_adapter(d, t, dict(cfg, use_rslora=True, alpha_pattern={}))
    from htsr.sources import peft as pf

    pf._adapter_config.cache_clear()
    sp = {s.name: s for s in iter_layers(d)}["model.layers.0.mlp.down_proj"]
    assert sp.columns["lora_scaling"] == 16 / math.sqrt(4)


def test_bad_adapters(tmp_path):
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((12, 8))
    d = tmp_path / "a1"
    _write_adapter(d, {P + "m.q.lora_A.weight": A}, {"r": 8})
    with pytest.raises(ValueError, match=r"adapter_model.safetensors.*'m.q'.*no lora_B"):
        list(iter_layers(d))
    d = tmp_path / "a2"
    _write_adapter(d, {P + "m.q.lora_A.weight": A, P + "m.q.lora_B.weight": B[:, :4].astype(
        np.float32)}, {"r": 8})
    with pytest.raises(ValueError, match=r"'m.q'.*do not compose"):
        list(iter_layers(d))
    d = tmp_path / "a3"
    _write_adapter(d, {P + "m.q.lora_A.weight": A, P + "m.q.lora_B.weight": B.astype(
        np.float32)}, {"r": 4, "lora_alpha": 8})
    with pytest.raises(ValueError, match=r"'m.q'.*rank 8.*r = 4"):
        list(iter_layers(d))
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": NaN}')
    from htsr.sources import peft as pf

    pf._adapter_config.cache_clear()
    with pytest.raises(ValueError, match=r"adapter_config.json.*NaN"):
        list(iter_layers(d))
    (d / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    pf._adapter_config.cache_clear()
    with pytest.raises(ValueError, match=r"adapter_config.json.*IA3"):
        list(iter_layers(d))
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        iter_layers(tmp_path / "a1" / "adapter_model.safetensors", peft_base=tmp_path)


# ---------------------------------------------------------------------------------------------
# adapters saved by peft itself
# ---------------------------------------------------------------------------------------------
def _tiny_model(torch):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(32, 48)
            self.v_proj = torch.nn.Linear(32, 16)
            self.down_proj = torch.nn.Linear(64, 32)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(50, 32)
            self.layers = torch.nn.ModuleList([Block(), Block()])
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.embed_tokens(x)

    torch.manual_seed(0)
    return Tiny()


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_saved_adapter_matches_get_delta_weight(tmp_path, rslora):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    model = _tiny_model(torch)
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = peft.LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, use_rslora=rslora,
                          target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens", "conv"],
                          rank_pattern={} if rslora else {"down_proj": 2},
                          alpha_pattern={} if rslora else {r"layers\.1\.q_proj": 40})
    pm = peft.get_peft_model(model, cfg)
    d = tmp_path / "adapter"
    pm.save_pretrained(str(d))
    specs = {s.name: s for s in iter_layers(d)}
    lora_mods = {n: m for n, m in pm.base_model.model.named_modules()
                 if hasattr(m, "get_delta_weight") and "default" in getattr(m, "r", {})}
    assert sorted(specs) == sorted(lora_mods)  # every adapted module, every rank
    for name, mod in lora_mods.items():
        sp = specs[name]
        assert sp.columns["r"] == mod.r["default"]
        assert sp.columns["lora_scaling"] == pytest.approx(mod.scaling["default"], rel=1e-12)
        delta = mod.get_delta_weight("default").detach().double().numpy()
        if delta.ndim == 4:  # Conv2d: one core per kernel position (i outer, j inner)
            assert sp.rf == 9 and sp.layer_type == "conv2d"
            want = [_sv(delta[:, :, i, j]) for i in range(3) for j in range(3)]
        else:
            want = [_sv(delta)]
        assert (sp.N, sp.M) == (max(delta.shape[:2]), min(delta.shape[:2]))
        for g, w in zip(_core_sv(sp), want):
            k = sp.columns["r"]
            np.testing.assert_allclose(g[:k], w[:k], rtol=1e-5, atol=1e-6 * w[0])

    # with the base model: W_base + dW == peft's merge_and_unload
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in base_sd.items()}, str(tmp_path / "base.safetensors"))
    merged = pm.merge_and_unload().state_dict()
    got = {s.longname: s for s in iter_layers(d, peft_base=tmp_path / "base.safetensors")}
    for name in lora_mods:
        sp = got[name]
        assert sp.columns["r"] == lora_mods[name].r["default"]
        W = merged[name + ".weight"].detach().numpy()
        mats = sp.load()
        want = [W] if W.ndim == 2 else [W[:, :, i, j] for i in range(3) for j in range(3)]
        for g, w in zip(mats, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_cli_analyzes_adapter_folder(tmp_path):
    rng = np.random.default_rng(3)
    t = {P + "m.q.lora_A.weight": rng.standard_normal((4, 40)).astype(np.float32),
         P + "m.q.lora_B.weight": rng.standard_normal((30, 4)).astype(np.float32)}
    d = tmp_path / "ad"
    _write_adapter(d, t, {"r": 4, "lora_alpha": 8})
    from htsr import cli

    out = tmp_path / "r.csv"
    assert cli.main(["analyze", str(d), "--min-evals", "1", "--out", str(out), "-q",
                     "--no-progress"]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert list(df["name"]) == ["m.q"] and df["r"].tolist() == [4]
    want = _sv(2.0 * t[P + "m.q.lora_B.weight"].astype(np.float64) @ t[P + "m.q.lora_A.weight"])
    np.testing.assert_allclose(df["lambda_max"][0], want[0] ** 2, rtol=1e-5)
