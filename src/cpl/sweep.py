"""Sweeps: the cartesian product of a grid over a base conf, tracked in MLflow, resumable.

A sweep conf is a normal conf plus a ``sweep:`` section::

    sweep:
      name: matcomp_depth          # default: the conf name
      grid:                        # dotted keys of the run config -> lists of values
        model.depth: [1, 2, 3]
        switch.at_step: [0, 1000, 5000]
      group_by: model.depth        # the key whose values make the curves (default: first grid key but the onset)
      onset_key: switch.at_step    # the deficit onset; relative error = error(onset) - error(smallest onset)
      threshold: 0.05              # critical-period length = first onset whose relative error exceeds it
      executor: local              # local | ray
      processes: 1                 # local: 1 = in-process, n > 1 = a pool of n processes, 0 = one per core
      ray_address: null            # ray: null = start a local Ray, else the cluster's address

The ``sweep`` section never reaches :func:`cpl.run.train`: it is split off and checked against
:class:`SweepConfig`; every cell is the base config merged with its grid values and validated by
the normal schema before any cell runs.

MLflow layout: one parent run per sweep (tags ``cpl.sweep.name``, ``cpl.sweep.hash``), one nested
child run per cell (``mlflow.parentRunId``, ``cpl.sweep.cell``, ``cpl.sweep.cell_hash`` = hash of
the cell's resolved config). Re-running the same sweep finds the parent by name and hash and
skips the cells whose child FINISHED with the same hash; failed cells are run again.

Executors run *tasks*; a task is a list of cells and :func:`run_cells` runs one task (today one
:func:`cpl.run.train` per cell; a batched implementation may train a task as one run with members).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import io
import json
import math
import os
import sys
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from . import tracking
from .config import ConfigError, _translate, compose, flatten, parse_overrides, read_conf, require

__all__ = [
    "SweepConfig",
    "Sweep",
    "Cell",
    "CellResult",
    "SweepResult",
    "load_sweep",
    "make_sweep",
    "config_hash",
    "run_cells",
    "plan_tasks",
    "LocalExecutor",
    "RayExecutor",
    "run_sweep",
    "critical_period_table",
]

#: keys that do not change what a cell computes: left out of the cell and sweep hashes
HASH_EXCLUDE = ("name", "tracking", "trainer.progress_bar", "trainer.checkpoint_dir", "trainer.checkpoint_every_n_steps", "trainer.ckpt_path")
#: grid keys a sweep may not vary
FORBIDDEN_GRID_KEYS = ("kind", "name", "tracking")


# --------------------------------------------------------------------------- schema


@dataclass
class SweepConfig:
    """The ``sweep:`` section of a sweep conf (see the module docstring)."""

    name: str = ""  #: sweep name; default: the conf name
    grid: Dict[str, Any] = field(default_factory=dict)  #: dotted key -> list of values
    group_by: Optional[str] = None  #: the key whose values make curves; default: first grid key but the onset
    onset_key: Optional[str] = "switch.at_step"  #: the deficit onset; null = no critical-period analysis
    metric: str = "test/final_error"  #: the cell metric of the table
    threshold: float = 0.05  #: critical-period length: first onset with relative error > threshold
    executor: str = "local"  #: "local" or "ray"
    processes: int = 1  #: local executor: 1 = in-process, n > 1 = n processes, 0 = one per core
    ray_address: Optional[str] = None  #: ray executor: null = start a local Ray instance
    ray_num_cpus: Optional[int] = None  #: CPUs of a local Ray instance; null = all
    ray_cpus_per_task: float = 1.0  #: CPUs Ray reserves for each task
    #: torch intra-op threads while a cell trains; null = torch's default. One thread is much
    #: faster for the small matrices of these experiments, above all on a busy machine.
    torch_threads: Optional[int] = 1
    #: train cells that can share a module (same depth, size, lr, ...) as the members of one run,
    #: cells differing only in onset sharing their pre-training trunk (cpl.batching); every cell
    #: still gets its own child run
    batched: bool = True
    max_members: int = 64  #: most members of one batched run


@dataclass
class _SweepRoot:
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its values, its validated run config and that config's hash."""

    index: int
    values: Dict[str, Any]
    config: DictConfig
    config_hash: str


@dataclass
class CellResult:
    """What running (or resuming) a cell gave."""

    index: int
    config_hash: str
    status: str  #: FINISHED, FAILED or NOT_RUN
    metrics: Dict[str, float] = field(default_factory=dict)
    run_id: Optional[str] = None
    error: Optional[str] = None
    seconds: float = 0.0
    resumed: bool = False  #: read back from an earlier run of the sweep


@dataclass
class Sweep:
    """A loaded sweep: its settings, its base config and its validated cells."""

    settings: SweepConfig
    base: DictConfig
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def grid(self) -> dict[str, list]:
        return self.settings.grid

    @property
    def sweep_hash(self) -> str:
        return _digest(sorted(c.config_hash for c in self.cells))


# --------------------------------------------------------------------------- loading


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    """Hash of a resolved run config, without the keys that do not change the result (:data:`HASH_EXCLUDE`).

    >>> from cpl.config import make_config
    >>> config_hash(make_config(tracking={"uri": "sqlite:///a.db"})) == config_hash(make_config(tracking={"uri": "sqlite:///b.db"}))
    True
    """
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in HASH_EXCLUDE:
        parent, _, leaf = key.rpartition(".")
        node = data
        for part in [p for p in parent.split(".") if p]:
            node = node.get(part, {})
        node.pop(leaf, None)
    return _digest(data)


def _flat_grid(node: Any, prefix: str, source: str) -> dict[str, list]:
    out: dict[str, list] = {}
    if node is None:
        return out
    if not isinstance(node, (DictConfig, dict)):
        raise ConfigError(f"Invalid value for 'sweep.grid{'.' + prefix if prefix else ''}' (from {source}): got {node!r}; allowed: a mapping of dotted keys to lists, e.g. model.depth: [1, 2, 3]")
    for key, value in node.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (DictConfig, dict)):
            out.update(_flat_grid(value, full, source))
        elif isinstance(value, (ListConfig, list, tuple)):
            values = OmegaConf.to_container(value) if isinstance(value, ListConfig) else list(value)
            require(len(values) >= 1, f"sweep.grid.{full}", values, "a non-empty list of values")
            require(len({json.dumps(v, sort_keys=True, default=str) for v in values}) == len(values), f"sweep.grid.{full}", values, "a list without repeated values")
            out[full] = values
        else:
            raise ConfigError(f"Invalid value for 'sweep.grid.{full}' (from {source}): got {value!r}; allowed: a list of values, e.g. sweep.grid.{full}=[{value}]")
    return out


def _nest(values: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _settings(raw: Any, over: Any, source: str, default_name: str) -> SweepConfig:
    """Merge the ``sweep`` sections of the conf and of the overrides into :class:`SweepConfig`."""
    grid: dict[str, list] = {}
    parts = []
    for node, src in ((raw, source), (over, "command line")):
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"Invalid value for 'sweep' (from {src}): got {node!r}; allowed: a mapping with keys {', '.join(SweepConfig.__dataclass_fields__)}")
        node = node.copy()
        with open_dict(node):
            grid_node = node.pop("grid", None)
        grid.update(_flat_grid(grid_node, "", src))
        parts.append((node, src))
    cfg = OmegaConf.structured(_SweepRoot)
    for node, src in parts:
        try:
            cfg = OmegaConf.merge(cfg, {"sweep": node})
        except OmegaConfBaseException as exc:
            raise _translate(exc, _SweepRoot, src) from None
    s: SweepConfig = OmegaConf.to_object(cfg.sweep)  # type: ignore[assignment]
    s.grid = grid
    s.name = s.name or default_name
    _validate_settings(s)
    return s


def _validate_settings(s: SweepConfig) -> None:
    require(len(s.grid) >= 1, "sweep.grid", s.grid, "at least one key with a list of values, e.g. sweep.grid.model.depth=[1,2,3]")
    for key in s.grid:
        require(not any(key == f or key.startswith(f + ".") for f in FORBIDDEN_GRID_KEYS), f"sweep.grid.{key}", s.grid[key],
                "a key of the run config other than kind, name and tracking.*")
    keys = ", ".join(s.grid)
    if s.onset_key is not None:
        require(s.onset_key in s.grid, "sweep.onset_key", s.onset_key, f"one of the grid keys ({keys}), or null for no critical-period analysis")
    if s.group_by is not None:
        require(s.group_by in s.grid and s.group_by != s.onset_key, "sweep.group_by", s.group_by, f"a grid key other than the onset key ({keys})")
    else:
        others = [k for k in s.grid if k != s.onset_key]
        s.group_by = others[0] if others else None
    require(s.threshold >= 0, "sweep.threshold", s.threshold, "a number >= 0")
    require(s.executor in ("local", "ray"), "sweep.executor", s.executor, "local or ray")
    require(s.processes >= 0, "sweep.processes", s.processes, "an integer >= 0 (1 = in-process, 0 = one per core)")
    require(s.max_members >= 1, "sweep.max_members", s.max_members, "an integer >= 1")
    if s.torch_threads is not None:
        require(s.torch_threads >= 1, "sweep.torch_threads", s.torch_threads, "null or an integer >= 1")
    require(s.ray_cpus_per_task > 0, "sweep.ray_cpus_per_task", s.ray_cpus_per_task, "a number > 0")
    if s.executor == "ray":
        require(importlib.util.find_spec("ray") is not None, "sweep.executor", s.executor, "local (Ray is not installed: pip install 'cpl[ray]')")


def _expand(base: DictConfig, s: SweepConfig) -> list[Cell]:
    cells = []
    keys = list(s.grid)
    for index, combo in enumerate(product(*(s.grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        label = " ".join(f"{k}={v}" for k, v in values.items())
        try:
            cfg = compose(base, OmegaConf.create(_nest(values)), base.name, source="base conf", over_source="sweep.grid")
        except ConfigError as exc:
            raise ConfigError(f"Sweep cell {index} ({label}): {exc}") from None
        cfg.tracking.run_name = f"{s.name}[{index}] {label}"
        values = {k: OmegaConf.select(cfg, k) for k in keys}  # typed by the schema
        cells.append(Cell(index=index, values=values, config=cfg, config_hash=config_hash(cfg)))
    return cells


def _absolute(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _prepare_base(base: DictConfig, s: SweepConfig) -> DictConfig:
    base = base.copy()
    require(base.tracking.enabled, "tracking.enabled", base.tracking.enabled, "true in a sweep (its runs are recorded in MLflow)")
    require(base.trainer.ckpt_path is None, "trainer.ckpt_path", base.trainer.ckpt_path, "null in a sweep (every cell starts from scratch)")
    # every cell, in whatever process or machine, logs to the same store and checkpoint folder
    base.tracking.uri = _absolute(tracking.tracking_uri(base.tracking.uri))
    base.trainer.checkpoint_dir = str(Path(base.trainer.checkpoint_dir).resolve())
    base.trainer.progress_bar = False
    return base


def load_sweep(name: str, overrides: Sequence[str] = (), directory: Path | None = None) -> Sweep:
    """Load the sweep conf ``conf/<name>.yaml`` with dotlist ``overrides`` and validate every cell.

    ``sweep.*`` overrides change the sweep (``sweep.grid.model.depth=[1,2]`` adds or replaces a
    grid key); all other overrides change the base config of every cell.

    Raises:
        ConfigError: unknown conf, misspelt key (in the sweep section, the base or the grid),
            wrong type, impossible value in any cell.
    """
    raw, path = read_conf(name, directory)
    over = parse_overrides(overrides)
    raw_sweep, over_sweep = (_pop(node, "sweep") for node in (raw, over))
    settings = _settings(raw_sweep, over_sweep, str(path), name)
    base = compose(raw, over, name, str(path))
    base = _prepare_base(base, settings)
    return Sweep(settings=settings, base=base, cells=_expand(base, settings))


def make_sweep(base: DictConfig, **sweep: Any) -> Sweep:
    """Build a sweep from a validated base config and the ``sweep`` settings as keywords (for code and tests).

    Example::

        >>> from cpl.config import make_config
        >>> sw = make_sweep(make_config(), grid={"model.depth": [1, 2], "switch.at_step": [0, 100]})
        >>> len(sw.cells), sw.settings.group_by
        (4, 'model.depth')
    """
    settings = _settings(OmegaConf.create(sweep), None, "arguments", base.name or "sweep")
    base = _prepare_base(base, settings)
    return Sweep(settings=settings, base=base, cells=_expand(base, settings))


def _pop(node: DictConfig, key: str) -> Any:
    with open_dict(node):
        return node.pop(key, None)


# --------------------------------------------------------------------------- running cells


def cell_tags(cell: Cell) -> dict[str, str]:
    return {"cpl.sweep.role": "cell", "cpl.sweep.cell": str(cell.index), "cpl.sweep.cell_hash": cell.config_hash,
            "cpl.sweep.cell_values": json.dumps(cell.values, default=str)}


def run_cells(cells: Sequence[Cell], parent_run_id: Optional[str], tags: Optional[dict[str, str]] = None, callbacks: Sequence[Any] = (),
              torch_threads: Optional[int] = None) -> list[CellResult]:
    """Run one task: every cell as one tracked :func:`cpl.run.train` nested under ``parent_run_id``.

    A cell that raises (divergence, any error) gives a FAILED result (its MLflow run is marked
    FAILED by ``train``) and the next cell runs; ``KeyboardInterrupt`` stops the task.
    """
    import torch

    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return _run_cells(cells, parent_run_id, tags, callbacks)
    finally:
        torch.set_num_threads(previous)


def _run_group(cells: Sequence[Cell], parent_run_id: Optional[str], tags: Optional[dict[str, str]], callbacks: Sequence[Any]) -> Optional[list[CellResult]]:
    """Train the cells as the members of one batched run; None if that failed (the caller then
    runs them one by one, so one diverging cell does not fail the others)."""
    from .run import train_group

    t0 = time.perf_counter()
    member_tags = [{**cell_tags(cell), "cpl.sweep.attempt": uuid.uuid4().hex} for cell in cells]
    try:
        results = train_group([c.config for c in cells], callbacks=callbacks, tags=tags, parent_run_id=parent_run_id, member_tags=member_tags)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - retried cell by cell
        for cell, mt in zip(cells, member_tags):
            run_id = _attempt_run_id(cell, mt["cpl.sweep.attempt"])
            if run_id:
                tracking.set_tags(tracking.get_client(cell.config.tracking.uri), run_id, {"cpl.sweep.superseded": f"batched run failed ({type(exc).__name__}); cell re-run alone"})
        return None
    seconds = (time.perf_counter() - t0) / len(cells)
    return [CellResult(c.index, c.config_hash, "FINISHED", dict(r.metrics), r.run_id, seconds=seconds) for c, r in zip(cells, results)]


def _run_cells(cells: Sequence[Cell], parent_run_id: Optional[str], tags: Optional[dict[str, str]], callbacks: Sequence[Any]) -> list[CellResult]:
    from .run import train

    if len(cells) > 1:
        grouped = _run_group(cells, parent_run_id, tags, callbacks)
        if grouped is not None:
            return grouped
    out = []
    for cell in cells:
        attempt = uuid.uuid4().hex
        t0 = time.perf_counter()
        run_tags = {**(tags or {}), **cell_tags(cell), "cpl.sweep.attempt": attempt}
        try:
            result = train(cell.config, callbacks=callbacks, tags=run_tags, parent_run_id=parent_run_id)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the sweep
            out.append(CellResult(cell.index, cell.config_hash, "FAILED", run_id=_attempt_run_id(cell, attempt),
                                  error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0))
            continue
        out.append(CellResult(cell.index, cell.config_hash, "FINISHED", dict(result.metrics), result.run_id, seconds=time.perf_counter() - t0))
    return out


def _attempt_run_id(cell: Cell, attempt: str) -> Optional[str]:
    try:
        client = tracking.get_client(cell.config.tracking.uri)
        exp = client.get_experiment_by_name(cell.config.tracking.experiment)
        if exp is None:
            return None
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`cpl.sweep.attempt` = '{attempt}'", max_results=1)
        return runs[0].info.run_id if runs else None
    except Exception:  # noqa: BLE001 - best effort, for the report only
        return None


def plan_tasks(cells: Sequence[Cell], batched: bool = False, max_members: int = 64) -> list[list[Cell]]:
    """Split the cells to run into tasks: one cell each, or (``batched``) groups of cells that train
    as the members of one run (:func:`cpl.batching.plan_groups`)."""
    if not batched:
        return [[cell] for cell in cells]
    from .batching import plan_groups

    return [[cells[i] for i in group] for group in plan_groups([c.config for c in cells], max_members)]


TaskFn = Callable[[Sequence[Cell]], list]


def _failed(task: Sequence[Cell], exc: BaseException) -> list[CellResult]:
    return [CellResult(c.index, c.config_hash, "FAILED", error=f"{type(exc).__name__}: {exc}") for c in task]


class LocalExecutor:
    """Run tasks in this process (``processes=1``) or in a pool of spawned processes.

    Args:
        processes: 1 = in-process, n > 1 = a pool of n processes, 0 = one per core.
    """

    def __init__(self, processes: int = 1):
        if processes < 0:
            raise ValueError(f"Expected `processes` >= 0, got {processes}")
        self.processes = processes or (os.cpu_count() or 1)

    def map(self, fn: TaskFn, tasks: Sequence[list[Cell]]) -> Iterator[tuple[list[Cell], list[CellResult]]]:
        """Yield ``(task, results)`` as tasks finish."""
        if self.processes <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, fn(task)
            return
        import multiprocessing as mp

        pool = ProcessPoolExecutor(max_workers=min(self.processes, len(tasks)), mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(fn, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    results = future.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. a worker process died
                    results = _failed(task, exc)
                yield task, results
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _ray_call(fn: TaskFn, task: list[Cell]) -> list[CellResult]:
    return fn(task)


class RayExecutor:
    """Run tasks as Ray tasks, on a cluster (``address``) or on a local Ray instance it starts.

    Every cell logs to the config's ``tracking.uri``; on a cluster that must be a tracking server
    all nodes reach (``http://host:port``), and ``cpl`` must be installed on the nodes.

    Args:
        address: the cluster's address (``ray://...``, ``auto``, ``host:port``); None = a local instance
            (an already initialised Ray is used as it is).
        num_cpus: CPUs of a local instance (None = all).
        cpus_per_task: CPUs Ray reserves per task.
    """

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, cpus_per_task: float = 1.0):
        if cpus_per_task <= 0:
            raise ValueError(f"Expected `cpus_per_task` > 0, got {cpus_per_task}")
        self.address, self.num_cpus, self.cpus_per_task = address, num_cpus, cpus_per_task

    def map(self, fn: TaskFn, tasks: Sequence[list[Cell]]) -> Iterator[tuple[list[Cell], list[CellResult]]]:
        import ray

        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False}
            if self.address is None:  # a local instance: its workers see this process's PYTHONPATH
                kwargs["num_cpus"] = self.num_cpus
                env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
                kwargs["runtime_env"] = {"env_vars": env} if env else None
            ray.init(address=self.address, **kwargs)
            started = True
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=0)(_ray_call)
        pending: list = []
        try:
            refs = {remote.remote(fn, task): task for task in tasks}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        results = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a worker died or the task raised
                        results = _failed(refs[ref], exc)
                    yield refs[ref], results
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


def make_executor(settings: SweepConfig):
    if settings.executor == "ray":
        return RayExecutor(settings.ray_address, settings.ray_num_cpus, settings.ray_cpus_per_task)
    return LocalExecutor(settings.processes)


# --------------------------------------------------------------------------- MLflow parent and resume


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token, order_by=["attribute.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _parent_params(sweep: Sweep) -> dict[str, Any]:
    params = {k: v for k, v in flatten(sweep.base).items() if k not in sweep.grid}
    params.update({f"sweep.grid.{k}": json.dumps(v, default=str) for k, v in sweep.grid.items()})
    s = sweep.settings
    params.update({"sweep.name": s.name, "sweep.group_by": s.group_by, "sweep.onset_key": s.onset_key, "sweep.metric": s.metric, "sweep.n_cells": len(sweep.cells)})
    return params


def find_or_create_parent(client, sweep: Sweep) -> tuple[str, str, bool]:
    """The parent run of ``sweep`` (found by name and hash, else created): ``(run_id, experiment_id, resumed)``."""
    exp_id = tracking.get_or_create_experiment(client, sweep.base.tracking.experiment)
    found = _search_all(client, exp_id, f"tags.`cpl.sweep.role` = 'parent' and tags.`cpl.sweep.name` = '{sweep.name}' and tags.`cpl.sweep.hash` = '{sweep.sweep_hash}'")
    if found:
        run_id = found[-1].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id, exp_id, True
    tags = {"cpl.sweep.role": "parent", "cpl.sweep.name": sweep.name, "cpl.sweep.hash": sweep.sweep_hash,
            "cpl.conf": sweep.base.name, "cpl.kind": sweep.base.kind, "cpl.sweep.grid": json.dumps(sweep.grid, default=str)}
    run_id = tracking.start_run(client, sweep.base.tracking.experiment, sweep.name, tags)
    tracking.log_params(client, run_id, _parent_params(sweep))
    client.log_text(run_id, OmegaConf.to_yaml(sweep.base, resolve=True), "base_config.yaml")
    return run_id, exp_id, False


def finished_cells(client, experiment_id: str, parent_run_id: str) -> dict[str, CellResult]:
    """The latest FINISHED child of ``parent_run_id`` per cell hash, with its final metrics."""
    out: dict[str, CellResult] = {}
    for run in _search_all(client, experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'"):
        h = run.data.tags.get("cpl.sweep.cell_hash")
        if h:
            out[h] = CellResult(int(run.data.tags.get("cpl.sweep.cell", -1)), h, "FINISHED", dict(run.data.metrics), run.info.run_id, resumed=True)
    return out


# --------------------------------------------------------------------------- summary


def _num(x: Any) -> float:
    return float(x) if x is not None else math.nan


def critical_period_table(sweep: Sweep, results: dict[int, CellResult]) -> list[dict[str, Any]]:
    """One row per cell: grid values, status, the metric, its relative error and the run id.

    The relative error of a cell is its metric minus that of the cell with the same values except
    the smallest onset (onset 0 in the paper's sweeps) — NaN when either is missing.
    """
    s = sweep.settings
    onset = s.onset_key
    ref_onset = min(sweep.grid[onset]) if onset else None
    values: dict[int, float] = {}  # cell index -> metric
    by_key: dict[tuple, float] = {}  # grid values -> metric
    for cell in sweep.cells:
        r = results.get(cell.index)
        values[cell.index] = _num(r.metrics.get(s.metric)) if r is not None and r.status == "FINISHED" else math.nan
        by_key[_values_key(cell.values)] = values[cell.index]
    rows = []
    for cell in sweep.cells:
        r = results.get(cell.index) or CellResult(cell.index, cell.config_hash, "NOT_RUN")
        value = values[cell.index]
        row: dict[str, Any] = {"cell": cell.index, **cell.values, "status": r.status, "resumed": r.resumed, s.metric: value}
        if onset:
            row["relative_error"] = value - by_key[_values_key(dict(cell.values, **{onset: ref_onset}))]
        row.update({"run_id": r.run_id or "", "seconds": round(r.seconds, 2), "error": (r.error or "").splitlines()[0][:300] if r.error else ""})
        rows.append(row)
    return rows


def _values_key(values: dict[str, Any]) -> tuple:
    """A hashable key of a cell's grid values."""
    return tuple(sorted((k, json.dumps(v, default=str)) for k, v in values.items()))


def _curve_key(sweep: Sweep, values: dict[str, Any]) -> tuple:
    return tuple((k, v) for k, v in values.items() if k != sweep.settings.onset_key)


def _label(key: tuple) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in key) or "all"


def _metric_label(key: tuple) -> str:
    return "/".join(f"{k}_{v}" for k, v in key) or "all"


def curves(sweep: Sweep, rows: list[dict[str, Any]], column: str) -> dict[tuple, tuple[list, list]]:
    """``{(non-onset grid values): (onsets, values of column)}`` sorted by onset."""
    onset = sweep.settings.onset_key
    out: dict[tuple, tuple[list, list]] = {}
    for row, cell in zip(rows, sweep.cells):
        xs, ys = out.setdefault(_curve_key(sweep, cell.values), ([], []))
        xs.append(cell.values[onset])
        ys.append(row[column])
    for key, (xs, ys) in out.items():
        order = sorted(range(len(xs)), key=xs.__getitem__)
        out[key] = ([xs[i] for i in order], [ys[i] for i in order])
    return out


def critical_periods(sweep: Sweep, rows: list[dict[str, Any]]) -> dict[tuple, float]:
    """Per curve: the first onset whose relative error exceeds ``sweep.threshold`` (NaN if none)."""
    out = {}
    for key, (xs, ys) in curves(sweep, rows, "relative_error").items():
        out[key] = next((float(x) for x, y in zip(xs, ys) if y > sweep.settings.threshold), math.nan)
    return out


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["cell"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def table_markdown(rows: list[dict[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    if not rows:
        return "(no cells)"
    columns = list(columns or [c for c in rows[0] if c not in ("run_id", "error", "seconds")])

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _figures(sweep: Sweep, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from .figures import critical_period_figure

    s = sweep.settings
    title = f"{s.name}: curves by {s.group_by or 'cell'}"
    figs = {}
    for column, path, ylabel in (("relative_error", "summary/relative_error.png", f"relative error ({s.metric} minus onset {min(sweep.grid[s.onset_key])})"),
                                 (s.metric, "summary/final_error.png", s.metric)):
        data = {_label(k): v for k, v in curves(sweep, rows, column).items()}
        figs[path] = critical_period_figure(data, xlabel=f"deficit length ({s.onset_key})", ylabel=ylabel, title=title,
                                            threshold=s.threshold if column == "relative_error" else None)
    return figs


def _log_summary(client, parent_run_id: str, sweep: Sweep, rows: list[dict[str, Any]]) -> dict[str, float]:
    from mlflow.entities import Metric

    s = sweep.settings
    ts = int(time.time() * 1000)
    n = {status: sum(r["status"] == status for r in rows) for status in ("FINISHED", "FAILED", "NOT_RUN")}
    summary = {"sweep/n_cells": float(len(rows)), "sweep/n_finished": float(n["FINISHED"]), "sweep/n_failed": float(n["FAILED"]),
               "sweep/n_not_run": float(n["NOT_RUN"]), "sweep/n_resumed": float(sum(bool(r["resumed"]) for r in rows))}
    metrics = [Metric(k, v, ts, 0) for k, v in summary.items()]
    client.log_text(parent_run_id, table_csv(rows), "summary/critical_period_table.csv")
    client.log_text(parent_run_id, table_markdown(rows) + "\n", "summary/critical_period_table.md")
    if s.onset_key:
        for key, value in critical_periods(sweep, rows).items():
            summary[f"critical_period/{_metric_label(key)}"] = value
            metrics.append(Metric(f"critical_period/{_metric_label(key)}", value, ts, 0))
        for column, prefix in (("relative_error", "relative_error"), (s.metric, "final_error")):
            for key, (xs, ys) in curves(sweep, rows, column).items():
                metrics += [Metric(f"{prefix}/{_metric_label(key)}", float(y), ts, int(x)) for x, y in zip(xs, ys) if not math.isnan(y)]
        import matplotlib.pyplot as plt

        for path, fig in _figures(sweep, rows).items():
            client.log_figure(parent_run_id, fig, path)
            plt.close(fig)
    for i in range(0, len(metrics), 1000):
        client.log_batch(parent_run_id, metrics=metrics[i:i + 1000])
    return summary


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """The outcome of :func:`run_sweep`: the table, the summary metrics and where they are recorded."""

    parent_run_id: str
    tracking_uri: str
    rows: list[dict[str, Any]]
    summary: dict[str, float]
    resumed_parent: bool
    failed: list[dict[str, Any]]

    def markdown(self) -> str:
        return table_markdown(self.rows)


def run_sweep(sweep: Sweep, callbacks: Sequence[Any] = (), executor: Any = None, progress: bool = True) -> SweepResult:
    """Run (or resume) a sweep: create or find its parent run, run the missing cells, log the summary.

    Args:
        sweep: from :func:`load_sweep` or :func:`make_sweep`.
        callbacks: extra Lightning callbacks for every cell (must pickle for a process pool or Ray).
        executor: an object with ``map(fn, tasks)`` (default: from ``sweep.executor``).
        progress: show a progress bar over the cells.

    Returns:
        :class:`SweepResult`; failed cells are in ``failed`` and in the table, the sweep does not raise for them.

    Raises:
        KeyboardInterrupt: the sweep was interrupted; finished cells are recorded, the parent is marked KILLED.
    """
    from tqdm.auto import tqdm

    uri = sweep.base.tracking.uri
    client = tracking.get_client(uri)
    parent_id, exp_id, resumed_parent = find_or_create_parent(client, sweep)
    tracking.set_tags(client, parent_id, {"cpl.sweep.executor": sweep.settings.executor, "cpl.sweep.threshold": sweep.settings.threshold})
    done = finished_cells(client, exp_id, parent_id) if resumed_parent else {}
    results: dict[int, CellResult] = {}
    for cell in sweep.cells:
        if cell.config_hash in done:
            r = done[cell.config_hash]
            results[cell.index] = CellResult(cell.index, cell.config_hash, "FINISHED", r.metrics, r.run_id, resumed=True)
    todo = [c for c in sweep.cells if c.index not in results]
    tasks = plan_tasks(todo, sweep.settings.batched, sweep.settings.max_members)
    fn = functools.partial(run_cells, parent_run_id=parent_id, tags={"cpl.sweep.name": sweep.name, "cpl.sweep.hash": sweep.sweep_hash}, callbacks=tuple(callbacks),
                           torch_threads=sweep.settings.torch_threads)
    executor = executor or make_executor(sweep.settings)
    counts = {"done": 0, "failed": 0, "skipped": len(results)}
    bar = tqdm(total=len(sweep.cells), initial=len(results), desc=f"sweep {sweep.name}", unit="cell", disable=not progress, dynamic_ncols=True)

    def postfix() -> None:
        bar.set_postfix(done=counts["done"], failed=counts["failed"], skipped=counts["skipped"], left=len(sweep.cells) - sum(counts.values()), refresh=True)

    postfix()
    try:
        for _, task_results in executor.map(fn, tasks):
            for r in task_results:
                results[r.index] = r
                counts["failed" if r.status == "FAILED" else "done"] += 1
                if r.status == "FAILED":
                    bar.write(f"cell {r.index} FAILED: {(r.error or '').splitlines()[0][:200] if r.error else ''}", file=sys.stderr)
            bar.update(len(task_results))
            postfix()
    except KeyboardInterrupt:
        bar.close()
        finished = sum(r.status == "FINISHED" for r in results.values())
        tracking.set_tags(client, parent_id, {"cpl.status_message": f"interrupted with {finished}/{len(sweep.cells)} cells finished; run the same sweep again to resume"})
        client.set_terminated(parent_id, "KILLED")
        raise
    except BaseException as exc:
        bar.close()
        tracking.set_tags(client, parent_id, {"cpl.status_message": f"{type(exc).__name__}: {exc}"[:5000]})
        client.set_terminated(parent_id, "FAILED")
        raise
    bar.close()
    rows = critical_period_table(sweep, results)
    summary = _log_summary(client, parent_id, sweep, rows)
    failed = [r for r in rows if r["status"] == "FAILED"]
    tracking.set_tags(client, parent_id, {"cpl.status_message": f"{len(rows) - len(failed)}/{len(rows)} cells finished"
                                          + (f"; failed cells: {', '.join(str(r['cell']) for r in failed)}" if failed else "")})
    client.set_terminated(parent_id, "FINISHED")
    return SweepResult(parent_id, uri, rows, summary, resumed_parent, failed)


def warn_remote_store(sweep: Sweep) -> None:
    """Warn when a Ray cluster would log to a local file store the nodes cannot reach."""
    s = sweep.settings
    if s.executor == "ray" and s.ray_address and not sweep.base.tracking.uri.startswith(("http://", "https://", "databricks")):
        warnings.warn(f"sweep.executor=ray with sweep.ray_address={s.ray_address!r} logs to tracking.uri={sweep.base.tracking.uri!r}; "
                      "nodes of a cluster need a tracking server they all reach (tracking.uri=http://host:port)", stacklevel=2)
