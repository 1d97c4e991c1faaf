"""Training-framework hooks.

``TrainerCallback`` for Hugging Face ``transformers.Trainer`` is duck-typed (transformers is
not needed to import or test it): the Trainer calls ``on_<event>(args, state, control,
**kwargs)`` on every callback; this one acts on ``on_step_end`` (``state.global_step``,
``kwargs['model']``) through a :class:`htsr.runs.Monitor` and waits for the last analysis on
``on_train_end``; every other event is a no-op.

    trainer = Trainer(..., callbacks=[htsr.integrations.TrainerCallback(every=500)])
"""
from __future__ import annotations

from .runs import Monitor

__all__ = ["TrainerCallback"]


class TrainerCallback:
    """Analyse the model every ``every`` optimizer steps (background thread), logging alpha and
    the summary metrics to ``logdir`` (CSV + TensorBoard); ``monitor.results`` is the table."""

    def __init__(self, every: int = 500, logdir: str | None = None, **monitor_kw):
        self.every, self.logdir, self.monitor_kw = int(every), logdir, monitor_kw
        self.monitor: Monitor | None = None

    def _monitor(self, args) -> Monitor:
        if self.monitor is None:
            logdir = self.logdir or getattr(args, "logging_dir", None) or \
                getattr(args, "output_dir", None) or "htsr-logs"
            self.monitor = Monitor(logdir, every=self.every, **self.monitor_kw)
        return self.monitor

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return control
        self._monitor(args)(model, int(state.global_step))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        return control

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda args, state, control, **kwargs: control
        raise AttributeError(name)
