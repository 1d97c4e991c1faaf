"""Stored tensors -> :class:`LayerSpec`s (shared by every source): classification, fused-part
selection, MXFP4 pairing, FP8 dequantization scales, and the lazy ``load``."""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator, Mapping

import numpy as np

from .base import Entry, LayerSpec
from .dtypes import FP8, as_numpy, convert, mxfp4_to_float32
from .naming import (Config, apply_sel, infer_type, layer_name, sel_shape, skip_key, split_2d,
                     split_expert, type_2d)
from .pages import release_mapped_pages


def finish(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype != np.float32:
        raise AssertionError("internal: expected a 2-D float32 matrix")
    if (a.shape[1] > 1 and a.strides[1] != 4) or a.strides[0] < 0:
        a = np.ascontiguousarray(a)
    return a


def _decode_mxfp4(blocks: Entry, scales: Entry, expert: int | None = None) -> np.ndarray:
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

    def __init__(self, blocks: Entry, scales: Entry):
        self.blocks, self.scales = blocks, scales

    def __getitem__(self, expert: int) -> np.ndarray:
        return _decode_mxfp4(self.blocks, self.scales, int(expert)).T


def _mxfp4_entry(blocks: Entry, lookup: Mapping[str, Entry]) -> Entry | None:
    """The dequantized-tensor entry for an MXFP4 ``<name>_blocks`` tensor, or None when it is
    not one (wrong dtype / shape, or no matching ``<name>_scales``)."""
    base = blocks.key[: -len("_blocks")]
    scales = lookup.get(base + "_scales")
    if (scales is None or blocks.dtype != "uint8" or scales.dtype not in ("uint8", "float8_e8m0fnu")
            or len(blocks.shape) not in (3, 4) or blocks.shape[-1] != 16
            or tuple(scales.shape) != tuple(blocks.shape[:-1])):
        return None
    if scales.dtype != "uint8":  # E8M0 bytes: the same bits
        scales = Entry(scales.key, scales.shape, "uint8", "int", scales.source,
                        lambda g=scales.get: as_numpy(g()).view(np.uint8))
    *lead, r, g, _ = blocks.shape
    if lead:  # experts
        experts = _MXFP4Experts(blocks, scales)
        return Entry(base, (*lead, g * 32, r), "mxfp4", "float", blocks.source,
                      lambda x=experts: x)
    return Entry(base, (r, g * 32), "mxfp4", "float", blocks.source,
                  functools.partial(_decode_mxfp4, blocks, scales))


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


def _load_raw(entry: Entry, expert, squeeze, sel) -> tuple[list[np.ndarray], str]:
    """The matrix as its stored 16-bit patterns: a uint16 view of the file mapping (no copy,
    unit column stride); the native core converts it exactly (``spectrum_batch(dtype=)``)."""
    x = entry.get()
    if expert is not None:
        x = x[expert]
    elif squeeze:
        x = x[0]
    if sel is not None:
        x = apply_sel(x, sel)
    return [x.view(np.uint16)], entry.dtype


def _load(entry: Entry, expert, squeeze, mode, sel, scale: Entry | None, block, what):
    x = entry.get()
    if expert is not None:
        x = x[expert]
    elif squeeze:
        x = x[0]
    if mode == "matrix":
        if scale is not None:
            W = convert(x, entry.dtype)
            if not W.flags.writeable or not W.flags.owndata:
                W = np.array(W, dtype=np.float32)
            s = scale.get()
            if len(scale.shape) == len(entry.shape) == 3:  # per-expert (or squeezed) scales
                s = s[expert if expert is not None else 0]
            W = _apply_scale(W, convert(s, scale.dtype), block, what)
            return [finish(apply_sel(W, sel) if sel else W)]
        if sel is not None:
            x = apply_sel(x, sel)
        return [finish(convert(x, entry.dtype))]
    if mode == "flat":  # (out, in, k...) -> (out, in*k...)
        return [finish(convert(x.reshape(x.shape[0], -1), entry.dtype))]
    if mode == "flat_first":  # (kh, kw, in, out) -> (kh*kw*in, out)
        return [finish(convert(x.reshape(-1, x.shape[-1]), entry.dtype))]
    full = convert(x, entry.dtype)
    if mode == "conv1d":  # (out, in, k) -> k slices W[:, :, i]
        return list(np.ascontiguousarray(np.moveaxis(full, 2, 0)))
    if mode == "conv2d":  # (out, in, kh, kw) -> slices W[:, :, i, j], i outer, j inner
        o, n, kh, kw = full.shape
        return list(np.ascontiguousarray(full.transpose(2, 3, 0, 1)).reshape(kh * kw, o, n))
    if mode == "conv2d_first":  # (kh, kw, in, out) -> slices W[i, j]
        kh, kw, n, o = full.shape
        return list(np.ascontiguousarray(full).reshape(kh * kw, n, o))
    raise AssertionError(mode)


class Maker:
    """Turns stored tensors into LayerSpecs (shared by every source)."""

    def __init__(self, cfg: Config, split_fused: bool, conv2d_slices: bool,
                 lookup: Mapping[str, Entry] | None = None):
        self.cfg, self.split, self.slices = cfg, split_fused, conv2d_slices
        self.lookup = lookup or {}
        self.block = cfg.block()

    def specs(self, e: Entry, *, ltype: str | None = None, module_type: str | None = None,
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
        ltype = ltype or e.ltype
        if ltype is None:
            if skip_key(e.key):
                return
            ltype = infer_type(e.key, shape, self.cfg)
            if ltype is None:
                return
        name = layer_name(e.key)
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
            yield from self._matrix(e, name, module_type, type_2d(e.key, self.cfg), shape[1:],
                                    None, orientation, squeeze=True)
            return
        if nd == 3:  # MoE experts [E, a, b]
            scale = self._scale(e)
            for x in range(shape[0]):
                parts = split_expert(name, shape[1:], self.cfg) if self.split else None
                if not parts:
                    yield mk("dense", "matrix", shape[1:], 1, expert=x, part=f"expert.{x}",
                             scale=scale)
                    continue
                for p, sel in parts:
                    yield mk("dense", "matrix", sel_shape(shape[1:], sel), 1, expert=x,
                             sel=sel, part=f"expert.{x}.{p}", scale=scale)
            return
        if nd == 2:
            yield from self._matrix(e, name, module_type, ltype, shape, None, orientation)

    def _matrix(self, e, name, module_type, ltype, shape2d, expert, orientation, squeeze=False):
        scale = self._scale(e)
        parts = split_2d(name, tuple(shape2d), self.cfg, orientation) if self.split else None
        mk = functools.partial(self._spec, e, name, module_type, ltype, "matrix")
        if not parts:
            yield mk(tuple(shape2d), 1, squeeze=squeeze, scale=scale)
            return
        for p, sel in parts:
            yield mk(sel_shape(shape2d, sel), 1, sel=sel, part=p, squeeze=squeeze, scale=scale)

    def _scale(self, e: Entry) -> Entry | None:
        if e.dtype not in FP8:
            return None
        for suffix in ("_scale_inv", "_scale"):
            s = self.lookup.get(e.key + suffix)
            if s is not None and s.kind == "float":
                return s
        return None

    def _spec(self, e: Entry, name, module_type, ltype, mode, mshape, rf, *, expert=None,
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
        raw = None  # stored bits read in place: a plain (row / column range of a) 16-bit matrix
        if (e.raw16 and mode == "matrix" and scale is None
                and (sel is None or sel[0] in ("rows", "cols"))):
            raw = functools.partial(_load_raw, e, expert, squeeze, sel)
        return LayerSpec(name=name, layer_type=ltype, shape=tuple(int(d) for d in e.shape),
                         N=max(r, c), M=min(r, c), rf=int(rf), stored_dtype=e.dtype,
                         source=e.source, part=part, load=load, nbytes=int(nbytes),
                         module_type=module_type, matrix_shape=(r, c),
                         scale=scale.key if scale is not None else None, load_raw=raw)
