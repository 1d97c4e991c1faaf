"""Model pairs: per-layer distances (``htsr.distances``) and ``base_model`` deltas.

``distances(a, b, method)`` walks the matrices of both models (any source ``htsr.analyze``
reads) and pairs them **by name** (WeightWatcher 0.7.7 zips the two layer lists, so one extra
layer shifts every pair).  Per pair (WeightWatcher's ``matrix_distance``):

* ``'raw'``: ||W_a - W_b||_F over the whole tensor (all slices of a conv);
* ``'euclidean'``: the mean over the slices of ||W_a,s - W_b,s||_F;
* ``'cka'`` (uncentred): the mean over slices of ||W_a^T W_b||_F / sqrt(||W_a^T W_a||_F ||W_b W_b^T||_F).

Returns ``(avg_dW, avg_db, df)`` like WeightWatcher; htsr does not read biases, so ``delta_b``
is 0 and ``b_shape`` 'unknown' (WeightWatcher's values for a layer without a bias).

``base_model=``: every matrix W of the model is replaced by W - W_base of the base matrix of
the same name (a transposed base is transposed; another shape is a ValueError naming the
layer -- WeightWatcher logs a warning and analyses a zero matrix); a layer without a base
counterpart is analysed as is (as WeightWatcher).  The base is read lazily, one matrix at a time.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

__all__ = ["distances", "DISTANCE_METHODS", "base_index", "delta_spec"]

logger = logging.getLogger("htsr")
DISTANCE_METHODS = ("raw", "euclidean", "cka")


def _specs(model, split_fused: bool):
    from ..analysis import _row_name
    from ..sources import iter_layers

    return {_row_name(s): s for s in iter_layers(model, split_fused=split_fused, conv2d_slices=True)}


def _load(spec):
    mats = spec.load()
    return [np.asarray(m, dtype=np.float64) for m in (mats if isinstance(mats, (list, tuple)) else [mats])]


def _cka(A, B) -> float:
    num = np.linalg.norm(A.T @ B)
    norm = np.sqrt(np.linalg.norm(A.T @ A) * np.linalg.norm(B @ B.T))
    return float(num / (norm + 1e-6 if norm < 1e-6 else norm))


def distances(a, b, method: str = "raw", *, layers=(), split_fused: bool = False, _select=None):
    """Per-layer distances between two models with matching matrix names (see module doc).
    ``layers``: ids (``analyze``'s ids of ``a``) and/or exact names to keep; ``_select``: a
    metadata filter (the facade's, which also sets WeightWatcher's ids)."""
    import pandas as pd

    from ..analysis import _plan
    from ..options import AnalysisOptions

    method = str(method).lower()
    if method not in DISTANCE_METHODS:
        raise ValueError(f"method must be one of {DISTANCE_METHODS}, got {method!r}")
    sb = _specs(b, split_fused)
    rows = []
    for item in _plan(a, AnalysisOptions(layers=layers, split_fused=split_fused), select=_select):
        name, spec = item.name, item.spec
        other = sb.get(name)
        if other is None:
            continue
        A, B = _load(spec), _load(other)
        if [m.shape for m in A] != [m.shape for m in B]:
            raise ValueError(f"layer '{name}': shapes differ ({[m.shape for m in A]} vs {[m.shape for m in B]})")
        if method == "raw":
            d = float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(A, B))))
        elif method == "euclidean":
            d = float(np.mean([np.linalg.norm(x - y) for x, y in zip(A, B)]))
        else:
            d = float(np.mean([_cka(x, y) for x, y in zip(A, B)]))
        rows.append(dict(layer_id=item.layer_id, method=method, name=name, delta_W=d, delta_b=0.0,
                         M=int(spec.M), N=int(spec.N), b_shape="unknown", longname=name))
    df = pd.DataFrame(rows, columns=["layer_id", "method", "name", "delta_W", "delta_b", "M", "N",
                                     "b_shape", "longname"]).set_index("layer_id")
    avg = float(np.mean(df["delta_W"])) if len(df) else float("nan")
    return avg, (0.0 if len(df) else float("nan")), df


def base_index(base_model, split_fused: bool) -> dict:
    """name -> LayerSpec of the base model (metadata only)."""
    return _specs(base_model, split_fused)


def delta_spec(spec, name: str, base: dict):
    """``spec`` whose load() returns W - W_base (or ``spec`` itself without a base match)."""
    other = base.get(name)
    if other is None:
        logger.warning("base_model has no layer %r: analysed as is", name)
        return spec

    def load():
        A = spec.load()
        A = list(A) if isinstance(A, (list, tuple)) else [A]
        B = other.load()
        B = list(B) if isinstance(B, (list, tuple)) else [B]
        if len(A) != len(B):
            raise ValueError(f"base_model layer {name!r} has {len(B)} slices, the model {len(A)}")
        out = []
        for x, y in zip(A, B):
            x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
            if y.shape != x.shape and y.T.shape == x.shape:
                y = y.T
            if y.shape != x.shape:
                raise ValueError(f"base_model layer {name!r} has shape {y.shape}, the model {x.shape}")
            out.append(np.ascontiguousarray(x - y))
        return out

    return dataclasses.replace(spec, load=load, load_raw=None,
                               nbytes=int(getattr(spec, "nbytes", 0) or 0) * 2)
