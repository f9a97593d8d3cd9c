"""A Lightning logger that writes each member's metrics to its own MLflow run, in batches.

Metrics are buffered and written with ``log_batch`` (up to 1000 per call) every few seconds and at
the end: logging one metric at a time to SQLite costs about 10 ms a call and would dominate a run.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from lightning.pytorch.loggers import Logger
from mlflow.tracking import MlflowClient

from ..core.events import collect_schedule
from ..core.members import split_member_key
from .store import set_tags
from .writer import MetricWriter, write_batch

__all__ = ["MemberRouterLogger", "CurveThinner"]


class CurveThinner:
    """The steps of a run's curves that go to MLflow: about ``points`` per key and member.

    Member e logs over its own window ``spans[e] = (start, end)``; kept are its first and last
    step, every step of ``keep[e]`` (switches, deficit boundaries) and the multiples of a stride:
    1 when the finest logging interval of ``every`` gives at most ``points`` steps (nothing to
    thin), else a multiple of the least common multiple of the intervals (so every key keeps the
    same steps).

    >>> t = CurveThinner(10, every=[100, 10], spans=[(0, 50000)], keep=[{20000, 20001}])
    >>> t.strides, sum(t.keeps(0, s) for s in range(0, 50001, 10)) <= 10
    ([10000], True)
    >>> [t.keeps(0, s) for s in (0, 100, 20000, 20001, 30000, 49900, 50000)]
    [True, False, True, True, True, False, True]
    >>> CurveThinner(20, every=[10, 5], spans=[(0, 60)], keep=[set()]).strides  # nothing to thin
    [1]
    """

    def __init__(self, points: int, every, spans: Sequence[tuple[int, int]], keep: Sequence[Iterable[int]]):
        if points < 4:
            raise ValueError(f"Expected `points` >= 4, got {points}")
        every = sorted({int(i) for i in ([every] if isinstance(every, int) else every) if i}) or [1]
        self.spans, self.keep = [tuple(sp) for sp in spans], [set(k) for k in keep]
        self.strides = []
        for (start, end), always in zip(self.spans, self.keep):
            budget = max(1, points - len(always) - 3)  # first, last and one rounding step
            length = max(end - start, 1)
            base = math.lcm(*every)
            thin = length / every[0] > budget
            self.strides.append(base * max(1, math.ceil(length / (base * budget))) if thin else 1)

    def keeps(self, member: int, step: int) -> bool:
        start, end = self.spans[member]
        return step % self.strides[member] == 0 or step in (start, end) or step in self.keep[member]

    @classmethod
    def for_run(cls, points: Optional[int], every: int, callbacks: Sequence, spans: Sequence[tuple[int, int]]):
        """The thinner of a run logging every ``every`` steps with these callbacks (their logging
        intervals count, their scheduled events are kept); None: keep all."""
        if not points:
            return None
        keep: list[set[int]] = [set() for _ in spans]
        for ev in collect_schedule(callbacks):
            for e in ev.members if ev.members is not None else range(len(spans)):
                keep[e].update(s for s in (ev.start, ev.end) if s is not None)
        intervals = [every]
        for cb in callbacks:  # a readout's logging interval (else its own interval)
            intervals.append(getattr(cb, "log_every_n_steps", getattr(cb, "every_n_steps", None)))
        return cls(points, [i for i in intervals if isinstance(i, int) and i > 0], spans, keep)


class MemberRouterLogger(Logger):
    """A Lightning logger that sends each member's metrics to its own MLflow run (one run for a
    plain run).

    Keys ``member{e}/...`` go to run e without the prefix (keys without a prefix, from modules
    with one member, go to run 0). A member that starts on a shared trunk records only its own
    steps (its run points to the trunk's, see :mod:`cpl.tracking.dense`). With a ``thinner``
    (:class:`CurveThinner`) only its steps are kept. Metrics are buffered and written in batches,
    every ``flush_every_s`` seconds. Once a run lasts that long, the batches go to a helper process
    (:class:`cpl.tracking.writer.MetricWriter`) that writes them while training goes on; ``flush`` and
    ``finalize`` wait until the store has everything.

    Args:
        client: the MLflow client.
        run_ids: one run per member.
        schedule: the members' schedule, or None (unused; kept for callers).
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
        thinner: Optional[CurveThinner] = None,
    ):
        super().__init__()
        self.client, self.run_ids, self.schedule = client, list(run_ids), schedule
        self.flush_every_s, self.max_buffer = flush_every_s, max_buffer
        self.background, self.thinner = background, thinner
        self.rows = 0  #: metric rows sent to the store
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

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        ts = int(time.time() * 1000)
        step = 0 if step is None else int(step)
        for key, value in metrics.items():
            member, rest = split_member_key(key)
            if self.thinner is None or self.thinner.keeps(member, step):
                self._buffers[member].append((rest, float(value), ts, step))
                self._count += 1
                self.rows += 1
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
