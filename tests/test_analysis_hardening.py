"""Errors inside ``analyze`` name the layer and its file; degenerate layers give rows, not
aborts; the CLI checks --out before analysing and prints names without escape sequences."""
from __future__ import annotations

import numpy as np
import pytest

import htsr
from htsr import cli

save_file = pytest.importorskip("safetensors.numpy").save_file


def _ckpt(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


def test_float32_gram_overflow_names_layer_and_file(tmp_path):
    rng = np.random.default_rng(0)
    path = _ckpt(tmp_path, {"ok.weight": rng.standard_normal((40, 30)).astype(np.float32),
                            "huge.weight": (rng.standard_normal((40, 30)) * 1e20).astype(np.float32)})
    with pytest.raises(OverflowError, match=r"layer 'huge'.*model\.safetensors.*float32 Gram.*float64"):
        htsr.analyze(path, precision="float32")
    df = htsr.analyze(path, precision="float64")  # float64 holds it
    assert len(df) == 2 and np.isfinite(df["lambda_max"]).all()


def test_single_eigenvalue_layer_gives_a_failed_fit_row(tmp_path):
    rng = np.random.default_rng(1)
    column = rng.standard_normal((50, 1)).astype(np.float32)
    path = _ckpt(tmp_path, {"a.weight": rng.standard_normal((60, 40)).astype(np.float32), "column.weight": column})
    df = htsr.analyze(path, min_evals=1).set_index("name")
    assert df.loc["column", "num_evals"] == 1
    assert df.loc["column", "status"] == "failed" and np.isnan(df.loc["column", "alpha"])
    # its one eigenvalue is ||w||^2 (closed form), and the norm metrics are still there
    assert df.loc["column", "lambda_max"] == pytest.approx(float(np.sum(column.astype(np.float64) ** 2)), rel=1e-12)
    assert df.loc["a", "status"] == "success"


def test_cli_checks_out_before_analysing(tmp_path, capsys):
    path = _ckpt(tmp_path, {"a.weight": np.random.default_rng(2).standard_normal((60, 40)).astype(np.float32)})
    target = tmp_path / "results.csv"
    target.mkdir()  # a directory where the file should go: unwritable, even for root
    code = cli.main(["analyze", str(path), "--out", str(target), "--no-progress"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "results.csv" in err and "cannot write" in err
    assert "layer_id" not in out and "model summary" not in out  # nothing was analysed
    # a new writable file is not left behind by the check when the analysis then fails early
    fresh = tmp_path / "fresh.csv"
    assert cli.main(["describe", str(tmp_path / "missing.safetensors"), "--out", str(fresh)]) != 0
    assert not fresh.exists()


@pytest.mark.parametrize("command", ["describe", "analyze"])
def test_cli_escapes_names(tmp_path, capsys, command):
    evil = "layers.0.\x1b[2J\x1b]0;pwned\x07fc"
    path = _ckpt(tmp_path, {evil + ".weight": np.random.default_rng(3).standard_normal((60, 40)).astype(np.float32)})
    assert cli.main([command, str(path), "--no-progress"] if command == "analyze" else [command, str(path)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[2J" in out
