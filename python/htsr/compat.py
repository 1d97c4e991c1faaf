"""``WeightWatcher`` drop-in facade over ``htsr.analyze``.

``from htsr import WeightWatcher`` accepts WeightWatcher 0.7.7's constructor and ``analyze`` /
``describe`` / ``get_summary`` / ``get_details`` / ``get_ESD`` keywords with their defaults
(including ``max_evals=15000`` and ``max_N=50000``, which skip big layers -- ``htsr.analyze``
itself does not) and returns frames with WeightWatcher's columns in its order (``layer_id,
name``, then the rest sorted).  Differences (see docs/DEPARTURES.md):

* layer ids are WeightWatcher's framework counters (``htsr.compat_ids``: torch module index,
  state_dict ``.weight`` key index, ...); ``layers=[...]`` ints refer to these ids; tensors
  WeightWatcher does not read (``in_proj_weight``, keys without ``.weight``) are left out;
* an empty selection gives WeightWatcher's empty frame (no rows, no columns);
* ``name`` is the full path; a name filter matches the full path or its last component (which
  is what WeightWatcher 0.7.7 calls ``name`` for torch modules);
* failed fits are NaN / ``''`` instead of -1 / ``'over-trained'``; pooled-conv ``sv_min`` is the
  true minimum; conv N/M are never swapped;
* ``get_ESD`` applies ``conv2d_norm`` (WeightWatcher returns the unscaled spectrum, 2x for conv);
* fused tensors are not split (as in WeightWatcher).

The diagnostics (``mp_fit``, ``randomize``, ``vectors``, ``detX``/``ERG``, ``fix_fingers``,
``fit='TPL'|'E_TPL'``, ``xmax``) run with WeightWatcher's definitions (``mp_method='ww'``,
``seed=0``: the shuffles are reproducible, WeightWatcher's are not).  Options that are not
implemented raise ``NotImplementedError`` naming the option when set to a non-default value; options WeightWatcher itself ignores (``glorot_fix``, ``savefig`` without
``plot``, ``deltas`` without ``plot``, ``sparsify`` without ``intra``, ...) are accepted.
"""
from __future__ import annotations

import logging
import numbers
import warnings

import numpy as np

from . import analysis as _analysis
from . import metrics as _metrics
from .compat_ids import framework_ids

__all__ = ["WeightWatcher"]

logger = logging.getLogger("htsr")

DEFAULT_MIN_EVALS = 8
DEFAULT_MAX_EVALS = 15000
DEFAULT_MAX_N = 50000
_LAYER_TYPES = ("dense", "conv1d", "conv2d", "embedding", "norm")
_DROP = ("source", "stored_dtype", "part", "seconds", "rand_ks_distance")


def _ww_columns(df):
    """WeightWatcher's frame: rows in id order, ``layer_id, name`` then the other columns
    sorted; no rows -> ``pd.DataFrame(columns=[])``, as WeightWatcher returns."""
    import pandas as pd
    if len(df) == 0:
        logger.warning("No layers found")
        return pd.DataFrame(columns=[])
    df = df.drop(columns=[c for c in _DROP if c in df.columns])
    df = df.sort_values("layer_id", kind="stable").reset_index(drop=True)
    lead = ["layer_id", "name"]
    return df[lead + sorted(c for c in df.columns if c not in lead)]


def _not_implemented(option, value):
    raise NotImplementedError(
        f"WeightWatcher option {option}={value!r} is not implemented by htsr")


class _WWFilter:
    """WeightWatcher's ``WWLayerIterator.apply_filters`` on htsr metadata.  ``id_of(meta)``
    gives WeightWatcher's id of a row (``htsr.compat_ids``; None: WeightWatcher does not read
    that tensor, the row is dropped); without it, htsr's id + ``start_ids``.  The row's
    ``layer_id`` is rewritten to that id."""

    def __init__(self, layers, start_ids=0, id_of=None):
        if layers is None:
            layers = []
        if isinstance(layers, np.ndarray):
            layers = layers.tolist()
        if not isinstance(layers, (list, tuple, set)):
            layers = [layers]
        self.types, self.ids, self.names = [], [], []
        for f in layers:
            if isinstance(f, str) and f in _LAYER_TYPES:
                self.types.append(f)
            elif isinstance(f, numbers.Integral) and not isinstance(f, bool):
                self.ids.append(int(f))
            elif isinstance(f, str):
                self.names.append(f)
            else:
                raise TypeError(f"unknown layer filter {f!r}: expected an int id, a layer type "
                                f"({', '.join(_LAYER_TYPES)}) or a name")
        if self.ids and min(self.ids) < 0 < max(self.ids):
            raise ValueError("Error, params not valid: layer ids must be all >= 0 or all < 0")
        skip = [n.startswith("-") for n in self.names]
        if self.names and any(skip) and not all(skip):
            raise ValueError("can only specify a list of names to keep or a list to skip, not both")
        self.start_ids = int(start_ids or 0)
        self.id_of = id_of

    @staticmethod
    def _name_in(name, names):
        return name in names or name.rsplit(".", 1)[-1] in names

    def __call__(self, meta) -> bool:
        skipped = False
        lid = meta["layer_id"] + self.start_ids if self.id_of is None else self.id_of(meta)
        if lid is None:
            return False
        meta["layer_id"] = lid
        name = meta["name"]
        if self.types:
            skipped = meta["layer_type"] not in self.types
        if self.ids:
            if min(self.ids) >= 0:
                skipped = lid not in self.ids
            else:
                skipped = -lid in self.ids
        if self.names:
            if not self.names[0].startswith("-"):
                skipped = not self._name_in(name, self.names)
            else:
                skipped = self._name_in("-" + name, self.names) or \
                    ("-" + name.rsplit(".", 1)[-1]) in self.names
        return not skipped


def _ww_select(model, layers, start_ids) -> _WWFilter:
    """The plan filter of a facade call: WeightWatcher's ids for ``model``, then its filters."""
    return _WWFilter(layers, start_ids, framework_ids(model, start_ids))


def _check_common(min_evals, max_evals, max_N, pool, start_ids, savefig, conv2d_fft, fft,
                  intra, channels, stacked, base_model, peft):
    if max_evals and min_evals and min_evals >= max_evals:
        raise ValueError("Error, params not valid: min_evals >= max_evals")
    if max_N is not None and ((max_evals and max_N < max_evals) or (min_evals and max_N < min_evals)):
        raise ValueError("Error, params not valid: max_N < max_evals or max_N < min_evals")
    if start_ids is None or start_ids < 0:
        raise ValueError("Error, params not valid: start_ids must be >= 0")
    if not isinstance(savefig, (bool, str)):
        raise ValueError("Error, params not valid: savefig must be a bool or a str")
    if not pool and conv2d_fft:
        raise ValueError("Error, params not valid: pool=False cannot be combined with conv2d_fft")
    for opt, val, default in (("conv2d_fft", conv2d_fft, False), ("fft", fft, False),
                              ("intra", intra, False), ("channels", channels, None),
                              ("stacked", stacked, False), ("peft", peft, False)):
        if val is not default and val != default:
            _not_implemented(opt, val)


class WeightWatcher:
    """Drop-in replacement for ``weightwatcher.WeightWatcher`` backed by htsr's native core."""

    def __init__(self, model=None, framework=None, base_model=None, log_level=None):
        self.model = model
        self.framework = framework      # ignored, as in WeightWatcher (always re-inferred)
        self.base_model = base_model    # analyses run on W - W_base
        self.details = None
        self.results = None
        if log_level is not None:
            logger.setLevel(log_level)

    def __repr__(self):
        return f"htsr.WeightWatcher(model={type(self.model).__name__})"

    # ------------------------------------------------------------------ helpers
    def _set_model(self, model):
        if model is not None:
            self.model = model
        if self.model is None:
            raise ValueError("no model: pass model= to WeightWatcher() or to this method")
        m = self.model
        if isinstance(m, dict) and "state_dict" in m and isinstance(m["state_dict"], dict):
            self.model = m["state_dict"]       # issue #243 unwrap, as WeightWatcher
        return self.model

    # ------------------------------------------------------------------ analyze
    def analyze(self, model=None, layers=[], min_evals=DEFAULT_MIN_EVALS,
                max_evals=DEFAULT_MAX_EVALS, min_size=None, max_size=None, max_N=DEFAULT_MAX_N,
                glorot_fix=False, plot=False, randomize=False, savefig="ww-img",
                mp_fit=False, conv2d_norm=True, ww2x=False, pool=True, conv2d_fft=False,
                fft=False, deltas=False, intra=False, vectors=False, channels=None,
                stacked=False, fix_fingers=False, xmin_max=None, max_fingers=10,
                finger_thresh=1.0, fit="PL", sparsify=True, detX=False, ERG=False,
                svd_method="fast", tolerance=1e-6, start_ids=0, pl_package="ww", xmax=None,
                base_model=None, peft=False, inverse=False):
        """WeightWatcher.analyze: one row per layer (per Conv2D slice with pool=False)."""
        model = self._set_model(model)
        if min_size or max_size:
            logger.warning("min_size and max_size are deprecated (WeightWatcher ignores them)")
        if ww2x:
            warnings.warn("ww2x is deprecated, using pool=False", DeprecationWarning, stacklevel=2)
            pool = False
        if ERG:
            detX = True
        _check_common(min_evals, max_evals, max_N, pool, start_ids, savefig, conv2d_fft, fft,
                      intra, channels, stacked, base_model, peft)
        if svd_method not in ("fast", "accurate"):
            raise ValueError(f"Error, params not valid: svd_method={svd_method!r}")
        if fit not in ("PL", "power_law", "TPL", "truncated_power_law", "E_TPL"):
            raise ValueError(f"Error, params not valid: fit={fit!r}")
        if pl_package not in ("ww", "powerlaw"):
            raise ValueError(f"Error, params not valid: pl_package={pl_package!r}")
        if fix_fingers not in (False, None, "xmin_peak", "clip_xmax"):
            raise ValueError(f"Error, params not valid: fix_fingers={fix_fingers!r}")
        if max_fingers is not None and max_fingers < 1:
            raise ValueError("Error, params not valid: max_fingers < 1")
        if xmax not in (None, False, "force") and not (isinstance(xmax, numbers.Integral) and xmax != 0):
            raise ValueError(f"Error, params not valid: xmax={xmax!r}")
        if pl_package == "ww" and (xmax == "force" or fit not in ("PL", "power_law")):
            raise ValueError("Error, params not valid: pl_package='ww' supports only fit='PL' "
                             "without xmax='force'")
        if fit == "E_TPL" and fix_fingers == "clip_xmax":
            raise ValueError("Error, params not valid: fit='E_TPL' cannot be combined with clip_xmax")
        if fix_fingers and isinstance(xmax, numbers.Integral) and not isinstance(xmax, bool):
            raise ValueError("Error, params not valid: fix_fingers cannot be combined with an int xmax")
        for opt, val, default in (("plot", plot, False), ("inverse", inverse, False)):
            if val is not default and val != default:
                _not_implemented(opt, val)
        if glorot_fix:
            warnings.warn("glorot_fix has no effect (as in WeightWatcher 0.7.7)", stacklevel=2)

        df = _analysis.analyze(
            model, min_evals=min_evals or 0, max_evals=max_evals or None, max_N=max_N,
            conv2d_norm=conv2d_norm, pool=pool, split_fused=False, tolerance=tolerance,
            precision="float64", method="gram", ww_parity=True,
            # diagnostics with WeightWatcher's definitions (mp_method='ww': its KDE sigma, its
            # sqrt(TW) margin); pl_package='powerlaw' is the `powerlaw` package's KS convention
            ks="distinct" if pl_package == "powerlaw" else "all_points",
            mp_fit=bool(mp_fit), randomize=bool(randomize), mp_method="ww", vectors=bool(vectors),
            detX=bool(detX), fit={"power_law": "PL", "truncated_power_law": "TPL"}.get(fit, fit),
            fix_fingers=fix_fingers or None, xmin_max=xmin_max, max_fingers=int(max_fingers),
            finger_thresh=float(finger_thresh), xmax=None if xmax is False else xmax,
            base_model=base_model if base_model is not None else self.base_model,
            _select=_ww_select(model, layers, start_ids))
        self.details = _ww_columns(df)
        return self.details

    # ------------------------------------------------------------------ describe
    def describe(self, model=None, layers=[], min_evals=DEFAULT_MIN_EVALS,
                 max_evals=DEFAULT_MAX_EVALS, min_size=None, max_size=None,
                 max_N=DEFAULT_MAX_N, glorot_fix=False, savefig="ww-img", ww2x=False,
                 pool=True, conv2d_fft=False, fft=False, conv2d_norm=True, intra=False,
                 channels=None, stacked=False, start_ids=0, base_model=None, peft=False):
        """WeightWatcher.describe: the layers analyze would analyse, no numerics."""
        model = self._set_model(model)
        if ww2x:
            pool = False
        _check_common(min_evals, max_evals, max_N, pool, start_ids, savefig, conv2d_fft, fft,
                      intra, channels, stacked, base_model, peft)
        df = _analysis.describe(model, min_evals=min_evals or 0, max_evals=max_evals or None,
                                max_N=max_N, pool=pool, split_fused=False,
                                _select=_ww_select(model, layers, start_ids))
        return _ww_columns(df)

    # ------------------------------------------------------------------ results
    def get_details(self):
        """The frame of the last analyze()."""
        return self.details

    def get_summary(self, details=None):
        """Means of log_norm, alpha, alpha_weighted, log_alpha_norm, log_spectral_norm,
        stable_rank (+ mp_softrank) over rows, skipping NaN (failed fits)."""
        if details is None:
            details = self.details
        return {k: np.float64(v) for k, v in _metrics.summary(details).items()}

    def get_ESD(self, model=None, layer=None, random=False, params=None):
        """Sorted eigenvalues of one layer (id or name), WITH conv2d_norm applied (x1/2 for a
        Conv2D) -- WeightWatcher returns the unscaled spectrum there.  ``random=True``: the
        spectrum of the element-shuffled layer (5 replicas below 100 eigenvalues, as
        WeightWatcher), seeded (``htsr.diagnostics.randomize.random_esd``)."""
        model = self._set_model(model)
        if layer is None:
            raise ValueError("get_ESD needs layer= (an id or a name)")
        desc = self.describe(model, layers=[layer])      # WeightWatcher's ids, names, defaults
        if len(desc) == 0:
            kind = "name" if isinstance(layer, str) else "id"
            raise ValueError(f"Can not find layer {kind} {layer!r} among the layers describe() "
                             "lists")
        if random:
            from .diagnostics.randomize import random_esd
            return random_esd(model, desc["name"][0], split_fused=False, min_evals=DEFAULT_MIN_EVALS)
        return _analysis.esd(model, desc["name"][0], split_fused=False,
                             min_evals=DEFAULT_MIN_EVALS)


def _distances(self, model_1, model_2, method="raw", layers=[], start_ids=0, pool=True, channels=None):
    """WeightWatcher.distances: (avg_dW, avg_db, df) over matrices paired by name
    (``htsr.distances``; WeightWatcher pairs them by position), WeightWatcher's layer ids."""
    from .diagnostics.distances import distances

    if channels is not None:
        _not_implemented("channels", channels)
    if str(method).lower() not in ("raw", "euclidean", "cka"):
        raise ValueError(f"Error, method not valid: {method!r}")
    return distances(model_1, model_2, method, _select=_ww_select(model_1, layers, start_ids))


def _vector_metrics(self, vectors=None, params=None):
    """WeightWatcher.vector_metrics: one row per vector (length, entropy, discrete_entropy,
    localization_ratio, participation_ratio) -- WeightWatcher writes its discrete entropy to a
    misspelled column ('discete_entropy'); htsr to 'discrete_entropy'."""
    import pandas as pd
    from .diagnostics import vectors as _vec

    if vectors is None:
        raise ValueError("vector_metrics needs vectors= (a vector, a list of vectors or a 2-D array of row vectors)")
    arr = np.asarray(vectors, dtype=np.float64) if not isinstance(vectors, list) else None
    vecs = [np.asarray(v, dtype=np.float64).ravel() for v in (vectors if arr is None else (arr if arr.ndim > 1 else [arr]))]
    rows = []
    for v in vecs:
        col = v[:, None]
        rows.append({"length": v.size, "entropy": float(np.sum(np.exp(-np.linalg.norm(v) / 2) / np.sqrt(2 * np.pi))),
                     "discrete_entropy": float(_vec.discrete_entropy(col)[0]),
                     "localization_ratio": float(np.abs(v).sum() / np.abs(v).max()),
                     "participation_ratio": float(np.linalg.norm(v) / np.sum(v ** 4) ** 0.25)})
    return pd.DataFrame(rows, columns=["length", "entropy", "discrete_entropy", "localization_ratio",
                                       "participation_ratio"])


WeightWatcher.distances = _distances
WeightWatcher.vector_metrics = _vector_metrics


def _missing_method(name):
    def method(self, *args, **kwargs):
        raise NotImplementedError(f"WeightWatcher.{name}() is not implemented by htsr")
    method.__name__ = name
    return method


# WeightWatcher methods htsr does not offer yet: a clear NotImplementedError, not AttributeError.
for _name in ("get_Weights", "get_framework_layer", "SVDSmoothing", "SVDSharpness", "analyze_vectors"):
    setattr(WeightWatcher, _name, _missing_method(_name))
