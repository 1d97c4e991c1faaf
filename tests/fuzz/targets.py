"""Coverage-guided fuzz targets (atheris / libFuzzer) for the checkpoint readers.

Each target writes the fuzzer's bytes as one file of a checkpoint and does what ``htsr analyze``
does with it before the numerics: ``htsr.iter_layers`` (headers, index, config) and every
``LayerSpec.load()`` (the data), touching every value read. Allowed outcome for bad input:
``ValueError`` (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are subclasses) naming the
file. Anything else -- another exception, a crash (SIGSEGV/SIGBUS), a hang (libFuzzer
-timeout) or an allocation past -rss_limit_mb -- is a finding.

    python tests/fuzz/targets.py TARGET [libFuzzer flags] [corpus dirs]   (see README.md)
"""
from __future__ import annotations

import json
import os
import struct
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports(include=["htsr"]):
    import htsr
    import htsr.sources  # noqa: F401  (the readers under test)

# where the fuzzed files are written (run.py passes a directory it removes afterwards)
WORK = os.environ.get("HTSR_FUZZ_WORK") or tempfile.mkdtemp(prefix="htsr-fuzz-")


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    """A safetensors file (little-endian arrays, C order) built from its specification."""
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64", np.dtype(np.uint16): "BF16"}
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def _open_all(path: str) -> None:
    try:
        for spec in htsr.iter_layers(path):
            for W in spec.load():
                np.asarray(W, dtype=np.float64).sum()  # read every byte the reader mapped
    except ValueError:
        pass


def _rng_matrix(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- targets -----------------------------------------------------------------------------------
def _target(fuzzed: str, what: str, fixtures=None):
    """A target writing the input as the checkpoint file ``fuzzed`` (beside the valid files
    ``fixtures()`` returns, written once) and opening it (the folder, when there are fixtures)."""
    d = os.path.join(WORK, fuzzed.replace(".", "_"))
    state = {}

    def target(data: bytes) -> None:
        if not state:
            os.makedirs(d, exist_ok=True)
            for name, content in (fixtures() if fixtures else {}).items():
                _write(os.path.join(d, name), content)
            state["ready"] = True
        path = _write(os.path.join(d, fuzzed), data)
        _open_all(d if fixtures else path)
    target.__doc__ = what
    return target


safetensors = _target("model.safetensors", "One .safetensors file: the 8-byte length, the JSON header, the offsets, the dtypes.")
npz = _target("weights.npz", "A .npz archive: zip directory, local headers, .npy member headers, stored and deflated data.")
npy = _target("layer.weight.npy", "A lone .npy file.")
gguf = _target("model.gguf", "A .gguf file: magic, version, metadata, tensor infos, alignment, quantized blocks.")
onnx = _target("model.onnx", "A .onnx protobuf: initializers (raw, typed, external data references), attributes.")
index = _target("model.safetensors.index.json", "The index of a sharded folder (two valid shards beside it).", lambda: {
    "model-00001-of-00002.safetensors": safetensors_bytes({"a.weight": _rng_matrix((6, 4), 1)}),
    "model-00002-of-00002.safetensors": safetensors_bytes({"b.weight": _rng_matrix((5, 3), 2)})})
config = _target("config.json", "config.json beside fused attention / MLP / MoE tensors, which it tells how to split.",
                 lambda: {"model.safetensors": safetensors_bytes({
                     "model.layers.0.self_attn.qkv_proj.weight": _rng_matrix((16 + 2 * 8, 16), 3),
                     "model.layers.0.mlp.gate_up_proj.weight": _rng_matrix((2 * 12, 16), 4),
                     "model.layers.0.mlp.experts.gate_up_proj": _rng_matrix((2, 16, 2 * 6), 5),
                     "transformer.h.0.attn.c_attn.weight": _rng_matrix((16, 3 * 16), 6)})})


TARGETS = {"safetensors": safetensors, "index": index, "npz": npz, "npy": npy, "config": config, "gguf": gguf,
           "onnx": onnx}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0]] + sys.argv[2:], target)
    atheris.Fuzz()
