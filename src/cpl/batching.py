"""Batched members and shared pre-training trunks: the schedules that make a sweep one tensor program.

Cells of an onset sweep that differ only in the onset T share their pre-training trajectory:
the run with onset T_k is, up to step T_k, the same as every run with a later onset. With
onsets sorted ``T_0 < T_1 < ...``, member k is dormant until ``T_{k-1}``, takes a copy of member
k-1 then (member k-1 is still on the pre-training task, so this is member k's own state), trains
on the pre-training task until ``T_k``, switches, and stops at ``T_k + S_k``. At any step only a
contiguous run of members is active, so the pre-training trunk is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["MemberSchedule", "onset_chain", "trunk_owner"]


@dataclass
class MemberSchedule:
    starts: list[int]
    ends: list[int]
    sources: list[int | None]
    switch_steps: list[int]


def onset_chain(onsets: Sequence[int], steps_after: Sequence[int] | int) -> MemberSchedule:
    """Schedule of members that share one pre-training trunk, in the order of ``onsets``.

    Args:
        onsets: switch steps, strictly increasing (one member each).
        steps_after: steps on the final task after each switch (one value or one per member).

    >>> s = onset_chain([0, 10, 50], 30)
    >>> s.starts, s.ends, s.sources
    ([0, 0, 10], [30, 40, 80], [None, 0, 1])
    """
    onsets = [int(t) for t in onsets]
    if any(b <= a for a, b in zip(onsets, onsets[1:])):
        raise ValueError(f"Expected strictly increasing `onsets`, got {onsets}")
    after = [int(steps_after)] * len(onsets) if isinstance(steps_after, int) else [int(a) for a in steps_after]
    if len(after) != len(onsets):
        raise ValueError(f"Expected one `steps_after` per onset ({len(onsets)}), got {len(after)}")
    starts = [0] + onsets[:-1]
    sources: list[int | None] = [None] + list(range(len(onsets) - 1))
    return MemberSchedule(starts=starts, ends=[t + a for t, a in zip(onsets, after)], sources=sources, switch_steps=onsets)


def trunk_owner(schedule: MemberSchedule, member: int, step: int) -> int:
    """The member whose state equals ``member``'s state at ``step`` (itself once it has started).

    Metrics of a dormant member (before its start) are those of this owner: a router uses it to
    give every cell a complete history.

    >>> s = onset_chain([0, 10, 50], 30)
    >>> [trunk_owner(s, 2, t) for t in (0, 5, 10, 60)]
    [1, 1, 2, 2]
    """
    e = member
    while schedule.sources[e] is not None and step < schedule.starts[e]:
        e = schedule.sources[e]
    return e
