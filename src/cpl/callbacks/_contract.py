"""Helpers for the small, checked contracts between cpl callbacks and LightningModules."""

from __future__ import annotations

from typing import Any

import torch


def require_attr(pl_module: Any, name: str, callback: str, what: str) -> Any:
    """Return ``pl_module.<name>`` or fail with a sentence naming the callback and the contract."""
    if not hasattr(pl_module, name):
        raise AttributeError(f"{callback} needs a LightningModule with {what} (`{name}`); {type(pl_module).__name__} has none.")
    return getattr(pl_module, name)


def resolve(pl_module: Any, attr: str, **kwargs: Any) -> Any:
    """``pl_module.<attr>``, called (with ``kwargs``) if it is a method."""
    value = getattr(pl_module, attr)
    return value(**kwargs) if callable(value) else value


def log_to_loggers(trainer, metrics: dict[str, float], step: int | None = None) -> None:
    """Send metrics to every logger of the trainer (at ``trainer.global_step`` by default)."""
    if not metrics:
        return
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def as_members(matrix: torch.Tensor) -> torch.Tensor:
    """View a ``(n, m)`` matrix as ``(1, n, m)``; pass ``(E, n, m)`` through."""
    if matrix.dim() == 2:
        return matrix.unsqueeze(0)
    if matrix.dim() == 3:
        return matrix
    raise ValueError(f"Expected a matrix of shape (n, m) or (E, n, m), got shape {tuple(matrix.shape)}")


def cached_state_key(callback: Any, **key: Any) -> str:
    """``callback._generate_state_key(**key)``, computed once: Lightning reads ``state_key`` around
    every hook call, and the arguments of cpl's callbacks do not change after ``__init__``."""
    cached = callback.__dict__.get("_cpl_state_key")
    if cached is None:
        cached = callback.__dict__["_cpl_state_key"] = callback._generate_state_key(**key)
    return cached
