"""The two-pathway critical-period experiment (paper Sec. 3, Figs. 2-3; paper-setup.md part B).

Config family ``kind: multipath``: a multi-pathway deep linear network learns the hierarchical
task by full-batch gradient descent, while a :class:`~cpl.callbacks.GatingDeficit` gates one
pathway over a window and, optionally, a :class:`~cpl.callbacks.ModeLesion` removes one mode of
another. Per-pathway mode strengths ``K_P`` are logged by one
:class:`~cpl.callbacks.SingularValueLogger` per pathway (``pathway_<P>_ref/<i>`` = ``K_{P,i}``)
and the per-mode ODE by :class:`~cpl.callbacks.ODEReference` (``ode/K_<P>_<i>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from ..callbacks import GatingDeficit, ModeLesion, ODEReference, SingularValueLogger
from ..config import LogConfig, OptimConfig, TrackingConfig, TrainerConfig, register_kind, require, validate_common
from ..hierarchy import hierarchical_task
from ..modules.multipath import MultiPathwayModule
from ..pathways import MultiPathwayNet
from . import Experiment, register_builder

__all__ = ["MultiPathConfig", "validate_multipath", "build_multipath_module", "build_multipath", "pathway_figure"]


# --------------------------------------------------------------------------- schema


@dataclass
class HierTaskConfig:
    levels: int = 3  #: depth of the binary tree: 2**levels items, 2**(levels+1)-1 features


@dataclass
class MultiPathModelConfig:
    depth: int = 4  #: D, layers per pathway
    width: int = 100  #: h, hidden width
    pathways: list[str] = field(default_factory=lambda: ["a", "b"])
    init: str = "svd"  #: "svd" (paper: balanced, aligned with the task; the ODE is exact) or "gaussian"
    init_scale: float = 0.01  #: eps of the svd init (mode strength at init), g of the Gaussian init
    init_noise: float = 0.1  #: relative noise on the svd init's diagonal


@dataclass
class MultiPathTrainConfig:
    max_steps: int = 1000


@dataclass
class DeficitConfig:
    enabled: bool = True
    pathway: str = "b"  #: the deprived (gated) pathway
    start: int = 0  #: first gated step
    end: int = 150  #: first step after the deficit


@dataclass
class LesionConfig:
    enabled: bool = False
    pathway: str = "a"
    mode: int = 1  #: 0-based task mode (paper Fig. 3: "mode 2" = 1)
    start: int = 0
    end: Optional[int] = None  #: null = permanent


@dataclass
class OdeConfig:
    enabled: bool = True
    kind: str = "discrete"  #: "discrete" (exact discrete map) or "flow" (solve_ivp gradient flow)
    every_n_steps: int = 10


@dataclass
class MultiPathConfig:
    """Root schema of the two-pathway family (``kind: multipath``)."""

    kind: str = "multipath"
    name: str = ""
    seed: int = 0
    task: HierTaskConfig = field(default_factory=HierTaskConfig)
    model: MultiPathModelConfig = field(default_factory=MultiPathModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.01))
    train: MultiPathTrainConfig = field(default_factory=MultiPathTrainConfig)
    deficit: DeficitConfig = field(default_factory=DeficitConfig)
    lesion: LesionConfig = field(default_factory=LesionConfig)
    ode: OdeConfig = field(default_factory=OdeConfig)
    log: LogConfig = field(default_factory=lambda: LogConfig(every_n_steps=10, sv_every_n_steps=10, sv_top_k=8))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(dtype="float64", checkpoint_every_n_steps=0))


def validate_multipath(cfg: DictConfig) -> None:
    """Semantic checks of a ``kind: multipath`` config (raise :class:`cpl.config.ConfigError`)."""
    m = cfg.model
    require(0 <= cfg.task.levels <= 6, "task.levels", cfg.task.levels, "an integer from 0 to 6")
    n_modes = 2**cfg.task.levels
    require(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    require(m.width >= n_modes, "model.width", m.width, f"an integer >= the number of task modes ({n_modes})")
    names = list(m.pathways)
    require(len(names) >= 2 and len(set(names)) == len(names) and all(isinstance(n, str) and n.isidentifier() for n in names),
            "model.pathways", names, "a list of two or more distinct identifiers, e.g. [a, b]")
    require(m.init in ("svd", "gaussian"), "model.init", m.init, "svd or gaussian")
    require(m.init_scale > 0, "model.init_scale", m.init_scale, "a number > 0")
    require(0 <= m.init_noise < 1, "model.init_noise", m.init_noise, "a number in [0, 1)")
    total = cfg.train.max_steps
    require(total >= 1, "train.max_steps", total, "an integer >= 1")
    d = cfg.deficit
    if d.enabled:
        require(d.pathway in names, "deficit.pathway", d.pathway, f"one of model.pathways {names}")
        require(0 <= d.start < total, "deficit.start", d.start, f"a step from 0 to train.max_steps-1={total - 1}")
        require(d.end > d.start, "deficit.end", d.end, f"a step > deficit.start={d.start}")
    les = cfg.lesion
    if les.enabled:
        require(les.pathway in names, "lesion.pathway", les.pathway, f"one of model.pathways {names}")
        require(0 <= les.mode < n_modes, "lesion.mode", les.mode, f"a 0-based mode index from 0 to {n_modes - 1}")
        require(0 <= les.start < total, "lesion.start", les.start, f"a step from 0 to train.max_steps-1={total - 1}")
        require(les.end is None or les.end > les.start, "lesion.end", les.end, f"null (permanent) or a step > lesion.start={les.start}")
    require(cfg.ode.kind in ("discrete", "flow"), "ode.kind", cfg.ode.kind, "discrete or flow")
    require(cfg.ode.every_n_steps >= 1, "ode.every_n_steps", cfg.ode.every_n_steps, "an integer >= 1")
    require(1 <= cfg.log.sv_top_k, "log.sv_top_k", cfg.log.sv_top_k, "an integer >= 1")
    validate_common(cfg)


register_kind("multipath", MultiPathConfig, validate_multipath)


# --------------------------------------------------------------------------- builder


def build_multipath_module(cfg: DictConfig) -> MultiPathwayModule:
    """The :class:`MultiPathwayModule` of a validated config."""
    task = hierarchical_task(cfg.task.levels)
    m = cfg.model
    net = MultiPathwayNet(
        task.n_items, task.n_features, depth=m.depth, width=m.width, pathways=list(m.pathways), seeds=[cfg.seed],
        init=m.init, init_scale=m.init_scale, init_noise=m.init_noise, basis=(task.u, task.v), dtype=getattr(torch, cfg.trainer.dtype),
    )
    return MultiPathwayModule(net, task, lr=cfg.optim.lr, log_every_n_steps=cfg.log.every_n_steps, max_steps=cfg.train.max_steps, ode_kind=cfg.ode.kind)


def pathway_figure(steps, strengths: dict[str, np.ndarray], ode_steps=None, ode: Optional[dict[str, np.ndarray]] = None,
                   windows: Optional[list[tuple[str, int, Optional[int]]]] = None, max_step: Optional[int] = None, title: str = "", ode_label: str = "ODE"):
    """K_P trajectories of every pathway (one panel each), the ODE dashed, intervention windows shaded.

    Args:
        steps: (T,) steps of ``strengths``.
        strengths: ``{pathway: (T, k)}`` mode strengths of gradient descent.
        ode_steps, ode: the reference's steps and ``{pathway: (T', k)}``.
        windows: ``(label, start, end)`` to shade (end None = to ``max_step``).
    """
    import matplotlib.pyplot as plt

    names = list(strengths)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names) + 1.8, 3.8), dpi=110, sharey=True)
    axes = np.atleast_1d(axes)
    k = next(iter(strengths.values())).shape[1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, k))
    end_default = max_step if max_step is not None else (int(np.max(steps)) if len(steps) else 0)
    for ax, name in zip(axes, names):
        vals = np.asarray(strengths[name])
        for i in range(k):
            ax.plot(steps, vals[:, i], color=colors[i], lw=1.6, label=f"mode {i + 1}")
            if ode is not None and name in ode:
                ax.plot(ode_steps, np.asarray(ode[name])[:, i], color="k", lw=0.9, ls="--", label=ode_label if i == 0 else None)
        for label, start, end in windows or []:
            ax.axvspan(start, end if end is not None else end_default, color="crimson" if label.startswith("gate") else "orange", alpha=0.12, label=label)
        ax.set_title(f"pathway {name}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mode strength $K = (U^T W V)_{ii}$")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return fig


def build_multipath(cfg: DictConfig) -> Experiment:
    module = build_multipath_module(cfg)
    names = list(cfg.model.pathways)
    k = module.singular_values.shape[-1]
    callbacks: list[Any] = []
    windows: list[tuple[str, int, Optional[int]]] = []
    if cfg.deficit.enabled:
        callbacks.append(GatingDeficit(pathway=cfg.deficit.pathway, start=cfg.deficit.start, end=cfg.deficit.end))
        windows.append((f"gate {cfg.deficit.pathway} [{cfg.deficit.start}, {cfg.deficit.end})", cfg.deficit.start, cfg.deficit.end))
    if cfg.lesion.enabled:
        callbacks.append(ModeLesion(pathway=cfg.lesion.pathway, mode=cfg.lesion.mode, start=cfg.lesion.start, end=cfg.lesion.end))
        windows.append((f"lesion {cfg.lesion.pathway} mode {cfg.lesion.mode + 1}", cfg.lesion.start, cfg.lesion.end))
    loggers = {
        name: SingularValueLogger(every_n_steps=cfg.log.sv_every_n_steps, top_k=min(cfg.log.sv_top_k, k), matrix="pathway_map",
                                  matrix_kwargs={"name": name}, reference="task_basis", prefix=f"pathway_{name}")
        for name in names
    }
    callbacks.extend(loggers.values())
    ode = ODEReference(every_n_steps=cfg.ode.every_n_steps) if cfg.ode.enabled else None
    if ode is not None:
        callbacks.append(ode)

    def figures() -> dict[str, Any]:
        hist = {n: lg.history() for n, lg in loggers.items()}
        first = hist[names[0]]
        if not first["steps"] or first["projections"] is None:
            return {}
        strengths = {n: h["projections"][:, 0].numpy() for n, h in hist.items()}
        ode_steps = ode_vals = None
        label = "ODE"
        if ode is not None and ode.steps:
            oh = ode.history()
            ode_steps = oh["steps"]
            ode_vals = {n: oh["ode"][f"K_{n}"][..., : strengths[n].shape[1]].reshape(len(ode_steps), -1) for n in names}
            label = ode.reference.name if ode.reference is not None else label
        fig = pathway_figure(first["steps"], strengths, ode_steps, ode_vals, windows, cfg.train.max_steps,
                             title=f"{cfg.name or 'multipath'}: depth {cfg.model.depth}, lr {cfg.optim.lr}, init {cfg.model.init}", ode_label=label)
        return {"figures/pathway_strengths.png": fig}

    return Experiment(module=module, callbacks=callbacks, max_steps=cfg.train.max_steps, figures=figures)


register_builder("multipath", build_multipath)
