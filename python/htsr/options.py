"""``AnalysisOptions``: every option of ``htsr.analyze`` in one frozen, validated object.

The same object is built by ``analyze``'s keywords, the CLI, the ``WeightWatcher`` facade, and
is carried by resumable result files and cluster tasks.  Its :meth:`fingerprint` identifies the
options that change a row's values, so results of runs made with different options are never
mixed; selection (which layers) and execution (threads, read-ahead, progress) are left out.

Fields come in three groups (``SELECTION``, ``NUMERIC``, ``EXECUTION``); a new option is one
field plus its name in one group.  ``AnalysisOptions.build(options, **overrides)`` is the one
entry point: unknown names are a ``TypeError`` naming them, bad values a ``ValueError``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .metrics import WEAK_RANK_LOSS_TOLERANCE

__all__ = ["AnalysisOptions", "LAYER_TYPES"]

LAYER_TYPES = ("dense", "conv1d", "conv2d", "embedding")
FINGERPRINT_VERSION = 1
_FIT_ALIASES = {"power_law": "PL", "truncated_power_law": "TPL"}             # bump when a fingerprinted option changes meaning


def _tuple(x) -> tuple:
    if x is None:
        return ()
    if isinstance(x, (str, bytes, int, re.Pattern)) or not hasattr(x, "__iter__"):
        return (x,)
    return tuple(x)


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of one analysis (see ``htsr.analyze`` for each meaning)."""

    # -- selection: which matrices (never changes a row's values)
    layers: tuple = ()
    min_evals: int = 8
    max_evals: int | None = None
    max_N: int | None = None
    layer_types: tuple = ()
    names: tuple = ()
    exclude: tuple = ()
    # -- numerics: change the values of a row (fingerprinted)
    pool: bool = True
    split_fused: bool = True
    normalize: bool = False
    precision: str = "float64"
    method: str = "gram"
    ks: str = "all_points"
    conv2d_norm: bool = True
    ww_parity: bool = True
    tolerance: float = WEAK_RANK_LOSS_TOLERANCE
    k: int | None = None
    oversample: int = 10
    power_iters: int = 4
    seed: int = 0
    # diagnostics (htsr.diagnostics); seed also drives the shuffles and the bootstrap
    mp_fit: bool = False
    mp_method: str = "median"
    mp_tw_level: float = 0.99
    randomize: bool = False
    fit: str = "PL"
    tail_models: bool = False
    bootstrap: int = 0
    fix_fingers: str | None = None
    max_fingers: int = 10
    finger_thresh: float = 1.0
    xmin_max: float | None = None
    xmax: Any = None
    detX: bool = False
    vectors: bool = False
    base_model: Any = None
    # -- execution: how fast, not what (not fingerprinted)
    threads: int = 0
    prefetch: int = 64
    device: str | None = None   # torch device for the exact spectra (htsr.backends.torch)
    progress: Any = field(default=None, compare=False)
    errors: str = "raise"
    out: Any = None
    resume: bool = False
    executor: Any = field(default=None, compare=False)

    SELECTION = ("layers", "min_evals", "max_evals", "max_N", "layer_types", "names", "exclude")
    NUMERIC = ("pool", "split_fused", "normalize", "precision", "method", "ks", "conv2d_norm",
               "ww_parity", "tolerance", "k", "oversample", "power_iters", "seed",
               "mp_fit", "mp_method", "mp_tw_level", "randomize", "fit", "tail_models", "bootstrap",
               "fix_fingers", "max_fingers", "finger_thresh", "xmin_max", "xmax", "detX", "vectors",
               "base_model")
    DIAGNOSTICS = NUMERIC[NUMERIC.index("mp_fit"):]   # left out of the fingerprint at their defaults
    EXECUTION = ("threads", "prefetch", "device", "progress", "errors", "out", "resume", "executor")

    def __post_init__(self):
        fit = _FIT_ALIASES.get(self.fit, self.fit) if isinstance(self.fit, str) else self.fit
        object.__setattr__(self, "fit", fit)
        if self.fix_fingers is False:
            object.__setattr__(self, "fix_fingers", None)
        for name in ("layers", "layer_types", "names", "exclude"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        object.__setattr__(self, "layer_types",
                           tuple(str(t).lower() for t in self.layer_types))
        self._validate()

    def _validate(self):
        bad = set(self.layer_types) - set(LAYER_TYPES)
        if bad:
            raise ValueError(f"unknown layer type(s) {sorted(bad)}; expected one of {list(LAYER_TYPES)}")
        for x in self.layers:
            if isinstance(x, bool) or not isinstance(x, (int, str)) and not hasattr(x, "__index__"):
                raise TypeError(f"layers: expected ints (layer ids) or strings (names), got {x!r}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {self.precision!r}")
        if self.method not in ("gram", "svd", "randomized"):
            raise ValueError(f"method must be 'gram', 'svd' or 'randomized', got {self.method!r}")
        if self.method == "randomized" and not self.k:
            raise ValueError("method='randomized' needs k (the number of top eigenvalues)")
        if self.errors not in ("raise", "row"):
            raise ValueError(f"errors must be 'raise' or 'row', got {self.errors!r}")
        if self.resume and self.out is None:
            raise ValueError("resume=True needs out= (the results file to resume)")
        if self.executor is not None and not callable(getattr(self.executor, "submit", None)):
            raise TypeError(f"executor must be a concurrent.futures.Executor (with .submit), "
                            f"got {type(self.executor).__name__}")
        if self.device is not None and (not isinstance(self.device, str)
                                        or self.device.split(":")[0] not in ("cpu", "cuda", "mps")):
            raise ValueError(f"device must be None, 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}")
        if self.device is not None and self.method == "randomized":
            raise ValueError("device=... runs the exact methods (gram, svd); the randomized one is native only")
        if self.ks not in ("all_points", "distinct"):
            raise ValueError(f"ks must be 'all_points' or 'distinct', got {self.ks!r}")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance)
                and self.tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {self.tolerance!r}")
        for name in ("min_evals", "threads", "prefetch", "oversample", "power_iters", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("max_evals", "max_N", "k"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        self._validate_diagnostics()

    def _validate_diagnostics(self):
        from .diagnostics.mp import MP_METHODS, TW_QUANTILES

        if self.mp_method not in MP_METHODS:
            raise ValueError(f"mp_method must be one of {MP_METHODS}, got {self.mp_method!r}")
        if self.mp_tw_level not in TW_QUANTILES:
            raise ValueError(f"mp_tw_level must be one of {sorted(TW_QUANTILES)}, got {self.mp_tw_level!r}")
        if self.fit not in ("PL", "TPL", "E_TPL"):
            raise ValueError(f"fit must be 'PL', 'TPL' or 'E_TPL' (or 'power_law', "
                             f"'truncated_power_law'), got {self.fit!r}")
        if self.fix_fingers not in (None, "clip_xmax", "xmin_peak"):
            raise ValueError(f"fix_fingers must be None, 'clip_xmax' or 'xmin_peak', got {self.fix_fingers!r}")
        if self.fit == "E_TPL" and self.fix_fingers == "clip_xmax":
            raise ValueError("fit='E_TPL' (TPL + xmin_peak) cannot be combined with fix_fingers='clip_xmax'")
        x = self.xmax
        if not (x is None or x is False or x == "force"
                or (isinstance(x, int) and not isinstance(x, bool) and x != 0)):
            raise ValueError(f"xmax must be None, 'force' or a nonzero int (-k drops the top k), got {x!r}")
        if self.fix_fingers == "clip_xmax" and isinstance(x, int) and not isinstance(x, bool):
            raise ValueError("fix_fingers='clip_xmax' cannot be combined with an integer xmax")
        for name in ("bootstrap", "max_fingers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "max_fingers" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'max_fingers' else 0}, got {v!r}")
        if not (isinstance(self.finger_thresh, (int, float)) and math.isfinite(self.finger_thresh)):
            raise ValueError(f"finger_thresh must be a finite number, got {self.finger_thresh!r}")
        if self.xmin_max is not None and not (isinstance(self.xmin_max, (int, float)) and self.xmin_max > 0):
            raise ValueError(f"xmin_max must be a positive number or None, got {self.xmin_max!r}")
        if (self.randomize or self.vectors) and self.method == "randomized":
            raise ValueError("randomize / vectors need an exact method ('gram' or 'svd'), not 'randomized'")

    @classmethod
    def build(cls, options: "AnalysisOptions | None" = None, **overrides) -> "AnalysisOptions":
        """``options`` (or the defaults) with ``overrides`` applied; unknown names -> TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown analysis option(s) {unknown}")
        base = options if options is not None else cls()
        if not isinstance(base, cls):
            raise TypeError(f"options must be an AnalysisOptions, got {type(base).__name__}")
        return dataclasses.replace(base, **overrides) if overrides else base

    def replace(self, **overrides) -> "AnalysisOptions":
        return self.build(self, **overrides)

    def numeric(self) -> dict:
        """The fingerprinted options as a plain dict."""
        return {name: getattr(self, name) for name in self.NUMERIC}

    def selection(self) -> dict:
        return {name: getattr(self, name) for name in self.SELECTION}

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the numeric options: equal for
        two option sets exactly when every row they produce has the same values."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        numeric = {k: v for k, v in self.numeric().items()   # diagnostics off: version-1 hashes
                   if k not in self.DIAGNOSTICS or v != defaults[k]}
        payload = json.dumps({"v": FINGERPRINT_VERSION, **numeric}, sort_keys=True,
                             default=repr, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        """Every option except ``progress`` and ``executor`` (JSON-able: for reports and result
        files)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("progress", "executor")}


ProgressCallback = Callable[[int, int, int, str], None]
