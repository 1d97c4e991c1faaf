"""Coverage-guided fuzz target (atheris) for htsr.sources' file readers: GGUF, ONNX, NumPy .npz,
Keras .keras / .h5 (and any other registered suffix).  Each input is written to a file with the
chosen suffix and read as ``htsr analyze`` would: ``iter_layers(path)`` and every ``load()``.
A ValueError (or ImportError for a missing optional package) is the expected outcome for a bad
file; any other exception, a crash or a hang is a bug.

    FUZZ_SUFFIX=.gguf python tests/fuzz/fuzz_sources.py tests/fuzz/seeds/gguf -max_total_time=60
    (suffixes .gguf, .onnx, .npz, .keras, .h5 with seeds/gguf, onnx, npz, keras, h5; add a fresh
    corpus folder first on the command line to keep what the run finds)

Runs of 2026-12-02 (2 loaded cores): gguf 23k, onnx 12k, npz 13k, keras 12k executions;
they found a zip that zipfile refuses with NotImplementedError and ONNX names that protobuf
returns as bytes (both fixed; tests/test_sources_hostile.py).
"""
import os
import sys
import tempfile
import warnings

import atheris

from htsr.sources import gguf, iter_layers, keras, onnx

atheris.instrument_all()
warnings.simplefilter("ignore")
PATH = os.path.join(tempfile.mkdtemp(), "input" + os.environ.get("FUZZ_SUFFIX", ".gguf"))
CACHES = (gguf._open, onnx._model, keras._open)


def TestOneInput(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    for c in CACHES:
        c.cache_clear()
    try:
        for spec in iter_layers(PATH):
            spec.load()
    except (ValueError, ImportError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
