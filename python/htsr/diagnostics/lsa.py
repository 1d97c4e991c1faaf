"""Number of LSA components from the power-law tail of a document-term matrix.

HT-SR reading (Martin & Mahoney, "Implicit self-regularization in deep neural networks",
JMLR 22(165), 2021, and "Heavy-tailed universality predicts trends in test accuracies",
arXiv:1901.08278): in the empirical spectral density of X = W^T W, the power-law tail
(eigenvalues >= xmin of the Clauset-Shalizi-Newman fit) holds the correlations, the bulk below
is noise (Marchenko-Pastur-like). For a TF-IDF matrix W (N docs x M terms) the directions of
the tail are the topics worth keeping in LSA; the rule is

    n_components = n_tail = #{lambda_i >= xmin},  xmin from fit_power_law(top k_max values),

with the fit conventions of ``htsr.analyze`` (ks='all_points', WeightWatcher's floor 1e-5,
small_n and every_position) unless ``fit=`` overrides them.

Unreliable (a RuntimeWarning says which) when the fit fails, when the tail does not fit inside
the computed values with a margin (n_tail * (1 + margin) > k_max: raise k_max), or when a tail
value is not converged (its ``.errors`` bound above rtol * value: raise power_iters) -- the
rules of ``k='auto'``. Like ``k='auto'`` it cannot see xmin candidates below the top k_max, so a
better-fitting tail that starts deep in the bulk stays hidden (README "Randomized spectra you
can trust"); when in doubt compare with a larger k_max.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import core as _core
from ..metrics import EVALS_THRESH

_ANALYZE_FIT = dict(ks="all_points", floor=EVALS_THRESH, small_n=True, every_position=True)


def lsa_components(X, *, k_max: int = 256, oversample: int = 10, power_iters: int = 4, seed: int = 0,
                   precision: str = "float64", fit: dict | None = None, margin: float = 0.5,
                   rtol: float = 1e-4):
    """(n_components, fit, spectrum): the number of eigen-directions of X^T X in the power-law
    tail (module docstring) of the top ``k_max`` values of ``htsr.spectrum(X, method='randomized')``
    (dense or scipy.sparse X; ``oversample``, ``power_iters``, ``seed``, ``precision`` are its)."""
    k = min(int(k_max), min(X.shape))
    s = _core.spectrum(X, method="randomized", k=k, oversample=oversample, power_iters=power_iters, seed=seed,
                       precision=precision)
    f = _core.fit_power_law(s.eigenvalues, **{**_ANALYZE_FIT, **(fit or {})})
    ev, err = s.eigenvalues, s.errors
    n = int(f.n_tail) if f.status == "success" else 0
    if n == 0:
        warnings.warn(f"lsa_components: the power-law fit failed on the top {k} values", RuntimeWarning, stacklevel=2)
    elif n * (1.0 + margin) > k and k < min(X.shape):
        warnings.warn(f"lsa_components: the tail ({n} values) does not fit in k_max = {k} with margin {margin}; "
                      "raise k_max", RuntimeWarning, stacklevel=2)
    elif np.any(err[-n:] > rtol * ev[-n:]):
        warnings.warn(f"lsa_components: tail values not converged to rtol = {rtol}; raise power_iters",
                      RuntimeWarning, stacklevel=2)
    return n, f, s
