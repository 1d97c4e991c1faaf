"""Ctrl-C stops a native batch between matrices and surfaces as KeyboardInterrupt."""
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np, htsr
    W = np.random.default_rng(0).standard_normal((600, 600)).astype(np.float32)
    Ws = [W] * 1000  # ~17 s of work uninterrupted on one core
    print("ready", flush=True)
    t = time.perf_counter()
    try:
        htsr.spectrum_batch(Ws, threads=1)
    except KeyboardInterrupt:
        print(f"interrupted {time.perf_counter() - t:.3f}", flush=True)
        sys.exit(0)
    print(f"finished {time.perf_counter() - t:.3f}", flush=True)
    sys.exit(1)
    """
)


def test_sigint_interrupts_batch_between_matrices():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    kind, seconds = out.split()
    assert kind == "interrupted"
    # stopping between matrices returns within a few matrices (~20 ms each) of the signal
    assert float(seconds) < 3.0
