"""The result of a matrix-completion run at a glance: its headline metrics (``final/*``).

The same values as the last ``test/*``, ``train/loss`` and ``sv/effective_rank`` of the run, under
one prefix: the MLflow UI shows them as the first section of a run's charts, and its compare view
picks the first of them (``final/test_error``) as its default metric.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HEADLINE", "headline", "report", "tables"]

#: final metric -> headline key (sorted so that the paper's test error comes first)
HEADLINE = {
    "test/final_error": "final/test_error",
    "test/final_error_unobserved": "final/test_error_unobserved",
    "train/loss": "final/train_loss",
    "sv/effective_rank": "final/w_effective_rank",
}


def headline(cfg: Any, module: Any, member: int, metrics: dict[str, float]) -> dict[str, float]:
    """``{"final/test_error": ..., ...}`` from a member's final metrics.

    >>> headline(None, None, 0, {"test/final_error": 0.5, "sv/1": 2.0})
    {'final/test_error': 0.5}
    """
    return {new: float(metrics[old]) for old, new in HEADLINE.items() if old in metrics}


def report(cfg: Any, module: Any, member: int) -> str:
    return ""  # the command line prints the final metrics of every run


def tables(cfg: Any, module: Any, member: int) -> dict[str, str]:
    return {}
