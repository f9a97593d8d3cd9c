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


# --------------------------------------------------------------------------- planning

#: keys in which cells of one onset chain may differ (everything else must be equal)
CHAIN_FREE_KEYS = ("switch.at_step", "train.steps_after_switch", "train.max_steps", "name", "tracking.run_name")


def _key(cfg, drop: Sequence[str] = (), keep: Sequence[str] | None = None) -> str:
    import json

    from .config import flatten

    flat = flatten(cfg)
    if keep is not None:
        flat = {k: flat.get(k) for k in keep}
    return json.dumps({k: v for k, v in sorted(flat.items()) if k not in drop}, default=str)


def _chains(cfgs: Sequence, indices) -> list[list[int]]:
    """The given cells (indices into ``cfgs``) grouped by everything but their onset, in first-seen order."""
    chains: dict[str, list[int]] = {}
    for i in indices:
        chains.setdefault(_key(cfgs[i], drop=CHAIN_FREE_KEYS), []).append(i)
    return list(chains.values())


def batchable(cfg) -> bool:
    """Whether a cell can be a member of a batched run (matrix completion without an ODE reference or resume)."""
    return cfg.kind == "matcomp" and not cfg.ode.enabled and cfg.trainer.ckpt_path is None


def batch_key(cfg) -> str:
    """Cells with equal keys can train as members of one module (same depth, width, lr, ...)."""
    from .experiments.matcomp import SHARED_KEYS

    keys = (*SHARED_KEYS, "kind", "trainer.accelerator", "tracking.uri", "tracking.experiment", "tracking.enabled", "tracking.background_writes", "trainer.checkpoint_dir", "trainer.steps_per_call", "log.figures")
    return _key(cfg, keep=keys)


def plan_groups(cfgs: Sequence, max_members: int = 64) -> list[list[int]]:
    """Split cells into groups that each run as one batched run (indices into ``cfgs``).

    Cells that cannot be batched form groups of one. A group keeps its onset chains whole and
    holds at most ``max_members`` members otherwise.
    """
    groups: dict[str, list[int]] = {}
    singles: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if batchable(cfg):
            groups.setdefault(batch_key(cfg), []).append(i)
        else:
            singles.append([i])
    out: list[list[int]] = []
    for members in groups.values():
        current: list[int] = []
        for chain in _chains(cfgs, members):
            if current and len(current) + len(chain) > max_members:
                out.append(current)
                current = []
            current.extend(chain)
        if current:
            out.append(current)
    return out + singles


def plan_members(cfgs: Sequence) -> tuple[list[int], MemberSchedule]:
    """Order the cells of one group into members and give them a schedule with shared trunks.

    Returns ``(order, schedule)``: member e is cell ``cfgs[order[e]]``. Cells equal but for the
    onset (and the steps after it) form one chain sharing the pre-training trunk.
    """
    from .config import max_steps

    order: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    sources: list[int | None] = []
    switches: list[int] = []
    for chain in _chains(cfgs, range(len(cfgs))):
        pending = sorted(chain, key=lambda i: cfgs[i].switch.at_step)
        while pending:  # equal onsets cannot share: they go to further chains
            link, rest, last = [], [], None
            for i in pending:
                (rest if cfgs[i].switch.at_step == last else link).append(i)
                last = cfgs[i].switch.at_step
            sched = onset_chain([cfgs[i].switch.at_step for i in link], [max_steps(cfgs[i]) - cfgs[i].switch.at_step for i in link])
            offset = len(order)
            order.extend(link)
            starts.extend(sched.starts)
            ends.extend(sched.ends)
            sources.extend(None if s is None else s + offset for s in sched.sources)
            switches.extend(sched.switch_steps)
            pending = rest
    return order, MemberSchedule(starts=starts, ends=ends, sources=sources, switch_steps=switches)
