"""htsr.report / htsr.compare / training runs / monitoring, end to end on checkpoints made here."""
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")
pytest.importorskip("matplotlib")


def _tensors(seed=0, n_layers=1, hidden=32, inter=48):
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.standard_normal((64, hidden)),
         "lm_head.weight": rng.standard_normal((64, hidden))}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for x in ("q", "k", "v", "o"):
            t[p + f"self_attn.{x}_proj.weight"] = rng.standard_t(3, (hidden, hidden))
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((inter, hidden))
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((inter, hidden))
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, inter))
    return {k: v.astype(np.float32) for k, v in t.items()}


def _save(folder, tensors):
    os.makedirs(folder, exist_ok=True)
    safetensors_numpy.save_file(tensors, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"model_type": "llama", "num_hidden_layers": 1}, fh)
    return str(folder)


def _tuned(t, name="model.layers.0.self_attn.v_proj.weight"):
    """Same weights, one matrix replaced by a rank-2 + small noise matrix (its alpha moves)."""
    t = dict(t)
    rng = np.random.default_rng(7)
    n, m = t[name].shape
    low = rng.standard_normal((n, 2)) @ rng.standard_normal((2, m)) * 5
    t[name] = (low + 0.01 * rng.standard_normal((n, m))).astype(np.float32)
    return t


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("base"), _tensors())


def _templates(page):
    return re.findall(r'<template id="L(\d+)">(.*?)</template>', page, flags=re.S)


def test_report_is_one_offline_file_with_table_flow_and_drilldowns(ckpt, tmp_path):
    out = tmp_path / "r.html"
    rep = htsr.report(ckpt, path=out)
    page = out.read_text(encoding="utf-8")
    assert page == rep.html
    df = htsr.analyze(ckpt)
    # offline: no external resource of any kind
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script src" not in page and "@import" not in page
    # table: one row per matrix, in network order (embeddings first, lm_head last)
    rows = re.findall(r'<tr tabindex="0" class="([^"]*)" data-key="\d+" data-name="([^"]+)"', page)
    assert [n for _, n in rows][0] == "model.embed_tokens" and rows[-1][1] == "lm_head"
    assert sorted(n for _, n in rows) == sorted(df["name"])
    # warnings highlighted: the row class is the warning
    warn = dict(zip(df["name"], df["warning"]))
    assert all(c.split()[:1] == ([warn[n]] if warn[n] else []) for c, n in rows)
    # the correlation flow (inline SVG) comes before the table, each matrix has a drill-down PNG
    assert page.index("<svg") < page.index('id="layers"')
    tpl = _templates(page)
    assert len(tpl) == len(df)
    assert all(body.count('src="data:image/png;base64,') == 1 for _, body in tpl)
    assert "htsr version" in page and htsr.__version__ in page
    assert "seconds" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)


def test_report_bytes_are_deterministic_across_processes(ckpt, tmp_path):
    esds = {}
    df = htsr.analyze(ckpt, esds=esds, layers=[0, 1, 2])
    a = htsr.report(df, esds=esds, title="t", workers=1).html
    code = ("import sys, htsr; e = {}; df = htsr.analyze(sys.argv[1], esds=e, layers=[0, 1, 2]); "
            "sys.stdout.write(htsr.report(df, esds=e, title='t', workers=2).html)")
    env = dict(os.environ, PYTHONHASHSEED="123")
    b = subprocess.run([sys.executable, "-c", code, ckpt], capture_output=True, text=True,
                       check=True, env=env).stdout
    assert a == b
    assert a != htsr.report(df, esds=esds, title="u", workers=1).html   # the check can fail


def test_report_without_path_renders_in_notebooks_and_table_only_mode(ckpt):
    df = htsr.analyze(ckpt)
    rep = htsr.report(df, figures=False, title="x<y")
    assert "<img" not in rep.html and "x&lt;y" in rep.html
    frame = rep._repr_html_()
    assert frame.startswith("<iframe") and "srcdoc=" in frame and "&lt;table" in frame
    assert callable(htsr.report) and htsr.report.report is not None
    assert "<table" in df._repr_html_()            # the analyze table itself renders in Jupyter


def test_compare_matches_by_name_and_flags_the_moved_layer(ckpt, tmp_path):
    tuned = _save(tmp_path / "tuned", _tuned(_tensors()))
    a, b = htsr.analyze(ckpt), htsr.analyze(tuned)
    cmp = htsr.compare(a, b)
    assert list(cmp["name"])[0] == "model.embed_tokens" and list(cmp["name"])[-1] == "lm_head"
    ja, jb = a.set_index("name"), b.set_index("name")
    for _, r in cmp.iterrows():
        assert r["d_alpha"] == pytest.approx(jb.loc[r["name"], "alpha"] - ja.loc[r["name"], "alpha"],
                                             nan_ok=True)
    changed = cmp[cmp["d_log_norm"] != 0]["name"].tolist()
    assert changed == ["model.layers.0.self_attn.v_proj"]       # identical weights: exact zeros
    assert cmp[cmp["moved"]]["name"].tolist() == ["model.layers.0.self_attn.v_proj"]
    assert (cmp["present"] == "both").all()
    # rows present on one side only
    cmp2 = htsr.compare(a, b[b["name"] != "lm_head"])
    assert cmp2.set_index("name").loc["lm_head", "present"] == "a"
    with pytest.raises(ValueError, match="no layer name in common"):
        htsr.compare(a, b.assign(name=b["name"] + ".x"))


def test_cli_comparison_report_end_to_end(ckpt, tmp_path, capsys):
    tuned = _save(tmp_path / "tuned", _tuned(_tensors()))
    out = tmp_path / "diff.html"
    assert main(["report", ckpt, tuned, "-o", str(out), "--top", "1"]) == 0
    page = out.read_text(encoding="utf-8")
    moved = re.findall(r'<tr tabindex="0" class="[^"]*moved[^"]*" data-key="\d+" data-name="([^"]+)"', page)
    assert moved == ["model.layers.0.self_attn.v_proj"]
    assert "vs" in page.split("<title>")[1].split("</title>")[0]
    assert main(["report", ckpt, "-o", str(tmp_path / "x.txt")]) == 1
    assert "name it .html" in capsys.readouterr().err


def _run_dir(tmp_path):
    run = tmp_path / "run"
    _save(run / "checkpoint-500", _tensors())
    _save(run / "checkpoint-1000", _tuned(_tensors()))
    (run / "trainer_state.json").write_text("{}")
    return run


def test_run_folder_gives_one_table_with_steps_and_a_run_report(tmp_path, capsys):
    run = _run_dir(tmp_path)
    df = htsr.analyze(run)
    assert list(df.columns[:3]) == ["layer_id", "step", "name"]
    assert sorted(set(df["step"])) == [500, 1000] and list(df["step"])[0] == 500
    one = htsr.analyze(run / "checkpoint-1000")
    last = df[df["step"] == 1000].drop(columns="step").reset_index(drop=True)
    pd.testing.assert_frame_equal(last.drop(columns="seconds"), one.drop(columns="seconds"))
    assert main(["analyze", str(run), "-q", "--out", str(tmp_path / "t.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "t.csv")) == 2 * len(one)
    out = tmp_path / "run.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert 'alt="alpha over steps"' in page
    assert len(re.findall(r'aria-label="alpha over steps"', page)) == len(one)   # sparklines
    with pytest.raises(ValueError, match="checkpoint"):
        htsr.runs.analyze_run(tmp_path)


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def test_monitor_analyses_a_snapshot_in_the_background(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32))
    expect = htsr.analyze({k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
                          precision="float32")
    w = _Writer()
    mon = htsr.Monitor(tmp_path / "logs", every=10, tensorboard=w)
    assert mon(model, 5) is None                       # not a multiple of every
    fut = mon(model, 10)
    with torch.no_grad():                              # training goes on: weights change
        for p in model.parameters():
            p.mul_(0.0)
    got = fut.result()
    np.testing.assert_allclose(got["alpha"], expect["alpha"], rtol=1e-6)
    alphas = {t: v for t, v, s in w.scalars if t.startswith("htsr/alpha/")}
    assert alphas == pytest.approx({f"htsr/alpha/{n}": a for n, a in zip(expect["name"], expect["alpha"])})
    assert ("htsr/summary/alpha", pytest.approx(htsr.summary(expect)["alpha"]), 10) in \
        [(t, v, s) for t, v, s in w.scalars if t == "htsr/summary/alpha"]
    mon.close()
    log = pd.read_csv(tmp_path / "logs" / "htsr.csv")
    assert list(log["step"]) == [10, 10] and list(log["name"].astype(str)) == list(expect["name"])


def test_monitor_skips_while_busy_and_writes_tensorboard_events(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.utils.tensorboard")
    import threading
    model = torch.nn.Linear(32, 16)
    gate = threading.Event()
    orig = htsr.Monitor._analyze

    def slow(self, snap, step):
        gate.wait(60)
        return orig(self, snap, step)

    monkeypatch.setattr(htsr.Monitor, "_analyze", slow)
    mon = htsr.Monitor(tmp_path / "tb", every=1)
    first = mon(model, 1)
    assert mon(model, 2) is None and mon.skipped == 1
    gate.set()
    assert list(first.result()["step"]) == [1]
    mon.close()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def test_trainer_callback_duck_types_the_hf_protocol(tmp_path):
    torch = pytest.importorskip("torch")
    from htsr.integrations import TrainerCallback
    model = torch.nn.Linear(32, 16)
    cb = TrainerCallback(every=2, tensorboard=False)
    args = types.SimpleNamespace(logging_dir=str(tmp_path / "hf"), output_dir=str(tmp_path))
    control = object()
    for step in (1, 2, 3, 4):
        state = types.SimpleNamespace(global_step=step)
        assert cb.on_step_end(args, state, control, model=model) is control
        cb.monitor.wait()
        assert cb.on_log(args, state, control, logs={}) is control     # every other event: no-op
    results = cb.monitor.results
    assert cb.on_train_end(args, state, control) is control and cb.monitor is None
    assert sorted(set(results["step"])) == [2, 4]
    assert list(pd.read_csv(tmp_path / "hf" / "htsr.csv")["step"]) == [2, 4]
    with pytest.raises(AttributeError):
        cb.not_an_event
