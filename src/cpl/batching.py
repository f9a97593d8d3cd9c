"""Which cells of a sweep train as the members of one run, and the members' schedule.

Cells that can share a module (the same family, equal :data:`~cpl.config.sections.RUN_SHARED_KEYS`
and equal keys the family lists as ``MEMBER_SHARED_KEYS``) form a group. Inside a group, cells
equal but for their onset (the family's ``ONSET_KEY`` and ``CHAIN_FREE_KEYS``) form an onset chain
that shares its pre-training trunk (:func:`cpl.core.members.onset_chain`). Pure Python over
configs: nothing here builds a module.
"""

from __future__ import annotations

import json
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .config import family, flatten
from .config.sections import RUN_SHARED_KEYS
from .core.members import MemberSchedule, onset_chain

__all__ = ["batchable", "batch_key", "plan_groups", "plan_members"]


def _key(cfg: DictConfig, drop: Sequence[str] = (), keep: Sequence[str] | None = None) -> str:
    flat = {k: v for k, v in flatten(cfg).items() if not k.startswith("callbacks.")}
    if keep is not None:
        flat = {k: flat.get(k) for k in keep}
    # callbacks compare as written: their arguments bound to keys (switch.at_step) follow those keys
    flat["callbacks"] = OmegaConf.to_container(cfg.callbacks, resolve=False) if cfg.get("callbacks") else None
    return json.dumps({k: v for k, v in sorted(flat.items()) if k not in drop}, default=str)


def _chains(cfgs: Sequence[DictConfig], indices) -> list[list[int]]:
    """The given cells (indices into ``cfgs``) grouped by everything but their onset, in first-seen order."""
    chains: dict[str, list[int]] = {}
    for i in indices:
        free = family(cfgs[i].kind).schema.CHAIN_FREE_KEYS
        chains.setdefault(_key(cfgs[i], drop=free), []).append(i)
    return list(chains.values())


def batchable(cfg: DictConfig) -> bool:
    """Whether a cell can be a member of a batched run: its family batches, the family's
    ``batchable(cfg)`` agrees (e.g. no analytic reference) and it does not resume a checkpoint."""
    fam = family(cfg.kind)
    if fam.batch_keys is None or cfg.trainer.ckpt_path is not None:
        return False
    check = getattr(fam.schema, "batchable", None)
    return bool(check(cfg)) if check is not None else True


def batch_key(cfg: DictConfig) -> str:
    """Cells with equal keys can train as members of one module (same family, depth, lr, store, ...)."""
    return _key(cfg, keep=(*RUN_SHARED_KEYS, *(family(cfg.kind).batch_keys or ())))


def plan_groups(cfgs: Sequence[DictConfig], max_members: int = 64) -> list[list[int]]:
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


def plan_members(cfgs: Sequence[DictConfig]) -> tuple[list[int], MemberSchedule]:
    """Order the cells of one group into members and give them a schedule with shared trunks.

    Returns ``(order, schedule)``: member e is cell ``cfgs[order[e]]``. Cells equal but for the
    onset (and the steps after it) form one chain sharing the pre-training trunk; cells with equal
    onsets go to further chains.
    """
    order: list[int] = []
    schedule = MemberSchedule(starts=[], ends=[], sources=[], switch_steps=[])
    for chain in _chains(cfgs, range(len(cfgs))):
        fam = family(cfgs[chain[0]].kind)
        onset = {i: int(OmegaConf.select(cfgs[i], fam.schema.ONSET_KEY)) for i in chain}
        pending = sorted(chain, key=onset.__getitem__)
        while pending:
            link, rest, last = [], [], None
            for i in pending:
                (rest if onset[i] == last else link).append(i)
                last = onset[i]
            sched = onset_chain([onset[i] for i in link], [fam.max_steps(cfgs[i]) - onset[i] for i in link])
            offset = len(order)
            order.extend(link)
            schedule.starts.extend(sched.starts)
            schedule.ends.extend(sched.ends)
            schedule.sources.extend(None if s is None else s + offset for s in sched.sources)
            schedule.switch_steps.extend(sched.switch_steps)
            pending = rest
    return order, schedule
