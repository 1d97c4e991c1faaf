"""Eigenvector localization of weight matrices (``vectors=True``, ``htsr.vector_metrics``).

One float64 Gram matrix and one symmetric eigensolver call (LAPACK ?syevd with vectors,
``cpp/src/vectors.cpp``) per matrix give the eigenvalues lambda_j of X over the smaller side
and the singular vectors on that side; those on the other side are W v_j / sqrt(lambda_j).
Per unit vector v of dimension d:

* ``localization_ratio`` = ||v||_1 / ||v||_inf (WeightWatcher; 1 = one entry, up to sqrt(d)-ish
  for a delocalized vector: E ~ sqrt(2d/pi) for a random one);
* ``participation_ratio`` = ||v||_2 / ||v||_4 (WeightWatcher; (1/sum v^4)^(1/4), d^(1/4) for a
  flat vector, 1 for a basis vector);
* ``entropy`` = -sum v_i^2 ln v_i^2 / ln d (Shannon entropy of the weights v_i^2, normalised:
  1 = flat, 0 = one entry);
* ``discrete_entropy``: WeightWatcher's ``RMT_Util.discrete_entropy`` (100-bin histogram of
  |v| - mean|v|), for parity.

The table of all directions, ascending in lambda, is the localization profile along the
spectrum.  Layer columns (WeightWatcher's ``apply_analyze_eigenvectors``):
``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}`` over the vectors of X split into
the tail (the ``num_pl_spikes`` largest eigenvalues, those >= the fitted xmin) and the bulk.
WeightWatcher compares its unscaled ``eig`` eigenvalues with the scaled xmin (§6.19), so a conv
layer is split at the wrong place and the eigenvalue equal to xmin falls on either side by
rounding; splitting by rank is exact.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["eigensystems", "vector_table", "vector_metrics", "layer_vector_columns"]

_EPSILON = 1e-10   # RMT_Util.EPSILON on CPU


def eigensystems(mats, threads: int = 0):
    """[(values ascending, vectors (M x M, column j for values[j]), right)] per matrix."""
    from .. import _core as _native
    from ..core import _matrix

    pairs = [_matrix(W, None, what=f"matrix {i}") for i, W in enumerate(mats)]
    return _native.gram_eigensystem_batch([a for a, _ in pairs], [d for _, d in pairs], int(threads))


def discrete_entropy(V: np.ndarray, num_bins: int = 100) -> np.ndarray:
    """WeightWatcher's discrete_entropy of every column of V."""
    out = np.empty(V.shape[1])
    for j in range(V.shape[1]):
        v = np.abs(V[:, j])
        v = v - v.mean()
        h = np.histogram(v, density=True, bins=num_bins)[0]
        p = (h + _EPSILON) / math.sqrt(2 * math.pi)
        p = p / p.sum()
        out[j] = -np.sum(p * np.log(p))
    return out


def _metrics(V: np.ndarray, prefix: str) -> dict:
    a = np.abs(V)
    d = V.shape[0]
    sq = a * a
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(sq > 0, sq * np.log(sq), 0.0), axis=0) / math.log(d) if d > 1 else np.zeros(V.shape[1])
        return {prefix + "localization_ratio": a.sum(axis=0) / a.max(axis=0),
                prefix + "participation_ratio": np.sqrt(sq.sum(axis=0)) / np.sum(sq * sq, axis=0) ** 0.25,
                prefix + "entropy": ent}


def vector_table(W, values, V, right: bool):
    """Per-direction metrics of the singular vectors of W from its Gram eigensystem."""
    import pandas as pd

    W = np.asarray(W, dtype=np.float64)
    A = W if right else W.T                 # A @ v gives the other side's vectors
    with np.errstate(divide="ignore", invalid="ignore"):
        sv = np.sqrt(np.maximum(values, 0.0))
        U = (A @ V) / np.where(sv > 0, sv, np.nan)
    own, other = ("right_", "left_") if right else ("left_", "right_")
    cols = {"index": np.arange(values.size), "eigenvalue": values}
    cols.update(_metrics(V, own))
    cols.update(_metrics(U, other))
    return pd.DataFrame(cols)


def vector_metrics(W, *, threads: int = 1):
    """Localization profile of one matrix: a DataFrame with one row per eigen-direction of
    X = W^T W (ascending eigenvalue): ``eigenvalue`` and ``{right,left}_{localization_ratio,
    participation_ratio,entropy}`` (see the module docstring)."""
    values, V, right = eigensystems([W], threads)[0]
    return vector_table(W, np.asarray(values), np.asarray(V), right)


def layer_vector_columns(systems, n_tail: int) -> dict:
    """WeightWatcher's 12 bulk/tail columns from the eigensystems of a layer's slices; the tail
    is the ``n_tail`` (= num_pl_spikes) directions of largest eigenvalue."""
    evals = np.concatenate([np.asarray(s[0]) for s in systems])
    Vs = [np.asarray(s[1]) for s in systems]
    ent = np.concatenate([discrete_entropy(V) for V in Vs])
    loc = np.concatenate([np.abs(V).sum(0) / np.abs(V).max(0) for V in Vs])
    part = np.concatenate([np.sqrt((V * V).sum(0)) / ((V ** 4).sum(0)) ** 0.25 for V in Vs])
    out = {}
    if not n_tail:
        return out
    order = np.argsort(evals, kind="stable")
    tail = np.arange(evals.size) >= evals.size - int(n_tail)
    bulk = ~tail
    for name, arr in (("vec_entropy", ent), ("loc_ratio", loc), ("part_ratio", part)):
        data = arr[order]
        for where, mask in (("bulk", bulk), ("tail", tail)):
            sel = data[mask]
            out[f"{where}_mean_{name}"] = float(np.mean(sel)) if sel.size else float("nan")
            out[f"{where}_var_{name}"] = float(np.var(sel)) if sel.size else float("nan")
    return out
