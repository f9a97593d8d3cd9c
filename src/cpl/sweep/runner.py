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

Executors run *tasks*; a task is a list of cells and :func:`~cpl.sweep.runner.run_cells` runs one
task: cells that can share a module train as the members of one run (:mod:`cpl.batching`), each
still recorded as its own child run.

The package: :mod:`~cpl.sweep.spec` (the ``sweep:`` schema, loading, cells and their hashes),
:mod:`~cpl.sweep.executors` (local processes, Ray), :mod:`~cpl.sweep.resume` (the MLflow parent and
finished cells), :mod:`~cpl.sweep.analysis` (tables, critical periods, figures, the summary) and
:mod:`~cpl.sweep.runner` (running cells and the whole sweep).
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .. import tracking
from ..batching import plan_groups
from ..core.progress import MemberStepReporter
from ..guard import held_signals, interrupt_signals, precheck, terminate_running
from ..run import train, train_group
from . import claims
from .analysis import critical_period_table, log_summary, table_markdown
from .executors import make_executor, portable_callbacks, start_order, workers
from .progress import StepsBar, task_steps
from .resume import find_or_create_parent, finished_cells
from .spec import Cell, CellResult, Sweep

__all__ = ["run_cells", "plan_tasks", "run_sweep", "SweepResult", "warn_remote_store", "cell_tags"]


def cell_tags(cell: Cell) -> dict[str, str]:
    return {
        "cpl.sweep.role": "cell",
        "cpl.sweep.cell": str(cell.index),
        "cpl.sweep.cell_hash": cell.config_hash,
        "cpl.sweep.cell_values": json.dumps(cell.values, default=str),
    }


def run_cells(
    cells: Sequence[Cell],
    parent_run_id: Optional[str],
    tags: Optional[dict[str, str]] = None,
    callbacks: Sequence[Any] = (),
    torch_threads: Optional[int] = None,
    progress: Any = None,
) -> list[CellResult]:
    """Run one task: every cell as one tracked :func:`cpl.run.train` nested under ``parent_run_id``.

    A cell that raises (divergence, any error) gives a FAILED result (its MLflow run is marked
    FAILED by ``train``) and the next cell runs; ``KeyboardInterrupt`` stops the task. Each cell is
    claimed first (:mod:`cpl.sweep.claims`): one that another worker holds or finished comes back
    ``CLAIMED``, untouched.
    ``progress``: a sink (``put((first cell index, member-steps))``) told of the steps while they run.
    """
    if progress is not None:
        callbacks = (*callbacks, MemberStepReporter(progress, key=cells[0].index))
    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    client = tracking.get_client(cells[0].config.tracking.uri) if parent_run_id and cells else None
    mine = [c for c in cells if client is None or claims.claim(client, parent_run_id, c.config_hash)]
    taken = [CellResult(c.index, c.config_hash, "CLAIMED") for c in cells if c.index not in {m.index for m in mine}]
    try:
        return (_run_cells(mine, parent_run_id, tags, callbacks) if mine else []) + taken
    finally:
        torch.set_num_threads(previous)
        for c in mine if client is not None else ():
            claims.release(client, parent_run_id, c.config_hash)


def _run_group(
    cells: Sequence[Cell], parent_run_id: Optional[str], tags: Optional[dict[str, str]], callbacks: Sequence[Any]
) -> Optional[list[CellResult]]:
    """Train the cells as the members of one batched run; None if that failed (the caller then
    runs them one by one, so one diverging cell does not fail the others)."""
    t0 = time.perf_counter()
    member_tags = [{**cell_tags(cell), "cpl.sweep.attempt": uuid.uuid4().hex} for cell in cells]
    try:
        results = train_group(
            [c.config for c in cells],
            callbacks=callbacks,
            tags=tags,
            parent_run_id=parent_run_id,
            member_tags=member_tags,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - retried cell by cell
        for cell, mt in zip(cells, member_tags):
            run_id = _attempt_run_id(cell, mt["cpl.sweep.attempt"])
            if run_id:
                tracking.set_tags(
                    tracking.get_client(cell.config.tracking.uri),
                    run_id,
                    {"cpl.sweep.superseded": f"batched run failed ({type(exc).__name__}); cell re-run alone"},
                )
        return None
    seconds = (time.perf_counter() - t0) / len(cells)
    return [
        CellResult(c.index, c.config_hash, "FINISHED", dict(r.metrics), r.run_id, seconds=seconds)
        for c, r in zip(cells, results)
    ]


def _run_cells(
    cells: Sequence[Cell], parent_run_id: Optional[str], tags: Optional[dict[str, str]], callbacks: Sequence[Any]
) -> list[CellResult]:
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
            out.append(
                CellResult(
                    cell.index,
                    cell.config_hash,
                    "FAILED",
                    run_id=_attempt_run_id(cell, attempt),
                    error=f"{type(exc).__name__}: {exc}",
                    seconds=time.perf_counter() - t0,
                )
            )
            continue
        out.append(
            CellResult(
                cell.index,
                cell.config_hash,
                "FINISHED",
                dict(result.metrics),
                result.run_id,
                seconds=time.perf_counter() - t0,
            )
        )
    return out


def _attempt_run_id(cell: Cell, attempt: str) -> Optional[str]:
    try:
        client = tracking.get_client(cell.config.tracking.uri)
        exp = client.get_experiment_by_name(cell.config.tracking.experiment)
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`cpl.sweep.attempt` = '{attempt}'", max_results=1
        )
        return runs[0].info.run_id if runs else None
    except Exception:  # noqa: BLE001 - best effort, for the report only
        return None


def plan_tasks(
    cells: Sequence[Cell], batched: bool = False, max_members: int = 64, workers: int = 1
) -> list[list[Cell]]:
    """Split the cells to run into tasks: one cell each, or (``batched``) groups of cells that train
    as the members of one run, dealt out so that ``workers`` end together (:func:`cpl.batching.plan_groups`)."""
    if not batched:
        return [[cell] for cell in cells]
    groups = plan_groups([c.config for c in cells], max_members, workers)
    return [[cells[i] for i in group] for group in groups]


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


@interrupt_signals()  # SIGTERM stops a sweep like Ctrl-C
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
        cpl.config.ConfigError: a check before the parent run is created failed (see :func:`cpl.guard.precheck`).
        KeyboardInterrupt: Ctrl-C or SIGTERM (:class:`cpl.guard.RunInterrupted`); finished cells are
            recorded, the parent and every child still running are marked KILLED.
    """
    state: dict[str, Any] = {}
    try:
        return _run_sweep(sweep, callbacks, executor, progress, state)
    except BaseException as exc:
        if "parent" in state:
            with held_signals():  # a second Ctrl-C must not stop the marking
                _close_parent(state["client"], state["exp"], state["parent"], exc, state["results"], len(sweep.cells))
        raise


def _close_parent(client, exp_id: str, parent_id: str, exc: BaseException, results: dict, n_cells: int) -> None:
    """An interrupted (KILLED) or failed (FAILED) sweep: its children still RUNNING, then the parent."""
    killed = isinstance(exc, KeyboardInterrupt)
    status = "KILLED" if killed else "FAILED"
    terminate_running(client, exp_id, parent_id, status, f"the sweep stopped: {type(exc).__name__}")
    finished = sum(r.status == "FINISHED" for r in results.values())
    message = (
        f"interrupted with {finished}/{n_cells} cells finished; run the same sweep again to resume"
        if killed
        else f"{type(exc).__name__}: {exc}"
    )
    tracking.set_tags(client, parent_id, {"cpl.status_message": message[:5000]})
    client.set_terminated(parent_id, status)


def _run_sweep(sweep: Sweep, callbacks: Sequence[Any], executor: Any, progress: bool, state: dict) -> SweepResult:
    precheck([sweep.base])  # before the parent is created: the store answers, the folders are writable
    uri = sweep.base.tracking.uri
    client = tracking.get_client(uri)
    results: dict[int, CellResult] = {}
    # two sweeps starting together find (or create) one parent; a signal waits until the parent is known
    with tracking.store_lock(uri), held_signals():
        parent_id, exp_id, resumed_parent = find_or_create_parent(client, sweep)
        state.update(client=client, exp=exp_id, parent=parent_id, results=results)
    tracking.set_tags(
        client,
        parent_id,
        {"cpl.sweep.executor": sweep.settings.executor, "cpl.sweep.threshold": sweep.settings.threshold},
    )
    if resumed_parent:
        results.update(_resumed(client, exp_id, parent_id, sweep))
    todo = [c for c in sweep.cells if c.index not in results]
    executor = executor or make_executor(sweep.settings)
    planned = plan_tasks(todo, sweep.settings.batched, sweep.settings.max_members, workers(executor))
    tasks = start_order(planned, executor, sweep.settings.batched)
    fn = functools.partial(
        run_cells,
        parent_run_id=parent_id,
        tags={"cpl.sweep.name": sweep.name, "cpl.sweep.hash": sweep.sweep_hash},
        callbacks=portable_callbacks(callbacks, executor),
        torch_threads=sweep.settings.torch_threads,
    )
    counts = {"done": 0, "failed": 0, "skipped": len(results)}
    bar = StepsBar(
        {task[0].index: task_steps(task, sweep.settings.batched) for task in tasks},
        desc=f"sweep {sweep.name}",
        disable=not progress,
    )
    if progress:
        fn = functools.partial(fn, progress=bar.sink(executor, len(tasks)))

    def postfix() -> None:
        bar.set_postfix(
            done=counts["done"],
            failed=counts["failed"],
            skipped=counts["skipped"],
            left=len(sweep.cells) - sum(counts.values()),
            refresh=True,
        )

    postfix()
    try:
        for _, task_results in executor.map(fn, tasks):
            for r in task_results:
                results[r.index] = r
                counts["failed" if r.status == "FAILED" else "done"] += 1
                if r.status == "FAILED":
                    bar.write(f"cell {r.index} FAILED: {_first_line(r.error)}", file=sys.stderr)
            bar.finish(task_results[0].index if task_results else None)
            postfix()
    finally:
        bar.close()
    _await_claimed(client, exp_id, parent_id, results)
    rows, summary, failed = _summarise(client, parent_id, sweep, results)
    return SweepResult(parent_id, uri, rows, summary, resumed_parent, failed)


def _first_line(text: Optional[str], limit: int = 200) -> str:
    return (text or "").partition("\n")[0][:limit]


def _resumed(client, exp_id: str, parent_id: str, sweep: Sweep) -> dict[int, CellResult]:
    """The cells that a previous attempt of this sweep finished (by config hash), as results."""
    done = finished_cells(client, exp_id, parent_id)
    return {
        cell.index: CellResult(cell.index, cell.config_hash, "FINISHED", r.metrics, r.run_id, resumed=True)
        for cell in sweep.cells
        if (r := done.get(cell.config_hash)) is not None
    }


def _summarise(client, parent_id: str, sweep: Sweep, results: dict[int, CellResult]):
    """The parent's table, summary and status message; the parent ends FINISHED."""
    rows = critical_period_table(sweep, results)
    summary = log_summary(client, parent_id, sweep, rows)
    failed = [r for r in rows if r["status"] == "FAILED"]
    tracking.set_tags(
        client,
        parent_id,
        {
            "cpl.status_message": f"{len(rows) - len(failed)}/{len(rows)} cells finished"
            + (f"; failed cells: {', '.join(str(r['cell']) for r in failed)}" if failed else "")
        },
    )
    client.set_terminated(parent_id, "FINISHED")
    return rows, summary, failed


def _await_claimed(client, exp_id: str, parent_id: str, results: dict[int, CellResult], poll_s: float = 2.0) -> None:
    """Wait for the cells another worker claimed (concurrent sweeps), then read their results back."""
    pending = {i: r for i, r in results.items() if r.status == "CLAIMED"}
    while pending:
        tags = client.get_run(parent_id).data.tags
        done = finished_cells(client, exp_id, parent_id)
        for i, r in list(pending.items()):
            if r.config_hash in done:
                f = done[r.config_hash]
                results[i] = CellResult(i, r.config_hash, "FINISHED", f.metrics, f.run_id, resumed=True)
            elif not claims.holder_alive(tags.get(claims.claim_key(r.config_hash))):
                results[i] = CellResult(i, r.config_hash, "FAILED", error="run by another worker, did not finish")
            else:
                continue
            del pending[i]
        if pending:
            time.sleep(poll_s)


def warn_remote_store(sweep: Sweep) -> None:
    """Warn when a Ray cluster would log to a local file store the nodes cannot reach."""
    s = sweep.settings
    if (
        s.executor == "ray"
        and s.ray_address
        and not sweep.base.tracking.uri.startswith(("http://", "https://", "databricks"))
    ):
        warnings.warn(
            f"sweep.executor=ray with sweep.ray_address={s.ray_address!r} logs to "
            f"tracking.uri={sweep.base.tracking.uri!r}; "
            "nodes of a cluster need a tracking server they all reach (tracking.uri=http://host:port)",
            stacklevel=2,
        )
