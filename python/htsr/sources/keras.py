"""Keras: ``.keras`` files (a zip holding ``config.json`` and ``model.weights.h5``), Keras 3
``.weights.h5`` files, legacy full-model ``.h5`` files (``model_weights/<layer>/<layer>/kernel``),
read through ``h5py`` (datasets are read by ``load()``, one at a time), and live Keras models
(Keras 3 with any backend, tf.keras) by duck typing: ``model.layers``, ``layer.weights`` --
TensorFlow is never imported.

Kernels: Dense ``[in, out]``, Conv1D ``[k, in, out]``, Conv2D ``[kh, kw, in, out]``,
Embedding ``[vocab, d]``; they are presented in PyTorch's layout (``[out, in]``,
``[out, in, k]``, ``[out, in, kh, kw]``), so Conv2D is sliced per kernel position as
everywhere in htsr.  The layer type comes from the layer class (``config.json`` /
``model_config``; a ``.weights.h5`` file's group names are Keras's snake-cased class names);
norms, biases and other variables are skipped.  Names are the Keras layer names, nested
models joined with ``.``.
"""
from __future__ import annotations

import functools
import json
import os
import re

import numpy as np

from .base import Entry, Format
from .files import open_zip
from .naming import natural_key

_TYPES = (("embedding", "embedding"), ("conv", "conv"), ("dense", "dense"))


def _snake(cls: str) -> str:
    """Keras's ``to_snake_case`` of a class name (the default layer / weights-group name)."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _ltype(cls_or_group: str, nd: int) -> str | None:
    low = cls_or_group.lower()
    if "normalization" in low:
        return None
    for key, t in _TYPES:
        if key in low:
            if t == "conv":
                return {3: "conv1d", 4: "conv2d"}.get(nd)
            return t if nd == 2 else None
    return None


def _torch_layout(a: np.ndarray) -> np.ndarray:
    """Keras kernel -> PyTorch layout (a transposed view)."""
    return np.transpose(a, tuple(range(a.ndim - 1, -1, -1)) if a.ndim == 2 else
                        (a.ndim - 1, a.ndim - 2, *range(a.ndim - 2)))


def _torch_shape(shape) -> tuple:
    s = tuple(int(d) for d in shape)
    return s[::-1] if len(s) == 2 else (s[-1], s[-2], *s[:-2])


def _read(ds) -> np.ndarray:
    try:
        return _torch_layout(np.asarray(ds[()]))
    except Exception as exc:  # noqa: BLE001 -- a damaged HDF5 dataset
        raise ValueError(f"{ds.file.filename}: cannot read dataset {ds.name!r}: {exc}") from None


def _entry(key, shape, dtype, ltype, source, get) -> Entry:
    return Entry(key, _torch_shape(shape), dtype, "float", source, get, ltype=ltype)


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .keras/.h5 files needs h5py "
                          "(pip install 'htsr[keras]')") from None
    return h5py


def _class_names(layers_cfg) -> dict[str, tuple[str, str]]:
    """weights-group name -> (layer name, class) from a config's layer list, in order."""
    out, count = {}, {}
    for lc in layers_cfg or []:
        cls = str(lc.get("class_name", ""))
        name = str((lc.get("config") or {}).get("name", ""))
        snake = _snake(cls)
        i = count.get(snake, 0)
        count[snake] = i + 1
        out[snake if i == 0 else f"{snake}_{i}"] = (name or snake, cls)
    return out


def _v3_entries(group, names: dict, source: str, prefix=()) -> list[Entry]:
    """Keras 3 weights layout: ``layers/<group>/vars/0`` (nested: ``.../layers/...``)."""
    out = []
    for g in group:
        sub = group[g]
        name, cls = names.get(g, (g, g)) if not prefix else (g, g)
        path = (*prefix, name)
        if "vars" in sub and "0" in sub["vars"]:
            ds = sub["vars"]["0"]
            t = _ltype(cls, ds.ndim)
            if t is not None and ds.dtype.kind == "f":
                out.append(_entry(".".join(path) + ".weight", ds.shape, ds.dtype.name, t, source,
                                  functools.partial(_read, ds)))
        if "layers" in sub:
            out += _v3_entries(sub["layers"], {}, source, path)
    return out


def _legacy_entries(f, source: str) -> list[Entry]:
    """Legacy ``.h5``: ``model_weights/<layer>/<layer>/kernel[:0]`` (or ``embeddings``)."""
    cfg = f.attrs.get("model_config")
    classes = {}
    if cfg is not None:
        cfg = json.loads(cfg if isinstance(cfg, str) else cfg.decode("utf-8"))
        classes = {v[0]: v[1] for v in _class_names(cfg.get("config", {}).get("layers")).values()}
    root = f["model_weights"] if "model_weights" in f else f
    out = []

    def visit(path, obj):
        leaf = path.rsplit("/", 1)[-1].split(":")[0]
        if not hasattr(obj, "shape") or leaf not in ("kernel", "embeddings"):
            return
        layer = path.split("/", 1)[0]
        t = _ltype(classes.get(layer, "embedding" if leaf == "embeddings" else layer), obj.ndim)
        if t is None and leaf == "kernel":  # unknown class: the kernel's rank decides
            t = {2: "dense", 3: "conv1d", 4: "conv2d"}.get(obj.ndim)
        if t is not None and obj.dtype.kind == "f":
            out.append(_entry(layer + ".weight", obj.shape, obj.dtype.name, t, source,
                              functools.partial(_read, obj)))

    root.visititems(visit)
    return out


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime: float, size: int) -> list[Entry]:
    h5py = _import_h5py()
    try:
        if path.lower().endswith(".keras"):
            zf = open_zip(path, ".keras")
            cfg = json.loads(zf.read("config.json"))
            f = h5py.File(zf.open("model.weights.h5"), "r")
            return _v3_entries(f["layers"], _class_names(cfg.get("config", {}).get("layers")),
                               path)
        f = h5py.File(path, "r")
        if "layers" in f and "model_weights" not in f:
            return _v3_entries(f["layers"], {}, path)
        return _legacy_entries(f, path)
    except Exception as exc:  # noqa: BLE001 -- zip, JSON, HDF5 and layout errors alike
        raise ValueError(f"{path}: not a readable Keras file: {exc}") from None


def keras_entries(files: list[str], index: str | None = None) -> list[Entry]:
    out = []
    for p in files:
        st = os.stat(p)
        out += _open(os.fspath(p), st.st_mtime, st.st_size)
    return sorted(out, key=lambda e: natural_key(e.key))


def is_keras_model(obj) -> bool:
    """A live Keras model (Keras 3 or tf.keras), recognised without importing either."""
    mod = type(obj).__module__ or ""
    return (mod.startswith(("keras", "tf_keras", "tensorflow")) and hasattr(obj, "layers")
            and hasattr(obj, "get_weights"))


def _variable(v) -> np.ndarray:
    return _torch_layout(np.asarray(v.numpy() if hasattr(v, "numpy") else v))


def live_entries(model, prefix=()) -> list[Entry]:
    """Entries of a live Keras model's kernels (first variable of Dense/Conv/Embedding)."""
    out = []
    for layer in model.layers:
        path = (*prefix, str(layer.name))
        if hasattr(layer, "layers") and layer.layers:
            out += live_entries(layer, path)
            continue
        ws = list(getattr(layer, "weights", []))
        if not ws:
            continue
        v = ws[0]
        shape = tuple(int(d) for d in v.shape)
        t = _ltype(type(layer).__name__, len(shape))
        if t is not None:
            dtype = str(getattr(v, "dtype", "float32")).replace("<dtype: '", "").rstrip("'>")
            out.append(_entry(".".join(path) + ".weight", shape, dtype, t, "<keras>",
                              functools.partial(_variable, v)))
    return out


FORMAT = Format("keras", (".keras", ".h5"), keras_entries, looks_for="*.keras, *.h5")
