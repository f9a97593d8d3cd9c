"""The sweep's MLflow parent run (found again by name and hash) and the cells already finished under it."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import OmegaConf

from .. import tracking
from ..config import flatten
from .spec import CellResult, Sweep

__all__ = ["find_or_create_parent", "finished_cells", "search_all"]


def search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=1000,
            page_token=token,
            order_by=["attribute.start_time ASC"],
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _parent_params(sweep: Sweep) -> dict[str, Any]:
    params = {k: v for k, v in flatten(sweep.base).items() if k not in sweep.grid}
    params.update({f"sweep.grid.{k}": json.dumps(v, default=str) for k, v in sweep.grid.items()})
    s = sweep.settings
    params.update(
        {
            "sweep.name": s.name,
            "sweep.group_by": s.group_by,
            "sweep.onset_key": s.onset_key,
            "sweep.metric": s.metric,
            "sweep.n_cells": len(sweep.cells),
        }
    )
    return params


def find_or_create_parent(client, sweep: Sweep) -> tuple[str, str, bool]:
    """The parent run of ``sweep`` (found by name and hash, else created): ``(run_id, experiment_id, resumed)``."""
    exp_id = tracking.get_or_create_experiment(client, sweep.base.tracking.experiment)
    found = search_all(
        client,
        exp_id,
        f"tags.`cpl.sweep.role` = 'parent' and tags.`cpl.sweep.name` = '{sweep.name}' and "
        f"tags.`cpl.sweep.hash` = '{sweep.sweep_hash}'",
    )
    if found:
        run_id = found[-1].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id, exp_id, True
    tags = {
        "cpl.sweep.role": "parent",
        "cpl.sweep.name": sweep.name,
        "cpl.sweep.hash": sweep.sweep_hash,
        "cpl.conf": sweep.base.name,
        "cpl.kind": sweep.base.kind,
        "cpl.sweep.grid": json.dumps(sweep.grid, default=str),
    }
    name = sweep.base.tracking.run_name or sweep.name  # the command line names it after its overrides
    run_id = tracking.start_run(client, sweep.base.tracking.experiment, name, tags)
    tracking.log_params(client, run_id, _parent_params(sweep))
    client.log_text(run_id, OmegaConf.to_yaml(sweep.base, resolve=True), "base_config.yaml")
    return run_id, exp_id, False


def finished_cells(client, experiment_id: str, parent_run_id: str) -> dict[str, CellResult]:
    """The latest FINISHED child of ``parent_run_id`` per cell hash, with its final metrics."""
    out: dict[str, CellResult] = {}
    for run in search_all(
        client, experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'"
    ):
        h = run.data.tags.get("cpl.sweep.cell_hash")
        if h:
            out[h] = CellResult(
                int(run.data.tags.get("cpl.sweep.cell", -1)),
                h,
                "FINISHED",
                dict(run.data.metrics),
                run.info.run_id,
                resumed=True,
            )
    return out
