"""What a model family builds for a run: the module, its callbacks and how to summarise it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lightning.pytorch.callbacks import Callback

from .module import FullBatchModule

__all__ = ["Experiment"]


@dataclass
class Experiment:
    """The module of a run and its callbacks; member e of the module is the e-th config it was built from."""

    module: FullBatchModule
    callbacks: list[Callback]
    max_steps: int
    #: figures of member e: {artifact path: matplotlib figure}
    member_figures: Callable[[int], dict[str, Any]] = field(default=lambda e: {})
    #: text artifacts of member e: {artifact path: text}
    member_texts: Callable[[int], dict[str, str]] = field(default=lambda e: {})
    #: dense traces of member e, trunk included: {name: (steps (T,), values (T, ...))}, saved
    #: (from the member's own start) in ONE compressed artifact, ``traces/dense.npz``
    member_traces: Callable[[int], dict[str, Any]] = field(default=lambda e: {})
    #: the members' schedule (windows of steps, shared trunks), or None for independent members
    schedule: Optional[Any] = None

    def figures(self) -> dict[str, Any]:
        """The figures of member 0 (a single run)."""
        return self.member_figures(0)
