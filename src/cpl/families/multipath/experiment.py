"""The two-pathway critical-period experiment (paper Sec. 3, Figs. 2-3; docs/paper-setup.md part B).

Config family ``kind: multipath``: a multi-pathway deep linear network learns the hierarchical
task by full-batch gradient descent, while a :class:`~cpl.callbacks.GatingDeficit` gates one
pathway over a window and, optionally, a :class:`~cpl.callbacks.ModeLesion` removes one mode of
another. Per-pathway mode strengths ``K_P`` are logged by one
:class:`~cpl.callbacks.SingularValueLogger` per pathway (``pathway_<P>_ref/<i>`` = ``K_{P,i}``)
and the per-mode ODE by :class:`~cpl.callbacks.ODEReference` (``ode/K_<P>_<i>``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig

from ...core.experiment import Experiment
from .. import extra_callbacks, make_callback
from .data import hierarchical_task
from .figures import pathway_figure
from .model import MultiPathwayNet
from .module import MultiPathwayModule

__all__ = ["build", "build_module"]


# --------------------------------------------------------------------------- builder


def build_module(cfg: DictConfig) -> MultiPathwayModule:
    """The :class:`MultiPathwayModule` of a validated config."""
    task = hierarchical_task(cfg.task.levels)
    m = cfg.model
    net = MultiPathwayNet(
        task.n_items,
        task.n_features,
        depth=m.depth,
        width=m.width,
        pathways=list(m.pathways),
        seeds=[cfg.seed],
        init=m.init,
        init_scale=m.init_scale,
        init_noise=m.init_noise,
        basis=(task.u, task.v),
        dtype=getattr(torch, cfg.trainer.dtype),
        nonlinearity=m.nonlinearity,
    )
    return MultiPathwayModule(
        net,
        task,
        lr=cfg.optim.lr,
        log_every_n_steps=cfg.log.every_n_steps,
        max_steps=cfg.train.max_steps,
        ode_kind=cfg.ode.kind,
    )


def _deficits(cfg: DictConfig) -> tuple[list[Any], list[tuple[str, int, Optional[int]]]]:
    """The gating deficit and mode lesion callbacks of the conf, and their windows for the figure."""
    callbacks: list[Any] = []
    windows: list[tuple[str, int, Optional[int]]] = []
    if cfg.deficit.enabled:
        callbacks.append(make_callback(cfg, "gating_deficit"))
        windows.append(
            (f"gate {cfg.deficit.pathway} [{cfg.deficit.start}, {cfg.deficit.end})", cfg.deficit.start, cfg.deficit.end)
        )
    if cfg.lesion.enabled:
        callbacks.append(make_callback(cfg, "mode_lesion"))
        windows.append((f"lesion {cfg.lesion.pathway} mode {cfg.lesion.mode + 1}", cfg.lesion.start, cfg.lesion.end))
    return callbacks, windows


def build(cfgs: Sequence[DictConfig], schedule: Any = None) -> Experiment:
    """The experiment of one two-pathway run (one member: the family does not batch runs)."""
    if len(cfgs) != 1 or schedule is not None:
        raise ValueError(f"The multipath family builds one run at a time, got {len(cfgs)} configs")
    cfg = cfgs[0]
    module = build_module(cfg)
    names = list(cfg.model.pathways)
    k = module.singular_values.shape[-1]
    # the conf's callbacks (callbacks/*.yaml bound to deficit.*, lesion.*, log.*, ode.*)
    callbacks, windows = _deficits(cfg)
    top_k = cfg.callbacks.singular_values.top_k if "singular_values" in cfg.callbacks else 1
    loggers = {
        name: make_callback(
            cfg, "singular_values", top_k=min(top_k, k), matrix_kwargs={"name": name}, prefix=f"pathway_{name}"
        )
        for name in names
    }
    loggers = {name: lg for name, lg in loggers.items() if lg is not None}
    callbacks.extend(loggers.values())
    ode = make_callback(cfg, "ode_reference") if cfg.ode.enabled else None
    if ode is not None:
        callbacks.append(ode)
    callbacks += extra_callbacks(cfg, {"gating_deficit", "mode_lesion", "singular_values", "ode_reference"})

    def figures() -> dict[str, Any]:
        hist = {n: lg.history() for n, lg in loggers.items()}
        first = hist.get(names[0])
        if first is None or not first["steps"] or first["projections"] is None:
            return {}
        strengths = {n: h["projections"][:, 0].numpy() for n, h in hist.items()}
        ode_steps = ode_vals = None
        label = "ODE"
        if ode is not None and ode.steps:
            oh = ode.history()
            ode_steps = oh["steps"]
            ode_vals = {n: oh["ode"][f"K_{n}"][..., : strengths[n].shape[1]].reshape(len(ode_steps), -1) for n in names}
            label = ode.reference.name if ode.reference is not None else label
        fig = pathway_figure(
            first["steps"],
            strengths,
            ode_steps,
            ode_vals,
            windows,
            cfg.train.max_steps,
            title=f"{cfg.name or 'multipath'}: depth {cfg.model.depth}, lr {cfg.optim.lr}, init {cfg.model.init}"
            + ("" if cfg.model.nonlinearity == "identity" else f", {cfg.model.nonlinearity}"),
            ode_label=label,
        )
        return {"figures/pathway_strengths.png": fig}

    return Experiment(
        module=module, callbacks=callbacks, max_steps=cfg.train.max_steps, member_figures=lambda e: figures()
    )
