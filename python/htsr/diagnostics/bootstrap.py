"""Clauset-Shalizi-Newman bootstrap goodness-of-fit p-value of the power-law fit (native,
``cpp/src/bootstrap.cpp``): ``reps`` semi-parametric synthetic data sets, each refitted with the
same scan, p = #{D_b >= D_obs} / #valid.  Replicate b draws from its own stream seeded by
(seed, b), so the p-value is identical for any thread count.  Reject the power law when
p <= 0.1 (CSN 2009); reps = 1000 gives p to about +-0.015 (CSN: reps = 1/(4 eps^2))."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["bootstrap_pvalue"]


def bootstrap_pvalue(x, *, reps: int = 1000, seed: int = 0, ks: str = "all_points",
                     xmin_range=None, xmax: float | None = None, min_tail: int = 2,
                     floor: float | None = None, small_n: bool = False, every_position: bool = False,
                     fixed_xmin: bool = False, threads: int = 0) -> dict:
    """{'p', 'reps', 'valid', 'Ds', 'fit'} for the sample ``x`` (fit options as
    ``htsr.fit_power_law``; ``fixed_xmin``: refit alpha only, at the observed xmin)."""
    from .. import _core as _native
    from ..core import _sample

    if int(reps) < 1:
        raise ValueError(f"reps must be >= 1, got {reps!r}")
    lo, hi = (-math.inf, math.inf) if xmin_range is None else map(float, xmin_range)
    nan = math.nan
    return dict(_native.bootstrap_power_law(
        _sample(x), ks, lo, hi, nan if xmax is None else float(xmax), int(min_tail),
        nan if floor is None else float(floor), bool(small_n), bool(every_position), int(reps),
        int(seed), bool(fixed_xmin), int(threads)))
