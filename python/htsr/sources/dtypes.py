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
FP8 = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"}


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
    if dtype == "mxfp4":  # dequantized already (_decode_mxfp4)
        return x
    out = to_float32(x, dtype)
    if out is not x:
        release_mapped_pages(x)
    return out
