"""Dense traces of a run in ONE compressed artifact, and the pointer from a cell to its shared trunk.

MLflow curves are thinned (see :class:`~cpl.tracking.logger.CurveThinner`); what a figure needs at
full resolution (singular values every readout, the per-step test error) goes to
``traces/dense.npz`` (``numpy.savez_compressed``): named arrays, each series as ``<name>/steps``
and ``<name>/values``. A cell of a batched group that branched off a shared pre-training trunk
records only its own steps, plus the tags ``cpl.trunk_run_id`` (the run that recorded the trunk
before this cell's start) and ``cpl.trunk_until_step`` (this cell's first own step);
:func:`full_series` follows these pointers back to step 0.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["DENSE_ARTIFACT", "log_dense", "load_dense", "trunk_tags", "full_series", "full_metric"]

DENSE_ARTIFACT = "traces/dense.npz"
TRUNK_RUN_TAG, TRUNK_UNTIL_TAG = "cpl.trunk_run_id", "cpl.trunk_until_step"


def log_dense(client, run_id: str, series: Mapping[str, tuple[np.ndarray, np.ndarray]], since: int = 0) -> int:
    """Save ``{name: (steps (T,), values (T, ...))}`` (the steps >= ``since``) as the run's
    ``traces/dense.npz``; returns its size in bytes (0 = nothing to save)."""
    arrays: dict[str, np.ndarray] = {}
    for name, (steps, values) in series.items():
        steps, values = np.asarray(steps, dtype=np.int64), np.asarray(values)
        own = steps >= since
        if own.any():
            arrays[f"{name}/steps"], arrays[f"{name}/values"] = steps[own], values[own]
    if not arrays:
        return 0
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with tempfile.TemporaryDirectory(prefix="cpl-dense-") as tmp:
        path = Path(tmp) / Path(DENSE_ARTIFACT).name
        path.write_bytes(buf.getvalue())
        client.log_artifact(run_id, str(path), str(Path(DENSE_ARTIFACT).parent))
    return len(buf.getvalue())


def load_dense(client, run_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The series of a run's ``traces/dense.npz``: ``{name: (steps, values)}`` ({} when it has none)."""
    if DENSE_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, str(Path(DENSE_ARTIFACT).parent))}:
        return {}
    with tempfile.TemporaryDirectory(prefix="cpl-dense-") as tmp:
        with np.load(client.download_artifacts(run_id, DENSE_ARTIFACT, tmp)) as data:
            names = sorted({k.rsplit("/", 1)[0] for k in data.files})
            return {n: (data[f"{n}/steps"], data[f"{n}/values"]) for n in names}


def trunk_tags(run_ids: Sequence[str], schedule) -> list[dict[str, str]]:
    """Per member: the tags that point a cell starting on a shared trunk to the run that recorded it."""
    out: list[dict[str, str]] = []
    for e, run_id in enumerate(run_ids):
        source = None if schedule is None else schedule.sources[e]
        if source is None or schedule.starts[e] == 0:  # a copy at step 0 shares no history
            out.append({})
        else:
            out.append({TRUNK_RUN_TAG: run_ids[source], TRUNK_UNTIL_TAG: str(schedule.starts[e])})
    return out


def _chain(client, run_id: str) -> list[tuple[str, int]]:
    """``[(run id, first own step)]`` from the run back to step 0, the run itself first."""
    chain: list[tuple[str, int]] = []
    while run_id is not None:
        tags = client.get_run(run_id).data.tags
        chain.append((run_id, int(tags.get(TRUNK_UNTIL_TAG, 0))))
        run_id = tags.get(TRUNK_RUN_TAG)
    return chain


def full_series(client, run_id: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A dense series of a run from step 0: the trunk runs' steps before the run's own start, then its own."""
    parts, until = [], None
    for rid, start in _chain(client, run_id):
        steps, values = load_dense(client, rid)[name]
        keep = steps < until if until is not None else np.ones(len(steps), bool)
        parts.append((steps[keep], values[keep]))
        until = start
    parts.reverse()
    return np.concatenate([s for s, _ in parts]), np.concatenate([v for _, v in parts])


def full_metric(client, run_id: str, key: str) -> dict[int, float]:
    """A (thinned) MLflow curve of a run from step 0, the trunk's points before its start included."""
    out: dict[int, float] = {}
    until: Optional[int] = None
    for rid, start in _chain(client, run_id):
        for m in client.get_metric_history(rid, key):
            if until is None or m.step < until:
                out.setdefault(m.step, m.value)
        until = start
    return dict(sorted(out.items()))
