"""Dry runs: what a run or a sweep will do, how much memory it holds and how long it takes here.

Nothing here trains a run or touches a tracking store. :func:`group_plans` says which cells train
as the members of one run (:mod:`cpl.batching`) and counts their gradient steps, trunks once;
:func:`measure_memory` builds each group's module and adds up its tensors; :func:`calibrate`
times a few hundred untracked steps of one member, twice, so that the fixed cost of a run and the
cost of a step come apart; :func:`estimate_seconds` puts them together.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig

from .batching import batch_key, batchable, plan_groups, plan_members
from .config import max_steps
from .core.events import ScheduleEvent, collect_schedule
from .core.lightning_compat import quiet_lightning
from .run import build

__all__ = [
    "GroupPlan",
    "Calibration",
    "group_plans",
    "measure_memory",
    "calibrate",
    "estimate_seconds",
    "run_schedule",
    "log_points",
    "CALIBRATION_STEPS",
]

#: lengths of the two untracked calibration fits (the difference gives the cost of a step)
CALIBRATION_STEPS = (100, 400)


@dataclass
class GroupPlan:
    """Cells that train as the members of one run."""

    cells: list[int]  #: indices into the planned configs
    member_steps: int  #: gradient steps summed over the members, shared trunks once
    steps_alone: int  #: gradient steps if every cell ran on its own
    length: int  #: steps of the group's run (its longest member)
    chains: int  #: onset chains (members sharing a pre-training trunk)
    key: str  #: cells with equal keys cost the same per step (calibrated once)
    tensor_bytes: int = 0  #: parameters and buffers of the group's module (:func:`measure_memory`)
    history_bytes: int = 0  #: readouts kept in memory for figures and CSVs


@dataclass
class Calibration:
    """The cost model of a run on this machine: ``run_seconds + step_seconds * steps + member_seconds *
    member_steps`` (a step's overhead whatever the members, each active member's share, the fixed cost)."""

    step_seconds: float
    member_seconds: float
    run_seconds: float
    steps: tuple[int, int] = CALIBRATION_STEPS
    members: int = 1  #: members of the second pair of fits (1: step and member costs are not told apart)
    fits: list[float] = field(default_factory=list)  #: seconds of each calibration fit

    def seconds(self, steps: int, member_steps: int) -> float:
        return self.run_seconds + self.step_seconds * steps + self.member_seconds * member_steps


def group_plans(
    cfgs: Sequence[DictConfig], batched: bool = True, max_members: int = 64, workers: int = 1
) -> list[GroupPlan]:
    """The groups the sweep runner forms from ``cfgs`` for ``workers`` processes
    (:func:`cpl.batching.plan_groups`), with their steps."""
    groups = plan_groups(cfgs, max_members, workers) if batched else [[i] for i in range(len(cfgs))]
    out = []
    for cells in groups:
        members = [cfgs[i] for i in cells]
        alone = sum(max_steps(c) for c in members)
        if len(cells) > 1 or batchable(members[0]):
            _, schedule = plan_members(members)
            steps = sum(e - s for s, e in zip(schedule.starts, schedule.ends))
            chains, length = sum(src is None for src in schedule.sources), max(schedule.ends)
        else:
            steps, chains, length = alone, 1, alone
        key = batch_key(members[0]) if batchable(members[0]) else f"cell {cells[0]}"
        out.append(GroupPlan(list(cells), steps, alone, length, chains, key))
    return out


def _module_bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def measure_memory(cfgs: Sequence[DictConfig], groups: Sequence[GroupPlan]) -> None:
    """Fill ``tensor_bytes`` (built module) and ``history_bytes`` (singular-value readouts kept) of every group."""
    for g in groups:
        members = [cfgs[i] for i in g.cells]
        schedule = plan_members(members)[1] if len(members) > 1 else None
        exp = build(members, schedule) if schedule is not None else build(members[0])
        g.tensor_bytes = _module_bytes(exp.module)
        g.history_bytes = 0
        for cb in exp.callbacks:  # readout loggers keep (E, k) values (and projections) per readout
            every, k = getattr(cb, "every_n_steps", None), getattr(cb, "top_k", None)
            if isinstance(every, int) and isinstance(k, int):
                per = len(members) * k * 4 * (2 if getattr(cb, "reference", None) else 1)
                g.history_bytes += (g.length // every + 2) * per


def _fit_seconds(cfg: DictConfig, steps: int, members: int = 1) -> tuple[float, float]:
    """``(build seconds, fit seconds)`` of an untracked run of ``cfg`` (as ``members`` independent
    members) stopped after ``steps`` steps."""
    import lightning as L

    t0 = time.perf_counter()
    exp = build([cfg] * members) if members > 1 else build(cfg)
    if cfg.trainer.steps_per_call != 1:
        exp.module.set_steps_per_call(cfg.trainer.steps_per_call, [cfg.trainer.checkpoint_every_n_steps or 0])
    built = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="cpl-plan-") as tmp:
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            max_steps=steps,
            max_epochs=-1,
            logger=False,
            callbacks=exp.callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=tmp,
        )
        t0 = time.perf_counter()
        trainer.fit(exp.module)
        return built, time.perf_counter() - t0


def _slope(short: int, long: int, t_short: float, t_long: float) -> float:
    return (t_long - t_short) / (long - short) if long > short and t_long > t_short else t_long / long


def calibrate(
    cfg: DictConfig, steps: Sequence[int] = (), threads: Optional[int] = None, members: int = 1
) -> Calibration:
    """Time short untracked fits of ``cfg`` on this machine, two lengths each: one member, and
    (``members`` > 1) that many independent members. The difference of two lengths gives the cost
    of a step, the difference of the member counts splits it into a per-step and a per-member part,
    and what the long fit leaves over is the fixed cost of a run."""
    quiet_lightning()
    short, long = steps or CALIBRATION_STEPS
    long = min(long, max_steps(cfg))
    short = min(short, max(1, long // 4))
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        (b1, t1), (b2, t2) = _fit_seconds(cfg, short), _fit_seconds(cfg, long)
        one = _slope(short, long, t1, t2)
        fits = [t1, t2]
        if members > 1:
            (_, u1), (_, u2) = _fit_seconds(cfg, short, members), _fit_seconds(cfg, long, members)
            fits += [u1, u2]
            per_member = max(0.0, (_slope(short, long, u1, u2) - one) / (members - 1))
            per_step = max(0.0, one - per_member)
        else:
            per_step, per_member = 0.0, one
    finally:
        torch.set_num_threads(previous)
    fixed = max(0.0, min(b1, b2) + t2 - one * long)
    return Calibration(per_step, per_member, fixed, (short, long), members, fits)


def estimate_seconds(groups: Sequence[GroupPlan], calibrations: dict[str, Calibration]) -> float:
    """The calibrated cost of every group's run: its steps, its member-steps and its fixed cost."""
    return sum(calibrations[g.key].seconds(g.length, g.member_steps) for g in groups)


def run_schedule(cfg: DictConfig) -> tuple[Any, list[ScheduleEvent]]:
    """The experiment of ``cfg`` (built, not trained) and the events of its callbacks' schedules."""
    exp = build(cfg)
    return exp, collect_schedule(exp.callbacks)


def log_points(every: int, last: int) -> int:
    """Readouts at step 0, every ``every`` steps and at the last step.

    >>> log_points(100, 50000), log_points(30, 100)
    (501, 5)
    """
    return last // every + 1 + (1 if last % every else 0)
