"""LightningModules of the two model families."""

from .base import DivergenceError, FullBatchModule, member_key, member_metrics
from .matcomp import MatrixCompletionModule

__all__ = ["DivergenceError", "FullBatchModule", "MatrixCompletionModule", "member_key", "member_metrics"]
