"""htsr: heavy-tailed self-regularization diagnostics of neural-network weights.

Native kernels (C++): :func:`eigenvalues`, :func:`spectrum` and their ``_batch`` forms,
:func:`fit_power_law` and :func:`fit_power_law_batch`. Model analysis: :func:`analyze`,
:func:`describe`, :func:`summary`, and the drop-in :class:`WeightWatcher` facade. Diagnostics
(``htsr.diagnostics``): :func:`traps`, :func:`vector_metrics`, :func:`bootstrap_pvalue`,
:func:`fit_tail_models`, :func:`distances`, :func:`lsa_components`. Views:
:func:`report` (offline HTML), :func:`compare`, :func:`monitor`; figures in ``htsr.plot``.
"""
from __future__ import annotations

from .core import (
    PowerLawFit,
    Spectrum,
    build_info,
    eigenvalues,
    eigenvalues_batch,
    fit_power_law,
    fit_power_law_batch,
    spectrum,
    spectrum_batch,
)

__version__ = "0.1.0"

# Model-level API, imported on first use so `import htsr` stays light (no pandas).
_LAZY = {
    "analyze": "analysis",
    "describe": "analysis",
    "esd": "analysis",
    "AnalysisOptions": "options",
    "summary": "metrics",
    "WeightWatcher": "compat",
    "iter_layers": "sources",
    "traps": "diagnostics",
    "distances": "diagnostics.distances",
    "vector_metrics": "diagnostics.vectors",
    "bootstrap_pvalue": "diagnostics.bootstrap",
    "fit_tail_models": "diagnostics.tail_models",
    "lsa_components": "diagnostics.lsa",
    "read_results": "results",
    "report": "report",
    "compare": "comparison",
    "monitor": "runs",
    "Monitor": "runs",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'htsr' has no attribute {name!r}")


__all__ = [
    "PowerLawFit",
    "Spectrum",
    "build_info",
    "eigenvalues",
    "eigenvalues_batch",
    "fit_power_law",
    "fit_power_law_batch",
    "spectrum",
    "spectrum_batch",
    *_LAZY,
]
