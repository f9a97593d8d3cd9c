"""The matrix-completion critical-period experiment (paper Sec. 4, paper-setup.md part A)."""

from __future__ import annotations

from typing import Sequence

import torch
from omegaconf import DictConfig

from ..callbacks import ODEReference, SingularValueLogger, TaskSwitch
from ..config import max_steps
from ..figures import ode_overlay_figure, singular_value_figure
from ..models import DeepMatrixFactorization
from ..modules import MatrixCompletionModule
from ..tasks import make_matcomp_tasks
from . import Experiment, register_builder

__all__ = ["build_matcomp", "SHARED_KEYS"]

#: keys that members of one module must share (the rest may differ per member)
SHARED_KEYS = ("task.size", "model.depth", "model.init", "optim.lr", "trainer.dtype", "log.every_n_steps", "log.sv_every_n_steps", "log.sv_top_k", "ode.kind", "ode.every_n_steps", "ode.rtol")


def _dtype(cfg: DictConfig) -> torch.dtype:
    return getattr(torch, cfg.trainer.dtype)


def build_module(cfgs: Sequence[DictConfig]) -> MatrixCompletionModule:
    """One :class:`MatrixCompletionModule` whose member e is built from ``cfgs[e]``."""
    from omegaconf import OmegaConf

    first = cfgs[0]
    for cfg in cfgs[1:]:
        for key in SHARED_KEYS:
            if OmegaConf.select(cfg, key) != OmegaConf.select(first, key):
                raise ValueError(f"Members of one module must share {key}: got {OmegaConf.select(first, key)!r} and {OmegaConf.select(cfg, key)!r}")
    dtype = _dtype(first)
    t = first.task
    member_tasks = [
        make_matcomp_tasks(t.size, c.task.pretrain_rank, c.task.final_rank, c.task.n_obs, c.seed, c.task.pretrain_n_obs, c.task.pretrain_task, dtype,
                           shared_basis=c.task.shared_basis)
        for c in cfgs
    ]
    tasks = {
        name: (torch.stack([mt.as_dict()[name][0] for mt in member_tasks]), torch.stack([mt.as_dict()[name][1] for mt in member_tasks]))
        for name in ("pretrain", "final")
    }
    bases = None
    if first.model.init == "aligned":  # the pre-training target's singular vectors (all N of them)
        bases = []
        for mt in member_tasks:
            u, _, vh = torch.linalg.svd(mt.pretrain_target.double())
            bases.append((u, vh.mT))
    model = DeepMatrixFactorization(
        size=t.size, depth=first.model.depth, seeds=[c.seed for c in cfgs], init=first.model.init,
        init_scale=[c.model.init_scale for c in cfgs], dtype=dtype, bases=bases,
    )
    ode = first.ode
    return MatrixCompletionModule(
        model, tasks, lr=first.optim.lr, initial_task="pretrain", final_task="final",
        log_every_n_steps=first.log.every_n_steps, max_steps=max(max_steps(c) for c in cfgs),
        ode_kind=ode.kind, ode_options={"top_k": first.log.sv_top_k, "every_n_steps": ode.every_n_steps, "rtol": ode.rtol},
    )


def build_matcomp(cfg: DictConfig) -> Experiment:
    module = build_module([cfg])
    switch = TaskSwitch(at_step=cfg.switch.at_step, from_task="pretrain", to_task="final")
    svs = SingularValueLogger(every_n_steps=cfg.log.sv_every_n_steps, top_k=cfg.log.sv_top_k, reference="reference_basis")

    def figures():
        h = svs.history()
        if not h["steps"]:
            return {}
        fig = singular_value_figure(
            h["steps"], h["values"][:, 0].numpy(), switch_step=switch.switched_at[0] if switch.switched_at[0] is not None else cfg.switch.at_step,
            projections=None if h["projections"] is None else h["projections"][:, 0].numpy(),
            title=f"{cfg.name or 'matcomp'}: depth {cfg.model.depth}, rank {cfg.task.pretrain_rank}->{cfg.task.final_rank}, n_obs {cfg.task.n_obs}",
        )
        out = {"figures/singular_values.png": fig}
        if ode_cb is not None and len(ode_cb.steps):
            oh = ode_cb.history()
            out["figures/ode_overlay.png"] = ode_overlay_figure(
                oh["steps"], oh["sgd"]["sv"][:, 0], oh["ode"]["sv"][:, 0],
                switch_step=switch.switched_at[0] if switch.switched_at[0] is not None else cfg.switch.at_step,
                reference=ode_cb.reference.name, log_y=True,
                title=f"{cfg.name or 'matcomp'}: SGD vs {ode_cb.reference.name}\ndepth {cfg.model.depth}, rank {cfg.task.pretrain_rank}->{cfg.task.final_rank}, n_obs {cfg.task.n_obs}, lr {cfg.optim.lr}",
            )
        return out

    callbacks = [switch, svs]
    ode_cb = None
    if cfg.ode.enabled:
        ode_cb = ODEReference(every_n_steps=cfg.ode.every_n_steps)
        callbacks.append(ode_cb)
    return Experiment(module=module, callbacks=callbacks, max_steps=max_steps(cfg), figures=figures)


register_builder("matcomp", build_matcomp)
