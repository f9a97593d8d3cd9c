"""Config schema of the toy family (``kind: toy``): imports no torch, like every family schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from cpl.config import require
from cpl.config.sections import LogConfig, OptimConfig, TrackingConfig, TrainerConfig, validate_common


@dataclass
class ToyTaskConfig:
    dim: int = 4  #: number of weights
    samples: int = 16  #: rows of the design matrix


@dataclass
class ToyTrainConfig:
    max_steps: int = 50


@dataclass
class ToyConfig:
    kind: str = "toy"
    name: str = ""
    seed: int = 0
    task: ToyTaskConfig = field(default_factory=ToyTaskConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.1))
    train: ToyTrainConfig = field(default_factory=ToyTrainConfig)
    log: LogConfig = field(default_factory=lambda: LogConfig(every_n_steps=5, sv_top_k=1))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(dtype="float64", checkpoint_every_n_steps=0))


Config = ToyConfig


def validate(cfg: DictConfig) -> None:
    require(cfg.task.dim >= 1, "task.dim", cfg.task.dim, "an integer >= 1")
    require(cfg.task.samples >= 1, "task.samples", cfg.task.samples, "an integer >= 1")
    require(cfg.train.max_steps >= 1, "train.max_steps", cfg.train.max_steps, "an integer >= 1")
    validate_common(cfg)


def max_steps(cfg: DictConfig) -> int:
    return int(cfg.train.max_steps)
