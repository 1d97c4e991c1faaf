"""htsr.sources on hostile or damaged checkpoints (issue 7): shard paths that leave the
checkpoint folder, containers whose sizes lie, non-finite or deeply nested JSON, and files
truncated while they are being read.  Every case must give a ValueError naming the file, never
read outside the folder, print file content, allocate what a header claims, or crash."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from htsr.sources import iter_layers

SECRET = b"SECRET-CONTENT-must-never-be-printed\n" * 4


def _st(path, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def _sharded(tmp_path, shard):
    d = tmp_path / "ckpt"
    d.mkdir()
    _st(d / "model-00001-of-00002.safetensors", {"a.weight": np.ones((3, 2), np.float32)})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": shard}}))
    return d


# ---------------------------------------------------------------------------------------------
# shard paths stay inside the checkpoint folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "dotdot_valid"])
def test_index_shards_cannot_leave_the_folder(tmp_path, how):
    secret = tmp_path / "outside.safetensors"
    if how == "dotdot_valid":  # a real safetensors file outside: it must not be read either
        _st(secret, {"b.weight": np.ones((2, 2), np.float32)})
    else:
        secret.write_bytes(SECRET)
    shard = {"dotdot": "../outside.safetensors", "dotdot_valid": "../outside.safetensors",
             "absolute": str(secret), "symlink": "model-00002-of-00002.safetensors"}[how]
    d = _sharded(tmp_path, shard)
    if how == "symlink":
        os.symlink(secret, d / shard)
    with pytest.raises(ValueError, match=r"ckpt.*resolves outside the checkpoint folder") as ei:
        list(iter_layers(d))
    assert b"SECRET" not in str(ei.value).encode()
    if how != "symlink":  # the index names it (a symlink in the folder is refused on its own)
        assert "model.safetensors.index.json: weight_map names shard" in str(ei.value)


def test_torch_index_cannot_read_etc_passwd(tmp_path):
    pytest.importorskip("torch")
    target = "/etc/passwd" if os.path.isfile("/etc/passwd") else str(tmp_path / "x")
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": target}}))
    with pytest.raises(ValueError, match=r"pytorch_model.bin.index.json.*outside") as ei:
        list(iter_layers(d))
    head = Path(target).read_bytes()[:8].decode("latin-1") if Path(target).exists() else "@@"
    assert head not in str(ei.value) and "load key" not in str(ei.value)


def test_directory_symlink_to_outside_is_refused(tmp_path):
    secret = tmp_path / "elsewhere.safetensors"
    _st(secret, {"w.weight": np.ones((2, 2), np.float32)})
    d = tmp_path / "ckpt"
    d.mkdir()
    os.symlink(secret, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors.*outside"):
        list(iter_layers(d))
    assert len(list(iter_layers(secret))) == 1  # a file named explicitly is read


def test_hf_cache_snapshot_symlinks_into_blobs_are_allowed(tmp_path):
    """A Hugging Face cache snapshot holds symlinks to ``<repo>/blobs``: inside the repo."""
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for i, key in enumerate(["a.weight", "b.weight"]):
        _st(repo / "blobs" / f"blob{i}", {key: np.full((3, 2), i + 1, np.float32)})
        os.symlink(f"../../blobs/blob{i}", snap / f"model-0000{i + 1}-of-00002.safetensors")
    (repo / "blobs" / "idx").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors"}}))
    os.symlink("../../blobs/idx", snap / "model.safetensors.index.json")
    specs = list(iter_layers(snap))
    assert [s.name for s in specs] == ["a", "b"]
    assert float(specs[1].load()[0][0, 0]) == 2.0


# ---------------------------------------------------------------------------------------------
# containers whose sizes lie
# ---------------------------------------------------------------------------------------------
def _npy_bytes(shape, dtype="<f4", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_npz_member_shorter_than_its_header(tmp_path):
    """A stored member whose npy header claims 100x100 float32 but holds 64 bytes, followed by a
    big member: the data would run into the next member and the zip directory."""
    p = tmp_path / "short.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
        z.writestr("w.npy", _npy_bytes((100, 100), data=bytes(64)))
        z.writestr("big.npy", _npy_bytes((200, 100), data=np.ones((200, 100), "<f4").tobytes()))
    with pytest.raises(ValueError, match=r"short.npz.*'w.npy'.*40000 bytes"):
        list(iter_layers(p))


def test_npz_deflated_member_claiming_huge_shape(tmp_path):
    """1 KB of deflated data claiming 100000 x 100000 float32 (37 GiB): refused from the zip
    directory, before anything is allocated."""
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", _npy_bytes((100000, 100000), data=os.urandom(1024)))
    with pytest.raises(ValueError, match=r"bomb.npz.*'w.npy'.*40000000000 bytes"):
        list(iter_layers(p))


def test_npz_directory_size_larger_than_deflate_can_produce(tmp_path):
    """A zip directory that declares a huge uncompressed size for a tiny deflated member."""
    p = tmp_path / "liar.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", _npy_bytes((50000, 50000), data=bytes(100)))
    raw = bytearray(p.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")  # central directory entry: uncompressed size at +24
    struct.pack_into("<I", raw, cd + 24, 0xF0000000)
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"liar.npz.*'w.npy'"):
        list(iter_layers(p))


def test_safetensors_bounds_checked_against_the_file(tmp_path):
    p = tmp_path / "x.safetensors"
    h = json.dumps({"w.weight": {"dtype": "F32", "shape": [100000, 100000],
                                 "data_offsets": [0, 40_000_000_000]}}).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + bytes(64))
    with pytest.raises(ValueError, match=r"x.safetensors.*past the end"):
        list(iter_layers(p))


# ---------------------------------------------------------------------------------------------
# JSON: non-finite head counts, deep nesting
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_head_count_in_config_json(tmp_path, value):
    d = tmp_path / "m"
    d.mkdir()
    _st(d / "model.safetensors", {"l.0.self_attn.qkv_proj.weight": np.ones((12, 4), np.float32)})
    (d / "config.json").write_text('{"model_type": "phi3", "num_attention_heads": %s, '
                                   '"hidden_size": 4}' % value)
    with pytest.raises(ValueError, match=r"config.json.*" + value.lstrip("-")):
        list(iter_layers(d))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -4, 2.5, True])
def test_invalid_head_count_in_config_dict(tmp_path, value):
    p = tmp_path / "model.safetensors"
    _st(p, {"l.0.self_attn.qkv_proj.weight": np.ones((12, 4), np.float32)})
    cfg = {"model_type": "phi3", "num_attention_heads": value, "hidden_size": 4}
    with pytest.raises(ValueError, match=r"config.*num_attention_heads"):
        list(iter_layers(p, config=cfg))


@pytest.mark.parametrize("which", ["config.json", "model.safetensors.index.json",
                                   "model.safetensors"])
def test_deeply_nested_json(tmp_path, which):
    d = tmp_path / "m"
    d.mkdir()
    deep = b"[" * 200_000 + b"]" * 200_000
    if which == "model.safetensors":
        (d / which).write_bytes(struct.pack("<Q", len(deep)) + deep)
    else:
        _st(d / "model-1.safetensors", {"a.weight": np.ones((2, 2), np.float32)})
        (d / which).write_bytes(deep)
    with pytest.raises(ValueError, match=re.escape(which) + r".*nested"):
        list(iter_layers(d))


# ---------------------------------------------------------------------------------------------
# a file truncated while it is being analysed: a clear error, not SIGBUS (run in a child so that
# a regression kills the child, not the test session)
# ---------------------------------------------------------------------------------------------
_TRUNCATE = textwrap.dedent("""
    import os, sys
    from htsr.sources import iter_layers
    path, keep = sys.argv[1], int(sys.argv[2])
    specs = list(iter_layers(path))
    specs[0].load()
    os.truncate(path, keep)
    try:
        for s in specs:
            s.load()[0].sum()
    except ValueError as exc:
        print("ERR", exc)
    else:
        print("NOERROR")
""")


def _truncated(path, keep):
    r = subprocess.run([sys.executable, "-c", _TRUNCATE, str(path), str(keep)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return r.stdout


def _two(n=256):
    return {"a.weight": np.ones((n, n), np.float32), "b.weight": np.ones((n, n), np.float32)}


@pytest.mark.parametrize("fmt", ["safetensors", "npy", "npz", "pt"])
def test_file_truncated_while_analysed(tmp_path, fmt):
    t = _two()
    if fmt == "safetensors":
        p = tmp_path / "m.safetensors"
        _st(p, t)
    elif fmt == "npz":
        p = tmp_path / "m.npz"
        np.savez(p, **t)
    elif fmt == "npy":
        p = tmp_path / "b.weight.npy"
        np.save(p, t["b.weight"])
        np.save(tmp_path / "a.weight.npy", t["a.weight"])
        p = tmp_path  # the directory; truncate b below
    else:
        torch = pytest.importorskip("torch")
        p = tmp_path / "m.pt"
        torch.save({k: torch.from_numpy(v) for k, v in t.items()}, p)
    target = tmp_path / "b.weight.npy" if fmt == "npy" else p
    keep = 4096 if fmt == "npy" else target.stat().st_size // 2
    if fmt == "npy":  # truncate the second file: load a first, then b
        out = _truncated_dir(p, target, keep)
    else:
        out = _truncated(target, keep)
    assert out.startswith("ERR"), out
    assert target.name in out and "trunc" in out


_TRUNCATE_OTHER = _TRUNCATE.replace("os.truncate(path, keep)", "os.truncate(sys.argv[3], keep)")


def _truncated_dir(d, target, keep):
    r = subprocess.run([sys.executable, "-c", _TRUNCATE_OTHER, str(d), str(keep), str(target)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return r.stdout



# ---------------------------------------------------------------------------------------------
# found by fuzzing (atheris): zip archives that zipfile refuses with NotImplementedError
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".keras"])
def test_zip_with_unsupported_version_is_a_value_error(tmp_path, suffix):
    p = tmp_path / f"m{suffix}"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("w.npy", _npy_bytes((2, 2), data=bytes(16)))
    raw = bytearray(p.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")
    struct.pack_into("<B", raw, cd + 5, 0)     # version made by: MS-DOS
    struct.pack_into("<H", raw, cd + 6, 250)   # version needed to extract: 25.0
    p.write_bytes(bytes(raw))
    if suffix == ".keras":
        pytest.importorskip("h5py")
    with pytest.raises(ValueError, match=re.escape(p.name) + r".*zip"):
        list(iter_layers(p))


def test_onnx_node_name_not_utf8_is_a_value_error(tmp_path):
    """Found by fuzzing: protobuf returns a non-UTF-8 name as bytes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["y"], name="/fc/MatMul")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(np.ones((4, 3), np.float32),
                                                   "onnx::MatMul_1")])
    raw = helper.make_model(g).SerializeToString().replace(b"/fc/MatMul", b"/fc/\xffatMul")
    p = tmp_path / "m.onnx"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=r"m.onnx: malformed ONNX model"):
        list(iter_layers(p))
