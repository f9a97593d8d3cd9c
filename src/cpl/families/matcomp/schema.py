"""Config schema of the matrix-completion family (``kind: matcomp``), its checks and its key lists.

Imports no torch: loading and validating a config stays light (see :mod:`cpl.config.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from ...config.callbacks import require_callback
from ...config.errors import require
from ...config.sections import LogConfig, OptimConfig, TrackingConfig, TrainerConfig, validate_bounds, validate_common

__all__ = [
    "MatCompConfig",
    "Config",
    "validate",
    "max_steps",
    "batchable",
    "MEMBER_SHARED_KEYS",
    "CHAIN_FREE_KEYS",
    "ONSET_KEY",
    "CALLBACKS",
    "memory_bytes",
    "METRICS",
]

#: the metrics a run logs (regular expressions; sweep.metric must match one)
METRICS = (
    r"train/loss",
    r"test/(pretrain|final)_error(_unobserved)?",
    r"sv(_ref)?/\d+",
    r"sv/(effective|numerical)_rank",
    r"(ode|sgd)/sv_\d+",
    r"final/\w+",
)

#: keys that the members of one batched module must share (the rest may differ per member)
MEMBER_SHARED_KEYS = (
    "task.size",
    "model.depth",
    "model.init",
    "optim.lr",
    "optim.fused",
    "trainer.dtype",
    "log.every_n_steps",
    "log.sv_every_n_steps",
    "log.sv_top_k",
    "log.sv_log_every_n_steps",
    "log.sv_reference",
    "log.trace_every_n_steps",
    "ode.kind",
    "ode.every_n_steps",
    "ode.rtol",
)
#: keys in which the cells of one onset chain (a shared pre-training trunk) may differ
CHAIN_FREE_KEYS = ("switch.at_step", "train.steps_after_switch", "train.max_steps", "name", "tracking.run_name")
#: the deficit onset: cells differing only here share their trunk
ONSET_KEY = "switch.at_step"
#: the run's callbacks (files of the top-level callbacks/ folder) and their arguments bound to this
#: schema's keys; the builder adds per-run values (one switch step per member, the reference on/off)
CALLBACKS: Dict[str, Dict[str, Any]] = {
    "task_switch": {"at_step": "${switch.at_step}", "from_task": "pretrain", "to_task": "final"},
    "singular_values": {
        "every_n_steps": "${log.sv_every_n_steps}",
        "top_k": "${log.sv_top_k}",
        "log_every_n_steps": "${log.sv_log_every_n_steps}",
        "matrix": "end_to_end",
        "reference": "reference_basis",
    },
    "ode_reference": {"every_n_steps": "${ode.every_n_steps}", "reference": None},
}


@dataclass
class MatCompTaskConfig:
    """Matrix-completion tasks (docs/paper-setup.md part A)."""

    size: int = 100  #: N, the matrices are N x N
    pretrain_rank: int = 10  #: r1, rank of the deficit (pre-training) task
    final_rank: int = 5  #: r2, rank of the final task
    n_obs: int = 2000  #: observed entries of the final task
    #: observed entries during pre-training; null = n_obs. The smaller of the two sets is
    #: always the first entries of the larger one (same locations by default).
    pretrain_n_obs: Optional[int] = None
    #: "independent": pre-train on a second ground truth; "same": pre-train on the final
    #: task itself with pretrain_n_obs observations (paper Fig. 5 left)
    pretrain_task: str = "independent"
    #: true: both targets share one set of singular vectors (paper Fig. 10): the pre-training
    #: target uses the first pretrain_rank of them, the final target the first final_rank with
    #: its own singular values in reversed order (see cpl.families.matcomp.data.make_matcomp_tasks)
    shared_basis: bool = False


@dataclass
class MatCompModelConfig:
    depth: int = 3  #: D, number of N x N factors
    #: "gaussian" (paper), "balanced" (scaled orthogonal) or "aligned" (balanced, and W = U diag(a0) V^T
    #: in the pre-training target's singular vectors, a0 ~ g (1 + 0.1 u): Saxe's closed form)
    init: str = "gaussian"
    init_scale: float = 1e-3  #: g: each factor has std g^(1/D)/sqrt(N), so ||W||_F ~ g sqrt(N)


@dataclass
class SwitchConfig:
    at_step: int = 20000  #: steps on the pre-training task before switching to the final task


@dataclass
class TrainConfig:
    steps_after_switch: int = 30000  #: steps on the final task after the switch
    max_steps: Optional[int] = None  #: null = switch.at_step + train.steps_after_switch


@dataclass
class MatCompOdeConfig:
    """Analytic reference logged next to SGD by :class:`cpl.callbacks.ODEReference` (docs/theory.md 2-4)."""

    enabled: bool = False
    #: "factorization": balanced deep-factorisation gradient flow (solve_ivp, any depth);
    #: "saxe": Saxe's closed form (depth 2, full observation, aligned init);
    #: "braun": exact depth-2 dynamics from any balanced init (full observation)
    kind: str = "factorization"
    every_n_steps: int = 100  #: logging interval of ode/sv_k and sgd/sv_k
    rtol: float = 1.0e-7  #: solve_ivp tolerance of kind=factorization (atol = rtol * 1e-2)


@dataclass
class MatCompConfig:
    """Root schema of the matrix-completion family (``kind: matcomp``)."""

    kind: str = "matcomp"
    name: str = ""  #: the conf name, filled in by :func:`load_config`
    seed: int = 0
    task: MatCompTaskConfig = field(default_factory=MatCompTaskConfig)
    model: MatCompModelConfig = field(default_factory=MatCompModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ode: MatCompOdeConfig = field(default_factory=MatCompOdeConfig)
    #: Lightning callbacks, name -> _target_ node (see cpl.config.callbacks); filled with CALLBACKS
    callbacks: Optional[Dict[str, Any]] = None


#: the family's root schema, as the registry names it
Config = MatCompConfig


def max_steps(cfg: DictConfig) -> int:
    """Total number of gradient steps of a matrix-completion run."""
    if cfg.train.max_steps is not None:
        return int(cfg.train.max_steps)
    return int(cfg.switch.at_step + cfg.train.steps_after_switch)


def validate(cfg: DictConfig) -> None:
    """Semantic checks of a ``kind: matcomp`` config (raise :class:`cpl.config.ConfigError`)."""
    t, m = cfg.task, cfg.model
    n = t.size
    require(1 <= n <= 100_000, "task.size", n, "an integer from 1 to 100000")
    for key in ("pretrain_rank", "final_rank"):
        require(1 <= t[key] <= n, f"task.{key}", t[key], f"an integer from 1 to task.size={n}")
    require(1 <= t.n_obs <= n * n, "task.n_obs", t.n_obs, f"an integer from 1 to task.size^2={n * n}")
    if t.pretrain_n_obs is not None:
        require(
            1 <= t.pretrain_n_obs <= n * n,
            "task.pretrain_n_obs",
            t.pretrain_n_obs,
            f"null or an integer from 1 to task.size^2={n * n}",
        )
    require(t.pretrain_task in ("independent", "same"), "task.pretrain_task", t.pretrain_task, "independent or same")
    require(1 <= m.depth <= 1000, "model.depth", m.depth, "an integer from 1 to 1000")
    require(m.init in ("gaussian", "balanced", "aligned"), "model.init", m.init, "gaussian, balanced or aligned")
    require(m.init_scale > 0, "model.init_scale", m.init_scale, "a number > 0")
    require(cfg.switch.at_step >= 0, "switch.at_step", cfg.switch.at_step, "an integer >= 0")
    require(
        cfg.train.steps_after_switch >= 0, "train.steps_after_switch", cfg.train.steps_after_switch, "an integer >= 0"
    )
    total = max_steps(cfg)
    require(total >= 1, "train.max_steps", total, "an integer >= 1")
    require(
        cfg.switch.at_step <= total,
        "switch.at_step",
        cfg.switch.at_step,
        f"a step within the run, <= train.max_steps={total}",
    )
    require(1 <= cfg.log.sv_top_k <= n, "log.sv_top_k", cfg.log.sv_top_k, f"an integer from 1 to task.size={n}")
    require_callback(cfg, "ode_reference", "ode.enabled")
    validate_ode(cfg)
    validate_bounds(cfg, total)
    validate_common(cfg)


def memory_bytes(cfg: DictConfig) -> int:
    """A run's tensors, roughly: the D factors, their gradients, the partial products of the fused
    gradient (about 2D matrices) and the tasks (targets and masks), all N x N."""
    itemsize = 8 if cfg.trainer.dtype == "float64" else 4
    return itemsize * cfg.task.size**2 * (4 * cfg.model.depth + 4)


def validate_ode(cfg: DictConfig) -> None:
    ode = cfg.ode
    require(ode.kind in ("factorization", "saxe", "braun"), "ode.kind", ode.kind, "factorization, saxe or braun")
    require(ode.every_n_steps >= 1, "ode.every_n_steps", ode.every_n_steps, "an integer >= 1")
    require(ode.rtol > 0, "ode.rtol", ode.rtol, "a number > 0")
    if ode.enabled and ode.kind in ("saxe", "braun"):
        require(
            cfg.model.depth == 2, "model.depth", cfg.model.depth, f"2 with ode.kind={ode.kind} (a depth-2 closed form)"
        )


def batchable(cfg: DictConfig) -> bool:
    """Whether a run can be a member of a batched run: not with an analytic reference (it is per run)."""
    return not cfg.ode.enabled
