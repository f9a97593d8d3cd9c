"""Experiment families: each builds a module and its callbacks from validated configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lightning.pytorch.callbacks import Callback

from ..modules.base import FullBatchModule

__all__ = ["Experiment", "BUILDERS", "register_builder", "build"]


@dataclass
class Experiment:
    """What a family builds for a run: the module, its callbacks and how to summarise it."""

    module: FullBatchModule
    callbacks: list[Callback]
    max_steps: int
    figures: Callable[[], dict[str, Any]] = field(default=lambda: {})
    #: figures of member e, for runs whose members are separate cells (batched sweeps)
    member_figures: Optional[Callable[[int], dict[str, Any]]] = None
    #: text artifacts (e.g. CSV histories) of member e: {artifact path: text}
    member_texts: Optional[Callable[[int], dict[str, str]]] = None


BUILDERS: dict[str, Callable[..., Experiment]] = {}


def register_builder(kind: str, builder: Callable[..., Experiment]) -> None:
    BUILDERS[kind] = builder


def build(cfg) -> Experiment:
    if cfg.kind not in BUILDERS:
        raise ValueError(f"No builder for kind={cfg.kind!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[cfg.kind](cfg)


# Each family module registers its config schema (cpl.config.register_kind) and its builder.
from . import matcomp  # noqa: E402,F401
from . import multipath  # noqa: E402,F401
