"""WeightWatcher 0.7.7's layer ids (its framework counters), for the ``WeightWatcher`` facade.

WeightWatcher numbers the *framework layers* it iterates, analysable or not
(``weightwatcher.py``: ``PyTorchLayer`` / ``PyStateDictLayer`` / ``PyStateDictDir``
``.get_layer_iterator`` and ``ModelIterator.__init__``; ../shared/reference/weightwatcher.md
§1.10.1):

* ``torch.nn.Module``: the index in ``model.named_modules()`` (the root and every container
  count), from ``start_ids`` (default 0).  VGG-11: features.0 = 2, classifier.6 = 31;
  ResNet-18: conv1 = 1, fc = 67.
* in-memory state_dict: every key ending in ``.weight`` in dict order (1-D norm weights take an
  id too), from ``start_ids`` or, when it is 0, from 1.
* a directory (``PyStateDictDir``, ``start_ids`` default 0): ``model*.safetensors`` with a
  ``model*.safetensors.index.json`` -> the index's keys grouped by shard file (shards sorted
  by name, keys in index order), one counter; without an index -> per shard (sorted), keys
  sorted, and the start of shard k is the previous start plus the number of ``.weight`` keys
  seen so far (WeightWatcher's running sum: ids skip ahead from the third shard on);
  ``pytorch_model*.bin`` -> per file (sorted), keys in ``torch.load`` order, same running sum.

htsr accepts inputs WeightWatcher does not: a single ``.safetensors`` / ``.bin`` file is
numbered as a directory holding only it; other sources (``.npz``, ``.npy``, a directory
WeightWatcher cannot read) keep htsr's ids plus ``start_ids``.  A matrix that is not a
``.weight`` WeightWatcher reads (``in_proj_weight``, a key without ``.weight``) has no
WeightWatcher id (``None``): the facade leaves it out, as WeightWatcher does.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Callable, Mapping

__all__ = ["framework_ids"]

_WEIGHT = ".weight"


def _spec_name(meta: dict) -> str:
    """The tensor name of a plan row (``name[part]`` -> ``name``)."""
    name, part = meta["name"], meta.get("part")
    suffix = f"[{part}]"
    return name[: -len(suffix)] if part and name.endswith(suffix) else name


def _module_ids(model, start: int) -> dict[str, int]:
    """named_modules() index of every module with a ``weight`` parameter, by module path
    (htsr's name for ``path.weight``)."""
    out: dict[str, int] = {}
    for i, (path, mod) in enumerate(model.named_modules()):
        if "weight" in dict(mod.named_parameters(recurse=False)):
            out.setdefault(path if path else "weight", start + i)
    return out


def _count_weights(keys, start: int, out: dict[str, int]) -> int:
    """WeightWatcher's PyStateDictLayer counter: ids over the ``.weight`` keys -> how many."""
    n = 0
    for k in keys:
        if k.endswith(_WEIGHT):
            out.setdefault(k[: -len(_WEIGHT)], start + n)
            n += 1
    return n


def _safetensors_keys(path: str) -> list[str]:
    from .sources import SafetensorsFile
    return sorted(SafetensorsFile(path).keys())      # safe_open().keys() is sorted


def _torch_keys(path: str) -> list[str]:
    import torch
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return [str(k) for k in sd.keys()] if isinstance(sd, Mapping) else []


def _running_sum(files, keys_of, start: int) -> dict[str, int]:
    """PyStateDictDir's per-file loop: ``current += yielded`` before every file, where
    ``yielded`` is the running total (so file 3 starts at 2*n1 + n2, not n1 + n2)."""
    out: dict[str, int] = {}
    yielded, current = 0, start
    for f in files:
        current += yielded
        yielded += _count_weights(keys_of(f), current, out)
    return out


def _index_keys(index: str) -> list[str]:
    with open(index, encoding="utf-8") as fh:
        wm = json.load(fh)["weight_map"]
    files = sorted(set(wm.values()))                 # np.unique: sorted shard names
    return [k for f in files for k, v in wm.items() if v == f]


def _dir_ids(d: str, start: int) -> dict[str, int] | None:
    st = sorted(glob.glob(os.path.join(glob.escape(d), "model*safetensors"))) or \
        sorted(glob.glob(os.path.join(glob.escape(d), "adapter_model*safetensors")))
    if st:
        idx = glob.glob(os.path.join(glob.escape(d), "model*.safetensors.index.json"))
        if len(idx) == 1:
            out: dict[str, int] = {}
            _count_weights(_index_keys(idx[0]), start, out)
            return out
        return _running_sum(st, _safetensors_keys, start)
    if glob.glob(os.path.join(glob.escape(d), "pytorch_model*bin")) or \
            glob.glob(os.path.join(glob.escape(d), "adapter_model*bin")):
        return _running_sum(sorted(glob.glob(os.path.join(glob.escape(d), "*model*bin"))),
                            _torch_keys, start)
    return None


def _file_ids(p: str, start: int) -> dict[str, int] | None:
    low = p.lower()
    if low.endswith(".safetensors"):
        return _running_sum([p], _safetensors_keys, start)
    if low.endswith((".bin", ".pt", ".pth", ".ckpt")):
        return _running_sum([p], _torch_keys, start)
    return None


def framework_ids(model, start_ids: int = 0) -> Callable[[dict], int | None] | None:
    """``ids(meta) -> WeightWatcher layer id or None`` for the plan rows of ``model``
    (``meta``: ``htsr.analysis`` plan metadata, ``name`` and ``part``), or None when
    WeightWatcher has no numbering for this kind of source (the facade then uses htsr's ids
    plus ``start_ids``)."""
    start = int(start_ids or 0)
    torch = sys.modules.get("torch")
    table: dict[str, int] | None
    if torch is not None and isinstance(model, torch.nn.Module):
        table = _module_ids(model, start)
    elif isinstance(model, Mapping):
        from .sources.torch import unwrap_state_dict
        table = {}
        _count_weights([str(k) for k in unwrap_state_dict(model).keys()], start or 1, table)
    elif isinstance(model, (str, os.PathLike)):
        p = os.fspath(model)
        table = _dir_ids(p, start) if os.path.isdir(p) else _file_ids(p, start)
    else:
        table = None
    if table is None:
        return None
    return lambda meta: table.get(_spec_name(meta))
