"""``.safetensors`` files and sharded folders: our own header parser + ``np.memmap`` (no torch,
no ``safetensors`` package, no copy of the file)."""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from .base import Entry, Format
from .dtypes import FLOAT_NAMES, RAW16, ST_DTYPES, convert
from .files import parse_json_object, read_index, require_size
from .naming import is_uint, natural_key

MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    name: str
    code: str  # safetensors dtype code, 'BF16'
    dtype: str  # our dtype name, 'bfloat16'
    shape: tuple
    begin: int  # offsets relative to the data buffer
    end: int


class SafetensorsFile:
    """Header-validated, memory-mapped view of one ``.safetensors`` file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        p = self.path
        size = os.path.getsize(p)  # FileNotFoundError for a missing file
        if size < 8:
            raise ValueError(f"{p}: not a safetensors file: {size} bytes, shorter than the "
                             "8-byte header length")
        with open(p, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_BYTES:
                raise ValueError(f"{p}: safetensors header length {n} exceeds the "
                                 f"{MAX_HEADER_BYTES}-byte limit")
            if 8 + n > size:
                raise ValueError(f"{p}: safetensors header length {n} runs past the end of "
                                 f"the {size}-byte file (truncated or not safetensors)")
            blob = fh.read(n)
        header = parse_json_object(blob, p, "safetensors header")
        self.data_start = 8 + n
        self.file_size = size
        meta = header.pop("__metadata__", None)
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"{p}: safetensors __metadata__ is not a JSON object")
        self.metadata = meta or {}
        self.tensors: dict[str, TensorInfo] = {}
        for name, e in header.items():
            self.tensors[name] = self._check_entry(name, e)
        spans = sorted((t.begin, t.end, t.name) for t in self.tensors.values() if t.end > t.begin)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise ValueError(f"{p}: tensors {n0!r} and {n1!r} overlap in the data buffer")
        self._mm = None

    def _check_entry(self, name, e) -> TensorInfo:
        p = self.path
        if not isinstance(e, dict):
            raise ValueError(f"{p}: tensor {name!r}: header entry is not a JSON object")
        for k in ("dtype", "shape", "data_offsets"):
            if k not in e:
                raise ValueError(f"{p}: tensor {name!r}: header entry lacks {k!r}")
        code, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(code, str) or code not in ST_DTYPES:
            raise ValueError(f"{p}: tensor {name!r}: unknown safetensors dtype {code!r}")
        if not isinstance(shape, list) or not all(is_uint(d) for d in shape):
            raise ValueError(f"{p}: tensor {name!r}: invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(is_uint(o) for o in offs)
                or offs[0] > offs[1]):
            raise ValueError(f"{p}: tensor {name!r}: invalid data_offsets {offs!r}")
        begin, end = offs
        if self.data_start + end > self.file_size:
            raise ValueError(f"{p}: tensor {name!r}: data_offsets {offs} run past the end of "
                             f"the file ({self.file_size - self.data_start} data bytes)")
        dname, bits, _, _ = ST_DTYPES[code]
        numel = math.prod(shape)
        want = (numel * bits + 7) // 8
        if end - begin != want:
            raise ValueError(f"{p}: tensor {name!r}: data_offsets span {end - begin} bytes but "
                             f"{code}{shape} needs {want}")
        return TensorInfo(name, code, dname, tuple(shape), begin, end)

    def keys(self):
        return self.tensors.keys()

    def _map(self) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mm

    def raw(self, name: str) -> np.ndarray:
        """Stored bits of ``name`` as a zero-copy read-only view (bfloat16 as uint16, FP8 as
        uint8, float16/32/64 and integers as themselves)."""
        t = self.tensors[name]
        npdt = ST_DTYPES[t.code][2]
        if npdt is None:
            raise ValueError(f"{self.path}: tensor {name!r}: packed dtype {t.code} is not "
                             "supported")
        if t.end == t.begin:
            return np.empty(t.shape, dtype=npdt)
        require_size(self.path, self.data_start + t.end, f"tensor {name!r}")
        buf = self._map()[self.data_start + t.begin:self.data_start + t.end]
        return np.asarray(buf).view(np.dtype(npdt)).reshape(t.shape)

    def read(self, name: str) -> np.ndarray:
        """float32 array for float tensors (exact conversion), the stored values otherwise."""
        t = self.tensors[name]
        if t.dtype in FLOAT_NAMES:
            return convert(self.raw(name), t.dtype)
        return self.raw(name)


def st_entry(f: SafetensorsFile, info: TensorInfo) -> Entry:
    kind = ST_DTYPES[info.code][3]
    kind = "float" if kind == "float" else ("int" if kind == "int" else "other")
    return Entry(info.name, info.shape, info.dtype, kind, f.path,
                  lambda f=f, n=info.name: f.raw(n),
                  raw16=info.dtype in RAW16 and info.end > info.begin)


def safetensors_entries(files: list[str], index: str | None) -> list[Entry]:
    out: dict[str, Entry] = {}
    wm = None
    if index:
        wm, files = read_index(index)
        d = os.path.dirname(os.path.abspath(index))
    opened = {}
    for fpath in files:
        f = SafetensorsFile(fpath)
        opened[os.path.abspath(fpath)] = f
        for name, info in f.tensors.items():
            if name in out:
                raise ValueError(f"{fpath}: tensor {name!r} also in {out[name].source}")
            out[name] = st_entry(f, info)
    if wm is not None:
        for name, shard in wm.items():
            f = opened[os.path.abspath(os.path.join(d, shard))]
            if name not in f.tensors:
                raise ValueError(f"{index}: weight_map puts tensor {name!r} in {f.path}, whose "
                                 "header does not have it")
    return sorted(out.values(), key=lambda e: natural_key(e.key))


FORMAT = Format("safetensors", (".safetensors",), safetensors_entries,
                index=(".safetensors.index.json", "model.safetensors.index.json"),
                looks_for="*.safetensors [+ index.json]")
