"""Format registry and :func:`iter_layers`: a path is read by the first registered format that
claims it (a new format = one module defining ``FORMAT`` + one line in ``FORMATS``)."""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator, Mapping

from . import numpy as _numpy, safetensors as _safetensors, torch as _torch
from .base import Entry, Format, LayerSpec
from .files import read_json
from .naming import Config, load_config, natural_key
from .specs import Maker
from .torch import mapping_entries, module_specs

FORMATS: tuple[Format, ...] = (
    _safetensors.FORMAT,
    _torch.FORMAT,
    _numpy.FORMAT,
)


def _pick_index(full: dict, fmt: Format) -> str | None:
    if fmt.index is None:
        return None
    suffix, preferred = fmt.index
    if preferred in full:
        return full[preferred]
    cands = [p for n, p in full.items() if n.endswith(suffix)]
    return cands[0] if len(cands) == 1 else None


def _dir_entries(d: str) -> list[Entry]:
    names = sorted(os.listdir(d), key=natural_key)
    full = {n: os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))}
    for fmt in FORMATS:
        idx = _pick_index(full, fmt)
        files = [p for n, p in full.items() if n.lower().endswith(fmt.suffixes)
                 and not n.lower().startswith(fmt.skip_prefixes)]
        if idx or files:
            return fmt.read(files, idx)
    looked = ", ".join(f.looks_for for f in FORMATS)
    raise ValueError(f"{d}: no weight files in this directory (looked for {looked})")


def _path_entries(p: str) -> list[Entry]:
    if os.path.isdir(p):
        return _dir_entries(p)
    low = p.lower()
    for fmt in FORMATS:
        if fmt.index is not None and low.endswith(fmt.index[0]):
            return fmt.read([], p)
        if low.endswith(fmt.suffixes):
            return fmt.read([p], None)
    expected = ", ".join("/".join(f.suffixes) for f in FORMATS)
    raise ValueError(f"{p}: unsupported weight file type (expected {expected} or a directory "
                     "of them)")


def _path_config(p: str) -> dict:
    d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
    c = os.path.join(d, "config.json")
    return read_json(c, "config") if os.path.isfile(c) else {}


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
        maker = Maker(Config(cfg), split_fused, conv2d_slices)
        return module_specs(model_or_path, maker)
    if isinstance(model_or_path, (str, os.PathLike)):
        p = os.fspath(model_or_path)
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, f"no such file or directory: {p}", p)
        entries = _path_entries(p)
        cfg = load_config(config) if config is not None else _path_config(p)
    elif isinstance(model_or_path, Mapping):
        entries = mapping_entries(model_or_path, "<state_dict>", sort=False)
        cfg = load_config(config)
    else:
        raise TypeError("iter_layers: expected a torch.nn.Module, a state_dict mapping or a "
                        f"path, got {type(model_or_path).__name__}")
    lookup = {e.key: e for e in entries}
    maker = Maker(Config(cfg), split_fused, conv2d_slices, lookup)
    return _entry_specs(entries, maker)


def _entry_specs(entries, maker) -> Iterator[LayerSpec]:
    for e in entries:
        yield from maker.specs(e)
