"""Which cells of a sweep train as the members of one run, and the members' schedule.

Cells that can share a module (the same family, equal :data:`~cpl.config.sections.RUN_SHARED_KEYS`
and equal keys the family lists as ``MEMBER_SHARED_KEYS``) form a group. Inside a group, cells
equal but for their onset (the family's ``ONSET_KEY`` and ``CHAIN_FREE_KEYS``) form an onset chain
that shares its pre-training trunk (:func:`cpl.core.members.onset_chain`). Pure Python over
configs: nothing here builds a module.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from .config import family, flatten
from .config.sections import RUN_SHARED_KEYS
from .core.members import MemberSchedule, onset_chain

__all__ = ["balance", "batchable", "batch_key", "cost", "plan_groups", "plan_members"]


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


def plan_groups(cfgs: Sequence[DictConfig], max_members: int = 64, workers: int = 1) -> list[list[int]]:
    """Split cells into groups that each run as one batched run (indices into ``cfgs``).

    Cells that cannot be batched form groups of one. With ``workers`` = 1 a group keeps its onset
    chains whole and holds at most ``max_members`` members otherwise. With more workers (a pool), the
    chains are dealt out so that the workers end together (:func:`balance`): a chain may be split
    by onset, and each worker's share of one shape becomes one group (at most ``max_members``).
    """
    groups: dict[str, list[int]] = {}
    singles: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if batchable(cfg):
            groups.setdefault(batch_key(cfg), []).append(i)
        else:
            singles.append([i])
    chains = {key: _chains(cfgs, members) for key, members in groups.items()}
    if workers > 1:  # each worker's pieces, one group per shape (the cells' batch keys, not computed again)
        key_of = {i: key for key, members in groups.items() for i in members}
        bins = balance(cfgs, [chain for key in chains for chain in chains[key]], workers)
        shares = [[piece for piece in share if key_of[piece[0]] == key] for share in bins for key in groups]
    else:
        shares = list(chains.values())
    out: list[list[int]] = []
    for pieces in shares:
        current: list[int] = []
        for piece in pieces:
            if current and len(current) + len(piece) > max_members:
                out.append(current)
                current = []
            current.extend(piece)
        if current:
            out.append(current)
    return out + singles


def cost(cfgs: Sequence[DictConfig], cells: Sequence[int]) -> int:
    """The expected time of running ``cells`` as one batched run, up to a constant: its member-steps
    (shared trunks counted once) times the depth (a step's matrix products grow with it)."""
    sub = [cfgs[i] for i in cells]
    _, schedule = plan_members(sub)
    return _depth(sub[0]) * sum(e - s for s, e in zip(schedule.starts, schedule.ends))


def _depth(cfg: DictConfig) -> int:
    return int(OmegaConf.select(cfg, "model.depth", default=1) or 1)


def _onsets(cfgs: Sequence[DictConfig], cells: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``{cell: (onset, steps after it)}``."""
    out = {}
    for i in cells:
        fam = family(cfgs[i].kind)
        onset = int(OmegaConf.select(cfgs[i], fam.schema.ONSET_KEY))
        out[i] = (onset, fam.max_steps(cfgs[i]) - onset)
    return out


def _links(chain: Sequence[int], timing: Mapping[int, tuple[int, int]]) -> list[tuple[list[int], MemberSchedule]]:
    """The cells of one onset chain as links of strictly increasing onsets, each with its schedule
    (:func:`cpl.core.members.onset_chain`): cells with equal onsets go to further links."""
    out = []
    pending = sorted(chain, key=lambda i: timing[i][0])
    while pending:
        link, rest, last = [], [], None
        for i in pending:
            (rest if timing[i][0] == last else link).append(i)
            last = timing[i][0]
        out.append((link, onset_chain([timing[i][0] for i in link], [timing[i][1] for i in link])))
        pending = rest
    return out


def _deal(costs: Sequence[int], workers: int) -> tuple[int, list[list[int]]]:
    """Longest first, each to the least loaded worker: ``(makespan, indices per worker)``."""
    loads, bins = [0] * workers, [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = loads.index(min(loads))
        loads[w] += costs[i]
        bins[w].append(i)
    return max(loads), bins


def balance(cfgs: Sequence[DictConfig], chains: list[list[int]], workers: int) -> list[list[list[int]]]:
    """Deal onset chains out to ``workers``, longest first, cutting the costliest piece in two by
    onset (where the dealt makespan is shortest) while that shortens the makespan by more than 3%
    (a cut trains the upper part's trunk again). The paper's observation-count sweep (five equal
    chains) on two workers: two chains and part of the fifth each instead of three and two (the
    makespan 960k member-steps instead of 1110k); four equal chains stay whole. Returns each
    worker's pieces (lists of cell indices; every cell in exactly one)."""
    timing = _onsets(cfgs, [i for c in chains for i in c])
    depth = {i: _depth(cfgs[c[0]]) for c in chains for i in c}

    def piece_cost(piece: list[int]) -> int:  # a part of one chain: its links' member-steps
        steps = sum(e - s for _, sched in _links(piece, timing) for s, e in zip(sched.starts, sched.ends))
        return depth[piece[0]] * steps

    pieces = [list(c) for c in chains]
    costs = [piece_cost(p) for p in pieces]
    best, bins = _deal(costs, workers)
    while len(pieces) < 4 * workers:
        top = max(range(len(pieces)), key=costs.__getitem__)
        rest, rest_costs = pieces[:top] + pieces[top + 1 :], costs[:top] + costs[top + 1 :]
        ordered = sorted(pieces[top], key=lambda i: timing[i][0])
        trials = []
        for j in range(1, len(ordered)):  # cut by onset: the upper part trains its trunk again
            cut = [ordered[:j], ordered[j:]]
            trial_costs = rest_costs + [piece_cost(part) for part in cut]
            trials.append((*_deal(trial_costs, workers), rest + cut, trial_costs))
        if not trials:
            break
        span, trial_bins, trial, trial_costs = min(trials, key=lambda t: t[0])
        if span >= 0.97 * best:
            break
        pieces, costs, best, bins = trial, trial_costs, span, trial_bins
    return [[pieces[i] for i in share] for share in bins if share]


def plan_members(cfgs: Sequence[DictConfig]) -> tuple[list[int], MemberSchedule]:
    """Order the cells of one group into members and give them a schedule with shared trunks.

    Returns ``(order, schedule)``: member e is cell ``cfgs[order[e]]``. Cells equal but for the
    onset (and the steps after it) form one chain sharing the pre-training trunk; cells with equal
    onsets go to further chains.
    """
    order: list[int] = []
    schedule = MemberSchedule(starts=[], ends=[], sources=[], switch_steps=[])
    for chain in _chains(cfgs, range(len(cfgs))):
        for link, sched in _links(chain, _onsets(cfgs, chain)):
            offset = len(order)
            order.extend(link)
            schedule.starts.extend(sched.starts)
            schedule.ends.extend(sched.ends)
            schedule.sources.extend(None if s is None else s + offset for s in sched.sources)
            schedule.switch_steps.extend(sched.switch_steps)
    return order, schedule
