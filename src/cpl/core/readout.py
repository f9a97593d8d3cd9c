"""When a run ends and where readouts go: the rules every callback and module share."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

__all__ = ["final_step", "log_to_loggers"]


def final_step(trainer: Any) -> Optional[int]:
    """The global step at which training ends, or None when nothing bounds it.

    Step-bounded runs (``max_epochs=-1``) end at ``trainer.max_steps``. Epoch-bounded runs end at
    ``trainer.estimated_stepping_batches``: optimizer steps per epoch (``ceil(batches /
    accumulate_grad_batches)``) times ``max_epochs``, capped by ``max_steps``, as Lightning counts them.
    Readouts due "at the last step" happen when ``trainer.global_step == final_step(trainer)``; a
    run stopped earlier (early stopping, ``max_time``) gets its last readout in ``on_train_end``.

    >>> class T: max_steps, max_epochs = 500, -1
    >>> final_step(T())
    500
    >>> class E: max_steps, max_epochs, estimated_stepping_batches = -1, 3, 96
    >>> final_step(E())
    96
    """
    max_steps = getattr(trainer, "max_steps", None)
    max_epochs = getattr(trainer, "max_epochs", None)
    if max_epochs is None or max_epochs < 0:
        return int(max_steps) if max_steps is not None and max_steps > 0 else None
    estimated = getattr(trainer, "estimated_stepping_batches", None)
    if estimated is None or not math.isfinite(estimated) or estimated < 0:
        return int(max_steps) if max_steps is not None and max_steps > 0 else None
    return int(estimated)


def log_to_loggers(trainer: Any, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
    """Send metrics to every logger of the trainer (at ``trainer.global_step`` by default)."""
    if not metrics:
        return
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)
