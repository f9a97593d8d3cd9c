"""A Lightning logger that writes each member's metrics to its own MLflow run, in batches.

Metrics are buffered and written with ``log_batch`` (up to 1000 per call) every few seconds and at
the end: logging one metric at a time to SQLite costs about 10 ms a call and would dominate a run.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

from lightning.pytorch.loggers import Logger
from mlflow.tracking import MlflowClient

from ..core.members import split_member_key, trunk_owner
from .store import set_tags
from .writer import MetricWriter, write_batch

__all__ = ["MemberRouterLogger"]


class MemberRouterLogger(Logger):
    """A Lightning logger that sends each member's metrics to its own MLflow run (one run for a
    plain run).

    Keys ``member{e}/...`` go to run e without the prefix (keys without a prefix, from modules
    with one member, go to run 0). With a :class:`~cpl.core.members.MemberSchedule`, metrics of a
    member are also written to the runs of members still dormant on its trunk, so every run has
    the full history that a separate run would have. Metrics are buffered and written in batches,
    every ``flush_every_s`` seconds. Once a run lasts that long, the batches go to a helper process
    (:class:`cpl.tracking.writer.MetricWriter`) that writes them while training goes on; ``flush`` and
    ``finalize`` wait until the store has everything.

    Args:
        client: the MLflow client.
        run_ids: one run per member.
        schedule: the members' schedule, or None.
        flush_every_s: write buffered metrics when this many seconds have passed since the last write.
        background: write from a helper process once the run is long enough to flush during training.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_ids: Sequence[str],
        schedule=None,
        flush_every_s: float = 5.0,
        max_buffer: int = 20000,
        background: bool = False,
    ):
        super().__init__()
        self.client, self.run_ids, self.schedule = client, list(run_ids), schedule
        self.flush_every_s, self.max_buffer = flush_every_s, max_buffer
        self.background = background
        self._buffers: list[list[tuple]] = [[] for _ in self.run_ids]  # rows (key, value, timestamp, step)
        self._count = 0
        self._last_flush = time.monotonic()
        self._direct_seconds = 0.0
        self._writer = None
        self._finalized = False

    @property
    def write_seconds(self) -> float:
        """Time the training process spent on metric writes (writing itself, or waiting for the writer process)."""
        return self._direct_seconds + (self._writer.wait_seconds if self._writer is not None else 0.0)

    @property
    def name(self) -> str:
        return "mlflow-members"

    @property
    def version(self) -> str:
        return self.run_ids[0]

    @property
    def experiment(self) -> MlflowClient:
        return self.client

    @property
    def run_id(self) -> str:
        return self.run_ids[0]

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Record ``params`` as tags of every run (the run's config is already its params; callbacks
        use this to annotate a run, e.g. ``cpl.ode_warning``)."""
        items = dict(params) if isinstance(params, Mapping) else dict(vars(params))
        if items:
            for run_id in self.run_ids:
                set_tags(self.client, run_id, {k: str(v)[:5000] for k, v in items.items()})

    def _dormant_by_owner(self, step: int) -> dict[int, list[int]]:
        """Runs of members still dormant at ``step``, keyed by the member whose trunk they are on."""
        out: dict[int, list[int]] = {}
        if self.schedule is not None:
            for d, start in enumerate(self.schedule.starts):
                owner = trunk_owner(self.schedule, d, step) if step < start else d
                if owner != d:
                    out.setdefault(owner, []).append(d)
        return out

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        ts = int(time.time() * 1000)
        step = 0 if step is None else int(step)
        by_member: dict[int, list[tuple]] = {}
        for key, value in metrics.items():
            member, rest = split_member_key(key)
            by_member.setdefault(member, []).append((rest, float(value), ts, step))
        dormant = self._dormant_by_owner(step)
        for member, items in by_member.items():
            for target in [member, *dormant.get(member, ())]:
                self._buffers[target].extend(items)
                self._count += len(items)
        if self._count >= self.max_buffer or time.monotonic() - self._last_flush >= self.flush_every_s:
            self._send(wait=False)

    def flush(self) -> None:
        """Write every buffered metric now and return when the store has them."""
        self._send(wait=True)

    def _send(self, wait: bool) -> None:
        batch = [(run_id, list(buf)) for run_id, buf in zip(self.run_ids, self._buffers) if buf]
        for buf in self._buffers:
            buf.clear()
        self._count = 0
        self._last_flush = time.monotonic()
        if self._writer is None and self.background and not wait and not self._finalized:
            # a run long enough to flush while training: writes go to a helper process from now on
            try:
                self._writer = MetricWriter(self.client.tracking_uri, self.client)
            except OSError:  # pragma: no cover - no process could be started: write here
                self.background = False
        if self._writer is not None:
            if batch:
                self._writer.send(batch)
            if wait:
                self._writer.wait()
        elif batch:
            t0 = time.perf_counter()
            write_batch(self.client, batch)
            self._direct_seconds += time.perf_counter() - t0

    def finalize(self, status: str = "success") -> None:
        """Write everything and stop the writer process (later metrics are written directly)."""
        try:
            self.flush()
        finally:
            self._finalized = True
            if self._writer is not None:
                self._writer.close()
