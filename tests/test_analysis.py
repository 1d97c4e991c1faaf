"""htsr.analyze / htsr.describe / htsr.metrics against independent numpy oracles.

Oracles: numpy SVDs of the weight matrices (not htsr's native code), the formulas of
WeightWatcher 0.7.7 written out here, and torch/safetensors/numpy writers for the sources.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import htsr
from htsr import metrics

torch = pytest.importorskip("torch")

EPS64 = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def svd_evals(W):
    """Oracle: squared singular values of W (float64 LAPACK gesdd via numpy), ascending."""
    return np.sort(np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False) ** 2)


def ww_fit(x):
    """Oracle: WeightWatcher 0.7.7's WWFit (weightwatcher.md §2.4.1), written out in numpy."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[x > 1e-5]
    n = len(x)
    logx = np.log(x)
    best = (np.inf, None)
    for i in range(n - 1):
        nt = n - i
        alpha = 1 + nt / (logx[i:].sum() - nt * logx[i])
        if alpha > 1:
            D = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - alpha) - np.arange(nt) / nt))
        else:
            D = 1.0
        if D < best[0]:
            best = (D, (alpha, x[i], D, (alpha - 1) / math.sqrt(nt)))
    return best[1]


class Stack(torch.nn.Module):
    """Registration order == natural order of the names (so file sources give the same ids)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(8, 24, 3)
        self.embed = torch.nn.Embedding(200, 40)
        self.fc1 = torch.nn.Linear(120, 64)
        self.fc2 = torch.nn.Linear(64, 48)
        self.norm = torch.nn.LayerNorm(48)
        self.tiny = torch.nn.Linear(6, 5)       # M = 5 < min_evals: skipped (keeps id 4)


@pytest.fixture(scope="module")
def stack():
    torch.manual_seed(0)
    return Stack()


# --------------------------------------------------------------------------------------------
# metrics against numpy oracles
# --------------------------------------------------------------------------------------------
def test_dense_metrics_match_numpy_oracle(stack):
    df = htsr.analyze(stack, layer_types=["dense"])
    assert list(df["name"]) == ["fc1", "fc2"]
    for _, row in df.iterrows():
        W = getattr(stack, row["name"]).weight.detach().numpy()
        ev = svd_evals(W)
        N, M = max(W.shape), min(W.shape)
        assert (row["N"], row["M"], row["rf"], row["num_evals"]) == (N, M, 1, M)
        assert row["Q"] == pytest.approx(N / M)
        np.testing.assert_allclose(row["norm"], np.sum(W.astype(np.float64) ** 2), rtol=1e-10)
        np.testing.assert_allclose(row["lambda_max"], ev[-1], rtol=1e-10)
        np.testing.assert_allclose(row["spectral_norm"], ev[-1], rtol=1e-10)
        np.testing.assert_allclose(row["sv_max"] ** 2, ev[-1], rtol=1e-10)
        np.testing.assert_allclose(row["sv_min"], math.sqrt(ev[0]), rtol=1e-6)
        np.testing.assert_allclose(row["log_norm"], math.log10(ev.sum()), rtol=1e-10)
        np.testing.assert_allclose(row["log_spectral_norm"], math.log10(ev[-1]), rtol=1e-10)
        np.testing.assert_allclose(row["stable_rank"], ev.sum() / ev[-1], rtol=1e-10)
        alpha, xmin, D, sigma = ww_fit(ev)
        np.testing.assert_allclose(row["alpha"], alpha, rtol=1e-9)
        np.testing.assert_allclose(row["xmin"], xmin, rtol=1e-9)
        np.testing.assert_allclose(row["D"], D, rtol=1e-8)
        np.testing.assert_allclose(row["sigma"], sigma, rtol=1e-9)
        assert row["num_pl_spikes"] == int(np.sum(ev >= xmin))
        np.testing.assert_allclose(row["alpha_weighted"], alpha * math.log10(ev[-1]), rtol=1e-9)
        np.testing.assert_allclose(row["log_alpha_norm"], math.log10(np.sum(ev ** alpha)), rtol=1e-9)
        sv = np.sqrt(ev)
        rank = int(np.sum(sv > sv.max() * N * EPS64))
        assert row["matrix_rank"] == rank == M
        assert row["rank_loss"] == 0 and row["weak_rank_loss"] == int(np.sum(ev < 1e-6))
        p = ev / ev.sum() + 1e-10
        np.testing.assert_allclose(row["entropy"], -np.sum(p * np.log(p)) / np.log(rank + 1e-10),
                                   rtol=1e-9)
        assert row["status"] == "success" and row["has_esd"]
        assert row["warning"] == metrics.fit_warning(alpha)
        assert row["seconds"] > 0


def test_normalize_divides_by_n_and_keeps_alpha(stack):
    a = htsr.analyze(stack, layers=["fc1"])
    b = htsr.analyze(stack, layers=["fc1"], normalize=True)
    N = a["N"][0]
    for c in ("lambda_max", "norm", "spectral_norm", "xmin", "xmax"):
        np.testing.assert_allclose(b[c][0], a[c][0] / N, rtol=1e-12)
    np.testing.assert_allclose(b["sv_max"][0], a["sv_max"][0] / math.sqrt(N), rtol=1e-12)
    for c in ("alpha", "D", "stable_rank", "num_pl_spikes", "entropy"):
        np.testing.assert_allclose(b[c][0], a[c][0], rtol=1e-9)


def test_conv2d_norm_scaling_pooled_and_slices(stack):
    W = stack.conv1.weight.detach().numpy()            # (24, 8, 3, 3)
    slices = [W[:, :, i, j] for i in range(3) for j in range(3)]
    raw = np.sort(np.concatenate([svd_evals(s) for s in slices]))
    pooled = htsr.analyze(stack, layers=["conv1"], min_evals=1)
    assert (pooled["N"][0], pooled["M"][0], pooled["rf"][0], pooled["num_evals"][0]) == (24, 8, 9, 72)
    np.testing.assert_allclose(pooled["lambda_max"][0], raw[-1] / 2, rtol=1e-10)
    np.testing.assert_allclose(pooled["norm"][0], raw.sum() / 2, rtol=1e-10)
    alpha, *_ = ww_fit(raw / 2)
    np.testing.assert_allclose(pooled["alpha"][0], alpha, rtol=1e-9)
    unscaled = htsr.analyze(stack, layers=["conv1"], conv2d_norm=False)
    np.testing.assert_allclose(unscaled["lambda_max"][0], raw[-1], rtol=1e-10)
    per = htsr.analyze(stack, layers=["conv1"], pool=False, min_evals=1)
    assert list(per["slice_id"]) == list(range(9)) and (per["num_evals"] == 8).all()
    assert (per["layer_id"] == pooled["layer_id"][0]).all()
    for sid, s in enumerate(slices):
        np.testing.assert_allclose(per["lambda_max"][sid], svd_evals(s)[-1] * 9 / 2, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# deliberate departures (docs/DEPARTURES.md)
# --------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records")
def test_failed_fit_is_nan_not_over_trained():
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 64))
    with torch.no_grad():
        m[0].weight.mul_(1e-5)        # every eigenvalue ~1e-9 < 1e-5: nothing left to fit
    df = htsr.analyze(m)
    bad, good = df.iloc[0], df.iloc[1]
    assert bad["status"] == "failed" and bad["warning"] == ""
    for c in ("alpha", "D", "sigma", "xmin", "xmax", "alpha_weighted", "log_alpha_norm"):
        assert math.isnan(bad[c]), c
    assert bad["num_pl_spikes"] == 0
    assert math.isfinite(bad["log_norm"]) and bad["num_evals"] == 32
    assert good["status"] == "success" and math.isfinite(good["alpha"])
    # the failure is real in WeightWatcher too, which labels it over-trained with alpha -1
    ww = pytest.importorskip("weightwatcher")
    w = ww.WeightWatcher(model=m).analyze()
    assert w["alpha"].iloc[0] == -1 and w["warning"].iloc[0] == "over-trained"


def test_summary_skips_failed():
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 64))
    with torch.no_grad():
        m[0].weight.mul_(1e-5)
    df = htsr.analyze(m)
    s = htsr.summary(df)
    assert set(s) == {"log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                      "log_spectral_norm", "stable_rank"}
    assert s["alpha"] == pytest.approx(df["alpha"].iloc[1])
    assert s["log_norm"] == pytest.approx(df["log_norm"].mean())
    df2 = df.assign(mp_softrank=[0.25, 0.75])
    assert htsr.summary(df2)["mp_softrank"] == pytest.approx(0.5)


def test_pooled_conv_sv_min_is_true_minimum():
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(16, 40, 3)
    with torch.no_grad():
        conv.weight[:, :, 0, 0].mul_(0.01)             # one slice with much smaller values
    m = torch.nn.Sequential(conv)
    W = conv.weight.detach().numpy()
    mins = [np.linalg.svd(W[:, :, i, j].astype(np.float64), compute_uv=False).min() * math.sqrt(0.5)
            for i in range(3) for j in range(3)]
    row = htsr.analyze(m).iloc[0]
    np.testing.assert_allclose(row["sv_min"], min(mins), rtol=1e-6)
    assert row["sv_min"] < 0.1 * max(mins)            # WeightWatcher reports max(mins)


def test_conv_n_m_not_swapped():
    torch.manual_seed(3)
    m = torch.nn.Sequential(torch.nn.Conv2d(128, 64, 2))   # out < in, even rf
    row = htsr.analyze(m).iloc[0]
    assert (row["N"], row["M"], row["rf"], row["num_evals"]) == (128, 64, 4, 256)
    assert row["Q"] == 2.0
    d = htsr.describe(m).iloc[0]
    assert (d["N"], d["M"], d["num_evals"]) == (128, 64, 256)


# --------------------------------------------------------------------------------------------
# iteration, ids, filters, describe
# --------------------------------------------------------------------------------------------
def test_layer_ids_contiguous_and_stable(stack):
    df = htsr.analyze(stack)
    assert list(df["name"]) == ["conv1", "embed", "fc1", "fc2"]          # no norm, no tiny
    assert list(df["layer_id"]) == [0, 1, 2, 3]
    assert list(df["layer_type"]) == ["conv2d", "embedding", "dense", "dense"]
    assert (df["longname"] == df["name"]).all()
    assert list(df.columns[:2]) == ["layer_id", "name"]
    assert list(df.columns) == metrics.order_columns(df.columns)
    assert df.columns[-1] == "seconds"
    by_id = htsr.analyze(stack, layers=[2, "fc2"])
    assert list(by_id["layer_id"]) == [2, 3]
    by_re = htsr.analyze(stack, names=[r"^fc"], exclude=["2$"])
    assert list(by_re["name"]) == ["fc1"] and list(by_re["layer_id"]) == [2]
    by_type = htsr.analyze(stack, layer_types=["embedding", "conv2d"])
    assert list(by_type["layer_id"]) == [0, 1]
    assert list(htsr.analyze(stack, max_N=100)["name"]) == ["conv1", "fc2"]
    assert list(htsr.analyze(stack, max_evals=60)["name"]) == ["embed", "fc2"]
    small = htsr.analyze(stack, min_evals=1)
    assert "tiny" in list(small["name"]) and list(small["layer_id"]) == list(range(5))
    for c in ("alpha", "D", "norm"):
        np.testing.assert_allclose(by_id[c].to_numpy(), df[c].to_numpy()[2:], rtol=1e-12)
    with pytest.raises(ValueError, match="unknown layer type"):
        htsr.analyze(stack, layer_types=["norm"])


def test_describe_matches_analyze(stack):
    d = htsr.describe(stack)
    a = htsr.analyze(stack)
    assert list(d.columns) == ["layer_id", "name", "longname", "layer_type", "part", "source",
                               "stored_dtype", "N", "M", "Q", "rf", "num_evals"]
    for c in ("layer_id", "name", "layer_type", "N", "M", "rf", "num_evals"):
        assert list(d[c]) == list(a[c]), c
    assert (d["source"] == "<module>").all() and (d["stored_dtype"] == "float32").all()
    dp = htsr.describe(stack, pool=False)
    assert list(dp["slice_id"][:9]) == list(range(9)) and len(dp) == 9 + 3
    assert htsr.describe(stack, precision="float32", threads=1).shape == d.shape
    with pytest.raises(TypeError):
        htsr.describe(stack, bogus=1)


def test_empty_selection_gives_empty_frame(stack):
    df = htsr.analyze(stack, names=["nothing-matches"])
    assert len(df) == 0 and "alpha" in df.columns


# --------------------------------------------------------------------------------------------
# every source gives the same table
# --------------------------------------------------------------------------------------------
def _write_sources(m, tmp_path):
    from safetensors.torch import save_file
    sd = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
    paths = {}
    single = tmp_path / "single" / "model.safetensors"
    single.parent.mkdir()
    save_file(sd, str(single))
    paths["safetensors_file"] = single
    paths["safetensors_dir"] = single.parent
    shard = tmp_path / "sharded"
    shard.mkdir()
    keys = list(sd)
    parts = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    # the second half goes in the first shard: shard order must not matter
    for i, ks in enumerate(reversed(parts)):
        fn = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in ks}, str(shard / fn))
        weight_map.update({k: fn for k in ks})
    (shard / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    paths["safetensors_sharded"] = shard
    binf = tmp_path / "pytorch_model.bin"
    torch.save(sd, str(binf))
    paths["bin"] = binf
    npz = tmp_path / "weights.npz"
    np.savez(str(npz), **{k: v.numpy() for k, v in sd.items()})
    paths["npz"] = npz
    return sd, paths


def test_every_source_gives_the_same_table(stack, tmp_path):
    sd, paths = _write_sources(stack, tmp_path)
    ref = htsr.analyze(stack)
    sources = {"module": stack, "state_dict": sd, **paths}
    numeric = ["layer_id", "N", "M", "Q", "rf", "num_evals", "alpha", "D", "xmin", "xmax",
               "sigma", "num_pl_spikes", "norm", "lambda_max", "sv_min", "stable_rank",
               "matrix_rank", "rank_loss", "weak_rank_loss", "entropy", "log_alpha_norm"]
    for kind, src in sources.items():
        df = htsr.analyze(src)
        assert list(df["name"]) == list(ref["name"]), kind
        assert list(df["layer_type"]) == list(ref["layer_type"]), kind
        assert list(df.columns) == list(ref.columns), kind
        for c in numeric:
            np.testing.assert_allclose(df[c].to_numpy(float), ref[c].to_numpy(float),
                                       rtol=1e-12, err_msg=f"{kind}: {c}")
        d = htsr.describe(src)
        assert list(d["layer_id"]) == list(ref["layer_id"]), kind
    src_col = htsr.analyze(paths["safetensors_sharded"])["source"]
    assert all(s.endswith(".safetensors") for s in src_col)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_nan_weights_raise_value_error_naming_layer_and_file(stack, tmp_path):
    from safetensors.torch import save_file
    sd = {k: v.detach().clone().contiguous() for k, v in stack.state_dict().items()}
    sd["fc2.weight"][3, 5] = float("nan")
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ValueError) as ei:
        htsr.analyze(path)
    msg = str(ei.value)
    assert "fc2" in msg and str(path) in msg and "NaN" in msg
    sd2 = dict(sd)
    sd2["fc2.weight"] = sd["fc2.weight"].clone().fill_(0.1)
    sd2["conv1.weight"] = sd["conv1.weight"].clone()
    sd2["conv1.weight"][0, 0, 2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"conv1.*slice 7.*(NaN|Inf)"):
        htsr.analyze(sd2)


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        htsr.analyze(tmp_path / "nope.safetensors")


def test_bad_options():
    m = torch.nn.Sequential(torch.nn.Linear(16, 16))
    with pytest.raises(ValueError, match="precision"):
        htsr.analyze(m, precision="float16")
    with pytest.raises(ValueError, match="method"):
        htsr.analyze(m, method="qr")
    with pytest.raises(ValueError, match="randomized"):
        htsr.analyze(m, method="randomized")


# --------------------------------------------------------------------------------------------
# progress, pipeline
# --------------------------------------------------------------------------------------------
def test_progress_callable_and_bar(stack, capsys):
    calls = []
    htsr.analyze(stack, progress=lambda done, total, nbytes, name: calls.append((done, total, nbytes, name)))
    assert [c[0] for c in calls] == [1, 2, 3, 4] and all(c[1] == 4 for c in calls)
    assert calls[-1][2] == 4 * sum(getattr(stack, n).weight.numel()
                                   for n in ("conv1", "embed", "fc1", "fc2"))
    # matrices finish in any order (one per worker, no barrier): each is reported once
    assert sorted(c[3] for c in calls) == ["conv1", "embed", "fc1", "fc2"]
    htsr.analyze(stack, progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err


def _fake_matrix(i):
    return [np.random.default_rng(i).standard_normal((64, 32)).astype(np.float32)]


def _fake_spec(i, load):
    """A 64 x 32 float32 layer 'l{i}' whose matrices come from ``load``."""
    from htsr import sources
    return sources.LayerSpec(name=f"l{i}", layer_type="dense", shape=(64, 32), N=64, M=32, rf=1,
                             stored_dtype="float32", source="<test>", part=None, load=load,
                             nbytes=64 * 32 * 4)


def _fake_pipeline(monkeypatch, n, load_delay, matrix_delay, **kw):
    """analyze over n fake 64x32 layers whose load() sleeps load_delay and whose spectra sleep
    matrix_delay each -> (elapsed, max number of matrices loaded but not yet analysed,
    sizes of the native batches)."""
    from htsr import core, sources

    state = {"inflight": 0, "max_inflight": 0, "sizes": []}
    lock = threading.Lock()

    def make(i):
        def load():
            time.sleep(load_delay)
            with lock:
                state["inflight"] += 1
                state["max_inflight"] = max(state["max_inflight"], state["inflight"])
            return _fake_matrix(i)
        return _fake_spec(i, load)

    real_batch = core.spectrum_batch

    def slow_batch(mats, **kw):
        state["sizes"].append(len(mats))
        time.sleep(matrix_delay * len(mats))
        out = real_batch(mats, **kw)
        with lock:
            state["inflight"] -= len(mats)
        return out

    monkeypatch.setattr(sources, "iter_layers", lambda *a, **k: iter([make(i) for i in range(n)]))
    monkeypatch.setattr(core, "spectrum_batch", slow_batch)
    t0 = time.perf_counter()
    df = htsr.analyze("ignored", **kw)
    elapsed = time.perf_counter() - t0
    assert list(df["name"]) == [f"l{i}" for i in range(n)]
    return elapsed, state["max_inflight"], state["sizes"]


def test_pipeline_overlaps_reading_with_native_work(monkeypatch):
    """While the first matrix's spectrum is being computed, the reader loads the next one: the
    native call for l0 waits (bounded) for l1's load to finish, which only happens if reading
    runs beside the analysis.  Sequential code would time out here; no timing is asserted."""
    from htsr import core, sources

    loaded = {i: threading.Event() for i in range(3)}
    seen = {}

    def make(i):
        def load():
            loaded[i].set()
            return _fake_matrix(i)
        return _fake_spec(i, load)

    real_batch = core.spectrum_batch

    def batch(mats, **kw):
        if "l1_loaded_during_l0" not in seen:
            seen["l1_loaded_during_l0"] = loaded[1].wait(timeout=60)
        return real_batch(mats, **kw)

    monkeypatch.setattr(sources, "iter_layers", lambda *a, **k: iter([make(i) for i in range(3)]))
    monkeypatch.setattr(core, "spectrum_batch", batch)
    df = htsr.analyze("ignored", prefetch=2, threads=1)
    assert list(df["name"]) == ["l0", "l1", "l2"]
    assert seen["l1_loaded_during_l0"]


def test_pipeline_reads_ahead_a_bounded_number_of_matrices(monkeypatch):
    # loads 8x faster than the analysis: an unbounded reader would hold ~all 16 matrices
    _, most, _ = _fake_pipeline(monkeypatch, 16, 0.005, 0.04, prefetch=3, threads=2)
    assert 3 <= most <= 2 * 3, most                  # read ahead + the batch being analysed
    _, most, _ = _fake_pipeline(monkeypatch, 16, 0.005, 0.04, prefetch=1, threads=1)
    assert most <= 2, most


def test_pipeline_has_no_barrier(monkeypatch):
    # Matrix 0 cannot finish until the 9 others are done: with a barrier after each batch (or
    # any worker waiting for its partner) this deadlocks; with per-matrix workers the second
    # core analyses the 9 others while the first is busy, and every row is still there.
    import pandas as pd
    from htsr import core, sources

    n, state, lock = 10, {"others": 0, "waited": None}, threading.Lock()
    others_done = threading.Event()

    def make(i):
        shape = (64, 32) if i == 0 else (64, 16)
        return sources.LayerSpec(
            name=f"l{i}", layer_type="dense", shape=shape, N=64, M=shape[1], rf=1,
            stored_dtype="float32", source="<test>", part=None, nbytes=64 * shape[1] * 4,
            load=lambda: [np.random.default_rng(0).standard_normal(shape).astype(np.float32)])

    real_batch = core.spectrum_batch

    def batch(mats, **kw):
        if mats[0].shape[1] == 32:
            state["waited"] = others_done.wait(timeout=120)
        out = real_batch(mats, **kw)
        if mats[0].shape[1] == 16:
            with lock:
                state["others"] += len(mats)
                if state["others"] == n - 1:
                    others_done.set()
        return out

    monkeypatch.setattr(sources, "iter_layers", lambda *a, **k: iter([make(i) for i in range(n)]))
    monkeypatch.setattr(core, "spectrum_batch", batch)
    order = []
    df = htsr.analyze("ignored", threads=2, progress=lambda d, t, b, name: order.append(name))
    # l0's native call returned only after the 9 others' native calls had finished, so they
    # ran while l0 was in flight (no ordering of the progress reports is implied: the last
    # other matrix may report after l0)
    assert state["waited"] is True
    assert sorted(order) == sorted(f"l{i}" for i in range(n))
    assert list(df["name"]) == [f"l{i}" for i in range(n)]     # table in model order
    ref = htsr.analyze("ignored", threads=1)                   # one worker: same rows
    cols = [c for c in df.columns if c != "seconds"]
    pd.testing.assert_frame_equal(df[cols], ref[cols])


# Peak RSS of the child's own address space: VmHWM (kB). Not ru_maxrss, which Linux carries
# over execve from the parent (a spawned child reports at least the pytest process's peak).
MEMORY_CHILD = textwrap.dedent("""
    import sys
    import htsr
    df = htsr.analyze(sys.argv[1], precision=sys.argv[2])
    assert len(df) == int(sys.argv[3]), len(df)
    with open("/proc/self/status") as f:
        print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
""")


def _write_big_safetensors(path, n, shape, dtype="F32", seed=0):
    import struct
    rng = np.random.default_rng(seed)
    nb = shape[0] * shape[1] * (4 if dtype == "F32" else 2)
    header = {f"layers.{i}.weight": {"dtype": dtype, "shape": list(shape),
                                     "data_offsets": [i * nb, (i + 1) * nb]} for i in range(n)}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _ in range(n):
            W = rng.standard_normal(shape, dtype=np.float32)
            f.write(W.tobytes() if dtype == "F32" else (W.view(np.uint32) >> 16).astype(np.uint16).tobytes())


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("dtype, n", [("F32", 100), ("BF16", 170)])
def test_peak_memory_is_bounded_by_a_few_matrices(tmp_path, dtype, n):
    """A checkpoint larger than the bound (100 float32 / 170 bfloat16 matrices of 1024 x 1024):
    the peak RSS of the analysing process stays below 4 float32 copies of one matrix + 300 MB,
    not the file size (mapped pages of converted or copied tensors are released)."""
    shape = (1024, 1024)
    path = tmp_path / "big.safetensors"
    _write_big_safetensors(path, n, shape, dtype)
    one = shape[0] * shape[1] * 4
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path), "float32", str(n)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1]) * 1024          # VmHWM is in kB
    assert os.path.getsize(path) > 4 * one + 300e6
    assert peak < 4 * one + 300e6, f"peak RSS {peak / 1e6:.0f} MB"
