"""Ctrl-C stops native work (a batch between matrices, a fit between candidates) and surfaces as
KeyboardInterrupt; a forked child can run native work after its parent did.

No timing assertions: the child announces readiness only once it is inside the native call (a
native thread exists: the pooled worker that runs the call, which no Python code creates), the
work would take hours if the interrupt were lost, and the timeouts only bound a failing test.
"""
import os
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import htsr

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="readiness is read from /proc/self/task")

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time, numpy as np, htsr

    def announce_when_native_work_runs(baseline):
        # The only threads started after `baseline` are native: the worker that runs the call.
        while len(os.listdir("/proc/self/task")) <= baseline:
            time.sleep(0.01)
        print("ready", flush=True)

    work = {work}
    baseline = len(os.listdir("/proc/self/task")) + 1  # + the announcing thread
    threading.Thread(target=announce_when_native_work_runs, args=(baseline,), daemon=True).start()
    try:
        work()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    print("finished", flush=True)
    sys.exit(1)
    """
)

# Each runs for hours uninterrupted on any machine.
BATCH = ("lambda: htsr.spectrum_batch([np.random.default_rng(0).standard_normal((400, 400)).astype(np.float32)]"
         " * 1_000_000, threads=1)")
FIT = "lambda: htsr.fit_power_law(1 + np.random.default_rng(0).random(1_000_000), prune=False)"
FIT_THREADS = "lambda: htsr.fit_power_law(1 + np.random.default_rng(0).random(1_000_000), prune=False, threads=2)"


@pytest.mark.parametrize("work", [BATCH, FIT, FIT_THREADS], ids=["batch", "fit", "fit-2-threads"])
def test_sigint_interrupts_native_work(work):
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(work=work)], stdout=subprocess.PIPE, text=True)
    try:
        # however slowly the child starts: up to 10 minutes (a lost readiness fails, never hangs)
        assert select.select([proc.stdout], [], [], 600)[0], "the child never entered the native call"
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out.strip() == "interrupted", out


def _fit_in_child(x):
    return htsr.fit_power_law(x, threads=2).to_dict()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fit_after_fork():
    """A multi-threaded fit in the parent must not leave an OpenMP team that a forked child
    then waits on forever (it did when the fit ran OpenMP on the calling thread)."""
    import multiprocessing
    x = 1 + np.random.default_rng(3).pareto(1.5, 20000)
    parent = htsr.fit_power_law(x, threads=2).to_dict()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_fit_in_child, (x,)).get(timeout=300)
    assert child == parent
