"""Shared fixtures: small configs pointed at a temporary MLflow store, and a capturing logger."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from lightning.pytorch.loggers import Logger

from cpl.config import make_config


class ListLogger(Logger):
    """An in-memory Lightning logger: records every ``log_metrics`` call as ``(step, metrics)``."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "list"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append((step, dict(metrics)))

    def series(self, key: str) -> dict[int, float]:
        return {step: m[key] for step, m in self.records if key in m}


@pytest.fixture
def list_logger() -> ListLogger:
    return ListLogger()


def small_matcomp(tmp_path, **sections: Any):
    """A small, fast matrix-completion config (N=20) writing only under ``tmp_path``."""
    base: dict[str, Any] = {
        "name": "test",
        "seed": 0,
        "task": {"size": 20, "pretrain_rank": 4, "final_rank": 2, "n_obs": 150},
        "model": {"depth": 3, "init_scale": 0.1},
        "optim": {"lr": 0.5},
        "switch": {"at_step": 30},
        "train": {"steps_after_switch": 30},
        "log": {"every_n_steps": 10, "sv_every_n_steps": 5, "sv_top_k": 5},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "test"},
        "trainer": {"progress_bar": False, "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every_n_steps": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return make_config("matcomp", **base)


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def one_thread():
    """Small matrices: one torch thread is much faster on a shared machine than two fighting ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
