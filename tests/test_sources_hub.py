"""htsr.sources.hub: ``org/name`` model ids resolved from a local Hugging Face cache layout
(built here, as huggingface_hub lays it out: snapshots/<commit> files symlinked to blobs),
never from the network."""
from __future__ import annotations

import os

import numpy as np
import pytest

from htsr import cli
from htsr.sources import hub, iter_layers


def _cache(root, repo="org/tiny", commits=("c0ffee1", "deadbee2"), main="deadbee2"):
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(main)
    from safetensors.numpy import save_file

    for i, c in enumerate(commits):
        snap = base / "snapshots" / c
        snap.mkdir(parents=True)
        save_file({"w.weight": np.full((64, 32), i + 1, np.float32)}, str(base / "blobs" / c))
        os.symlink(f"../../blobs/{c}", snap / "model.safetensors")
    return base


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "default"])
def test_model_id_from_cache(hf_env, monkeypatch, var):
    cache = {"HF_HUB_CACHE": hf_env / "c", "HF_HOME": hf_env / "hh" / "hub",
             "XDG_CACHE_HOME": hf_env / "x" / "huggingface" / "hub",
             "default": hf_env / "home" / ".cache" / "huggingface" / "hub"}[var]
    _cache(cache)
    if var != "default":
        monkeypatch.setenv(var, str({"HF_HUB_CACHE": cache, "HF_HOME": hf_env / "hh",
                                     "XDG_CACHE_HOME": hf_env / "x"}[var]))
    (s,) = iter_layers("org/tiny")  # refs/main -> deadbee2 (value 2)
    assert s.source.endswith(os.path.join("snapshots", "deadbee2", "model.safetensors"))
    assert s.load()[0][0, 0] == 2
    (s,) = iter_layers("org/tiny@c0ffee")  # a commit prefix
    assert s.load()[0][0, 0] == 1


def test_missing_model_id_says_where_it_looked(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_env / "c"))
    with pytest.raises(FileNotFoundError, match=r"org/absent.*local Hugging Face cache.*"
                                                 r"models--org--absent"):
        iter_layers("org/absent")
    with pytest.raises(FileNotFoundError, match="no such file"):
        iter_layers("./org/absent")  # a path, not an id
    assert not hub.looks_like_id("/abs/path") and hub.looks_like_id("org/name@v1.0")


def test_cli_analyze_model_id(hf_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_env / "c"))
    _cache(hf_env / "c")
    out = hf_env / "d.csv"
    assert cli.main(["describe", "org/tiny", "--out", str(out)]) == 0
    assert "1 matrices" in capsys.readouterr().out
    assert "snapshots/deadbee2/model.safetensors" in out.read_text()
    assert cli.main(["describe", "org/missing"]) != 0
    err = capsys.readouterr().err
    assert "models--org--missing" in err and "does not download" in err
