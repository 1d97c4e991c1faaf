"""``htsr bench`` end to end on a tiny checkpoint and on synthetic matrices: the table, the
CSV/JSON/PNG outputs, the recorded environment, and figures that are checked, not just printed
(gram64 is the reference: its error and dalpha are exactly 0; the others against numpy)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from htsr import bench, cli


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {"layers.0.fc.weight": (rng.standard_normal((96, 48)) * (1 + rng.pareto(2.5, (96, 48)))).astype(np.float32),
               "layers.1.fc.weight": rng.standard_normal((96, 48)).astype(np.float32),   # same shape: skipped
               "layers.1.proj.weight": rng.standard_normal((40, 80)).astype(np.float32)}
    path = tmp_path / "tiny.safetensors"
    st.save_file(tensors, str(path))
    return path


def test_bench_end_to_end_on_a_tiny_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "res" / "b"
    methods = ["gram32", "gram64", "svd64", "rand:k=8,q=4,p=8", "rand:auto", "torch-cpu"]
    assert cli.main(["bench", str(tiny_checkpoint), "--synthetic", "120x60", "--methods", *methods,
                     "--out", str(out), "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "fastest with |dalpha| <= 0.001" in text and "load average" in text
    # the kernels the figures depend on: OpenBLAS pools with their architecture, the override
    assert f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}" in text and "BLAS: " in text
    data = json.loads((out.parent / "b.json").read_text())
    rows = data["rows"]
    assert {r["matrix"] for r in rows} == {"layers.0.fc", "layers.1.proj", "pareto-120x60"}
    assert {r["method"] for r in rows} == set(methods)
    env = data["environment"]
    assert env["seed"] == 3 and env["threads"] == 1 and "htsr_build" in env and env["threadpools"]
    assert all(pool["num_threads"] == 1 for pool in env["threadpools"])  # recorded as pinned
    assert env["openblas_coretype_env"] == os.environ.get("OPENBLAS_CORETYPE")
    assert env["cpu_avx512"] in (True, False, None)
    for r in rows:
        assert r["seconds"] > 0 and r["mem_bytes"] > 0
        if r["method"] == "gram64":
            assert r["topk_rel_err"] == 0 and r["dalpha"] == 0
        if r["method"] in ("gram32", "svd64", "torch-cpu"):
            assert r["topk_rel_err"] < 1e-5 and abs(r["dalpha"]) < 1e-3
        if r["method"].startswith("rand:k"):
            assert r["values"] == 8
    # the exact alpha recorded is the WeightWatcher fit of numpy's float64 spectrum of that matrix
    from safetensors.numpy import load_file
    import htsr
    W = load_file(str(tiny_checkpoint))["layers.0.fc.weight"]
    ev = np.sort(np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2)
    ref = htsr.fit_power_law(ev, **bench.WW_FIT).alpha
    got = next(r["alpha_exact"] for r in rows if r["matrix"] == "layers.0.fc")
    assert got == pytest.approx(ref, rel=1e-9)
    csv = (out.parent / "b.csv").read_text().splitlines()
    assert csv[0].startswith("matrix,N,M,method,seconds") and len(csv) == 1 + len(rows)
    pytest.importorskip("matplotlib")
    assert (out.parent / "b.png").stat().st_size > 1000


def test_bench_errors(capsys):
    assert cli.main(["bench", "--synthetic", "10by10"]) == 1
    assert "ROWSxCOLS" in capsys.readouterr().err
    assert cli.main(["bench", "--synthetic", "20x10", "--methods", "qr"]) == 1
    assert "unknown method 'qr'" in capsys.readouterr().err
    assert cli.main(["bench"]) == 1
    assert "nothing to bench" in capsys.readouterr().err
