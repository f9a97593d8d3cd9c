"""Sweeps: the cartesian product of a grid over a base conf, tracked in MLflow, resumable
(see :mod:`cpl.sweep.runner` for the conf format and the MLflow layout).

Names are imported on first use: loading and validating a sweep (:mod:`cpl.sweep.spec`) loads
no torch, Lightning or MLflow, so ``cpl sweep --help`` and config errors answer at once.
"""

from typing import Any

_EXPORTS = {
    **dict.fromkeys(("critical_period_table", "critical_periods", "curves", "table_csv", "table_markdown"), "analysis"),
    **dict.fromkeys(("LocalExecutor", "RayExecutor", "make_executor"), "executors"),
    **dict.fromkeys(("find_or_create_parent", "finished_cells"), "resume"),
    **dict.fromkeys(
        ("SweepResult", "cell_tags", "plan_tasks", "run_cells", "run_sweep", "warn_remote_store"), "runner"
    ),
    **dict.fromkeys(("Cell", "CellResult", "Sweep", "SweepConfig", "config_hash", "load_sweep", "make_sweep"), "spec"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cpl.sweep' has no attribute {name!r}")
