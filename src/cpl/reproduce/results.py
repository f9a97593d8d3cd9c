"""What the jobs produced, read back from MLflow: the cells of every sweep, their metrics and histories.

The measures (:mod:`cpl.reproduce.measures`) see only this object, so a claim is checked against
what the runs recorded, whether they ran now or in an earlier invocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["SweepOutcome", "Results"]


@dataclass
class SweepOutcome:
    """One sweep of a job variant: its rows (grid values, status, metric, relative error, run id)."""

    job: str
    variant: str
    name: str
    parent_run_id: str
    onset_key: Optional[str]
    rows: list[dict[str, Any]]
    seconds: float = 0.0
    resumed: int = 0  #: cells read back from an earlier invocation


def _matches(row: dict[str, Any], where: Optional[dict[str, Any]]) -> bool:
    for key, want in (where or {}).items():
        wanted = want if isinstance(want, list) else [want]
        if not any(row.get(key) == w or (isinstance(w, float) and np.isclose(row.get(key, np.nan), w)) for w in wanted):
            return False
    return True


@dataclass
class Results:
    """The sweeps (``(job, variant) -> SweepOutcome``) and phase portraits of one reproduction."""

    client: Any
    sweeps: dict[tuple[str, str], SweepOutcome] = field(default_factory=dict)
    phase: dict[str, dict[str, Any]] = field(default_factory=dict)
    _metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    _params: dict[str, dict[str, str]] = field(default_factory=dict)
    _history: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def sweep(self, job: str, variant: str = "") -> SweepOutcome:
        if (job, variant) not in self.sweeps:
            raise KeyError(f"job {job!r} variant {variant!r} did not run")
        return self.sweeps[(job, variant)]

    def rows(self, job: str, variant: str = "", where: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        """The finished cells of a job variant whose grid values match ``where`` (a value or a list of values)."""
        rows = [r for r in self.sweep(job, variant).rows if _matches(r, where)]
        if not rows:
            raise ValueError(f"no cell of job {job!r} {variant!r} matches {where}")
        bad = [r["cell"] for r in rows if r["status"] != "FINISHED"]
        if bad:
            raise ValueError(f"cells {bad} of job {job!r} {variant!r} did not finish")
        return rows

    def one(self, job: str, variant: str = "", where: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        rows = self.rows(job, variant, where)
        if len(rows) != 1:
            raise ValueError(f"expected one cell of job {job!r} {variant!r} with {where}, got {len(rows)}")
        return rows[0]

    def metrics(self, run_id: str) -> dict[str, float]:
        """The run's latest metrics (as MLflow holds them)."""
        if run_id not in self._metrics:
            run = self.client.get_run(run_id)
            self._metrics[run_id] = dict(run.data.metrics)
            self._params[run_id] = dict(run.data.params)
        return self._metrics[run_id]

    def params(self, run_id: str) -> dict[str, str]:
        self.metrics(run_id)
        return self._params[run_id]

    def value(self, row: dict[str, Any], key: str) -> float:
        """A column of the sweep's table (``relative_error``, ``test/final_error``) or a run metric."""
        if key in row:
            return float(row[key])
        return float(self.metrics(row["run_id"])[key])

    def history(self, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a metric, by step."""
        if (run_id, key) not in self._history:
            hist = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            self._history[(run_id, key)] = (
                np.array([m.step for m in hist], dtype=np.int64),
                np.array([m.value for m in hist], dtype=np.float64),
            )
        return self._history[(run_id, key)]

    def run_ids(self, job: str) -> list[str]:
        """Every run a job used: the sweeps' parents and their cells."""
        out = []
        for (j, _), s in self.sweeps.items():
            if j == job:
                out += [s.parent_run_id] + [r["run_id"] for r in s.rows if r.get("run_id")]
        return out
