"""The C++ API builds and runs without Python (cpp/examples/spectrum_fit.cpp, a plain CMake
build with HTSR_PYTHON=OFF) and gives the same numbers as the Python API on the same matrix."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import htsr

ROOT = Path(__file__).resolve().parents[1]


def example_matrix(rows=600, cols=200):
    """The matrix spectrum_fit.cpp builds: a ratio of deterministic uniforms, rounded to float32."""
    i = np.arange(rows, dtype=np.int64)[:, None]
    j = np.arange(cols, dtype=np.int64)[None, :]
    u = ((i * 7919 + j * 104729) % 1009) / 1009.0 - 0.5
    v = ((i * 31 + j * 17) % 101) / 101.0 - 0.5
    return (v / (np.abs(u) + 0.01)).astype(np.float32)


@pytest.fixture(scope="module")
def example_output(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    pytest.importorskip("cmeel")  # Eigen for a plain CMake build comes from cmeel-eigen
    build = tmp_path_factory.mktemp("build-cpp")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DHTSR_PYTHON=OFF", "-DHTSR_EXAMPLES=ON",
                 "-DHTSR_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = subprocess.run([str(build / "spectrum_fit")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.split("\n")
    assert "ok" in lines
    return dict(line.split() for line in lines if len(line.split()) == 2)


def test_cpp_example_matches_python_api(example_output):
    W = example_matrix()
    s = htsr.spectrum(W, precision="float64")
    fit = htsr.fit_power_law(s.eigenvalues, floor=0.0)
    assert float(example_output["lambda_max"]) == pytest.approx(s.eigenvalues[-1], rel=1e-12)
    assert float(example_output["alpha"]) == pytest.approx(fit.alpha, rel=1e-12)
    assert float(example_output["xmin"]) == pytest.approx(fit.xmin, rel=1e-12)
    assert float(example_output["D"]) == pytest.approx(fit.D, rel=1e-12)
    assert int(example_output["n_tail"]) == fit.n_tail
    # and the numbers are right: the same eigenvalues from numpy's float64 SVD
    ref = np.sort(np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2)
    assert float(example_output["lambda_max"]) == pytest.approx(ref[-1], rel=1e-12)
