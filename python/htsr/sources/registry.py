"""Format registry and :func:`iter_layers`: a path is read by the first registered format that
claims it (a new format = one module defining ``FORMAT`` + one line in ``FORMATS``)."""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator, Mapping

from . import gguf as _gguf, keras as _keras, numpy as _numpy, onnx as _onnx, peft as _peft
from . import hub, safetensors as _safetensors, torch as _torch
from .base import Entry, Format, LayerSpec
from .files import checkpoint_root, inside, read_json
from .naming import Config, load_config, natural_key
from .specs import Maker
from .torch import mapping_entries, module_specs

FORMATS: tuple[Format, ...] = (
    _peft.FORMAT,  # before safetensors: an adapter folder holds adapter_model.safetensors
    _safetensors.FORMAT,
    _torch.FORMAT,
    _numpy.FORMAT,
    _gguf.FORMAT,
    _onnx.FORMAT,
    _keras.FORMAT,
)


def _pick_index(full: dict, fmt: Format) -> str | None:
    if fmt.index is None:
        return None
    suffix, preferred = fmt.index
    if preferred in full:
        return full[preferred]
    cands = [p for n, p in full.items() if n.endswith(suffix)]
    return cands[0] if len(cands) == 1 else None


def _dir_files(d: str) -> tuple[Format, list[str], str | None]:
    names = sorted(os.listdir(d), key=natural_key)
    full = {n: os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))}
    root = checkpoint_root(d)
    for fmt in FORMATS:
        idx = _pick_index(full, fmt)
        files = [p for n, p in full.items() if n.lower().endswith(fmt.suffixes)
                 and not n.lower().startswith(fmt.skip_prefixes)]
        if idx or files:
            for p in files + [idx] * bool(idx):
                inside(p, root, f"{p}: this file (a symlink?)")
            return fmt, files, idx
    looked = ", ".join(f.looks_for for f in FORMATS)
    raise ValueError(f"{d}: no weight files in this directory (looked for {looked})")


def _path_files(p: str) -> tuple[Format, list[str], str | None]:
    """The format reading path ``p``, its weight files and index file."""
    if os.path.isdir(p):
        return _dir_files(p)
    low = p.lower()
    for fmt in FORMATS:
        if fmt.index is not None and low.endswith(fmt.index[0]):
            return fmt, [], p
        if low.endswith(fmt.suffixes):
            return fmt, [p], None
    expected = ", ".join("/".join(f.suffixes) for f in FORMATS)
    raise ValueError(f"{p}: unsupported weight file type (expected {expected} or a directory "
                     "of them)")


def _local(p: str) -> str:
    """``p`` if it exists, else the cached snapshot of the Hugging Face model id ``p``."""
    if os.path.exists(p):
        return p
    if hub.looks_like_id(p):
        return hub.resolve(p)
    raise FileNotFoundError(errno.ENOENT, f"no such file or directory: {p}", p)


def path_entries(p: str) -> list[Entry]:
    """The stored tensors of the checkpoint at path ``p`` (a file or a folder)."""
    fmt, files, index = _path_files(p)
    return fmt.read(files, index)


def _config(config, p: str | None, stored: dict | None = None) -> Config:
    """The model config: ``config`` if given, else the one ``stored`` in the weight files, else
    ``config.json`` beside the weights at ``p``."""
    if config is None and stored:
        return Config(stored, f"{p} (metadata)")
    if config is None and p is not None:
        d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
        c = os.path.join(d, "config.json")
        return Config(read_json(c, "config") if os.path.isfile(c) else {}, c)
    if isinstance(config, (str, os.PathLike)):
        c = os.fspath(config)
        return Config(load_config(c), os.path.join(c, "config.json") if os.path.isdir(c) else c)
    return Config(load_config(config))


def iter_layers(model_or_path, *, split_fused: bool = True, conv2d_slices: bool = True,
                config=None, peft_base=None) -> Iterator[LayerSpec]:
    """Yield a :class:`LayerSpec` for every analysable weight matrix, in model order.

    ``model_or_path``: a ``torch.nn.Module``, a live Keras model, a state_dict ``Mapping``
    (torch tensors or numpy arrays), a path to a file or folder of a registered format
    (``FORMATS``: safetensors, PyTorch, NumPy, GGUF, ONNX, Keras, PEFT adapter folder), or a
    Hugging Face model id (``org/name[@revision]``) already in the local cache
    (``htsr.sources.hub``).  ``split_fused``: split fused q/k/v and gate/up tensors into parts.
    ``conv2d_slices``: Conv2D as ``kh*kw`` slices (True) or one ``(out, in*kh*kw)`` matrix.
    ``config``: model config (dict, transformers config, or path) for fused-tensor sizes and
    FP8 block sizes; default: the one stored in the files (GGUF metadata), else
    ``config.json`` next to the weights, else a live model's ``.config``.
    ``peft_base``: for a PEFT adapter, the base checkpoint: ``W_base + dW`` is analysed instead
    of the low-rank ``dW`` (``htsr.sources.peft``).

    Headers, indexes and configs are read and validated here, at call time (a ValueError names
    the offending file and tensor); tensor data is read only by ``LayerSpec.load()``.
    """
    torch = sys.modules.get("torch")
    is_path = isinstance(model_or_path, (str, os.PathLike))
    fmt = None
    if peft_base is not None and not is_path:
        raise ValueError("peft_base needs the path of a PEFT adapter folder")
    if _keras.is_keras_model(model_or_path):  # before torch: Keras-on-torch layers are Modules
        entries = _keras.live_entries(model_or_path)
        cfg = _config(config, None)
    elif torch is not None and isinstance(model_or_path, torch.nn.Module):
        cfg = _config(config if config is not None else getattr(model_or_path, "config", None),
                      None)
        return module_specs(model_or_path, Maker(cfg, split_fused, conv2d_slices))
    elif is_path:
        p = _local(os.fspath(model_or_path))
        base = _local(os.fspath(peft_base)) if peft_base is not None else None
        fmt, files, index = _path_files(p)
        if peft_base is not None and fmt.name != "peft":
            raise ValueError(f"{p}: peft_base is given but this is not a PEFT adapter folder")
        entries = fmt.read(files, index)
        stored = fmt.config(files, index) if fmt.config and config is None else None
        cfg = _config(config, base or p, stored)
    elif isinstance(model_or_path, Mapping):
        entries = mapping_entries(model_or_path, "<state_dict>", sort=False)
        cfg = _config(config, None)
    else:
        raise TypeError("iter_layers: expected a torch.nn.Module, a Keras model, a state_dict "
                        f"mapping or a path, got {type(model_or_path).__name__}")
    maker = Maker(cfg, split_fused, conv2d_slices, {e.key: e for e in entries})
    if fmt is not None and fmt.specs is not None:
        extra = {} if peft_base is None else {"base": base}
        return fmt.specs(entries, maker, **extra)
    return _entry_specs(entries, maker)


def _entry_specs(entries, maker) -> Iterator[LayerSpec]:
    for e in entries:
        yield from maker.specs(e)
