"""Bounded fuzz run of every target (the CI step): each target runs for --seconds from its
checked-in seed corpus (new inputs go to a scratch directory, the corpus is not modified).
Exit status 1 when any target found a crash, an uncaught non-ValueError exception, a timeout
or an out-of-memory input; its reproducer is saved under --artifacts.

    python tests/fuzz/run.py --seconds 30 [--targets safetensors npz] [--artifacts DIR]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["safetensors", "index", "npz", "npy", "config", "gguf", "onnx"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30, help="per target")
    ap.add_argument("--targets", nargs="*", default=TARGETS)
    ap.add_argument("--artifacts", default=os.path.join(tempfile.gettempdir(), "htsr-fuzz-artifacts"))
    args = ap.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    failed = []
    for target in args.targets:
        with tempfile.TemporaryDirectory() as scratch:
            corpus = os.path.join(scratch, "corpus")
            os.mkdir(corpus)
            cmd = [sys.executable, os.path.join(HERE, "targets.py"), target, f"-max_total_time={args.seconds}",
                   "-timeout=20", "-rss_limit_mb=2048", "-max_len=4096", "-print_final_stats=1",
                   f"-artifact_prefix={os.path.join(args.artifacts, target)}-", corpus,
                   os.path.join(HERE, "corpus", target)]
            work = os.path.join(scratch, "files")
            os.mkdir(work)
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HTSR_FUZZ_WORK=work)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        log = proc.stdout + proc.stderr
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
        print(f"{target:12s} executions {runs[-1] if runs else '?':>9s}  "
              f"{'ok' if proc.returncode == 0 else 'FAILED (exit %d)' % proc.returncode}", flush=True)
        if proc.returncode != 0:
            failed.append(target)
            print(log[-6000:], file=sys.stderr)
    if failed:
        print("fuzz findings in: " + ", ".join(failed) + f" (reproducers in {args.artifacts})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
