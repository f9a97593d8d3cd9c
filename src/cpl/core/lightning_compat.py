"""Every use of Lightning internals in cpl, in one place, each with a public fallback.

cpl's hot path runs several gradient steps per Lightning step and keeps Lightning's own per-step
machinery out of the way; doing so touches a few attributes that are not public API. They are
all here, each checked by ``tests/test_lightning_compat.py`` against the installed Lightning, and
each falls back to public behaviour (slower, same results) if a Lightning release removes it.
Supported Lightning versions: the range in ``pyproject.toml`` (:data:`SUPPORTED`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional

__all__ = [
    "SUPPORTED",
    "step_counter_incrementer",
    "FastHookNameMixin",
    "attached_trainer",
    "callback_state_key",
    "publish_metrics",
    "quiet_lightning",
]

#: the Lightning versions cpl is tested against (keep in step with pyproject.toml)
SUPPORTED = ">=2.4,<2.7"


def step_counter_incrementer(trainer: Any) -> Optional[Callable[[int], None]]:
    """A function that advances ``trainer.global_step`` by n optimizer steps under manual optimisation.

    Steps taken directly on the optimizer (bypassing ``LightningOptimizer.step``, ~80 us of
    hooks and profiling a step) must still count in ``global_step``, which Lightning reads off
    the manual-optimisation loop's ``optim_step_progress``: ``increment_by`` since Lightning 2.5,
    ``increment_ready`` + ``increment_completed`` per step before. None when this Lightning version
    hides both: callers then step through the wrapper (``opt.step()``) every time.
    """
    try:
        progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    except AttributeError:
        return None
    increment_by = getattr(progress, "increment_by", None)
    if callable(increment_by):
        return increment_by
    ready, completed = getattr(progress, "increment_ready", None), getattr(progress, "increment_completed", None)
    if not (callable(ready) and callable(completed)):
        return None

    def advance(n: int) -> None:
        for _ in range(n):
            ready()
            completed()

    return advance


class FastHookNameMixin:
    """Lightning sets ``_current_fx_name`` on the LightningModule around every hook (two dozen
    times a step); ``nn.Module.__setattr__`` costs microseconds each time. It is a plain
    attribute, so it is stored directly (put this mixin before ``LightningModule``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def attached_trainer(pl_module: Any) -> Any:
    """The trainer a LightningModule is attached to, or None (``pl_module.trainer`` raises when detached)."""
    return getattr(pl_module, "_trainer", None)


def callback_state_key(callback: Any, **key: Any) -> str:
    """``Callback._generate_state_key(**key)``, computed once per callback.

    Lightning reads ``state_key`` around every hook call, and cpl's callbacks do not change their
    arguments after ``__init__``. Falls back to the same format if the helper disappears.
    """
    cached = callback.__dict__.get("_cpl_state_key")
    if cached is None:
        generate = getattr(callback, "_generate_state_key", None)
        cached = generate(**key) if callable(generate) else f"{type(callback).__qualname__}{key!r}"
        callback.__dict__["_cpl_state_key"] = cached
    return cached


def publish_metrics(trainer: Any, metrics: Mapping[str, float], prog_bar: Iterable[str] = ()) -> None:
    """Make scalar readouts visible to ``ModelCheckpoint(monitor=...)``, ``EarlyStopping`` and the progress bar.

    ``pl_module.log(..., logger=False)`` does the same but costs hundreds of microseconds a key and
    is refused in ``on_train_start``/``on_train_end``; callbacks that read out many keys update
    ``trainer.callback_metrics`` and ``trainer.progress_bar_metrics`` (the dicts Lightning returns and
    keeps for the whole fit) directly. Values are stored as 0-d tensors, as ``self.log`` stores them.
    """
    if not metrics:
        return
    import torch

    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
    shown = {k: float(metrics[k]) for k in prog_bar if k in metrics}
    if shown:
        trainer.progress_bar_metrics.update(shown)


#: warnings Lightning emits for cpl's full-batch, manually optimised runs that do not apply to them
_IGNORED_WARNINGS = (
    ".*does not have many workers.*",  # the placeholder dataloader has no data to load
    ".*litlogger.*",
    ".*GPU available but not used.*",  # trainer.accelerator=cpu is the user's choice
    r".*ckpt_path=None\)` was called without a model.*",
    ".*there is no last checkpoint available.*",
    ".*LeafSpec.*",
    ".*ModelCheckpoint with manual optimization.*",
    ".*smaller than the logging interval.*",  # cpl logs at its own intervals, not Lightning's
)


def quiet_lightning() -> None:
    """Silence Lightning's info logs and the warnings that do not apply to cpl's runs."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
