"""What a sweep shows: the critical-period table, the curves against the onset, figures and summary metrics."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any, Optional, Sequence

from mlflow.entities import Metric

from ..figures import critical_period_figure, log_figure
from ..tracking.writer import write_batch
from .spec import CellResult, Sweep

__all__ = ["critical_period_table", "curves", "critical_periods", "table_csv", "table_markdown", "log_summary"]


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
        row: dict[str, Any] = {
            "cell": cell.index,
            **cell.values,
            "status": r.status,
            "resumed": r.resumed,
            s.metric: value,
        }
        if onset:
            row["relative_error"] = value - by_key[_values_key(dict(cell.values, **{onset: ref_onset}))]
        row.update(
            {
                "run_id": r.run_id or "",
                "seconds": round(r.seconds, 2),
                "error": (r.error or "").splitlines()[0][:300] if r.error else "",
            }
        )
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
    s = sweep.settings
    title = f"{s.name}: curves by {s.group_by or 'cell'}"
    figs = {}
    for column, path, ylabel in (
        (
            "relative_error",
            "summary/relative_error.png",
            f"relative error ({s.metric} minus onset {min(sweep.grid[s.onset_key])})",
        ),
        (s.metric, "summary/final_error.png", s.metric),
    ):
        data = {_label(k): v for k, v in curves(sweep, rows, column).items()}
        figs[path] = critical_period_figure(
            data,
            xlabel=f"deficit length ({s.onset_key})",
            ylabel=ylabel,
            title=title,
            threshold=s.threshold if column == "relative_error" else None,
        )
    return figs


def log_summary(client, parent_run_id: str, sweep: Sweep, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Log the table, the figures and the summary metrics of a sweep on its parent run; return the metrics."""
    s = sweep.settings
    ts = int(time.time() * 1000)
    n = {status: sum(r["status"] == status for r in rows) for status in ("FINISHED", "FAILED", "NOT_RUN")}
    summary = {
        "sweep/n_cells": float(len(rows)),
        "sweep/n_finished": float(n["FINISHED"]),
        "sweep/n_failed": float(n["FAILED"]),
        "sweep/n_not_run": float(n["NOT_RUN"]),
        "sweep/n_resumed": float(sum(bool(r["resumed"]) for r in rows)),
    }
    metrics = [Metric(k, v, ts, 0) for k, v in summary.items()]
    client.log_text(parent_run_id, table_csv(rows), "summary/critical_period_table.csv")
    client.log_text(parent_run_id, table_markdown(rows) + "\n", "summary/critical_period_table.md")
    if s.onset_key:
        for key, value in critical_periods(sweep, rows).items():
            summary[f"critical_period/{_metric_label(key)}"] = value
            metrics.append(Metric(f"critical_period/{_metric_label(key)}", value, ts, 0))
        for column, prefix in (("relative_error", "relative_error"), (s.metric, "final_error")):
            for key, (xs, ys) in curves(sweep, rows, column).items():
                metrics += [
                    Metric(f"{prefix}/{_metric_label(key)}", float(y), ts, int(x))
                    for x, y in zip(xs, ys)
                    if not math.isnan(y)
                ]
        for path, fig in _figures(sweep, rows).items():
            log_figure(client, parent_run_id, fig, path)  # PNG and PDF
    # retried within tracking.timeout_s like every metric write (cpl.tracking.writer)
    write_batch(client, [(parent_run_id, [(m.key, m.value, m.timestamp, m.step) for m in metrics])])
    return summary
