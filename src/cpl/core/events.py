"""Scheduled interventions and the chunks of steps between them.

Callbacks that change training at given steps (a task switch, a deficit window, a lesion) describe
it as :class:`ScheduleEvent` s through a ``schedule_events()`` method. Readers of the schedule (the
ODE reference, the module's chunking of steps) collect them from the trainer's callbacks, so no
step is written twice in a config.

A :class:`ChunkPlan` cuts a run into chunks of gradient steps between host synchronisations: a
chunk never crosses a multiple of any logging/readout/checkpoint interval nor an event's start or
end, so every callback sees exactly the steps it acts on.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

__all__ = ["ScheduleEvent", "collect_schedule", "ChunkPlan", "UNBOUNDED"]

#: the chunk length of a plan with neither a cap, nor intervals, nor events ahead
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class ScheduleEvent:
    """One scheduled intervention, in global steps.

    ``kind`` is e.g. ``"gate"`` (target: pathway name, over ``[start, end)``), ``"lesion"``
    (target: pathway, ``info["mode"]``), ``"switch"`` (at ``start``; ``info["from"]``, ``info["to"]``).
    ``end`` is None for events that last to the end of the run. ``members``: None = all.
    """

    kind: str
    start: int
    end: Optional[int] = None
    target: Optional[str] = None
    info: dict = field(default_factory=dict, hash=False, compare=False)
    members: Optional[tuple[int, ...]] = None


def collect_schedule(source: Any) -> list[ScheduleEvent]:
    """All events of the callbacks that offer ``schedule_events()``, by start step.

    ``source`` is a trainer (its ``callbacks`` are read) or an iterable of callbacks.
    """
    events: list[ScheduleEvent] = []
    for cb in getattr(source, "callbacks", source):
        fn = getattr(cb, "schedule_events", None)
        if callable(fn):
            events.extend(fn())
    return sorted(events, key=lambda ev: ev.start)


@dataclass
class ChunkPlan:
    """Chunks of at most ``cap`` steps (None: no cap) that stop at every multiple of ``intervals`` and at ``events``.

    >>> plan = ChunkPlan.build(10, intervals=[100, 25], events=[33, 40])
    >>> [plan.length(s) for s in (0, 20, 30, 33, 98)]
    [10, 5, 3, 7, 2]
    >>> plan.count(0, 50)
    6
    >>> ChunkPlan.build(None, intervals=[100, 25], events=[33]).boundaries(0, 60)
    [25, 33, 50, 60]
    """

    cap: Optional[int] = None
    intervals: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)

    @classmethod
    def build(
        cls, max_chunk: Optional[int], intervals: Sequence[int] = (), events: Iterable[Optional[int]] = ()
    ) -> "ChunkPlan":
        """``max_chunk`` None: no cap, a chunk runs from one interval multiple or event to the next."""
        if max_chunk is not None and max_chunk < 1:
            raise ValueError(f"Expected `max_chunk` >= 1 or None, got {max_chunk}")
        return cls(
            cap=None if max_chunk is None else int(max_chunk),
            intervals=sorted({int(i) for i in intervals if i}),
            events=sorted({int(e) for e in events if e is not None}),
        )

    def length(self, step: int) -> int:
        """Steps from ``step`` to the next boundary (at least 1)."""
        nxt = step + (self.cap or UNBOUNDED)
        for every in self.intervals:
            nxt = min(nxt, (step // every + 1) * every)
        i = bisect.bisect_right(self.events, step)
        if i < len(self.events):
            nxt = min(nxt, self.events[i])
        return max(1, nxt - step)

    def boundaries(self, start: int, end: int) -> list[int]:
        """The steps after ``start`` up to ``end`` (included) where a chunk ends."""
        out, step = [], start
        while step < end:
            step = min(step + self.length(step), end)
            out.append(step)
        return out

    def count(self, start: int, end: int) -> int:
        """Number of chunks from ``start`` to ``end``."""
        return len(self.boundaries(start, end))
