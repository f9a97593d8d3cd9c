"""Config schema of the two-pathway family (``kind: multipath``) and its checks.

Imports no torch: loading and validating a config stays light (see :mod:`cpl.config.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from ...config.callbacks import require_callback
from ...config.errors import require
from ...config.sections import LogConfig, OptimConfig, TrackingConfig, TrainerConfig, validate_bounds, validate_common

__all__ = ["MultiPathConfig", "Config", "validate", "max_steps", "CALLBACKS", "memory_bytes", "METRICS"]

#: the metrics a run logs (regular expressions; sweep.metric must match one)
METRICS = (r"train/loss", r"train/mode_error_\d+", r"final/\w+", r"(sv|ode|sgd|mode|pathway)\w*/\w+")

#: model.nonlinearity values (as cpl.families.multipath.model.NONLINEARITIES, without importing torch)
NONLINEARITIES = ("identity", "relu", "tanh")

#: the run's callbacks (files of the top-level callbacks/ folder) and their arguments bound to this
#: schema's keys; the builder makes one singular-value logger per pathway
CALLBACKS: Dict[str, Dict[str, Any]] = {
    "gating_deficit": {
        "pathway": "${deficit.pathway}",
        "start": "${deficit.start}",
        "end": "${deficit.end}",
        "root": "pathways",
    },
    "mode_lesion": {
        "pathway": "${lesion.pathway}",
        "mode": "${lesion.mode}",
        "start": "${lesion.start}",
        "end": "${lesion.end}",
        "root": "pathways",
        "basis": "task_basis",
        "layout": "columns",
    },
    "singular_values": {
        "every_n_steps": "${log.sv_every_n_steps}",
        "top_k": "${log.sv_top_k}",
        "matrix": "pathway_map",
        "reference": "task_basis",
    },
    "ode_reference": {"every_n_steps": "${ode.every_n_steps}", "reference": None},
}


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
    #: between consecutive layers of a pathway: identity (the paper's deep linear network), relu or tanh
    nonlinearity: str = "identity"


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
class MultiPathOdeConfig:
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
    ode: MultiPathOdeConfig = field(default_factory=MultiPathOdeConfig)
    log: LogConfig = field(default_factory=lambda: LogConfig(every_n_steps=10, sv_every_n_steps=10, sv_top_k=8))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(dtype="float64", checkpoint_every_n_steps=0))
    #: Lightning callbacks, name -> _target_ node (see cpl.config.callbacks); filled with CALLBACKS
    callbacks: Optional[Dict[str, Any]] = None


#: the family's root schema, as the registry names it
Config = MultiPathConfig


def validate(cfg: DictConfig) -> None:
    """Semantic checks of a ``kind: multipath`` config (raise :class:`cpl.config.ConfigError`)."""
    m = cfg.model
    require(0 <= cfg.task.levels <= 6, "task.levels", cfg.task.levels, "an integer from 0 to 6")
    n_modes = 2**cfg.task.levels
    require(1 <= m.depth <= 1000, "model.depth", m.depth, "an integer from 1 to 1000")
    require(
        n_modes <= m.width <= 100_000,
        "model.width",
        m.width,
        f"an integer from the number of task modes ({n_modes}) to 100000",
    )
    names = list(m.pathways)
    require(
        len(names) >= 2
        and len(set(names)) == len(names)
        and all(isinstance(n, str) and n.isidentifier() for n in names),
        "model.pathways",
        names,
        "a list of two or more distinct identifiers, e.g. [a, b]",
    )
    require(m.init in ("svd", "gaussian"), "model.init", m.init, "svd or gaussian")
    require(m.init_scale > 0, "model.init_scale", m.init_scale, "a number > 0")
    require(0 <= m.init_noise < 1, "model.init_noise", m.init_noise, "a number in [0, 1)")
    require(m.nonlinearity in NONLINEARITIES, "model.nonlinearity", m.nonlinearity, ", ".join(NONLINEARITIES))
    require(
        m.nonlinearity == "identity" or not cfg.ode.enabled,
        "model.nonlinearity",
        m.nonlinearity,
        "identity while ode.enabled=true (the two-pathway ODE holds for linear pathways only; set ode.enabled=false)",
    )
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
        require(
            les.end is None or les.end > les.start,
            "lesion.end",
            les.end,
            f"null (permanent) or a step > lesion.start={les.start}",
        )
    for name, flag in (("gating_deficit", "deficit.enabled"), ("mode_lesion", "lesion.enabled")):
        require_callback(cfg, name, flag)
    require_callback(cfg, "ode_reference", "ode.enabled")
    require(cfg.ode.kind in ("discrete", "flow"), "ode.kind", cfg.ode.kind, "discrete or flow")
    require(cfg.ode.every_n_steps >= 1, "ode.every_n_steps", cfg.ode.every_n_steps, "an integer >= 1")
    require(1 <= cfg.log.sv_top_k, "log.sv_top_k", cfg.log.sv_top_k, "an integer >= 1")
    validate_bounds(cfg, total)
    validate_common(cfg)


def memory_bytes(cfg: DictConfig) -> int:
    """A run's tensors, roughly: every pathway's D layers of width^2 weights, three times over
    (weights, gradients, activations and products)."""
    itemsize = 8 if cfg.trainer.dtype == "float64" else 4
    return itemsize * 3 * len(cfg.model.pathways) * cfg.model.depth * cfg.model.width**2


def max_steps(cfg: DictConfig) -> int:
    """Total number of gradient steps of a two-pathway run."""
    return int(cfg.train.max_steps)
