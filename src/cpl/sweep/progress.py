"""A sweep's progress bar in gradient steps summed over members, moving inside a batched group.

Each task (a cell, or a batched group of cells) is worth its member-steps: the steps of every
member over its own window (a shared trunk counted once, see :func:`cpl.batching.plan_members`).
Running tasks report the member-steps they take (:class:`cpl.core.progress.MemberStepReporter`),
from this process or through a queue from worker processes; when a task finishes, its share is
set to exactly its worth, so the bar ends at its total whatever was retried.
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from ..batching import plan_members
from ..config import max_steps
from .spec import Cell

__all__ = ["task_steps", "StepsBar"]


def task_steps(task: Sequence[Cell], batched: bool = True) -> int:
    """The gradient steps, summed over members, that running ``task`` takes."""
    cfgs = [c.config for c in task]
    if len(cfgs) > 1 and batched:
        _, schedule = plan_members(cfgs)
        return sum(e - s for s, e in zip(schedule.starts, schedule.ends))
    return sum(max_steps(c) for c in cfgs)


class StepsBar:
    """A tqdm bar over ``totals`` (``{task key: member-steps}``); ``put((key, n))`` adds progress."""

    def __init__(self, totals: Mapping[Hashable, int], desc: str, disable: bool = False):
        self.totals = dict(totals)
        self.credited: dict[Hashable, int] = {k: 0 for k in self.totals}
        self.finished: set = set()
        self._lock = threading.Lock()
        self._stop: Optional[threading.Event] = None
        self._manager = None
        self.bar = tqdm(
            total=sum(self.totals.values()),
            desc=desc,
            unit="step",
            unit_scale=True,
            disable=disable,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    @property
    def n(self) -> int:
        return int(self.bar.n)

    @property
    def total(self) -> int:
        return int(self.bar.total)

    def put(self, item: tuple[Hashable, int]) -> None:
        key, steps = item
        with self._lock:
            if key in self.finished or key not in self.totals:
                return  # a late report of a finished task: already counted
            steps = min(int(steps), self.totals[key] - self.credited[key])
            if steps > 0:
                self.credited[key] += steps
                self.bar.update(steps)

    def finish(self, key: Optional[Hashable]) -> None:
        """A task ended: its share becomes exactly its total."""
        with self._lock:
            if key is None or key in self.finished or key not in self.totals:
                return
            self.finished.add(key)
            self.bar.update(self.totals[key] - self.credited[key])
            self.credited[key] = self.totals[key]

    def sink(self, executor: Any, n_tasks: int) -> Any:
        """Where running tasks report: this bar (tasks run in this process), a queue drained by a
        thread (a process pool), or None (elsewhere, e.g. Ray: the bar moves per finished task)."""
        processes = getattr(executor, "processes", None)
        if processes is None:
            return None
        if processes <= 1 or n_tasks <= 1:
            return self
        import multiprocessing as mp

        self._manager = mp.get_context("spawn").Manager()
        queue, stop = self._manager.Queue(), threading.Event()
        self._stop = stop

        def drain() -> None:
            while not stop.is_set():
                try:
                    self.put(queue.get(timeout=0.2))
                except Exception:  # noqa: BLE001 - empty queue, or the manager went away at the end
                    continue

        threading.Thread(target=drain, daemon=True).start()
        return queue

    def set_postfix(self, **kwargs) -> None:
        self.bar.set_postfix(**kwargs)

    def write(self, text: str, **kwargs) -> None:
        self.bar.write(text, **kwargs)

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
        self.bar.close()
