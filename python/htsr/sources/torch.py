"""PyTorch: live ``nn.Module``s, in-memory state_dicts (torch tensors or numpy arrays) and
``torch.load(mmap=True, weights_only=True)`` files."""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping

import numpy as np

from .base import Entry, Format, LayerSpec, np_entry
from .dtypes import is_torch_tensor
from .files import read_index, require_size
from .naming import natural_key
from .specs import Maker


def import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is optional
        raise ImportError("reading PyTorch .bin/.pt checkpoints needs torch "
                          "(pip install torch); safetensors/npz need no torch") from exc
    return torch


def _torch_dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def torch_entry(key, t, source) -> Entry:
    if t.is_floating_point():
        kind = "float"
    elif t.is_complex():
        kind = "other"
    else:
        kind = "int"
    return Entry(key, tuple(t.shape), _torch_dtype_name(t), kind, source, lambda t=t: t)


def module_specs(model, maker: Maker) -> Iterator[LayerSpec]:
    seen: set[int] = set()
    for path, mod in model.named_modules():
        tname = type(mod).__name__
        low = tname.lower()
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            key = f"{path}.{pname}" if path else pname
            e = torch_entry(key, p, "<module>")
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


unwrap_state_dict = _unwrap     # public: the facade numbers a state_dict's keys as read here


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or is_torch_tensor(v)


def _alias_key(v):
    if isinstance(v, np.ndarray):
        ptr = v.__array_interface__["data"][0]
        return ("np", ptr, v.shape, v.strides, v.dtype.str) if ptr and v.size else None
    ptr = v.data_ptr()
    return ("pt", ptr, tuple(v.shape), tuple(v.stride()), str(v.dtype)) if ptr and v.numel() \
        else None


def mapping_entries(sd: Mapping, source: str, *, sort: bool) -> list[Entry]:
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
        out.append(torch_entry(key, v, source) if is_torch_tensor(v)
                   else np_entry(key, v, source))
    if sort:
        out.sort(key=lambda e: natural_key(e.key))
    return out


def torch_file_entries(files: list[str], index: str | None) -> list[Entry]:
    if index:
        files = read_index(index)[1]
    out: dict[str, Entry] = {}
    for fpath in files:
        size = os.path.getsize(fpath)
        obj = _torch_load(fpath)
        if not isinstance(obj, Mapping):
            raise ValueError(f"{fpath}: torch.load returned a {type(obj).__name__}, not a "
                             "state_dict")
        for e in mapping_entries(obj, fpath, sort=False):
            if e.key in out:
                raise ValueError(f"{fpath}: tensor {e.key!r} also in {out[e.key].source}")
            e.get = functools.partial(_checked_get, e.get, fpath, size, e.key)
            out[e.key] = e
    return sorted(out.values(), key=lambda e: natural_key(e.key))


def _checked_get(get, path, size, key):
    """The tensor of a ``torch.load(mmap=True)`` file, once the file still has its size."""
    require_size(path, size, f"tensor {key!r} (memory-mapped by torch.load)")
    return get()


def _torch_load(path):
    torch = import_torch()
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as first:  # legacy (non-zip) files cannot be memory-mapped
        try:
            return torch.load(path, map_location="cpu", mmap=False, weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read with torch.load(weights_only=True): "
                             f"{exc or first}") from exc


FORMAT = Format(
    "torch", (".bin", ".pt", ".pth", ".ckpt"), torch_file_entries,
    index=(".bin.index.json", "pytorch_model.bin.index.json"),
    skip_prefixes=("training_args", "optimizer", "scheduler", "rng_state", "trainer_state"),
    looks_for="pytorch_model*.bin / *.pt / *.pth",
)
