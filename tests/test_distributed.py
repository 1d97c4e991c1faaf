"""Per-matrix tasks on executors (issue 11): a real Dask cluster on 127.0.0.1 (a scheduler and
two workers, each a separate process), a process pool, and the task contract."""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time

import pytest

import htsr
from htsr import distributed as hd
from htsr.results import read_results

sys.path.insert(0, os.path.dirname(__file__))
from test_results import TINY, _same, make_checkpoint  # noqa: E402

distributed = pytest.importorskip("distributed")

STARTUP_TIMEOUT = 180       # seconds: a loaded 2-core machine starts a worker in ~10 s


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama_d")
    make_checkpoint(str(d), "llama2-7b", shard_mb=0.05, **dict(TINY, layers=3))
    return d


@pytest.fixture(scope="module")
def reference(llama):
    return htsr.analyze(llama, threads=1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` + two `dask worker --nthreads 1 --no-nanny` processes on 127.0.0.1
    -> (client, {worker address: Popen})."""
    d = tmp_path_factory.mktemp("dask")
    sfile = str(d / "scheduler.json")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               DASK_DISTRIBUTED__WORKER__DAEMON="False")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", sfile],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    client = None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not os.path.exists(sfile):
            assert time.monotonic() < deadline, "dask scheduler did not start"
            assert procs[0].poll() is None, "dask scheduler exited"
            time.sleep(0.1)
        workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                     "--scheduler-file", sfile, "--nthreads", "1", "--no-nanny",
                                     "--host", "127.0.0.1", "--no-dashboard",
                                     "--memory-limit", "2GiB"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(2)]
        procs += workers
        client = distributed.Client(scheduler_file=sfile, timeout=f"{STARTUP_TIMEOUT}s")
        client.wait_for_workers(2, timeout=STARTUP_TIMEOUT)
        pids = client.run(os.getpid)
        by_pid = {p.pid: p for p in workers}
        yield client, {addr: by_pid[pid] for addr, pid in pids.items()}
    finally:
        if client is not None:
            client.close()
        for p in procs[::-1]:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)


def test_dask_cluster_table_equals_single_process(tmp_path, llama, reference, cluster):
    client, _workers = cluster
    out = tmp_path / "r.jsonl"
    seen = []
    df = htsr.analyze(llama, out=out, executor=client.get_executor(retries=3, pure=False),
                      progress=lambda d, t, b, name: seen.append(name))
    _same(df, reference)
    _same(read_results(out), reference)
    assert sorted(seen) == sorted(reference["name"])
    # every task ran on a worker process, not here: the workers cached the checkpoint's plan
    cached = client.run(lambda: hd._worker_plan.cache_info().currsize)
    assert set(cached.values()) == {1}


def test_process_pool_executor(tmp_path, llama, reference):
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        df = htsr.analyze(llama, executor=ex, out=tmp_path / "r.csv")
    _same(df, reference)


def test_executor_needs_a_path_and_an_executor(llama):
    import numpy as np
    with pytest.raises(ValueError, match="checkpoint path"):
        htsr.analyze({"w": np.ones((16, 8), np.float32)}, executor=cf.ThreadPoolExecutor(1))
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        htsr.analyze(llama, executor=object())


def test_task_passes_its_thread_count_explicitly(llama, monkeypatch):
    # a Dask worker runs with OMP_NUM_THREADS=1: the native calls must get the task's count
    from htsr import core
    calls = []
    real = core.spectrum_batch

    def spy(mats, **kw):
        calls.append(kw["threads"])
        return real(mats, **kw)

    monkeypatch.setattr(core, "spectrum_batch", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    opts = htsr.AnalysisOptions()
    name = htsr.describe(llama)["name"][0]
    rows = hd.analyse_task(str(llama), 0, name, opts, threads=2)
    assert calls == [2] and rows[0]["name"] == name and rows[0]["status"] == "success"
    with pytest.raises(ValueError, match="layer_id 0 is not 'nope'"):
        hd.analyse_task(str(llama), 0, "nope", opts)


def test_killed_worker_loses_nothing(tmp_path, llama, reference, cluster):
    """Worker A hangs in its first task (it writes a marker first); the test kills it with
    SIGKILL once the marker exists, i.e. with a task in flight; the scheduler runs that task
    on worker B and the run completes with the single-process table."""
    client, workers = cluster
    victim = sorted(workers)[0]
    marker = tmp_path / "started"

    def hang_first_task(marker=str(marker)):
        import pathlib
        import time as _t

        import htsr.distributed as d

        def hang(*args, **kwargs):
            pathlib.Path(marker).write_text("started")
            _t.sleep(3600)
        d.analyse_task = hang

    client.run(hang_first_task, workers=[victim])
    out = tmp_path / "r.parquet"
    with cf.ThreadPoolExecutor(1) as killer:
        def kill_when_started():
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not marker.exists():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            os.kill(workers[victim].pid, signal.SIGKILL)
            return True
        killed = killer.submit(kill_when_started)
        df = htsr.analyze(llama, out=out, executor=client.get_executor(retries=3, pure=False))
        assert killed.result(timeout=STARTUP_TIMEOUT)
    assert workers[victim].wait(timeout=60) == -signal.SIGKILL
    _same(df, reference)
    _same(read_results(out), reference)
