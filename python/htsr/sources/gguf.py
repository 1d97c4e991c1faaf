"""GGUF (llama.cpp) files, single or split ``<name>-0000N-of-0000M.gguf``.

Our own header parser (format v2/v3, little-endian; every count, length and offset checked
against the file, metadata arrays skipped rather than decoded) and one ``np.memmap`` per file.
Shapes are numpy order: GGML ``ne = [in, out]`` reads as ``(out, in)``, PyTorch's layout.
F32/F16/BF16/F64 are converted exactly; every block-quantized type is dequantized to float32 by
the ``gguf`` package (the reference decoder), ``_ROWS`` rows at a time, one expert at a time for
3-D expert tensors; ``stored_dtype`` is the GGML type (``q4_k``).  A type without a decoder
(``q8_k``, ``q8_1``, ``q1_0``, unknown ids) is a ValueError naming the tensor and the type.

Names stay llama.cpp's (``blk.3.attn_q.weight`` -> layer ``blk.3.attn_q``); ``token_embd`` is an
embedding, ``attn_qkv`` is split into q|k|v and ``ffn_gate_up_exps`` into gate|up with the head
counts and lengths of the file's metadata, which serves as the model config (``_CONFIG_KEYS``).
llama.cpp permutes the rows of Q and K within each head (rotate-half -> interleaved RoPE): a row
permutation, so the singular values are those of the original matrices.
"""
from __future__ import annotations

import functools
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from .base import Entry, Format
from .dtypes import DEQUANTIZED, GGML_RAW, GGML_TYPES, ggml_check, ggml_dequantize
from .files import require_size
from .naming import natural_key

MAGIC = b"GGUF"
MAX_DIMS = 4  # GGML_MAX_DIMS
_ROWS_ELEMENTS = 1 << 20  # dequantize about this many values at a time
# GGUF metadata value types: id -> struct format (8 = string, 9 = array)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_SPLIT = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# GGUF metadata key (after '<arch>.') -> config.json key used by htsr.sources.naming
_CONFIG_KEYS = {
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "expert_feed_forward_length": "moe_intermediate_size",
}


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type_id: int
    dtype: str  # our dtype name (GGML_TYPES)
    shape: tuple  # numpy order
    offset: int  # absolute file offset of the data
    nbytes: int


class _Header:
    """Bounds-checked cursor over the mapped header bytes."""

    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"{self.path}: GGUF header truncated or corrupt: {what} runs past "
                             f"the end of the {len(self.buf)}-byte file")
        p = self.pos
        self.pos += n
        return p

    def scalar(self, fmt: str, what: str):
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        p = self.take(n, what)
        return self.buf[p:p + n].decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0):
        """A metadata value: scalars and strings decoded, arrays skipped (their length kept)."""
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9 and depth < 4:
            etype, n = self.scalar("<I", what), self.scalar("<Q", what)
            if etype in _SCALAR:
                self.take(n * struct.calcsize(_SCALAR[etype]), what)
            else:
                if n > len(self.buf) - self.pos:  # each element takes at least one byte
                    raise ValueError(f"{self.path}: GGUF {what}: array of {n} elements is "
                                     "longer than the file")
                for _ in range(n):
                    self.value(etype, what, depth + 1)
            return ("array", n)
        raise ValueError(f"{self.path}: GGUF {what}: unknown metadata value type {vtype}")


class GGUFFile:
    """Header-validated, memory-mapped view of one GGUF file."""

    def __init__(self, path):
        self.path = p = os.fspath(path)
        size = os.path.getsize(p)
        if size < 24:
            raise ValueError(f"{p}: not a GGUF file: {size} bytes")
        with open(p, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(_Header(mm, p), size)
        finally:
            mm.close()
        self._mm = None

    def _parse(self, h: _Header, size: int):
        p = self.path
        if h.buf[:4] != MAGIC:
            raise ValueError(f"{p}: not a GGUF file (magic {h.buf[:4]!r})")
        h.take(4, "magic")
        self.version = h.scalar("<I", "version")
        if self.version not in (2, 3):
            hint = " (big-endian file?)" if self.version > 0xFFFF else ""
            raise ValueError(f"{p}: GGUF version {self.version} is not supported (2 and 3 "
                             f"are){hint}")
        n_tensors, n_kv = h.scalar("<Q", "tensor count"), h.scalar("<Q", "metadata count")
        if n_tensors > size // 24 or n_kv > size // 12:
            raise ValueError(f"{p}: GGUF header claims {n_tensors} tensors and {n_kv} metadata "
                             f"entries, more than a {size}-byte file can hold (truncated or "
                             "corrupt)")
        self.metadata = {}
        for i in range(n_kv):
            key = h.string(f"metadata key {i}")
            self.metadata[key] = h.value(h.scalar("<I", f"type of {key!r}"), f"value of {key!r}")
        align = self.metadata.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ValueError(f"{p}: GGUF general.alignment {align!r} is not a power of two")
        infos = []
        for i in range(n_tensors):
            name = h.string(f"tensor {i} name")
            nd = h.scalar("<I", f"tensor {name!r} rank")
            if nd > MAX_DIMS:
                raise ValueError(f"{p}: tensor {name!r}: {nd} dimensions (GGUF allows "
                                 f"{MAX_DIMS})")
            dims = [h.scalar("<Q", f"tensor {name!r} shape") for _ in range(nd)]
            infos.append((name, dims, h.scalar("<I", f"tensor {name!r} type"),
                          h.scalar("<Q", f"tensor {name!r} offset")))
        self.data_start = -(-h.pos // align) * align
        self.tensors: dict[str, GGUFTensor] = {}
        for name, dims, type_id, off in infos:
            self.tensors[name] = self._check(name, dims, type_id, off, align, size)

    def _check(self, name, dims, type_id, off, align, size) -> GGUFTensor:
        what = f"{self.path}: tensor {name!r}"
        if name in self.tensors:
            raise ValueError(f"{what} appears twice in the GGUF header")
        dtype = ggml_check(type_id, what)
        _, blk, bsize = GGML_TYPES[type_id]
        if dims and dims[0] % blk:
            raise ValueError(f"{what}: row length {dims[0]} is not a multiple of the {dtype} "
                             f"block size {blk}")
        nbytes = math.prod(dims[1:]) * (dims[0] // blk * bsize if dims else bsize)
        if off % align:
            raise ValueError(f"{what}: data offset {off} is not aligned to {align}")
        start = self.data_start + off
        if start + nbytes > size:
            raise ValueError(f"{what}: data ({nbytes} bytes at offset {start}) runs past the "
                             f"end of the {size}-byte file (truncated?)")
        return GGUFTensor(name, type_id, dtype, tuple(int(d) for d in reversed(dims)), start,
                          nbytes)

    def raw(self, name: str) -> np.ndarray:
        """Stored bits of ``name``, zero-copy: typed ``shape`` for F32/F16/F64/integers (BF16 as
        uint16), uint8 ``(*shape[:-1], bytes per row)`` for block-quantized types."""
        t = self.tensors[name]
        require_size(self.path, t.offset + t.nbytes, f"tensor {name!r}")
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = self._mm[t.offset:t.offset + t.nbytes]
        if t.dtype in GGML_RAW:
            return buf.view(np.dtype(GGML_RAW[t.dtype])).reshape(t.shape)
        return buf.reshape(*t.shape[:-1], -1)

    def config(self) -> dict:
        """The metadata as config.json keys (``_CONFIG_KEYS``); ``model_type`` is left out, as
        the HF splitting rules keyed on it do not apply to llama.cpp's tensors."""
        arch = self.metadata.get("general.architecture")
        out = {}
        for k, ck in _CONFIG_KEYS.items():
            v = self.metadata.get(f"{arch}.{k}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[ck] = v
        return out


def _decode(f: GGUFFile, t: GGUFTensor, index=None) -> np.ndarray:
    """float32 values of a block-quantized tensor (of slab ``index`` of its first axis)."""
    raw = f.raw(t.name)
    if index is not None:
        raw = raw[index]
    rows = raw.reshape(-1, raw.shape[-1])
    step = max(1, _ROWS_ELEMENTS // max(t.shape[-1], 1))
    out = ggml_dequantize(rows, t.type_id, step)
    return out.reshape(*raw.shape[:-1], t.shape[-1])


class _Slabs:
    """A block-quantized 3-D tensor; indexing the first axis dequantizes that slab only."""

    def __init__(self, f: GGUFFile, t: GGUFTensor):
        self.f, self.t = f, t

    def __getitem__(self, i) -> np.ndarray:
        return _decode(self.f, self.t, int(i))


def _entry(f: GGUFFile, t: GGUFTensor) -> Entry:
    kind = "int" if t.dtype.startswith("int") else "float"
    if t.dtype not in DEQUANTIZED:
        get = functools.partial(f.raw, t.name)
    elif len(t.shape) == 3 and not any("conv" in c.lower() for c in t.name.split(".")):
        get = functools.partial(_Slabs, f, t)  # experts: one at a time
    else:
        get = functools.partial(_decode, f, t)
    return Entry(t.name, t.shape, t.dtype, kind, f.path, get)


def _models(files: list[str]) -> dict[str, list[str]]:
    """Group GGUF paths by model: split parts ``<base>-0000N-of-0000M.gguf`` under ``<base>``,
    with every part present (a missing sibling of a given part is found on disk)."""
    groups: dict[str, dict[int, str]] = {}
    for p in files:
        m = _SPLIT.match(os.path.basename(p))
        if not m:
            groups.setdefault(p, {})[1] = p
            continue
        base, _, total = m.group(1), int(m.group(2)), int(m.group(3))
        key = os.path.join(os.path.dirname(p), base)
        parts = groups.setdefault(key, {})
        for i in range(1, total + 1):
            q = os.path.join(os.path.dirname(p), f"{base}-{i:05d}-of-{total:05d}.gguf")
            if not os.path.isfile(q):
                raise ValueError(f"{p}: split GGUF part {os.path.basename(q)} is missing")
            parts[i] = q
    return {k: [v[i] for i in sorted(v)] for k, v in groups.items()}


@functools.lru_cache(maxsize=8)
def _open(path: str, mtime: float, size: int) -> GGUFFile:
    return GGUFFile(path)


def gguf_file(path) -> GGUFFile:
    """The parsed GGUF file at ``path`` (cached while the file is unchanged)."""
    st = os.stat(path)
    return _open(os.fspath(path), st.st_mtime, st.st_size)


def gguf_entries(files: list[str], index: str | None = None) -> list[Entry]:
    models = _models(files)
    if len(models) > 1:
        names = ", ".join(os.path.basename(k) for k in models)
        raise ValueError(f"{os.path.dirname(files[0]) or '.'}: holds several GGUF models "
                         f"({names}); pass one file")
    out: dict[str, Entry] = {}
    for p in next(iter(models.values()), []):
        f = gguf_file(p)
        for t in f.tensors.values():
            if t.name in out:
                raise ValueError(f"{p}: tensor {t.name!r} also in {out[t.name].source}")
            out[t.name] = _entry(f, t)
    return sorted(out.values(), key=lambda e: natural_key(e.key))


def gguf_config(files: list[str], index: str | None = None) -> dict:
    return gguf_file(sorted(files)[0]).config() if files else {}


FORMAT = Format("gguf", (".gguf",), gguf_entries, looks_for="*.gguf", config=gguf_config)
