"""When a run ends and where readouts go: the two rules every callback and module share."""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = ["final_step", "log_to_loggers"]


def final_step(trainer: Any) -> Optional[int]:
    """The global step at which training ends (``trainer.max_steps``), or None when it is not bounded by steps.

    Readouts due "at the last step" happen when ``trainer.global_step == final_step(trainer)``.
    """
    max_steps = getattr(trainer, "max_steps", None)
    return int(max_steps) if max_steps is not None and max_steps > 0 else None


def log_to_loggers(trainer: Any, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
    """Send metrics to every logger of the trainer (at ``trainer.global_step`` by default)."""
    if not metrics:
        return
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)
