"""Members: one module trains E independent members (seeds, onsets, observation sets) as one tensor program.

Metric names of member e carry the prefix ``member{e}/`` when E > 1. A :class:`MemberSchedule`
gives each member its own window of steps; members of an onset chain share a pre-training trunk:
with onsets sorted ``T_0 < T_1 < ...``, member k is dormant until ``T_{k-1}``, takes a copy of member
k-1 then (member k-1 is still on the pre-training task, so this is member k's own state), trains
on the pre-training task until ``T_k``, switches, and stops at ``T_k + S_k``. At any step only a
contiguous run of members is active, so the trunk is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

__all__ = [
    "member_key",
    "member_prefix",
    "split_member_key",
    "member_metrics",
    "MemberSchedule",
    "onset_chain",
    "trunk_owner",
]


def member_key(key: str, member: int, n_members: int) -> str:
    """Metric name of ``key`` for one member: ``key`` itself when E = 1, else ``member{e}/key``.

    >>> member_key("test/error", 0, 1), member_key("test/error", 2, 3)
    ('test/error', 'member2/test/error')
    """
    return key if n_members == 1 else f"member{member}/{key}"


def member_prefix(member: int, n_members: int) -> str:
    """The prefix of member ``member``'s metric names (empty when E = 1).

    >>> member_prefix(0, 1), member_prefix(2, 3)
    ('', 'member2/')
    """
    return member_key("", member, n_members)


def split_member_key(key: str) -> tuple[int, str]:
    """``(member, key without its prefix)``; keys without a ``member{e}/`` prefix belong to member 0.

    >>> split_member_key("member3/test/error"), split_member_key("train/loss")
    ((3, 'test/error'), (0, 'train/loss'))
    """
    if key.startswith("member"):
        head, _, tail = key.partition("/")
        if head[6:].isdigit() and tail:
            return int(head[6:]), tail
    return 0, key


def member_metrics(
    values: Mapping[str, torch.Tensor], members: Sequence[int] | None = None, n_members: int | None = None
) -> dict[str, float]:
    """Turn ``{key: tensor of shape (M,)}`` into flat float metrics named by :func:`member_key`.

    ``members`` gives the member index of each of the M entries (default ``0..M-1``) and
    ``n_members`` the module's E (default M).
    """
    out: dict[str, float] = {}
    for key, tensor in values.items():
        flat = tensor.detach().reshape(-1).tolist()
        idx = list(range(len(flat))) if members is None else list(members)
        n = len(flat) if n_members is None else n_members
        for e, v in zip(idx, flat):
            out[member_key(key, e, n)] = float(v)
    return out


@dataclass
class MemberSchedule:
    """Per member: the window of steps ``[start, end)`` it trains in, the member it copies at its
    start (``source``, None = its own init) and its task-switch step."""

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
    return MemberSchedule(
        starts=starts, ends=[t + a for t, a in zip(onsets, after)], sources=sources, switch_steps=onsets
    )


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
