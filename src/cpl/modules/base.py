"""Shared machinery of the full-batch LightningModules.

One Lightning training step is one full-batch gradient step (manual optimisation with plain
SGD). Metrics are computed every ``log_every_n_steps`` steps (and at the first and last step)
and sent straight to ``trainer.loggers`` with the global step, so they are never dropped by
Lightning's ``log_every_n_steps`` throttle and cost nothing on the other steps.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import lightning as L
import torch

__all__ = ["FullBatchModule", "DivergenceError", "member_key", "member_metrics"]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


def member_key(key: str, member: int, n_members: int) -> str:
    """Metric name of ``key`` for one member: ``key`` itself when E = 1, else ``member{e}/key``.

    >>> member_key("test/error", 0, 1), member_key("test/error", 2, 3)
    ('test/error', 'member2/test/error')
    """
    return key if n_members == 1 else f"member{member}/{key}"


def member_metrics(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Turn ``{key: tensor of shape (E,)}`` into flat float metrics named by :func:`member_key`."""
    out: dict[str, float] = {}
    for key, tensor in values.items():
        flat = tensor.detach().reshape(-1).tolist()
        for e, v in enumerate(flat):
            out[member_key(key, e, len(flat))] = float(v)
    return out


class _Steps:
    """Placeholder data: the data live on the module, every batch is the full batch."""

    def __init__(self, length: int):
        self.length = length

    def __iter__(self) -> Iterator[int]:
        for i in range(self.length):
            yield i

    def __len__(self) -> int:
        return self.length


class FullBatchModule(L.LightningModule):
    """Base class: subclasses implement :meth:`loss` and :meth:`compute_metrics`.

    Args:
        lr: learning rate of plain SGD.
        log_every_n_steps: interval of :meth:`compute_metrics`.
        max_steps: length of the run (the placeholder dataloader's length; gives the progress bar a total).
    """

    def __init__(self, lr: float, log_every_n_steps: int = 100, max_steps: int = 1):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"Expected `lr` > 0, got {lr}")
        if log_every_n_steps < 1:
            raise ValueError(f"Expected `log_every_n_steps` >= 1, got {log_every_n_steps}")
        self.automatic_optimization = False
        self.lr = lr
        self.log_every_n_steps = log_every_n_steps
        self.max_steps = max_steps
        self.progress: dict[str, float] = {}  # shown by cpl's progress bar
        self.progress_keys: tuple[str, ...] = ("train/loss",)
        self.last_metrics: dict[str, float] = {}

    # Lightning sets `_current_fx_name` around every hook (two dozen times a step); nn.Module's
    # __setattr__ costs microseconds each time. It is a plain attribute: store it directly.
    def __setattr__(self, name, value):
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ---- to implement
    def loss(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- Lightning hooks
    def train_dataloader(self):
        return _Steps(self.max_steps)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def before_step(self) -> None:
        """Hook for subclasses, called after the gradient and before the update."""

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.before_step()
        opt.step()
        value = loss.detach()
        if value.device.type == "cpu" or self.global_step % self.log_every_n_steps == 0:
            v = value.item()
            if not math.isfinite(v):
                raise DivergenceError(
                    f"The training loss became {v} at step {self.global_step}: the run diverged. "
                    f"Try a lower learning rate (optim.lr={self.lr})."
                )
        return value

    def on_train_start(self) -> None:
        self.log_metrics_now()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        if step % self.log_every_n_steps == 0 or step >= self.trainer.max_steps:
            self.log_metrics_now()

    # ---- logging
    @torch.no_grad()
    def log_metrics_now(self) -> dict[str, float]:
        metrics = member_metrics(self.compute_metrics())
        self.last_metrics = metrics
        self.log_to_loggers(metrics)
        self.progress = {k.split("/")[-1]: v for k, v in metrics.items() if k in self.progress_keys}
        return metrics

    def log_to_loggers(self, metrics: Mapping[str, float]) -> None:
        """Send metrics to every logger of the trainer at the current global step."""
        if self._trainer is None or not metrics:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(dict(metrics), step=self.trainer.global_step)
