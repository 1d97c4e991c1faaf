"""Run WeightWatcher 0.7.7's own test suite (its repository's ``tests/test.py``) twice in this
environment -- against ``weightwatcher`` and against the ``htsr.WeightWatcher`` facade -- and
report which public-API tests pass with each.

    python benchmarks/ww_testsuite.py [--test-file PATH] [--full] [--out results.json]
                                      [--classes Test_A,Test_B] [--timeout 3600]
                                      [--ww-results earlier.json]

Nothing of WeightWatcher is copied here: ``--test-file`` (default: ``$WW_TEST_FILE``, else
``tests/test.py`` at HEAD of the git mirror ``$WW_MIRROR``) and the installed ``weightwatcher``
package are located at run time.  Each mode runs in its own child process (WeightWatcher's
import changes logging and warning filters), BLAS pinned to one thread, results streamed to a
JSON-lines file so a timeout keeps what finished.

What is substituted (no network, no torchvision/tensorflow/transformers here):

* ``torchvision.models`` -> ``tests/tv_models.py`` (torchvision's module structure and names,
  random init; a ``weights=`` tag is ignored, so tests asserting pretrained values fail in both
  modes and drop out of the comparison).  By default VGG's classifier is 512 wide instead of
  4096 (a 4096 x 4096 float64 SVD takes WeightWatcher ~100 s here); ``--full`` keeps 4096
  (then ~1 h).  Layer ids do not depend on widths.
* ``tensorflow`` / ``keras`` / ``transformers``: stub modules whose models raise
  ``unittest.SkipTest`` (those classes are also left out, see ``SKIPPED``).
* facade mode: a module named ``weightwatcher`` with every public name of the real package
  (constants, ``RMT_Util``, ``WW_powerlaw``) but ``WeightWatcher = htsr.WeightWatcher``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.join(os.path.dirname(HERE), "tests")

# Classes that exercise WeightWatcher's public API (analyze, describe, get_summary, get_details,
# get_ESD, distances, SVDSmoothing/SVDSharpness, vector_metrics, parameter validation).
SELECTED = (
    "Test_ValidParams", "Test_VGG11_noModel", "Test_VGG11_Base", "Test_VGG11_PyStateDict",
    "Test_VGG11_Alpha_w_WWFit", "Test_VGG11_StateDict_Alpha_w_WWFit",
    "Test_VGG11_Alpha_w_PowerLawFit", "Test_VGG11_Distances", "Test_ResNet",
    "Test_ResNet_Models", "Test_Pandas", "Test_PowerLaw", "Test_Vector_Metrics",
)
# Classes left out, with the reason.
SKIPPED = {
    "Test_KerasLayers": "Keras: no tensorflow here (Keras models belong to the sources issue)",
    "Test_ReadKerasH5File": "Keras: no tensorflow here",
    "Test_KerasH5FileLayers": "Keras: no tensorflow here",
    "Test_Keras": "Keras: no tensorflow here",
    "Test_Distances": "Keras VGG16 download; its methods are not test_* (never run)",
    "Test_PyTorchLayers": "internals: PyTorchLayer / WWLayer objects",
    "Test_PyStateDictLayers": "internals: PyStateDictLayer / WWLayer objects",
    "Test_SafeTensorsDict": "internals: SafeTensorDict",
    "Test_DeltaLayerIterator": "internals: WWDeltaLayerIterator",
    "Test_PyTorchBins_Extractor": "internals: extract_pytorch_bins / ww flat files",
    "Test_WWFlatFiles": "internals: ww flat-file format (extract_pytorch_bins)",
    "Test_PyStateDictDir": "internals: extract_pytorch_bins, infer_model_file_format",
    "Test_SafeTensorsDir": "internals: extract_pytorch_bins, SafeTensorDict, layer maps",
    "Test_SafeTensorsDirNoLayerMap": "internals: as Test_SafeTensorsDir",
    "Test_VGG11_WWFlatFile": "needs extract_pytorch_bins (ww flat files, WeightWatcher-only)",
    "Test_FineTunedBertWithLoRA": "transformers not installed; bert-base-cased download",
    "Test_BaseModel": "transformers not installed; albert-xxlarge-v2 download",
    "Test_Albert": "transformers not installed; albert-xxlarge-v2 download",
    "Test_PeftLayerIterator": "transformers not installed; LoRA adapter download",
    "Test_Albert_DeltaLayerIterator": "transformers not installed; albert download",
    "Test_RMT_Util": "internals: RMT_Util helpers (numpy.distutils, gone in Python 3.12)",
    "Test_PyTorchSVD": "internals: RMT_Util SVD backends (CUDA only)",
    "Test_SVDLowrank": "internals: RMT_Util SVD backends",
    "TestSmoothWTorch": "internals: RMT_Util smoothing kernels",
    "TestSmoothWNumpy": "internals: RMT_Util smoothing kernels",
    "Test_Plots": "plot=True (the report issue) on a pretrained download",
}


# ------------------------------------------------------------------------------------------
# child: one mode
# ------------------------------------------------------------------------------------------
def _skip(*_a, **_k):
    raise unittest.SkipTest("not available offline here")


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__path__ = []          # a package, so submodule imports resolve in sys.modules
    sys.modules[name] = mod
    return mod


def _install_stubs(full: bool) -> None:
    sys.path.insert(0, TESTS_DIR)
    import tv_models

    hidden = 4096 if full else 512
    models = _stub("torchvision.models",
                   vgg11=lambda weights=None, **k: tv_models.vgg11(hidden=hidden, **k),
                   vgg13=lambda weights=None, **k: tv_models.vgg13(hidden=hidden, **k),
                   resnet18=lambda weights=None, **k: tv_models.resnet18(**k))
    _stub("torchvision", models=models)
    backend = types.SimpleNamespace(clear_session=lambda: None)
    keras = _stub("tensorflow.keras", backend=backend)
    _stub("tensorflow", keras=keras)
    _stub("tensorflow.keras.applications")
    _stub("tensorflow.keras.applications.vgg16", VGG16=_skip)
    auto = type("_Auto", (), {"from_pretrained": staticmethod(_skip)})
    _stub("transformers", AutoModel=auto, TFAutoModelForSequenceClassification=auto,
          AlbertModel=auto, BertForSequenceClassification=auto)


def _install_facade() -> None:
    import weightwatcher as real
    import htsr

    shim = types.ModuleType("weightwatcher")
    shim.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    shim.__path__ = real.__path__
    shim.__file__ = "<htsr facade shim>"
    shim.WeightWatcher = htsr.WeightWatcher
    sys.modules["weightwatcher"] = shim


class _Recorder(unittest.TestResult):
    def __init__(self, out):
        super().__init__()
        self.out, self.t0 = out, 0.0

    def startTest(self, test):
        super().startTest(test)
        self.t0 = time.perf_counter()

    def _emit(self, test, outcome, err=None):
        msg = ""
        if err is not None:
            exc = err[1]
            msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        self.out.write(json.dumps({"test": test.id().split(".", 1)[1], "outcome": outcome,
                                   "message": msg,
                                   "seconds": round(time.perf_counter() - self.t0, 3)}) + "\n")
        self.out.flush()

    def addSuccess(self, test):
        self._emit(test, "pass")

    def addFailure(self, test, err):
        self._emit(test, "fail", err)

    def addError(self, test, err):
        self._emit(test, "error", err)

    def addSkip(self, test, reason):
        self._emit(test, "skip")

    def addExpectedFailure(self, test, err):
        self._emit(test, "xfail", err)

    def addUnexpectedSuccess(self, test):
        self._emit(test, "pass")

    def addSubTest(self, test, subtest, err):
        if err is not None:      # a failing subtest fails its test
            self._emit(test, "fail" if issubclass(err[0], test.failureException) else "error", err)


def child(mode: str, test_file: str, classes: list[str], full: bool, out_path: str) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    _install_stubs(full)
    if mode == "htsr":
        _install_facade()
    src = open(test_file, encoding="utf-8").read()
    mod = types.ModuleType("ww_upstream_test")
    mod.__file__ = test_file
    sys.modules["ww_upstream_test"] = mod
    exec(compile(src, test_file, "exec"), mod.__dict__)
    loader = unittest.TestLoader()
    with open(out_path, "a", encoding="utf-8") as out:
        for name in classes:
            suite = loader.loadTestsFromTestCase(getattr(mod, name))
            result = _Recorder(out)
            with contextlib.redirect_stdout(io.StringIO()):
                suite.run(result)


# ------------------------------------------------------------------------------------------
# parent: both modes, comparison
# ------------------------------------------------------------------------------------------
def _locate_test_file(arg: str | None) -> str:
    path = arg or os.environ.get("WW_TEST_FILE")
    if path:
        return path
    mirror = os.environ.get("WW_MIRROR")
    if not mirror:
        raise SystemExit("give --test-file PATH (WeightWatcher's tests/test.py), or set WW_TEST_FILE "
                         "or WW_MIRROR (a git clone of WeightWatcher)")
    src = subprocess.run(["git", "-C", mirror, "show", "HEAD:tests/test.py"], check=True,
                         capture_output=True, text=True).stdout
    fd, path = tempfile.mkstemp(prefix="ww_upstream_test_", suffix=".py")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(src)
    return path


def _read(path: str) -> dict:
    out = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            prev = out.get(rec["test"])
            if prev is None or prev["outcome"] == "pass":   # a failing subtest wins
                out[rec["test"]] = rec
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-file")
    ap.add_argument("--classes", default=",".join(SELECTED))
    ap.add_argument("--full", action="store_true", help="torchvision's 4096-wide VGG classifier")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per mode")
    ap.add_argument("--out", help="write the per-test results (JSON) here")
    ap.add_argument("--ww-results", help="reuse WeightWatcher's results from an earlier --out "
                    "file (same classes and --full): runs only the facade")
    ap.add_argument("--child", choices=("ww", "htsr"), help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    classes = [c for c in a.classes.split(",") if c]
    if a.child:
        child(a.child, a.test_file, classes, a.full, a.results)
        return 0

    test_file = _locate_test_file(a.test_file)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    res, secs = {}, {}
    with tempfile.TemporaryDirectory(prefix="ww_suite_") as tmp:
        if a.ww_results:
            with open(a.ww_results, encoding="utf-8") as fh:
                prev = json.load(fh)
            res["ww"], secs["ww"] = prev["results"]["ww"], prev["seconds"]["ww"]
        for mode in ("htsr",) if a.ww_results else ("ww", "htsr"):
            path = os.path.join(tmp, f"{mode}.jsonl")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--test-file",
                   test_file, "--classes", ",".join(classes), "--results", path] + \
                (["--full"] if a.full else [])
            t0 = time.perf_counter()
            try:
                subprocess.run(cmd, env=env, timeout=a.timeout, cwd=tmp,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                print(f"[{mode}] timed out after {a.timeout:.0f} s; partial results kept")
            secs[mode] = time.perf_counter() - t0
            res[mode] = _read(path)

    tests = sorted(set(res["ww"]) | set(res["htsr"]))
    ok = {m: {t for t in tests if res[m].get(t, {}).get("outcome") == "pass"} for m in res}
    lost = sorted(ok["ww"] - ok["htsr"])
    gained = sorted(ok["htsr"] - ok["ww"])
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    print(f"WeightWatcher 0.7.7 test suite, {len(classes)} classes, {len(tests)} tests "
          f"({'full' if a.full else 'reduced'} VGG classifier); load average {' '.join(load)}")
    print(f"  passed with WeightWatcher : {len(ok['ww'])}  ({secs['ww']:.0f} s)")
    print(f"  passed with htsr facade   : {len(ok['htsr'])}  ({secs['htsr']:.0f} s)")
    print(f"  pass with WW, not facade  : {len(lost)}")
    print(f"  pass with facade, not WW  : {len(gained)}")
    for t in lost:
        r = res["htsr"].get(t, {"outcome": "missing", "message": ""})
        print(f"    {t}: {r['outcome']}: {r['message']}")
    print("  classes left out:")
    for c, why in SKIPPED.items():
        print(f"    {c}: {why}")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump({"classes": classes, "full": a.full, "seconds": secs, "load": load,
                       "results": res, "lost": lost, "gained": gained}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
