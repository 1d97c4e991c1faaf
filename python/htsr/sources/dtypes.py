"""Stored dtypes -> float32: the safetensors dtype table, exact FP16/BF16/FP8 conversion,
MXFP4 (OCP Microscaling FP4) dequantization, torch tensors -> numpy."""
from __future__ import annotations

import functools
import sys

import numpy as np

from .pages import release_mapped_pages

# safetensors dtype code -> (our name, bits, numpy dtype of the raw stored bits or None, kind)
ST_DTYPES = {
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
FLOAT_NAMES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                "float8_e4m3fnuz", "float8_e5m2fnuz"}
BITS = {v[0]: v[1] for v in ST_DTYPES.values()}
BITS["mxfp4"] = 4.25  # a 4-bit code per value + an 8-bit exponent per 32 values
RAW16 = {"bfloat16", "float16"}  # read raw (uint16 bits) by the native core: LayerSpec.load_raw
FP8 = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}

# GGML tensor types (ggml.h ``enum ggml_type``): id -> (our name, values per block, bytes per
# block); the name is ours for lossless floats, else the lower-cased GGML name (``q4_k``).
GGML_TYPES = {
    0: ("float32", 1, 4), 1: ("float16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 40),
    10: ("q2_k", 256, 84), 11: ("q3_k", 256, 110), 12: ("q4_k", 256, 144),
    13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210), 15: ("q8_k", 256, 292),
    16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74), 18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50), 20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136), 24: ("int8", 1, 1), 25: ("int16", 1, 2),
    26: ("int32", 1, 4), 27: ("int64", 1, 8), 28: ("float64", 1, 8), 29: ("iq1_m", 256, 56),
    30: ("bfloat16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17), 40: ("nvfp4", 64, 36), 41: ("q1_0", 128, 18),
}
# raw-bits numpy dtype of the GGML types read without a dequantizer
GGML_RAW = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8",
            "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8"}
for _name, _blk, _size in GGML_TYPES.values():
    BITS.setdefault(_name, 8 * _size / _blk)
# integer weights with scales (ONNX): torch's names of quantized dtypes
QUANTIZED_INT = {"qint8": 8, "quint8": 8, "qint4": 4, "quint4": 4}
BITS.update(QUANTIZED_INT)
# dtypes whose Entry.get() returns float32 values already (dequantized by the reader)
DEQUANTIZED = ({"mxfp4"} | set(QUANTIZED_INT)
               | {v[0] for v in GGML_TYPES.values() if v[0] not in GGML_RAW})


@functools.cache
def _ggml_decoder(type_id: int):
    """``(dequantize, GGMLQuantizationType)`` of the gguf package for a GGML type it decodes."""
    try:
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:
        raise ImportError(f"decoding GGML type {GGML_TYPES[type_id][0]} needs the gguf "
                          "package (pip install 'htsr[gguf]')") from None
    qt = GGMLQuantizationType(type_id)
    _, blk, size = GGML_TYPES[type_id]
    try:
        dequantize(np.zeros((1, size), np.uint8), qt)
    except NotImplementedError:
        return None
    return dequantize, qt


def ggml_check(type_id: int, what: str) -> str:
    """Our name of GGML type ``type_id``; ValueError naming ``what`` and the type when htsr
    cannot decode it (unknown id, or a type without a dequantizer such as ``q8_k``)."""
    if type_id not in GGML_TYPES:
        raise ValueError(f"{what}: unknown GGML type id {type_id}")
    name = GGML_TYPES[type_id][0]
    if name in DEQUANTIZED and _ggml_decoder(type_id) is None:
        raise ValueError(f"{what}: GGML type {name} is not supported (no dequantizer for it "
                         "in the gguf package)")
    return name


def ggml_dequantize(raw: np.ndarray, type_id: int, rows: int = 0) -> np.ndarray:
    """float32 ``[R, cols]`` of GGML blocks ``raw`` (uint8 ``[R, bytes per row]``), decoded by the
    ``gguf`` package (llama.cpp's gguf-py, the reference decoder) ``rows`` rows at a time (all
    when 0) so that its temporaries stay small; mapped pages are given back once decoded."""
    dequantize, qt = _ggml_decoder(type_id)
    _, blk, size = GGML_TYPES[type_id]
    R = raw.shape[0]
    out = np.empty((R, raw.shape[1] // size * blk), dtype=np.float32)
    step = rows or max(R, 1)
    for i in range(0, R, step):
        part = raw[i:i + step]
        out[i:i + step] = dequantize(part, qt)
        release_mapped_pages(part)
    return out


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
    if dtype in FP8:
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
    blocks, scales = as_numpy(blocks), as_numpy(scales)
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


def as_numpy(x) -> np.ndarray:
    if is_torch_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def is_torch_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


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


def convert(x, dtype: str) -> np.ndarray:
    """float32 values of a stored tensor; a converted memory-mapped tensor gives its pages back."""
    if is_torch_tensor(x):
        return _torch_f32(x)
    if dtype in DEQUANTIZED:  # decoded by the reader already (MXFP4, GGML blocks)
        return x
    out = to_float32(x, dtype)
    if out is not x:
        release_mapped_pages(x)
    return out
