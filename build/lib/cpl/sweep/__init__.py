"""Sweeps: the cartesian product of a grid over a base conf, tracked in MLflow, resumable
(see :mod:`cpl.sweep.runner` for the conf format and the MLflow layout)."""

from .analysis import critical_period_table, critical_periods, curves, table_csv, table_markdown
from .executors import LocalExecutor, RayExecutor, make_executor
from .resume import find_or_create_parent, finished_cells
from .runner import SweepResult, cell_tags, plan_tasks, run_cells, run_sweep, warn_remote_store
from .spec import Cell, CellResult, Sweep, SweepConfig, config_hash, load_sweep, make_sweep

__all__ = [
    "Cell",
    "CellResult",
    "LocalExecutor",
    "RayExecutor",
    "Sweep",
    "SweepConfig",
    "SweepResult",
    "cell_tags",
    "config_hash",
    "critical_period_table",
    "critical_periods",
    "curves",
    "find_or_create_parent",
    "finished_cells",
    "load_sweep",
    "make_executor",
    "make_sweep",
    "plan_tasks",
    "run_cells",
    "run_sweep",
    "table_csv",
    "table_markdown",
    "warn_remote_store",
]
