"""The toy family's run: a LightningModule on cpl's FullBatchModule, no callbacks."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from cpl.core.experiment import Experiment
from cpl.core.module import FullBatchModule
from cpl.core.rng import stream_generator


def toy_data(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` with ``y = X w*`` for a seeded ``w*`` (float64)."""
    gen = stream_generator(cfg.seed, "toy")
    x = torch.randn(cfg.task.samples, cfg.task.dim, generator=gen, dtype=torch.float64)
    w_star = torch.randn(cfg.task.dim, generator=gen, dtype=torch.float64)
    return x, x @ w_star


class ToyModule(FullBatchModule):
    """``L = 1/(2n) ||X w - y||^2`` with one member."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, lr: float, log_every_n_steps: int, max_steps: int):
        super().__init__(lr=lr, log_every_n_steps=log_every_n_steps, max_steps=max_steps)
        self.register_buffer("x", x)
        self.register_buffer("y", y)
        self.w = torch.nn.Parameter(torch.zeros(1, x.shape[1], dtype=x.dtype))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.w @ self.x.T - self.y).pow(2).mean(dim=-1).sum()

    @torch.no_grad()
    def compute_metrics(self, members: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        return {"train/loss": 0.5 * (self.w @ self.x.T - self.y).pow(2).mean(dim=-1)}


def build(cfgs: Sequence[DictConfig], schedule: Any = None) -> Experiment:
    (cfg,) = cfgs
    x, y = toy_data(cfg)
    module = ToyModule(x, y, cfg.optim.lr, cfg.log.every_n_steps, cfg.train.max_steps)
    return Experiment(module=module, callbacks=[], max_steps=cfg.train.max_steps)
