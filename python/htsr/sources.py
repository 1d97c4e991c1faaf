"""Weight sources -> :class:`LayerSpec` iterators.

``iter_layers(model_or_path)`` yields, lazily and in model order, one :class:`LayerSpec` per
analysable weight matrix of

* a live ``torch.nn.Module`` (``named_modules()`` order, each module's direct parameters in
  registration order, a parameter shared by several modules -- tied embeddings -- once);
* an in-memory state_dict: a ``Mapping`` of name -> torch tensor / numpy array (insertion order;
  ``{'state_dict': ...}``-style wrappers are unwrapped; tensors aliasing an earlier one skipped);
* a ``.safetensors`` file, a directory of ``*.safetensors`` shards with or without
  ``model.safetensors.index.json`` (read by our own header parser + ``np.memmap``: no torch, no
  ``safetensors`` package, no copy of the file);
* a PyTorch ``.bin`` / ``.pt`` / ``.pth`` / ``.ckpt`` file or a directory of them (with an
  optional ``pytorch_model.bin.index.json``), via ``torch.load(mmap=True, weights_only=True)``;
* a ``.npz`` (members as a state_dict; uncompressed members are memory-mapped) or ``.npy`` file
  (or a directory of ``.npy`` files, one tensor each, named by the file stem).

Conventions
-----------
Names.  ``key`` is the tensor / parameter path (``encoder.layer.0.attention.self.query.weight``);
``LayerSpec.name`` is the key without a trailing ``.weight`` (the module path for live modules).
A parameter that is not called ``weight`` keeps its own name so that every source agrees:
``nn.MultiheadAttention``'s fused projection is ``<module>.in_proj_weight`` both for the live
module and for its state_dict; a transformers-v5 / GPT-OSS expert tensor is
``model.layers.0.mlp.experts.gate_up_proj``.

Parts.  A fused or stacked tensor yields one spec per logical matrix; ``name`` stays the tensor
name and ``part`` says which piece: ``'q'``, ``'k'``, ``'v'`` (``c_attn``, ``qkv_proj``, ``qkv``,
``Wqkv``, ``in_proj_weight``, ``query_key_value``), ``'gate'``, ``'up'`` (``gate_up_proj``),
``'expert.3'`` (3-D MoE tensors ``[E, a, b]``, always split per expert) and ``'expert.3.gate'`` /
``'expert.3.up'`` (fused expert ``gate_up_proj``).  ``LayerSpec.longname`` is
``name[part]`` (the row name ``htsr.analysis`` uses), or ``name`` when ``part`` is None.
With ``split_fused=False`` fused 2-D tensors are analysed whole (experts are still per expert).

How fused tensors are split (``config`` = the ``config=`` argument, else ``config.json`` next to
the weights, else a live model's ``.config``; nested ``text_config`` is searched too):

* ``c_attn``: q|k|v concatenated along the longer axis (GPT-2 ``Conv1D`` ``[H, 3H]``: dim 1;
  GPT-BigCode ``Linear`` ``[H + 2*kv, H]``: dim 0) with q the size of the shorter axis.
* ``qkv_proj`` / ``qkv`` / ``Wqkv`` / ``in_proj_weight``: q|k|v along dim 0; sizes
  ``(n_heads*head_dim, n_kv*head_dim, n_kv*head_dim)`` from the config when they add up
  (Phi-3 GQA), else ``(cols, (rows-cols)/2, (rows-cols)/2)``.
* ``gate_up_proj`` 2-D (Phi-3): gate|up halves along dim 0.
* ``query_key_value`` (needs ``model_type`` in the config, otherwise analysed whole):
  gpt_neox / bloom / persimmon: per-head interleave ``(n_head, 3, d)``; falcon: multi-query
  ``[H + 2d, H]`` = q|k|v, ``new_decoder_architecture`` groups ``(n_kv, n_head/n_kv + 2, d)``,
  else per-head interleave; chatglm: q|k|v with ``multi_query_group_num`` kv heads.
* 3-D ``experts.gate_up_proj``: GPT-OSS ``[E, H, 2I]`` interleaved (``[:, ::2]`` / ``[:, 1::2]``),
  Llama-4 ``[E, H, 2I]`` concatenated along the last axis, otherwise the axis of length
  ``2*intermediate_size`` (transformers-v5 in-memory ``[E, 2I, H]`` -> dim 1), or without a
  config the longer axis, halved.

Layer types.  Live modules: class name containing ``linear`` -> dense, ``embedding`` ->
embedding, ``conv`` -> conv1d (2-D HF ``Conv1D`` weights ``(in, out)``; 3-D ``nn.Conv1d``
``(out, in, k)`` -> ``rf=k`` slices ``W[:, :, i]``) or conv2d (4-D, ``rf = kh*kw`` slices
``W[:, :, i, j]``, i outer, j inner), ``norm`` -> skipped; other parameters (and every tensor of
a state_dict / file) are classified by name and rank: 2-D -> embedding if the module name
contains ``embed`` or is ``wte``/``wpe``, conv1d for GPT-2 ``c_attn/c_fc/c_proj`` (unless the
config names another model type), else dense; 4-D -> conv2d (channels-first ``(kh, kw, in,
out)`` when ``a+b < c+d``, as WeightWatcher does); 3-D -> conv1d if a path component contains
``conv``, a squeezed 2-D matrix if the leading dimension is 1 (``pos_embed [1, T, D]``), else
MoE experts.  Skipped: non-float tensors (buffers such as ``position_ids``), tensors of rank < 2
or with no elements, any name whose last component contains ``bias`` or ``mask``, norms (module name
containing ``norm`` or starting ``ln``), ``*_scale_inv`` / ``*_scale`` / ``*_scales``,
``inv_freq``, ``running_mean`` / ``running_var``, rank >= 5, packed sub-byte / E8M0 / complex.
Routers (``mlp.gate.weight [E, H]``) and tiny matrices are kept: size filters are analysis's job.

Order.  Files: natural sort of the tensor names (digit runs compared numerically, ``layers.2``
before ``layers.10``; other text in plain string order), also for sharded checkpoints (shard
order is ignored).  Live modules: ``named_modules()``.  In-memory mappings: insertion order.

Values.  ``load()`` returns ``rf`` 2-D float32 arrays (unit column stride; possibly read-only
views of a memory map or of a live parameter -- never write to them).  F16 / BF16 / FP8
(e4m3fn, e5m2, e4m3fnuz, e5m2fnuz) are converted exactly; F64 is rounded to float32.  An FP8
weight with a sibling ``<key>_scale_inv`` (DeepSeek) or ``<key>_scale`` (compressed-tensors) is
dequantized: per-tensor / per-channel scales broadcast, 2-D block scales use
``quantization_config.weight_block_size`` (default ``[128, 128]``; edge blocks partial).
``nbytes`` is the number of bytes ``load()`` reads from storage (piece + its scales).

MXFP4 (GPT-OSS experts: ``<name>_blocks`` U8 ``[E, R, G, 16]``, two E2M1 codes per byte, low
nibble first, and ``<name>_scales`` U8 ``[E, R, G]``, E8M0 exponents, one per 32 values) is
dequantized exactly, one expert at a time, as transformers' ``integrations/mxfp4.py`` does:
value = e2m1(code) * 2**(scale - 127), each expert's ``[R, 32 G]`` matrix transposed to the
model's ``[32 G, R]`` layout; the layer is ``<name>`` (``stored_dtype`` ``mxfp4``).
A ``_blocks`` tensor without its ``_scales`` is skipped with a warning naming it.

Not supported (left out): GGUF, ONNX, Keras/HDF5, Flax msgpack, integer-quantized weights
(int8/int4 + scales), Conv3d, RNN-specific gate splits.
"""
from __future__ import annotations

import errno
import functools
import json
import math
import mmap
import os
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LayerSpec",
    "iter_layers",
    "natural_key",
    "to_float32",
    "mxfp4_to_float32",
    "SafetensorsFile",
    "TensorInfo",
    "load_config",
]

MAX_HEADER_BYTES = 100_000_000
DEFAULT_BLOCK = (128, 128)


# ---------------------------------------------------------------------------------------------
# LayerSpec
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerSpec:
    """One analysable weight matrix (or ``rf`` equally shaped slices of one tensor)."""

    name: str  # tensor / module path without '.weight'
    layer_type: str  # 'dense' | 'conv1d' | 'conv2d' | 'embedding'
    shape: tuple  # stored tensor shape
    N: int  # max(slice dims)
    M: int  # min(slice dims)
    rf: int  # number of slices load() returns
    stored_dtype: str  # 'float32', 'bfloat16', 'float8_e4m3fn', ...
    source: str  # file path, '<module>' or '<state_dict>'
    part: str | None  # 'q', 'k', 'v', 'gate', 'up', 'expert.3', 'expert.3.gate', ... or None
    load: Callable[[], list] = field(repr=False, compare=False)
    nbytes: int = 0  # bytes load() reads from storage
    module_type: str | None = None  # torch class name (live modules only)
    matrix_shape: tuple = ()  # (rows, cols) of each array load() returns
    scale: str | None = None  # name of the dequantization scale tensor applied, if any

    @property
    def longname(self) -> str:
        return self.name if self.part is None else f"{self.name}[{self.part}]"


# ---------------------------------------------------------------------------------------------
# helpers: ordering, dtypes
# ---------------------------------------------------------------------------------------------
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs numerically: ``layers.2`` < ``layers.10``."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


# safetensors dtype code -> (our name, bits, numpy dtype of the raw stored bits or None, kind)
_ST_DTYPES = {
    "F64": ("float64", 64, "<f8", "float"),
    "F32": ("float32", 32, "<f4", "float"),
    "F16": ("float16", 16, "<f2", "float"),
    "BF16": ("bfloat16", 16, "<u2", "float"),
    "F8_E4M3": ("float8_e4m3fn", 8, "u1", "float"),
    "F8_E5M2": ("float8_e5m2", 8, "u1", "float"),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8, "u1", "float"),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8, "u1", "float"),
    "F8_E8M0": ("float8_e8m0fnu", 8, "u1", "scale"),
    "F4": ("float4_e2m1fn", 4, None, "packed"),
    "F6_E2M3": ("float6_e2m3fn", 6, None, "packed"),
    "F6_E3M2": ("float6_e3m2fn", 6, None, "packed"),
    "BOOL": ("bool", 8, "|b1", "int"),
    "U8": ("uint8", 8, "u1", "int"),
    "I8": ("int8", 8, "i1", "int"),
    "U16": ("uint16", 16, "<u2", "int"),
    "I16": ("int16", 16, "<i2", "int"),
    "U32": ("uint32", 32, "<u4", "int"),
    "I32": ("int32", 32, "<i4", "int"),
    "U64": ("uint64", 64, "<u8", "int"),
    "I64": ("int64", 64, "<i8", "int"),
    "C64": ("complex64", 64, "<c8", "complex"),
}
_FLOAT_NAMES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                "float8_e4m3fnuz", "float8_e5m2fnuz"}
_BITS = {v[0]: v[1] for v in _ST_DTYPES.values()}
_BITS["mxfp4"] = 4.25  # a 4-bit code per value + an 8-bit exponent per 32 values
_FP8 = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}


@functools.cache
def _fp8_lut(dtype: str) -> np.ndarray:
    """float32 value of every byte pattern of an FP8 format."""
    b = np.arange(256, dtype=np.int64)
    if dtype == "float8_e5m2":  # the top byte of an IEEE half
        return (b.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    if dtype in ("float8_e4m3fn", "float8_e4m3fnuz"):
        e, m = (b >> 3) & 15, (b & 7).astype(np.float64)
        bias = 7 if dtype == "float8_e4m3fn" else 8
        val = np.where(e == 0, m / 8 * 2.0 ** (1 - bias), (1 + m / 8) * np.exp2(e - bias))
    elif dtype == "float8_e5m2fnuz":
        e, m = (b >> 2) & 31, (b & 3).astype(np.float64)
        val = np.where(e == 0, m / 4 * 2.0 ** -15, (1 + m / 4) * np.exp2(e - 16))
    else:
        raise ValueError(f"unknown FP8 dtype {dtype!r}")
    val = sign * val
    if dtype == "float8_e4m3fn":
        val[(b & 0x7F) == 0x7F] = np.nan  # S.1111.111; no infinities
    else:  # fnuz: 0x80 is the only NaN, no negative zero, no infinities
        val[0x80] = np.nan
    lut = val.astype(np.float32)
    lut.flags.writeable = False
    return lut


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Convert stored values to float32, exactly for every 8/16-bit float format.

    ``raw`` holds the stored bits: float16/32/64 arrays as such, bfloat16 as uint16, FP8 as
    uint8 (``ml_dtypes`` arrays of those types are accepted too).  float32 input is returned
    without a copy (a read-only memmap stays read-only).
    """
    raw = np.asarray(raw)
    if dtype == "float32":
        return raw if raw.dtype == np.float32 else raw.astype(np.float32)
    if dtype in ("float64", "float16"):
        if raw.dtype.kind in "ui":  # raw bits
            raw = raw.view(np.float64 if dtype == "float64" else np.float16)
        return raw.astype(np.float32)
    if dtype == "bfloat16":
        if raw.dtype != np.uint16:
            raw = raw.view(np.uint16)
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in _FP8:
        if raw.dtype != np.uint8:
            raw = raw.view(np.uint8)
        return _fp8_lut(dtype)[raw]
    raise ValueError(f"cannot convert dtype {dtype!r} to float32")


# E2M1 (OCP MX v1.0 FP4): sign, 2 exponent bits (bias 1), 1 mantissa bit; no inf / NaN
_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                  -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


def mxfp4_to_float32(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dequantize MXFP4 (OCP Microscaling FP4) to float32, exactly.

    ``blocks``: uint8 ``[..., G, 16]``, two E2M1 codes per byte (value ``2k`` in the low
    nibble, ``2k+1`` in the high one); ``scales``: uint8 ``[..., G]``, E8M0 exponents (the
    block of 32 values is multiplied by ``2**(scale - 127)``; 255 is NaN).  Returns
    ``[..., 32 G]``.  Products overflowing float32 (6 * 2**127) become inf."""
    blocks, scales = _as_numpy(blocks), _as_numpy(scales)
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and "
                         f"{scales.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} "
                         "do not match ([..., G, 16] and [..., G])")
    out = np.empty(blocks.shape[:-1] + (32,), dtype=np.float32)
    out[..., 0::2] = _E2M1[blocks & 0x0F]
    out[..., 1::2] = _E2M1[blocks >> 4]
    exp = scales.astype(np.int32) - 127
    with np.errstate(over="ignore"):
        np.ldexp(out, exp[..., None], out=out)
    out[scales == 255] = np.nan
    return out.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 32,))


def _as_numpy(x) -> np.ndarray:
    if _is_torch_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _decode_mxfp4(blocks: _Entry, scales: _Entry, expert: int | None = None) -> np.ndarray:
    """float32 values of an MXFP4 pair (one expert's ``[R, 32 G]`` if ``expert`` is given);
    mapped pages of the codes are given back once decoded."""
    b, s = blocks.get(), scales.get()
    if expert is not None:
        b, s = b[expert], s[expert]
    w = mxfp4_to_float32(b, s)
    if isinstance(b, np.ndarray):
        release_mapped_pages(b)
        release_mapped_pages(s)
    return w


class _MXFP4Experts:
    """MXFP4 expert tensor ``[E, R, G, 16]`` seen as ``[E, 32 G, R]`` (the model's layout,
    as transformers' ``convert_moe_packed_tensors`` transposes it); indexing dequantizes one
    expert."""

    def __init__(self, blocks: _Entry, scales: _Entry):
        self.blocks, self.scales = blocks, scales

    def __getitem__(self, expert: int) -> np.ndarray:
        return _decode_mxfp4(self.blocks, self.scales, int(expert)).T


def _mxfp4_entry(blocks: _Entry, lookup: Mapping[str, _Entry]) -> _Entry | None:
    """The dequantized-tensor entry for an MXFP4 ``<name>_blocks`` tensor, or None when it is
    not one (wrong dtype / shape, or no matching ``<name>_scales``)."""
    base = blocks.key[: -len("_blocks")]
    scales = lookup.get(base + "_scales")
    if (scales is None or blocks.dtype != "uint8" or scales.dtype not in ("uint8", "float8_e8m0fnu")
            or len(blocks.shape) not in (3, 4) or blocks.shape[-1] != 16
            or tuple(scales.shape) != tuple(blocks.shape[:-1])):
        return None
    if scales.dtype != "uint8":  # E8M0 bytes: the same bits
        scales = _Entry(scales.key, scales.shape, "uint8", "int", scales.source,
                        lambda g=scales.get: _as_numpy(g()).view(np.uint8))
    *lead, r, g, _ = blocks.shape
    if lead:  # experts
        experts = _MXFP4Experts(blocks, scales)
        return _Entry(base, (*lead, g * 32, r), "mxfp4", "float", blocks.source,
                      lambda x=experts: x)
    return _Entry(base, (r, g * 32), "mxfp4", "float", blocks.source,
                  functools.partial(_decode_mxfp4, blocks, scales))


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is optional
        raise ImportError("reading PyTorch .bin/.pt checkpoints needs torch "
                          "(pip install torch); safetensors/npz need no torch") from exc
    return torch


def _is_torch_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _torch_f32(t) -> np.ndarray:
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype == torch.float32:
        a = t.numpy()
        a.flags.writeable = False  # shares memory with the tensor
        return a
    return t.to(torch.float32).numpy()


def _convert(x, dtype: str) -> np.ndarray:
    """float32 values of a stored tensor; a converted memory-mapped tensor gives its pages back."""
    if _is_torch_tensor(x):
        return _torch_f32(x)
    if dtype == "mxfp4":  # dequantized already (_decode_mxfp4)
        return x
    out = to_float32(x, dtype)
    if out is not x:
        release_mapped_pages(x)
    return out


def _finish(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype != np.float32:
        raise AssertionError("internal: expected a 2-D float32 matrix")
    if (a.shape[1] > 1 and a.strides[1] != 4) or a.strides[0] < 0:
        a = np.ascontiguousarray(a)
    return a


# ---------------------------------------------------------------------------------------------
# safetensors reader
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    name: str
    code: str  # safetensors dtype code, 'BF16'
    dtype: str  # our dtype name, 'bfloat16'
    shape: tuple
    begin: int  # offsets relative to the data buffer
    end: int


def mapped_root(a: np.ndarray):
    """The np.memmap that owns the file mapping behind ``a`` (walking ``.base``), or None."""
    b = a
    for _ in range(64):
        if b is None:
            return None
        if isinstance(b, np.memmap) and isinstance(getattr(b, "base", None), mmap.mmap):
            return b
        b = getattr(b, "base", None)
    return None


def _advise_mapped_pages(a: np.ndarray, advice: int) -> None:
    """madvise(advice) the whole pages behind ``a`` when it views a read-only file mapping."""
    root = mapped_root(a) if isinstance(a, np.ndarray) else None
    if root is None or not (root.mode in ("r", "c") or not root.flags.writeable):
        return
    mm = root.base
    if not hasattr(mm, "madvise"):
        return
    page = mmap.PAGESIZE
    mm_addr = root.ctypes.data - int(getattr(root, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    lo, hi = byte_bounds(a)
    start = max(0, (lo - mm_addr) // page * page)
    length = min(hi - mm_addr, len(mm)) - start
    if length > 0:
        try:
            mm.madvise(advice, start, length)
        except (OSError, ValueError):
            pass


def release_mapped_pages(a: np.ndarray) -> None:
    """Drop the resident pages behind ``a`` (a view of a read-only file mapping whose values were
    already used, copied or converted): a long-lived whole-file mapping would otherwise keep
    every page read resident, and RSS would grow with the checkpoint."""
    if hasattr(mmap, "MADV_DONTNEED"):
        _advise_mapped_pages(a, mmap.MADV_DONTNEED)


def prefetch_mapped_pages(a: np.ndarray) -> None:
    """Ask the kernel to read the pages behind ``a`` ahead (MADV_WILLNEED, asynchronous)."""
    if hasattr(mmap, "MADV_WILLNEED"):
        _advise_mapped_pages(a, mmap.MADV_WILLNEED)


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
        try:
            header = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{p}: safetensors header is not valid JSON: {exc}") from None
        if not isinstance(header, dict):
            raise ValueError(f"{p}: safetensors header is not a JSON object")
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
        if not isinstance(code, str) or code not in _ST_DTYPES:
            raise ValueError(f"{p}: tensor {name!r}: unknown safetensors dtype {code!r}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise ValueError(f"{p}: tensor {name!r}: invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs)
                or offs[0] > offs[1]):
            raise ValueError(f"{p}: tensor {name!r}: invalid data_offsets {offs!r}")
        begin, end = offs
        if self.data_start + end > self.file_size:
            raise ValueError(f"{p}: tensor {name!r}: data_offsets {offs} run past the end of "
                             f"the file ({self.file_size - self.data_start} data bytes)")
        dname, bits, _, _ = _ST_DTYPES[code]
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
        npdt = _ST_DTYPES[t.code][2]
        if npdt is None:
            raise ValueError(f"{self.path}: tensor {name!r}: packed dtype {t.code} is not "
                             "supported")
        if t.end == t.begin:
            return np.empty(t.shape, dtype=npdt)
        buf = self._map()[self.data_start + t.begin:self.data_start + t.end]
        return np.asarray(buf).view(np.dtype(npdt)).reshape(t.shape)

    def read(self, name: str) -> np.ndarray:
        """float32 array for float tensors (exact conversion), the stored values otherwise."""
        t = self.tensors[name]
        if t.dtype in _FLOAT_NAMES:
            return _convert(self.raw(name), t.dtype)
        return self.raw(name)


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---------------------------------------------------------------------------------------------
# stored tensors (any source) and config
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Entry:
    key: str
    shape: tuple
    dtype: str  # our dtype name
    kind: str  # 'float' | 'int' | 'other'
    source: str
    get: Callable[[], Any]  # raw stored bits: numpy array (see to_float32) or torch tensor
    whole_nbytes: int | None = None  # a load reads this many bytes whatever piece (npz deflate)

    @property
    def bits(self) -> int:
        return _BITS.get(self.dtype, 32)


def _np_entry(key, arr, source, whole_nbytes=None) -> _Entry:
    dt = arr.dtype
    name = dt.name
    if dt.kind == "f" and name in _FLOAT_NAMES:
        kind, get = "float", (lambda a=arr: a)
    elif name in _FLOAT_NAMES:  # ml_dtypes bfloat16 / float8 arrays: expose the raw bits
        raw = np.uint16 if dt.itemsize == 2 else np.uint8
        kind, get = "float", (lambda a=arr, r=raw: a.view(r))
    elif dt.kind in "iub":
        kind, get = "int", (lambda a=arr: a)
    else:
        kind, get = "other", (lambda a=arr: a)
    return _Entry(key, tuple(arr.shape), name, kind, source, get, whole_nbytes)


def _torch_entry(key, t, source) -> _Entry:
    if t.is_floating_point():
        kind = "float"
    elif t.is_complex():
        kind = "other"
    else:
        kind = "int"
    return _Entry(key, tuple(t.shape), _torch_dtype_name(t), kind, source, lambda t=t: t)


def _st_entry(f: SafetensorsFile, info: TensorInfo) -> _Entry:
    kind = _ST_DTYPES[info.code][3]
    kind = "float" if kind == "float" else ("int" if kind == "int" else "other")
    return _Entry(info.name, info.shape, info.dtype, kind, f.path,
                  lambda f=f, n=info.name: f.raw(n))


class _Config:
    _NESTED = ("text_config", "llm_config", "language_config", "attn_config")

    def __init__(self, d: Mapping | None):
        self.d = dict(d) if d else {}

    def get(self, *keys, default=None):
        for k in keys:
            if k in self.d and self.d[k] is not None:
                return self.d[k]
        for sub in self._NESTED:
            s = self.d.get(sub)
            if isinstance(s, Mapping):
                for k in keys:
                    if k in s and s[k] is not None:
                        return s[k]
        return default

    def get_int(self, *keys):
        v = self.get(*keys)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v else None

    @property
    def model_type(self) -> str:
        return str(self.get("model_type", default="") or "")

    def block(self) -> tuple:
        q = self.get("quantization_config")
        if isinstance(q, Mapping):
            b = q.get("weight_block_size")
            if isinstance(b, (list, tuple)) and len(b) == 2 and all(_is_uint(x) and x for x in b):
                return int(b[0]), int(b[1])
        return DEFAULT_BLOCK


def load_config(config) -> dict:
    """``config`` as a plain dict: a dict, a transformers config (``to_dict()``) or a path to a
    JSON file (or a directory holding ``config.json``)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, (str, os.PathLike)):
        p = os.fspath(config)
        if os.path.isdir(p):
            p = os.path.join(p, "config.json")
        return _read_json(p, "config")
    raise TypeError(f"config: expected a dict, a transformers config or a path, got "
                    f"{type(config).__name__}")


def _read_json(path, what) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return obj


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------
_SKIP_PARAM_SUFFIX = ("_scale_inv", "scale_inv", "_scale", "_scales", "inv_freq", "position_ids",
                      "running_mean", "running_var", "num_batches_tracked", "_zero_point",
                      "_blocks")
_GPT2_CONV1D = {"c_attn", "c_fc", "c_proj", "q_attn"}
_GPT2_TYPES = {"gpt2", "imagegpt", "decision_transformer"}
_LN = re.compile(r"^ln(_|\d|$)")


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _module_comp(key: str) -> str:
    comps = key.split(".")
    if comps[-1] == "weight" and len(comps) > 1:
        return comps[-2]
    return comps[-1]


def _skip_key(key: str) -> bool:
    param = key.rsplit(".", 1)[-1].lower()
    if "bias" in param or "mask" in param or param.endswith(_SKIP_PARAM_SUFFIX):
        return True
    mod = _module_comp(key).lower()
    return "norm" in mod or bool(_LN.match(mod))


def _infer_type(key: str, shape: tuple, cfg: _Config) -> str | None:
    """Layer type of a state_dict tensor, or None (skip).  3-D -> 'experts' / 'conv1d' /
    'squeeze' pseudo types resolved by the caller."""
    nd = len(shape)
    if nd == 2:
        return _type_2d(key, cfg)
    if nd == 4:
        return "conv2d"
    if nd == 3:
        if any("conv" in c.lower() for c in key.split(".")):
            return "conv1d"
        if shape[0] == 1 and "expert" not in key.lower():
            return "squeeze"
        return "experts"
    return None


def _type_2d(key: str, cfg: _Config) -> str:
    mod = _module_comp(key)
    low = mod.lower()
    if "embed" in low or low in ("wte", "wpe"):
        return "embedding"
    if mod in _GPT2_CONV1D and (not cfg.model_type or cfg.model_type in _GPT2_TYPES):
        return "conv1d"
    return "dense"


# ---------------------------------------------------------------------------------------------
# fused tensors: selectors
#   ('rows', a, b) -> x[a:b]          ('cols', a, b) -> x[:, a:b]
#   ('cstep', s, k) -> x[:, s::k]      ('groups', G, per, d, a, b) ->
#                                          x.reshape(G, per, d, c)[:, a:b].reshape(-1, c)
# ---------------------------------------------------------------------------------------------
def _apply_sel(x, sel):
    kind = sel[0]
    if kind == "rows":
        return x[sel[1]:sel[2]]
    if kind == "cols":
        return x[:, sel[1]:sel[2]]
    if kind == "cstep":
        return x[:, sel[1]::sel[2]]
    if kind == "groups":
        _, G, per, d, a, b = sel
        c = x.shape[1]
        return x.reshape(G, per, d, c)[:, a:b].reshape(-1, c)
    raise AssertionError(sel)


def _sel_shape(shape2d, sel) -> tuple:
    r, c = shape2d
    kind = sel[0]
    if kind == "rows":
        return sel[2] - sel[1], c
    if kind == "cols":
        return r, sel[2] - sel[1]
    if kind == "cstep":
        return r, len(range(sel[1], c, sel[2]))
    _, G, per, d, a, b = sel
    return G * (b - a) * d, c


def _concat(axis: int, sizes, names) -> list:
    out, a = [], 0
    for n, s in zip(names, sizes):
        out.append((n, ("rows" if axis == 0 else "cols", a, a + s)))
        a += s
    return out


def _qkv_generic(long: int, short: int, axis: int):
    rest = long - short
    if rest > 0 and rest % 2 == 0:
        return _concat(axis, (short, rest // 2, rest // 2), "qkv")
    return None


def _split_2d(name: str, shape2d: tuple, cfg: _Config, orientation: str | None):
    """[(part, selector)] for a fused 2-D tensor, or None."""
    comp = name.rsplit(".", 1)[-1]
    r, c = shape2d
    mt = cfg.model_type
    nh = cfg.get_int("num_attention_heads", "n_head", "num_heads", "n_heads")
    hidden = cfg.get_int("hidden_size", "n_embd", "d_model")
    hd = cfg.get_int("head_dim", "kv_channels") or (hidden // nh if hidden and nh else None)

    if comp == "c_attn":
        if orientation == "conv1d" or (orientation is None and c > r):
            return _qkv_generic(c, r, 1)
        return _qkv_generic(r, c, 0)
    if comp == "in_proj_weight":
        return _qkv_generic(r, c, 0)
    if comp in ("qkv_proj", "qkv", "Wqkv"):
        nkv = cfg.get_int("num_key_value_heads", "num_kv_heads", "kv_n_heads", "n_head_kv") or nh
        if nh and hd and nh * hd + 2 * nkv * hd == r:
            return _concat(0, (nh * hd, nkv * hd, nkv * hd), "qkv")
        return _qkv_generic(r, c, 0)
    if comp == "gate_up_proj":
        return [("gate", ("rows", 0, r // 2)), ("up", ("rows", r // 2, r))] if r % 2 == 0 \
            else None
    if comp == "query_key_value" and nh:
        if mt in ("gpt_neox", "gpt_neox_japanese", "bloom", "persimmon"):
            return _interleave(r, nh)
        if mt in ("falcon", "RefinedWeb", "RefinedWebModel"):
            new_arch = cfg.get("new_decoder_architecture", default=(mt == "RefinedWeb"))
            d = hd or (r // (3 * nh))
            if new_arch:
                nkv = cfg.get_int("num_kv_heads", "n_head_kv", "num_key_value_heads") or nh
                g = nh // nkv if nh % nkv == 0 else 0
                if g and d and nkv * (g + 2) * d == r:
                    return [("q", ("groups", nkv, g + 2, d, 0, g)),
                            ("k", ("groups", nkv, g + 2, d, g, g + 1)),
                            ("v", ("groups", nkv, g + 2, d, g + 1, g + 2))]
                return None
            if cfg.get("multi_query", default=True):
                if d and nh * d + 2 * d == r:
                    return _concat(0, (nh * d, d, d), "qkv")
                return None
            return _interleave(r, nh)
        if mt == "chatglm":
            d = hd
            g = cfg.get_int("multi_query_group_num") if cfg.get("multi_query_attention") else nh
            if d and g and nh * d + 2 * g * d == r:
                return _concat(0, (nh * d, g * d, g * d), "qkv")
    return None


def _interleave(r: int, nh: int):
    if r % (3 * nh):
        return None
    d = r // (3 * nh)
    return [(p, ("groups", nh, 3, d, i, i + 1)) for i, p in enumerate("qkv")]


def _split_expert(name: str, slab: tuple, cfg: _Config):
    """[(part, selector)] for one expert of a fused ``gate_up_proj``, or None."""
    if not name.rsplit(".", 1)[-1].endswith("gate_up_proj"):
        return None
    a, b = slab
    mt = cfg.model_type
    if mt == "gpt_oss":
        return [("gate", ("cstep", 0, 2)), ("up", ("cstep", 1, 2))] if b % 2 == 0 else None
    rows = [("gate", ("rows", 0, a // 2)), ("up", ("rows", a // 2, a))]
    cols = [("gate", ("cols", 0, b // 2)), ("up", ("cols", b // 2, b))]
    if mt.startswith("llama4"):
        return cols if b % 2 == 0 else None
    inter = cfg.get_int("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")
    if inter and a == 2 * inter and b != 2 * inter:
        return rows
    if inter and b == 2 * inter and a != 2 * inter:
        return cols
    if a >= b:
        return rows if a % 2 == 0 else None
    return cols if b % 2 == 0 else None


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _apply_scale(W: np.ndarray, s: np.ndarray, block: tuple, what: str) -> np.ndarray:
    """W * dequantization scale, in place on the (owned) float32 matrix W."""
    r, c = W.shape
    s = np.asarray(s, dtype=np.float32)
    if s.size == 1:
        W *= s.reshape(())
        return W
    if s.ndim == 1 and s.shape[0] == r:
        s = s[:, None]
    if s.ndim == 2 and s.shape in ((r, 1), (1, c), (r, c)):
        W *= s
        return W
    br, bc = block
    if s.ndim == 2 and s.shape == (-(-r // br), -(-c // bc)):
        for i in range(s.shape[0]):
            W[i * br:(i + 1) * br] *= np.repeat(s[i], bc)[:c]
        return W
    raise ValueError(f"{what}: scale of shape {tuple(s.shape)} fits neither the matrix "
                     f"{(r, c)} nor its {br}x{bc} blocks")


def _load(entry: _Entry, expert, squeeze, mode, sel, scale: _Entry | None, block, what):
    x = entry.get()
    if expert is not None:
        x = x[expert]
    elif squeeze:
        x = x[0]
    if mode == "matrix":
        if scale is not None:
            W = _convert(x, entry.dtype)
            if not W.flags.writeable or not W.flags.owndata:
                W = np.array(W, dtype=np.float32)
            s = scale.get()
            if len(scale.shape) == len(entry.shape) == 3:  # per-expert (or squeezed) scales
                s = s[expert if expert is not None else 0]
            W = _apply_scale(W, _convert(s, scale.dtype), block, what)
            return [_finish(_apply_sel(W, sel) if sel else W)]
        if sel is not None:
            x = _apply_sel(x, sel)
        return [_finish(_convert(x, entry.dtype))]
    if mode == "flat":  # (out, in, k...) -> (out, in*k...)
        return [_finish(_convert(x.reshape(x.shape[0], -1), entry.dtype))]
    if mode == "flat_first":  # (kh, kw, in, out) -> (kh*kw*in, out)
        return [_finish(_convert(x.reshape(-1, x.shape[-1]), entry.dtype))]
    full = _convert(x, entry.dtype)
    if mode == "conv1d":  # (out, in, k) -> k slices W[:, :, i]
        return list(np.ascontiguousarray(np.moveaxis(full, 2, 0)))
    if mode == "conv2d":  # (out, in, kh, kw) -> slices W[:, :, i, j], i outer, j inner
        o, n, kh, kw = full.shape
        return list(np.ascontiguousarray(full.transpose(2, 3, 0, 1)).reshape(kh * kw, o, n))
    if mode == "conv2d_first":  # (kh, kw, in, out) -> slices W[i, j]
        kh, kw, n, o = full.shape
        return list(np.ascontiguousarray(full).reshape(kh * kw, n, o))
    raise AssertionError(mode)


class _Maker:
    """Turns stored tensors into LayerSpecs (shared by every source)."""

    def __init__(self, cfg: _Config, split_fused: bool, conv2d_slices: bool,
                 lookup: Mapping[str, _Entry] | None = None):
        self.cfg, self.split, self.slices = cfg, split_fused, conv2d_slices
        self.lookup = lookup or {}
        self.block = cfg.block()

    def specs(self, e: _Entry, *, ltype: str | None = None, module_type: str | None = None,
              orientation: str | None = None) -> Iterator[LayerSpec]:
        if e.kind != "float" and e.key.endswith("_blocks") and len(e.shape) >= 3:
            dq = _mxfp4_entry(e, self.lookup)
            if dq is None:
                warnings.warn(f"{e.source}: tensor {e.key!r} holds block-quantized codes "
                              f"({e.dtype}, shape {tuple(e.shape)}) without a matching "
                              f"'{e.key[:-len('_blocks')]}_scales' (MXFP4 needs uint8 "
                              "[..., G, 16] blocks and [..., G] scales); it is not analysed",
                              stacklevel=2)
                return
            e = dq
        shape = e.shape
        if e.kind != "float" or len(shape) < 2 or math.prod(shape) == 0:
            return
        if ltype is None:
            if _skip_key(e.key):
                return
            ltype = _infer_type(e.key, shape, self.cfg)
            if ltype is None:
                return
        name = _layer_name(e.key)
        mk = functools.partial(self._spec, e, name, module_type)
        nd = len(shape)
        if ltype == "conv2d" and nd == 4:
            a, b, c, d = shape
            first = a + b < c + d  # channels-first (kh, kw, in, out), as WeightWatcher
            if not self.slices:
                if first:
                    yield mk("conv2d", "flat_first", (a * b * c, d), 1)
                else:
                    yield mk("conv2d", "flat", (a, b * c * d), 1)
            elif first:
                yield mk("conv2d", "conv2d_first", (c, d), a * b)
            else:
                yield mk("conv2d", "conv2d", (a, b), c * d)
            return
        if ltype == "conv1d" and nd == 3:
            a, b, k = shape
            if self.slices:
                yield mk("conv1d", "conv1d", (a, b), k)
            else:
                yield mk("conv1d", "flat", (a, b * k), 1)
            return
        if ltype == "squeeze" and nd == 3:
            yield from self._matrix(e, name, module_type, _type_2d(e.key, self.cfg), shape[1:],
                                    None, orientation, squeeze=True)
            return
        if nd == 3:  # MoE experts [E, a, b]
            scale = self._scale(e)
            for x in range(shape[0]):
                parts = _split_expert(name, shape[1:], self.cfg) if self.split else None
                if not parts:
                    yield mk("dense", "matrix", shape[1:], 1, expert=x, part=f"expert.{x}",
                             scale=scale)
                    continue
                for p, sel in parts:
                    yield mk("dense", "matrix", _sel_shape(shape[1:], sel), 1, expert=x,
                             sel=sel, part=f"expert.{x}.{p}", scale=scale)
            return
        if nd == 2:
            yield from self._matrix(e, name, module_type, ltype, shape, None, orientation)

    def _matrix(self, e, name, module_type, ltype, shape2d, expert, orientation, squeeze=False):
        scale = self._scale(e)
        parts = _split_2d(name, tuple(shape2d), self.cfg, orientation) if self.split else None
        mk = functools.partial(self._spec, e, name, module_type, ltype, "matrix")
        if not parts:
            yield mk(tuple(shape2d), 1, squeeze=squeeze, scale=scale)
            return
        for p, sel in parts:
            yield mk(_sel_shape(shape2d, sel), 1, sel=sel, part=p, squeeze=squeeze, scale=scale)

    def _scale(self, e: _Entry) -> _Entry | None:
        if e.dtype not in _FP8:
            return None
        for suffix in ("_scale_inv", "_scale"):
            s = self.lookup.get(e.key + suffix)
            if s is not None and s.kind == "float":
                return s
        return None

    def _spec(self, e: _Entry, name, module_type, ltype, mode, mshape, rf, *, expert=None,
              sel=None, part=None, squeeze=False, scale=None) -> LayerSpec:
        r, c = int(mshape[0]), int(mshape[1])
        numel = r * c * rf
        if scale is not None and sel is not None:  # the whole matrix is dequantized first
            numel = math.prod(e.shape[1:] if expert is not None or squeeze else e.shape)
        if e.whole_nbytes is not None:
            nbytes = e.whole_nbytes
        else:
            nbytes = numel * e.bits // 8
        if scale is not None:
            ssize = math.prod(scale.shape)
            if expert is not None and len(scale.shape) == len(e.shape):
                ssize //= max(scale.shape[0], 1)
            nbytes += ssize * scale.bits // 8
        what = f"{e.source}: tensor {e.key!r}"
        load = functools.partial(_load, e, expert, squeeze, mode, sel, scale, self.block, what)
        return LayerSpec(name=name, layer_type=ltype, shape=tuple(int(d) for d in e.shape),
                         N=max(r, c), M=min(r, c), rf=int(rf), stored_dtype=e.dtype,
                         source=e.source, part=part, load=load, nbytes=int(nbytes),
                         module_type=module_type, matrix_shape=(r, c),
                         scale=scale.key if scale is not None else None)


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
def _module_specs(model, maker: _Maker) -> Iterator[LayerSpec]:
    seen: set[int] = set()
    for path, mod in model.named_modules():
        tname = type(mod).__name__
        low = tname.lower()
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            key = f"{path}.{pname}" if path else pname
            e = _torch_entry(key, p, "<module>")
            ltype = orientation = None
            if pname == "weight":
                nd = p.dim()
                if "linear" in low and nd == 2:
                    ltype = "dense"
                elif "embedding" in low and nd == 2:
                    ltype = "embedding"
                elif "conv" in low and nd in (2, 3, 4):
                    ltype = "conv2d" if nd == 4 else "conv1d"
                    if nd == 2 and tname == "Conv1D":
                        orientation = "conv1d"
                elif "conv" in low or "norm" in low:
                    continue
            yield from maker.specs(e, ltype=ltype, module_type=tname, orientation=orientation)


_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")


def _unwrap(sd: Mapping) -> Mapping:
    for _ in range(3):
        if any(_is_array(v) for v in sd.values()):
            return sd
        for k in _WRAPPERS:
            if isinstance(sd.get(k), Mapping):
                sd = sd[k]
                break
        else:
            return sd
    return sd


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or _is_torch_tensor(v)


def _alias_key(v):
    if isinstance(v, np.ndarray):
        ptr = v.__array_interface__["data"][0]
        return ("np", ptr, v.shape, v.strides, v.dtype.str) if ptr and v.size else None
    ptr = v.data_ptr()
    return ("pt", ptr, tuple(v.shape), tuple(v.stride()), str(v.dtype)) if ptr and v.numel() \
        else None


def _mapping_entries(sd: Mapping, source: str, *, sort: bool) -> list[_Entry]:
    sd = _unwrap(sd)
    out, seen = [], set()
    for k, v in sd.items():
        if not _is_array(v):
            continue
        ak = _alias_key(v)
        if ak is not None:
            if ak in seen:
                continue  # tied weight: the same storage under a second name
            seen.add(ak)
        key = str(k)
        out.append(_torch_entry(key, v, source) if _is_torch_tensor(v)
                   else _np_entry(key, v, source))
    if sort:
        out.sort(key=lambda e: natural_key(e.key))
    return out


def _read_index(path) -> dict:
    idx = _read_json(path, "checkpoint index")
    wm = idx.get("weight_map")
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in wm.items()):
        raise ValueError(f"{path}: checkpoint index has no valid 'weight_map' "
                         "(tensor name -> shard file)")
    d = os.path.dirname(os.path.abspath(path))
    for shard in sorted(set(wm.values())):
        if not os.path.isfile(os.path.join(d, shard)):
            raise ValueError(f"{path}: weight_map names shard {shard!r}, which does not exist "
                             f"in {d}")
    return wm


def _safetensors_entries(files: list[str], index: str | None) -> list[_Entry]:
    out: dict[str, _Entry] = {}
    wm = _read_index(index) if index else None
    if wm is not None:
        d = os.path.dirname(os.path.abspath(index))
        files = [os.path.join(d, s) for s in sorted(set(wm.values()), key=natural_key)]
    opened = {}
    for fpath in files:
        f = SafetensorsFile(fpath)
        opened[os.path.abspath(fpath)] = f
        for name, info in f.tensors.items():
            if name in out:
                raise ValueError(f"{fpath}: tensor {name!r} also in {out[name].source}")
            out[name] = _st_entry(f, info)
    if wm is not None:
        for name, shard in wm.items():
            f = opened[os.path.abspath(os.path.join(d, shard))]
            if name not in f.tensors:
                raise ValueError(f"{index}: weight_map puts tensor {name!r} in {f.path}, whose "
                                 "header does not have it")
    return sorted(out.values(), key=lambda e: natural_key(e.key))


def _torch_file_entries(files: list[str], index: str | None) -> list[_Entry]:
    wm = _read_index(index) if index else None
    if wm is not None:
        d = os.path.dirname(os.path.abspath(index))
        files = [os.path.join(d, s) for s in sorted(set(wm.values()), key=natural_key)]
    out: dict[str, _Entry] = {}
    for fpath in files:
        obj = _torch_load(fpath)
        if not isinstance(obj, Mapping):
            raise ValueError(f"{fpath}: torch.load returned a {type(obj).__name__}, not a "
                             "state_dict")
        for e in _mapping_entries(obj, fpath, sort=False):
            if e.key in out:
                raise ValueError(f"{fpath}: tensor {e.key!r} also in {out[e.key].source}")
            out[e.key] = e
    return sorted(out.values(), key=lambda e: natural_key(e.key))


def _torch_load(path):
    torch = _import_torch()
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as first:  # legacy (non-zip) files cannot be memory-mapped
        try:
            return torch.load(path, map_location="cpu", mmap=False, weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read with torch.load(weights_only=True): "
                             f"{exc or first}") from exc


def _npy_member_header(fp):
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _npz_entries(path: str) -> list[_Entry]:
    out = []
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a valid .npz (zip) file: {exc}") from None
    with zf, open(path, "rb") as raw:
        for zi in zf.infolist():
            if not zi.filename.endswith(".npy"):
                continue
            key = zi.filename[:-4]
            try:
                with zf.open(zi) as fp:
                    shape, fortran, dtype = _npy_member_header(fp)
                    hdr_len = fp.tell()
            except Exception as exc:
                raise ValueError(f"{path}: member {zi.filename!r}: invalid .npy header: "
                                 f"{exc}") from None
            if dtype.hasobject or math.prod(shape) == 0:
                continue
            if zi.compress_type == zipfile.ZIP_STORED:
                raw.seek(zi.header_offset)
                local = raw.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise ValueError(f"{path}: member {zi.filename!r}: bad local zip header")
                n, x = struct.unpack("<HH", local[26:30])
                offset = zi.header_offset + 30 + n + x + hdr_len
                if offset + math.prod(shape) * dtype.itemsize > os.path.getsize(path):
                    raise ValueError(f"{path}: member {zi.filename!r}: data runs past the end "
                                     "of the file")
                getter = functools.partial(np.memmap, path, dtype=dtype, mode="r", offset=offset,
                                           shape=shape, order="F" if fortran else "C")
                whole = None
            else:
                getter = functools.partial(_npz_member, path, key)
                whole = zi.compress_size
            dname = dtype.name
            kind = ("float" if dtype.kind == "f" and dname in _FLOAT_NAMES
                    else "int" if dtype.kind in "iub" else "other")
            out.append(_Entry(key, tuple(shape), dname, kind, path,
                              lambda g=getter: np.asarray(g()), whole))
    out.sort(key=lambda e: natural_key(e.key))
    return out


def _npz_member(path, key):
    with np.load(path, allow_pickle=False) as z:
        return z[key]


def _npy_entries(files: list[str]) -> list[_Entry]:
    out = []
    for p in files:
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{p}: not a valid .npy file: {exc}") from None
        key = os.path.basename(p)[: -len(".npy")]
        out.append(_np_entry(key, arr, p))
    out.sort(key=lambda e: natural_key(e.key))
    return out


_TORCH_EXT = (".bin", ".pt", ".pth", ".ckpt")
_TORCH_EXCLUDE = ("training_args", "optimizer", "scheduler", "rng_state", "trainer_state")


def _dir_entries(d: str) -> tuple[list[_Entry], str]:
    names = sorted(os.listdir(d), key=natural_key)
    full = {n: os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))}

    def pick_index(suffix, preferred):
        if preferred in full:
            return full[preferred]
        cands = [p for n, p in full.items() if n.endswith(suffix)]
        return cands[0] if len(cands) == 1 else None

    idx = pick_index(".safetensors.index.json", "model.safetensors.index.json")
    st = [p for n, p in full.items() if n.endswith(".safetensors")]
    if idx or st:
        return _safetensors_entries(st, idx), "safetensors"
    idx = pick_index(".bin.index.json", "pytorch_model.bin.index.json")
    pt = [p for n, p in full.items() if n.lower().endswith(_TORCH_EXT)
          and not n.lower().startswith(_TORCH_EXCLUDE)]
    if idx or pt:
        return _torch_file_entries(pt, idx), "torch"
    npz = [p for n, p in full.items() if n.endswith(".npz")]
    npy = [p for n, p in full.items() if n.endswith(".npy")]
    if npz or npy:
        out = [e for p in npz for e in _npz_entries(p)] + _npy_entries(npy)
        return sorted(out, key=lambda e: natural_key(e.key)), "numpy"
    raise ValueError(f"{d}: no weight files in this directory (looked for *.safetensors "
                     "[+ index.json], pytorch_model*.bin / *.pt / *.pth, *.npz, *.npy)")


def _path_entries(p: str) -> list[_Entry]:
    if os.path.isdir(p):
        return _dir_entries(p)[0]
    low = p.lower()
    if low.endswith(".safetensors"):
        return _safetensors_entries([p], None)
    if low.endswith(".safetensors.index.json"):
        return _safetensors_entries([], p)
    if low.endswith(".bin.index.json"):
        return _torch_file_entries([], p)
    if low.endswith(_TORCH_EXT):
        return _torch_file_entries([p], None)
    if low.endswith(".npz"):
        return _npz_entries(p)
    if low.endswith(".npy"):
        return _npy_entries([p])
    raise ValueError(f"{p}: unsupported weight file type (expected .safetensors, "
                     ".bin/.pt/.pth/.ckpt, .npz, .npy or a directory of them)")


def _path_config(p: str) -> dict:
    d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
    c = os.path.join(d, "config.json")
    return _read_json(c, "config") if os.path.isfile(c) else {}


def iter_layers(model_or_path, *, split_fused: bool = True, conv2d_slices: bool = True,
                config=None) -> Iterator[LayerSpec]:
    """Yield a :class:`LayerSpec` for every analysable weight matrix, in model order.

    ``model_or_path``: a ``torch.nn.Module``, a state_dict ``Mapping`` (torch tensors or numpy
    arrays), or a path to a ``.safetensors`` / ``.bin`` / ``.pt`` / ``.npz`` / ``.npy`` file or
    a directory of them.  ``split_fused``: split fused q/k/v and gate/up tensors into parts.
    ``conv2d_slices``: Conv2D as ``kh*kw`` slices (True) or one ``(out, in*kh*kw)`` matrix.
    ``config``: model config (dict, transformers config, or path) for fused-tensor sizes and
    FP8 block sizes; default ``config.json`` next to the weights or a live model's ``.config``.

    Headers, indexes and configs are read and validated here, at call time (a ValueError names
    the offending file and tensor); tensor data is read only by ``LayerSpec.load()``.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model_or_path, torch.nn.Module):
        cfg = load_config(config) if config is not None else \
            load_config(getattr(model_or_path, "config", None))
        maker = _Maker(_Config(cfg), split_fused, conv2d_slices)
        return _module_specs(model_or_path, maker)
    if isinstance(model_or_path, (str, os.PathLike)):
        p = os.fspath(model_or_path)
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, f"no such file or directory: {p}", p)
        entries = _path_entries(p)
        cfg = load_config(config) if config is not None else _path_config(p)
    elif isinstance(model_or_path, Mapping):
        entries = _mapping_entries(model_or_path, "<state_dict>", sort=False)
        cfg = load_config(config)
    else:
        raise TypeError("iter_layers: expected a torch.nn.Module, a state_dict mapping or a "
                        f"path, got {type(model_or_path).__name__}")
    lookup = {e.key: e for e in entries}
    maker = _Maker(_Config(cfg), split_fused, conv2d_slices, lookup)
    return _entry_specs(entries, maker)


def _entry_specs(entries, maker) -> Iterator[LayerSpec]:
    for e in entries:
        yield from maker.specs(e)
