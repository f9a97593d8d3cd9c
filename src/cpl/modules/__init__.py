"""LightningModules of the two model families."""

from .base import DivergenceError, FullBatchModule, member_key, member_metrics
from .matcomp import MatrixCompletionModule
from .multipath import MultiPathwayModule, MultiPathwayReference

__all__ = ["DivergenceError", "FullBatchModule", "MatrixCompletionModule", "MultiPathwayModule", "MultiPathwayReference", "member_key", "member_metrics"]
