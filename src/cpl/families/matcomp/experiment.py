"""The matrix-completion critical-period experiment (paper Sec. 4, docs/paper-setup.md part A)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ...core.experiment import Experiment
from ...core.members import MemberSchedule, trunk_owner
from ...figures import ode_overlay_figure, singular_value_figure
from .. import extra_callbacks, make_callback
from .data import make_matcomp_tasks
from .model import DeepMatrixFactorization
from .module import MatrixCompletionModule
from .schema import MEMBER_SHARED_KEYS, max_steps

__all__ = ["build", "build_module"]


def _dtype(cfg: DictConfig) -> torch.dtype:
    return getattr(torch, cfg.trainer.dtype)


def _check_shared(cfgs: Sequence[DictConfig]) -> None:
    first = cfgs[0]
    for cfg in cfgs[1:]:
        for key in MEMBER_SHARED_KEYS:
            if OmegaConf.select(cfg, key) != OmegaConf.select(first, key):
                raise ValueError(
                    f"Members of one module must share {key}: got {OmegaConf.select(first, key)!r} and "
                    f"{OmegaConf.select(cfg, key)!r}"
                )


def _member_tasks(cfgs: Sequence[DictConfig], dtype: torch.dtype) -> list:
    return [
        make_matcomp_tasks(
            c.task.size,
            c.task.pretrain_rank,
            c.task.final_rank,
            c.task.n_obs,
            c.seed,
            c.task.pretrain_n_obs,
            c.task.pretrain_task,
            dtype,
            shared_basis=c.task.shared_basis,
        )
        for c in cfgs
    ]


def build_module(cfgs: Sequence[DictConfig]) -> MatrixCompletionModule:
    """One :class:`MatrixCompletionModule` whose member e is built from ``cfgs[e]``."""
    _check_shared(cfgs)
    first = cfgs[0]
    dtype = _dtype(first)
    t = first.task
    member_tasks = _member_tasks(cfgs, dtype)
    tasks = {
        name: (
            torch.stack([mt.as_dict()[name][0] for mt in member_tasks]),
            torch.stack([mt.as_dict()[name][1] for mt in member_tasks]),
        )
        for name in ("pretrain", "final")
    }
    bases = None
    if first.model.init == "aligned":  # the pre-training target's singular vectors (all N of them)
        bases = []
        for mt in member_tasks:
            u, _, vh = torch.linalg.svd(mt.pretrain_target.double())
            bases.append((u, vh.mT))
    model = DeepMatrixFactorization(
        size=t.size,
        depth=first.model.depth,
        seeds=[c.seed for c in cfgs],
        init=first.model.init,
        init_scale=[c.model.init_scale for c in cfgs],
        dtype=dtype,
        bases=bases,
    )
    ode = first.ode
    module = MatrixCompletionModule(
        model,
        tasks,
        lr=first.optim.lr,
        initial_task="pretrain",
        final_task="final",
        log_every_n_steps=first.log.every_n_steps,
        max_steps=max(max_steps(c) for c in cfgs),
        trace_every_n_steps=first.log.trace_every_n_steps,
        ode_kind=ode.kind,
        ode_options={"top_k": first.log.sv_top_k, "every_n_steps": ode.every_n_steps, "rtol": ode.rtol},
    )
    module.fused = first.optim.fused
    return module


def _title(cfg: DictConfig) -> str:
    t = cfg.task
    return f"{cfg.name or 'matcomp'}: depth {cfg.model.depth}, rank {t.pretrain_rank}->{t.final_rank}, n_obs {t.n_obs}"


class _MemberReadouts:
    """Member e's figures and full-resolution traces, from the callbacks' readouts of the whole run.

    The readouts are stacked into arrays once (again only when new ones arrive) for all members.
    """

    def __init__(self, cfgs: Sequence[DictConfig], schedule: Optional[MemberSchedule], switch, svs, ode_cb):
        self.cfgs, self.schedule, self.switch, self.svs, self.ode_cb = cfgs, schedule, switch, svs, ode_cb
        self._stacked: dict = {}

    def history(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(steps, values (T, k), projections or None)`` of member e's readouts, with its trunk's
        readouts before its own start: the history a separate run of the cell would have."""
        svs, stacked, schedule = self.svs, self._stacked, self.schedule
        if stacked.get("count") != len(svs.steps):
            h = svs.history()
            stacked.update(
                count=len(svs.steps),
                steps=np.asarray(h["steps"], dtype=np.int64),
                values=h["values"].numpy(),
                proj=None if h["projections"] is None else h["projections"].numpy(),
            )
        steps = stacked["steps"]
        owners = [e if schedule is None else trunk_owner(schedule, e, int(t)) for t in steps]
        rows = np.arange(len(steps))
        values = stacked["values"][rows, owners]
        proj = None if stacked["proj"] is None else stacked["proj"][rows, owners]
        keep = ~np.isnan(values[:, 0])  # steps at which this member (or its trunk) was read
        if schedule is not None:
            keep &= steps <= schedule.ends[e]
        return steps[keep], values[keep], None if proj is None else proj[keep]

    def figures(self, e: int) -> dict:
        if self.svs is None or not self.svs.steps:
            return {}
        cfg, ode_cb = self.cfgs[e], self.ode_cb
        steps, values, proj = self.history(e)
        switched = self.switch.switched_at[e] if self.switch is not None else None
        switch_step = switched if switched is not None else cfg.switch.at_step
        fig = singular_value_figure(steps, values, switch_step=switch_step, projections=proj, title=_title(cfg))
        out = {"figures/singular_values.png": fig}
        if ode_cb is not None and len(ode_cb.steps):
            oh = ode_cb.history()
            out["figures/ode_overlay.png"] = ode_overlay_figure(
                oh["steps"],
                oh["sgd"]["sv"][:, 0],
                oh["ode"]["sv"][:, 0],
                switch_step=switch_step,
                reference=ode_cb.reference.name,
                log_y=True,
                title=(
                    f"{cfg.name or 'matcomp'}: SGD vs {ode_cb.reference.name}\ndepth {cfg.model.depth}, rank "
                    f"{cfg.task.pretrain_rank}->{cfg.task.final_rank}, n_obs {cfg.task.n_obs}, lr {cfg.optim.lr}"
                ),
            )
        return out

    def traces(self, e: int) -> dict:
        """The full-resolution singular-value readouts of member e (MLflow gets fewer points)."""
        if self.svs is None or not self.svs.steps:
            return {}
        steps, values, proj = self.history(e)
        out = {"singular_values": (steps, values)}
        if proj is not None:
            out["sv_reference"] = (steps, proj)
        return out


def build(cfgs: Sequence[DictConfig], schedule: Optional[MemberSchedule] = None) -> Experiment:
    """The experiment of one run whose member e is the cell ``cfgs[e]`` (E = 1: a plain run).

    With a :class:`~cpl.core.members.MemberSchedule` the members have their own windows of steps and
    may share a pre-training trunk. ``Experiment.member_figures(e)`` gives member e's figures.
    """
    module = build_module(cfgs)
    if schedule is not None:
        module.set_member_schedule(schedule.starts, schedule.ends, schedule.sources)
    first = cfgs[0]
    # the conf's callbacks (callbacks/*.yaml bound to switch.*, log.*, ode.*), with the per-run values
    at = [c.callbacks.task_switch.at_step for c in cfgs if "task_switch" in (c.callbacks or {})]
    switch = make_callback(first, "task_switch", **({"at_step": at} if len(cfgs) > 1 else {}))
    svs = make_callback(first, "singular_values", **({} if first.log.sv_reference else {"reference": None}))
    ode_cb = None
    if first.ode.enabled:
        if len(cfgs) > 1:
            raise ValueError("ode.enabled runs cannot be batched: the analytic references are per run")
        ode_cb = make_callback(first, "ode_reference")
    extras = extra_callbacks(first, {"task_switch", "singular_values", "ode_reference"})
    readouts = _MemberReadouts(cfgs, schedule, switch, svs, ode_cb)
    callbacks = [cb for cb in (switch, svs, ode_cb) if cb is not None] + extras
    steps = max(schedule.ends) if schedule is not None else max(max_steps(c) for c in cfgs)
    return Experiment(
        module=module,
        callbacks=callbacks,
        max_steps=steps,
        member_figures=readouts.figures,
        member_traces=readouts.traces,
        schedule=schedule,
    )
