"""PEFT LoRA adapters: a folder with ``adapter_config.json`` and ``adapter_model.safetensors``
(or ``adapter_model.bin``).

Each adapted module's update ``dW = scaling * B @ A`` (``B`` ``[out, r]``, ``A`` ``[r, in]``; PEFT
``get_delta_weight``) is analysed through its factors, never as the dense product:
``B = Q_B R_B`` and ``A^T = Q_A R_A`` (reduced QR), so ``dW = Q_B (scaling R_B R_A^T) Q_A^T`` and
the singular values of ``dW`` are those of the ``r x r`` core ``scaling R_B R_A^T``, which
``load()`` returns (computed in float64, returned as float32).  Cost ``O((out+in) r^2)``.
The spectrum therefore has the ``r`` nonzero eigenvalues of ``dW^T dW`` (its other
``min(out, in) - r`` are zero and not listed); ``N``, ``M`` are those of ``dW``.

``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``), with ``r`` and
``lora_alpha`` overridden per module by ``rank_pattern`` / ``alpha_pattern`` (PEFT's
``get_pattern_key``: the first key ``k`` with ``re.match(rf"(.*\\.)?({k})$", module)``).
Every rank is kept; the table gets columns ``r`` and ``lora_scaling``.  Embeddings
(``lora_embedding_A`` ``[r, vocab]`` / ``_B`` ``[d, r]``, ``dW = (B A)^T``) and convolutions
(``lora_A`` ``[r, in, *k]``, ``lora_B`` ``[out, r, 1...]``: one core per kernel position, as
htsr slices Conv2D) are handled alike.  Layer names are module paths without PEFT's
``base_model.model.`` prefix.  Other tensors of the adapter file (``modules_to_save`` copies)
are analysed as ordinary weights.  DoRA magnitudes are not applied (a warning says so).

With ``peft_base`` (a checkpoint path) each adapted matrix is ``W_base + dW`` instead, formed
densely in float32 and analysed like any weight of that type (fused tensors split).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import warnings
from collections.abc import Iterator

import numpy as np

from .base import Entry, Format, LayerSpec
from .dtypes import as_numpy, convert
from .files import checkpoint_root, inside, read_json
from .naming import infer_type, layer_name, natural_key

_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<mod>.*)\.lora_(?P<emb>embedding_)?(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?"
                  r"(?:\.weight)?$")


def lora_core(A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """``scaling * R_B @ R_A^T`` (float64), whose singular values are those of
    ``scaling * B @ A`` (``B`` ``[m, r]``, ``A`` ``[r, n]``)."""
    rb = np.linalg.qr(np.asarray(B, np.float64), mode="r")
    ra = np.linalg.qr(np.asarray(A, np.float64).T, mode="r")
    return scaling * (rb @ ra.T)


def _pattern(patterns: dict, module: str, default):
    for k in patterns or {}:
        if re.match(rf"(.*\.)?({k})$", module):
            return patterns[k]
    return default


@functools.lru_cache(maxsize=4)
def _adapter_config(path: str) -> dict:
    cfg = read_json(path, "adapter config")
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"{path}: peft_type {cfg.get('peft_type')!r} is not supported (LoRA "
                         "adapters only)")
    return cfg


def _scaling(cfg: dict, module: str, r: int, what: str) -> float:
    r_cfg = _pattern(cfg.get("rank_pattern"), module, cfg.get("r", 8))
    alpha = _pattern(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8))
    for k, v in (("r", r_cfg), ("lora_alpha", alpha)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ValueError(f"{what}: adapter config {k} = {v!r} is not a positive number")
    if int(r_cfg) != r:
        raise ValueError(f"{what}: lora_A has rank {r} but the adapter config says r = {r_cfg}")
    return float(alpha) / (math.sqrt(r) if cfg.get("use_rslora") else r)


def _pairs(entries: list[Entry]):
    """(module, A entry, B entry, embedding?) for every LoRA pair, and the other entries."""
    found: dict[str, dict] = {}
    rest = []
    for e in entries:
        m = _KEY.match(e.key)
        if m is None:
            rest.append(e)
            continue
        d = found.setdefault(m["mod"], {"emb": bool(m["emb"])})
        d[m["ab"]] = e
    pairs = []
    for mod, d in found.items():
        if "A" not in d or "B" not in d:
            miss = "lora_B" if "B" not in d else "lora_A"
            raise ValueError(f"{(d.get('A') or d.get('B')).source}: module {_strip(mod)!r} "
                             f"has no {miss} tensor")
        pairs.append((mod, d["A"], d["B"], d["emb"]))
    return pairs, rest


def _delta_shape(A: Entry, B: Entry, emb: bool, what: str) -> tuple:
    a, b = tuple(A.shape), tuple(B.shape)
    if emb:  # A [r, vocab], B [d, r] -> dW [vocab, d]
        ok = len(a) == len(b) == 2 and a[0] == b[1]
        shape = (a[1], b[0]) if ok else None
    else:  # A [r, in, *k], B [out, r, 1...] -> dW [out, in, *k]
        ok = (len(a) >= 2 and len(b) == len(a) and a[0] == b[1]
              and all(x == 1 for x in b[2:]))
        shape = (b[0], *a[1:]) if ok else None
    if shape is None:
        raise ValueError(f"{what}: lora_A {a} and lora_B {b} do not compose")
    return shape


def _slices(A: np.ndarray) -> list[np.ndarray]:
    """The ``[r, in]`` factor per kernel position (i outer, j inner), or ``[A]``."""
    if A.ndim == 2:
        return [A]
    return list(np.moveaxis(A.reshape(A.shape[0], A.shape[1], -1), 2, 0))


def _f32(e: Entry) -> np.ndarray:
    return np.asarray(convert(e.get(), e.dtype), dtype=np.float32)


def _load_core(A: Entry, B: Entry, scaling: float) -> list[np.ndarray]:
    a, b = _f32(A), _f32(B)
    b2 = b.reshape(b.shape[0], b.shape[1])
    return [lora_core(s, b2, scaling).astype(np.float32) for s in _slices(a)]


def _merged(base: Entry, A: Entry, B: Entry, emb: bool, scaling: float) -> np.ndarray:
    """``W_base + scaling * B @ A`` in the base tensor's layout, float32."""
    a, b = _f32(A), _f32(B)
    d = (b.reshape(b.shape[0], -1) * np.float32(scaling)) @ a.reshape(a.shape[0], -1)
    W = np.array(convert(as_numpy(base.get()), base.dtype), dtype=np.float32)
    W += (d.T if emb else d).reshape(W.shape)
    return W


def peft_specs(entries: list[Entry], maker, base: str | None = None) -> Iterator[LayerSpec]:
    """LayerSpecs of an adapter's entries (see the module docstring)."""
    if not entries:
        return
    folder = os.path.dirname(os.path.abspath(entries[0].source))
    cfg = _adapter_config(os.path.join(folder, "adapter_config.json"))
    if cfg.get("use_dora"):
        warnings.warn(f"{folder}: DoRA adapter: the magnitude vectors are not applied, the "
                      "spectra are those of the low-rank update scaling*B@A", stacklevel=2)
    pairs, rest = _pairs(entries)
    base_entries = _base_entries(base) if base is not None else None
    items = [(e.key, None, e) for e in rest]
    items += [(m + ".weight", (m, A, B, emb), None) for m, A, B, emb in pairs]
    for _, pair, e in sorted(items, key=lambda x: natural_key(_strip(x[0]))):
        if pair is None:
            yield from maker.specs(dataclasses.replace(e, key=_strip(e.key)))
            continue
        mod, A, B, emb = pair
        name = _strip(mod)
        what = f"{A.source}: module {name!r}"
        shape = _delta_shape(A, B, emb, what)
        r = int(A.shape[0])
        scaling = _scaling(cfg, name, r, what)
        extra = {"r": r, "lora_scaling": scaling}
        if base_entries is not None:
            be = base_entries.get(name + ".weight")
            if be is None or tuple(be.shape) != shape:
                raise ValueError(f"{what}: the base model has no {shape} tensor "
                                 f"{name + '.weight'!r}")
            merged = Entry(name + ".weight", shape, "float32", "float", A.source,
                           functools.partial(_merged, be, A, B, emb, scaling))
            for s in maker.specs(merged):
                s.columns.update(extra)
                yield s
            continue
        yield _lora_spec(name, A, B, shape, emb, scaling, r, maker, extra)


def _lora_spec(name, A, B, shape, emb, scaling, r, maker, extra) -> LayerSpec:
    key = name + ".weight"
    ltype = "embedding" if emb else infer_type(key, shape, maker.cfg)
    if ltype in (None, "experts", "squeeze"):
        ltype = "dense"
    rows, cols = shape[0], shape[1]
    rf = math.prod(shape[2:]) if len(shape) > 2 else 1
    k = min(r, rows, cols)
    nbytes = (math.prod(A.shape) * A.bits + math.prod(B.shape) * B.bits) // 8
    return LayerSpec(name=layer_name(key), layer_type=ltype, shape=shape, N=max(rows, cols),
                     M=min(rows, cols), rf=rf, stored_dtype=A.dtype, source=A.source,
                     part=None, load=functools.partial(_load_core, A, B, scaling),
                     nbytes=int(nbytes), matrix_shape=(k, k), columns=extra)


def _strip(key: str) -> str:
    return key[len(_PREFIX):] if key.startswith(_PREFIX) else key


def _base_entries(base: str) -> dict[str, Entry]:
    from .registry import path_entries

    return {e.key: e for e in path_entries(base)}


def adapter_entries(files: list[str], index: str | None) -> list[Entry]:
    """Entries of the adapter weights beside ``adapter_config.json`` (``index``)."""
    from .safetensors import safetensors_entries
    from .torch import torch_file_entries

    d = os.path.dirname(os.path.abspath(index))
    _adapter_config(index)
    names = sorted(os.listdir(d))
    root = checkpoint_root(d)
    for ext, read in ((".safetensors", safetensors_entries), (".bin", torch_file_entries)):
        w = [inside(os.path.join(d, n), root, f"{os.path.join(d, n)}: this file (a symlink?)")
             for n in names if n.startswith("adapter_model") and n.endswith(ext)]
        if w:
            return read(w, None)
    raise ValueError(f"{index}: no adapter_model.safetensors or adapter_model.bin beside it")


FORMAT = Format("peft", (), adapter_entries, index=("adapter_config.json", "adapter_config.json"),
                looks_for="adapter_config.json + adapter_model.safetensors", specs=peft_specs)
