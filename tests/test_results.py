"""Long runs (issue 11): the synthetic checkpoint generator, results files that grow as matrices
finish and survive kill -9, --resume, and error rows."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr import cli
from htsr.results import JOURNAL_SUFFIX, META_SUFFIX

read_results = htsr.read_results

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
from make_checkpoint import make_checkpoint, tensors  # noqa: E402

TINY = dict(hidden=64, intermediate=176, layers=2, heads=4, kv_heads=2, vocab=320)
FORMATS = (".jsonl", ".csv", ".tsv", ".json", ".parquet")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    make_checkpoint(str(d), "llama2-7b", shard_mb=0.05, **TINY)
    return d


@pytest.fixture(scope="module")
def reference(llama):
    return htsr.analyze(llama, threads=1)


def _values(df, ignore=()):
    """The table without the timing column, in a canonical dtype per column."""
    drop = ("seconds", "message") + tuple(ignore)
    df = df.drop(columns=[c for c in drop if c in df]).reset_index(drop=True)
    return df.astype({c: object for c in ("part",) if c in df})


def _same(a, b, ignore=()):
    a, b = _values(a, ignore), _values(b, ignore)
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if a[c].dtype.kind in "fc" or b[c].dtype.kind in "fc":
            np.testing.assert_array_equal(x.astype(float), y.astype(float), err_msg=c)
        else:
            assert [None if v is None or v != v else v for v in x] == \
                   [None if v is None or v != v else v for v in y], c


# --------------------------------------------------------------------------------------------
# make_checkpoint: read back with the `safetensors` package (an independent reader)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tinyllama", "llama2-7b", "mixtral", "gpt2"])
def test_make_checkpoint_shapes_index_and_values(tmp_path, preset):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    info = make_checkpoint(str(tmp_path), preset, shard_mb=0.05, experts=4 if preset == "mixtral" else None,
                           **TINY)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert len(info["files"]) > 1                              # sharded
    expect = {name: shape for name, shape, _k in tensors(info["config"])}
    assert set(index["weight_map"]) == set(expect)
    total, seen = 0, {}
    for f in info["files"]:
        for k, v in load_file(str(tmp_path / f)).items():
            assert index["weight_map"][k] == f and v.dtype == torch.bfloat16
            seen[k] = v.float().numpy()
            total += v.numel() * v.element_size()
    assert {k: tuple(v.shape) for k, v in seen.items()} == expect
    assert index["metadata"]["total_size"] == total
    if preset == "mixtral":
        assert seen["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 2 * 176, 64)
        assert cfg["num_local_experts"] == 4
    if preset == "gpt2":
        assert seen["h.0.attn.c_attn.weight"].shape == (64, 3 * 64)   # Conv1D (in, out)
        assert cfg["model_type"] == "gpt2"
    big = max((v for k, v in seen.items() if v.ndim == 2), key=lambda v: v.size)
    # heavy tails: kurtosis of symmetric Pareto(2.5) entries is infinite; a Gaussian's is 3
    z = big.ravel() / big.std()
    assert np.mean(z ** 4) > 6
    assert np.isfinite(big).all() and abs(np.mean(big)) < 0.1 * big.std()
    # deterministic in the seed
    again = make_checkpoint(str(tmp_path / "again"), preset, shard_mb=0.05,
                            experts=4 if preset == "mixtral" else None, **TINY)
    assert (tmp_path / info["files"][0]).read_bytes() == \
           (tmp_path / "again" / again["files"][0]).read_bytes()


def test_make_checkpoint_is_what_htsr_reads(tmp_path):
    info = make_checkpoint(str(tmp_path), "mixtral", shard_mb=0.05, experts=3, **TINY)
    names = list(htsr.describe(tmp_path)["name"])
    assert "model.layers.1.mlp.experts.gate_up_proj[expert.2.up]" in names
    assert "model.layers.0.mlp.experts.down_proj[expert.0]" in names
    # embed, lm_head; per layer q, k, v, o, 3 x (gate, up, down) and the [3, 64] router, which
    # has fewer than min_evals=8 eigenvalues
    assert len(names) == 2 + 2 * (4 + 3 * 3)
    assert len(htsr.describe(tmp_path, min_evals=1)) == 2 + 2 * (4 + 1 + 3 * 3)
    assert info["bytes"] == sum(os.path.getsize(tmp_path / f) for f in info["files"]) - sum(
        8 + int.from_bytes((tmp_path / f).read_bytes()[:8], "little") for f in info["files"])


# --------------------------------------------------------------------------------------------
# results files
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", FORMATS)
def test_results_file_equals_the_table(tmp_path, llama, reference, ext):
    out = tmp_path / f"r{ext}"
    df = htsr.analyze(llama, threads=2, out=out)
    _same(df, reference)
    _same(read_results(out), reference)
    assert not os.path.exists(str(out) + JOURNAL_SUFFIX)
    meta = json.loads(open(str(out) + META_SUFFIX).read())
    assert meta["complete"] and meta["fingerprint"] == htsr.AnalysisOptions().fingerprint()
    # the file is readable by plain pandas too
    plain = {".jsonl": lambda p: pd.read_json(p, lines=True, precise_float=True),
             ".csv": lambda p: pd.read_csv(p, engine="python"),
             ".tsv": lambda p: pd.read_csv(p, sep="\t", engine="python"),
             ".json": lambda p: pd.DataFrame(json.load(open(p))),
             ".parquet": pd.read_parquet}[ext](out)
    assert list(plain["name"]) == list(reference["name"])
    np.testing.assert_array_equal(plain["alpha"].to_numpy(float), reference["alpha"].to_numpy(float))


def test_resume_refuses_other_options_and_unknown_files(tmp_path, llama):
    out = tmp_path / "r.csv"
    htsr.analyze(llama, out=out, names=["layers.0"])
    with pytest.raises(ValueError, match=r"different analysis options \(precision='float64' in the file vs 'float32'"):
        htsr.analyze(llama, out=out, resume=True, precision="float32")
    # selection and execution options may change: only the missing matrices are computed
    seen = []
    df = htsr.analyze(llama, out=out, resume=True, threads=1,
                      progress=lambda d, t, b, name: seen.append(name))
    assert len(df) == len(htsr.describe(llama)) and not any("layers.0." in n for n in seen)
    os.remove(str(out) + META_SUFFIX)
    with pytest.raises(ValueError, match="no r.csv.htsr.json side file"):
        htsr.analyze(llama, out=out, resume=True)
    with pytest.raises(ValueError, match="resume=True needs out="):
        htsr.analyze(llama, resume=True)
    with pytest.raises(SystemExit):                                    # usage error
        cli.main(["analyze", str(llama), "--resume", "-q"])


# A CLI child that stops dead (kill -9 from the test) right after its k-th fsync'd row batch:
# the pause is a hook on ResultsFile.append, the run is the real `htsr analyze` code path.
KILL_CHILD = textwrap.dedent("""
    import sys, time
    from htsr import cli, results
    k = int(sys.argv[1])
    real = results.ResultsFile.append
    state = {"rows": 0}
    def append(self, rows):
        real(self, rows)
        state["rows"] += len(rows)
        if state["rows"] >= k:
            print("rows", state["rows"], flush=True)
            time.sleep(3600)
    results.ResultsFile.append = append
    cli.entry(["analyze", *sys.argv[2:]])
""")


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".parquet"])
def test_kill9_then_resume_gives_the_same_table_and_computes_nothing_twice(tmp_path, llama,
                                                                          reference, ext):
    n = len(reference)
    k = random.Random(ext).randrange(1, n - 1)
    out = tmp_path / f"r{ext}"
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(k), str(llama), "--out",
                             str(out), "--threads", "2", "-q", "--no-progress"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()             # blocks until the k-th row is on disk
        assert line.startswith("rows"), line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = read_results(out)                   # a killed run leaves a readable file
    assert k <= len(partial) < n
    _same(partial, reference[reference["name"].isin(partial["name"])])
    computed = []
    df = htsr.analyze(llama, out=out, resume=True, threads=2,
                      progress=lambda d, t, b, name: computed.append(name))
    assert sorted(computed) == sorted(set(reference["name"]) - set(partial["name"]))
    _same(df, reference)
    _same(read_results(out), reference)
    # and the CLI resume of a finished file computes nothing and keeps the table
    assert cli.main(["analyze", str(llama), "--out", str(out), "--resume", "-q",
                     "--no-progress"]) == 0
    _same(read_results(out), reference, ignore=("source",))


# --------------------------------------------------------------------------------------------
# error rows
# --------------------------------------------------------------------------------------------
def _tensor_bytes(folder, key):
    """(file, start, end) of a tensor's data in its shard."""
    wm = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    f = folder / wm[key]
    raw = f.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    lo, hi = json.loads(raw[8:8 + hlen])[key]["data_offsets"]
    return f, 8 + hlen + lo, 8 + hlen + hi


def _with_bad_tensors(src, dst):
    """A copy of ``src`` with one NaN in layer 0's q_proj and layer 1's down_proj overwritten
    by garbage bytes (0xFF: bf16 NaN patterns) -> the two row names."""
    import shutil
    shutil.copytree(src, dst)
    bad = []
    for key, fill in (("model.layers.0.self_attn.q_proj.weight", None),
                      ("model.layers.1.mlp.down_proj.weight", b"\xff")):
        f, lo, hi = _tensor_bytes(dst, key)
        raw = bytearray(f.read_bytes())
        if fill is None:
            raw[lo + 6:lo + 8] = (0x7FC0).to_bytes(2, "little")       # a bf16 quiet NaN
        else:
            raw[lo + (hi - lo) // 2:hi] = fill * ((hi - lo) - (hi - lo) // 2)
        f.write_bytes(bytes(raw))
        bad.append(key[:-len(".weight")])
    return set(bad)


def test_truncated_shard_fails_before_any_work_naming_it(tmp_path, llama):
    import shutil
    shutil.copytree(llama, tmp_path / "t")
    f, lo, hi = _tensor_bytes(tmp_path / "t", "model.layers.1.mlp.down_proj.weight")
    f.write_bytes(f.read_bytes()[:hi - 10])
    out = tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match=f"{f.name}: tensor 'model.layers.1.mlp.down_proj.weight'"
                                         ".*run past the end of the file"):
        htsr.analyze(tmp_path / "t", errors="row", out=out)
    assert not out.exists()


def test_bad_tensors_are_error_rows_and_the_run_goes_on(tmp_path, llama, reference, capsys):
    bad = _with_bad_tensors(llama, tmp_path / "bad")
    with pytest.raises(ValueError, match="q_proj"):                 # API default: raise
        htsr.analyze(tmp_path / "bad")
    df = htsr.analyze(tmp_path / "bad", errors="row", threads=2)
    err = df[df["status"] == "error"]
    assert set(err["name"]) == bad
    assert err["alpha"].isna().all() and (err["message"].str.contains("layer '")).all()
    msg = err.set_index("name")["message"]
    assert all("finite" in msg[n] or "nan" in msg[n].lower() for n in bad), list(msg)
    good = df[df["status"] != "error"]
    _same(good, reference[~reference["name"].isin(bad)], ignore=("source",))
    out = tmp_path / "r.jsonl"
    rc = cli.main(["analyze", str(tmp_path / "bad"), "--out", str(out), "-q", "--no-progress"])
    assert rc == cli.EXIT_ERROR_ROWS
    stderr = capsys.readouterr().err
    assert "2 matrices could not be analysed" in stderr
    assert all(name in stderr for name in bad)
    # --resume retries error rows (the checkpoint was fixed meanwhile) and replaces them
    import shutil
    shutil.rmtree(tmp_path / "bad")
    shutil.copytree(llama, tmp_path / "bad")
    assert cli.main(["analyze", str(tmp_path / "bad"), "--out", str(out), "--resume", "-q",
                     "--no-progress"]) == 0
    _same(read_results(out), reference, ignore=("source",))


def test_inf_weights_are_an_error_row_and_unknown_dtypes_fail_before_any_work(tmp_path):
    import struct
    n = 16 * 8 * 4
    rng = np.random.default_rng(0)

    def write(dtype_b):
        header = {"a.weight": {"dtype": "F32", "shape": [16, 8], "data_offsets": [0, n]},
                  "b.weight": {"dtype": dtype_b, "shape": [16, 8], "data_offsets": [n, 2 * n]}}
        h = json.dumps(header).encode()
        p = tmp_path / f"m_{dtype_b}.safetensors"
        p.write_bytes(struct.pack("<Q", len(h)) + h
                      + rng.standard_normal((16, 8)).astype(np.float32).tobytes()
                      + np.full((16, 8), np.inf, np.float32).tobytes())
        return p

    df = htsr.analyze(write("F32"), errors="row")
    assert list(df["status"]) == ["success", "error"] and not math.isnan(df["alpha"][0])
    assert "b" in df["message"][1] and "m_F32.safetensors" in df["message"][1]
    # an unknown dtype is found in the header, before anything is computed: a clear error
    out = tmp_path / "r.csv"
    with pytest.raises(ValueError, match="tensor 'b.weight': unknown safetensors dtype 'Q7'"):
        htsr.analyze(write("Q7"), errors="row", out=out)
    assert not out.exists()


# The CLI child blocks (interruptibly, in whichever worker gets there) in every matrix after
# the k-th; the test sends SIGINT once it says so, however slowly it started.
SIGINT_CHILD = textwrap.dedent("""
    import sys, threading, time
    from htsr import analysis, cli
    k, lock, state = int(sys.argv[1]), threading.Lock(), {"n": 0}
    real = analysis._ItemWork.__call__
    def call(self, *a):
        with lock:
            state["n"] += 1
            n = state["n"]
        if n > k:
            if n == k + 1:
                print("blocked", flush=True)
            time.sleep(3600)
        return real(self, *a)
    analysis._ItemWork.__call__ = call
    cli.entry(["analyze", *sys.argv[2:]])
""")


def test_ctrl_c_keeps_the_finished_rows_and_resume_completes(tmp_path, llama, reference):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, "5", str(llama), "--out",
                             str(out), "--threads", "2", "-q", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "blocked"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "htsr: interrupted" in err, (proc.returncode, err)
    partial = read_results(out)
    assert len(partial) <= 5
    _same(partial, reference[reference["name"].isin(partial["name"])])
    assert cli.main(["analyze", str(llama), "--out", str(out), "--resume", "-q",
                     "--no-progress"]) == 0
    _same(read_results(out), reference)
