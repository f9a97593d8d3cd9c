"""Typed configuration: structured OmegaConf schemas, loading ``conf/NAME.yaml`` and validation.

A conf file names its experiment family with ``kind`` (``matcomp`` by default) and holds only
what differs from the schema's defaults. Command-line ``key=value`` pairs are OmegaConf dotlist
overrides. Every error is a :class:`ConfigError` that names the key, the value and what is
allowed, and is raised before any training starts.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

__all__ = [
    "ConfigError",
    "MatCompConfig",
    "conf_dir",
    "available_confs",
    "load_config",
    "compose",
    "parse_overrides",
    "validate",
    "flatten",
]


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or impossible."""


# --------------------------------------------------------------------------- schemas


@dataclass
class MatCompTaskConfig:
    """Matrix-completion tasks (paper-setup.md part A)."""

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
    #: its own singular values in reversed order (see cpl.tasks.make_matcomp_tasks)
    shared_basis: bool = False


@dataclass
class MatCompModelConfig:
    depth: int = 3  #: D, number of N x N factors
    #: "gaussian" (paper), "balanced" (scaled orthogonal) or "aligned" (balanced, and W = U diag(a0) V^T
    #: in the pre-training target's singular vectors, a0 ~ g (1 + 0.1 u): Saxe's closed form)
    init: str = "gaussian"
    init_scale: float = 1e-3  #: g: each factor has std g^(1/D)/sqrt(N), so ||W||_F ~ g sqrt(N)


@dataclass
class OptimConfig:
    lr: float = 0.2  #: constant learning rate of full-batch gradient descent
    #: apply the closed-form gradient inside its own matrix products (matrix completion; the same
    #: steps up to rounding, ~20% faster). false: gradients go to p.grad first, for callbacks that
    #: read them in on_before_optimizer_step
    fused: bool = True


@dataclass
class SwitchConfig:
    at_step: int = 20000  #: steps on the pre-training task before switching to the final task


@dataclass
class TrainConfig:
    steps_after_switch: int = 30000  #: steps on the final task after the switch
    max_steps: Optional[int] = None  #: null = switch.at_step + train.steps_after_switch


@dataclass
class LogConfig:
    every_n_steps: int = 100  #: train loss and test errors
    sv_every_n_steps: int = 10  #: singular values of W (paper: every 10 steps)
    sv_top_k: int = 10
    #: interval at which singular values go to MLflow (a multiple of sv_every_n_steps); null = every readout
    sv_log_every_n_steps: Optional[int] = None
    sv_reference: bool = True  #: also log diag(U^T W V) in the final task's basis (sv_ref/k)
    #: record the test error every n steps (null = off) and save it as the artifact traces/test_final_error.csv
    trace_every_n_steps: Optional[int] = None
    figures: bool = True  #: PNG figures logged as MLflow artifacts at the end


@dataclass
class TrackingConfig:
    #: MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    uri: Optional[str] = None
    experiment: str = "cpl"
    run_name: Optional[str] = None
    enabled: bool = True
    #: once a run lasts a few seconds, write its metrics from a helper process while training goes
    #: on (SQLite costs ~0.1 ms of Python per row). Helps where a core is free (1 torch thread on 2
    #: cores: -40% of the write time); with every core busy it only moves the work (measured neutral
    #: on long runs, ~1-2 s slower on 10 s runs for the helper's start), hence off by default
    background_writes: bool = False


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"  #: "cpu", "gpu" or "auto"
    dtype: str = "float32"  #: "float32" or "float64"
    progress_bar: bool = True
    checkpoint_dir: str = "checkpoints"  #: checkpoints go to <checkpoint_dir>/<run id>/
    checkpoint_every_n_steps: int = 10000  #: 0 = only on interrupt and at the end
    #: gradient steps per Lightning step (1 = one each). More cuts Lightning's per-step overhead;
    #: a Lightning step still stops at every logging/readout/checkpoint step and every scheduled
    #: event, so cpl's callbacks see the same steps. Keep 1 for your own per-step callbacks.
    steps_per_call: int = 1
    ckpt_path: Optional[str] = None  #: resume from this checkpoint


@dataclass
class OdeConfig:
    """Analytic reference logged next to SGD by :class:`cpl.callbacks.ODEReference` (theory.md 2-4)."""

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
    ode: OdeConfig = field(default_factory=OdeConfig)


#: experiment families: ``kind`` -> (schema, semantic validator). Other families register here.
SCHEMAS: dict[str, tuple[type, Any]] = {}


def register_kind(kind: str, schema: type, validator) -> None:
    SCHEMAS[kind] = (schema, validator)


# --------------------------------------------------------------------------- loading


def conf_dir() -> Path:
    """The folder of conf files: ``$CPL_CONF_DIR``, else ``./conf``, else the repository's ``conf/``."""
    env = os.environ.get("CPL_CONF_DIR")
    if env:
        return Path(env)
    here = Path.cwd() / "conf"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "conf"


def available_confs(directory: Path | None = None) -> list[str]:
    directory = directory or conf_dir()
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def _schema_for(kind: Any) -> tuple[type, Any]:
    import cpl.experiments  # noqa: F401  (each family registers its schema there)

    if kind not in SCHEMAS:
        raise ConfigError(f"kind={kind!r} is not a known experiment family; allowed: {sorted(SCHEMAS)}")
    return SCHEMAS[kind]


def _allowed_keys(schema: type, dotted: str) -> list[str]:
    obj: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        sub = {f.name: f for f in fields(obj)} if is_dataclass(obj) else {}
        if part not in sub:
            break
        default = sub[part].default_factory() if callable(sub[part].default_factory) else None  # type: ignore[misc]
        if default is None or not is_dataclass(default):
            break
        obj = type(default)
    return [f.name for f in fields(obj)] if is_dataclass(obj) else []


def _translate(exc: OmegaConfBaseException, schema: type, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError) or "Key '" in str(exc) and "not in" in str(exc):
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(schema, parent)
        close = difflib.get_close_matches(leaf, allowed, n=1)
        hint = f" Did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else ""
        return ConfigError(
            f"Unknown config key '{key}' (from {source}). Allowed keys"
            f"{' under ' + repr(parent) if parent else ''}: {', '.join(allowed)}.{hint}"
        )
    if isinstance(exc, ValidationError):
        return ConfigError(f"Config key '{key}' (from {source}) has value {exc.value!r} of the wrong type: {str(exc.msg).splitlines()[0]}")
    return ConfigError(f"Invalid config (from {source}): {exc}")


def read_conf(name: str, directory: Path | None = None) -> tuple[DictConfig, Path]:
    """The raw YAML of ``conf/<name>.yaml`` and its path (a ConfigError listing the confs if there is none)."""
    directory = Path(directory or conf_dir())
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"conf={name!r} not found in {directory}; available confs: {', '.join(available_confs(directory)) or '(none)'}")
    return OmegaConf.load(path), path


def load_config(name: str, overrides: list[str] | tuple[str, ...] = (), directory: Path | None = None) -> DictConfig:
    """Load ``conf/<name>.yaml``, apply dotlist ``overrides`` and validate.

    Raises:
        ConfigError: unknown conf name (the message lists the available ones), unknown key,
            wrong type or impossible value.
    """
    raw, path = read_conf(name, directory)
    # a sweep conf is a normal conf plus a `sweep:` section, which cpl.sweep.load_sweep reads;
    # loaded here (scripts/train.py), it gives its base config
    raw.pop("sweep", None)
    return compose(raw, parse_overrides(overrides), name, str(path))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Parse ``key=value`` dotlist overrides into a config tree."""
    malformed = [o for o in overrides if "=" not in o or not o.split("=", 1)[0].strip()]
    if malformed:
        raise ConfigError(f"Could not parse overrides {malformed}: use key=value, e.g. model.depth=4")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Could not parse overrides {list(overrides)}: {exc}. Use key=value, e.g. model.depth=4") from None


def compose(raw: DictConfig, over: DictConfig, name: str = "", source: str = "conf", over_source: str = "command line") -> DictConfig:
    """Merge a conf tree ``raw`` and an override tree ``over`` into the schema of their ``kind`` and validate.

    Raises:
        ConfigError: unknown key, wrong type or impossible value (the message names ``source``
            or ``over_source``).
    """
    kind = over.get("kind", raw.get("kind", "matcomp"))
    schema, _ = _schema_for(kind)
    cfg = OmegaConf.structured(schema)
    for part, src in ((raw, source), (over, over_source)):
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as exc:
            raise _translate(exc, schema, src) from None
    if not cfg.name:
        cfg.name = name
    validate(cfg)
    return cfg


def make_config(kind: str = "matcomp", **overrides: Any) -> DictConfig:
    """Build a validated config from the schema defaults and nested ``overrides`` (for code and tests)."""
    schema, _ = _schema_for(kind)
    cfg = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
    except OmegaConfBaseException as exc:
        raise _translate(exc, schema, "arguments") from None
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- validation


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` in the project's one phrasing unless ``ok``."""
    if not ok:
        raise ConfigError(f"Invalid value for '{key}': got {value!r}; allowed: {allowed}")


def validate_common(cfg: DictConfig) -> None:
    require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "a number > 0")
    require(cfg.trainer.accelerator in ("cpu", "gpu", "cuda", "mps", "auto"), "trainer.accelerator", cfg.trainer.accelerator, "cpu, gpu, cuda, mps or auto")
    require(cfg.trainer.dtype in ("float32", "float64"), "trainer.dtype", cfg.trainer.dtype, "float32 or float64")
    require(cfg.trainer.get("steps_per_call", 1) >= 1, "trainer.steps_per_call", cfg.trainer.get("steps_per_call"), "an integer >= 1")
    require(cfg.trainer.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps", cfg.trainer.checkpoint_every_n_steps, "an integer >= 0 (0 = only on interrupt and at the end)")
    if cfg.trainer.ckpt_path is not None:
        require(Path(cfg.trainer.ckpt_path).is_file(), "trainer.ckpt_path", cfg.trainer.ckpt_path, "the path of an existing checkpoint file")
    for key in ("every_n_steps", "sv_every_n_steps"):
        require(cfg.log[key] >= 1, f"log.{key}", cfg.log[key], "an integer >= 1")
    trace = cfg.log.get("trace_every_n_steps")
    if trace is not None:
        require(trace >= 1, "log.trace_every_n_steps", trace, "null or an integer >= 1")
    sv_log = cfg.log.get("sv_log_every_n_steps")
    if sv_log is not None:
        require(sv_log >= 1 and sv_log % cfg.log.sv_every_n_steps == 0, "log.sv_log_every_n_steps", sv_log, f"null or a multiple of log.sv_every_n_steps={cfg.log.sv_every_n_steps}")


def max_steps(cfg: DictConfig) -> int:
    """Total number of gradient steps of a matrix-completion run."""
    if cfg.train.max_steps is not None:
        return int(cfg.train.max_steps)
    return int(cfg.switch.at_step + cfg.train.steps_after_switch)


def validate_matcomp(cfg: DictConfig) -> None:
    t, m = cfg.task, cfg.model
    n = t.size
    require(n >= 1, "task.size", n, "an integer >= 1")
    for key in ("pretrain_rank", "final_rank"):
        require(1 <= t[key] <= n, f"task.{key}", t[key], f"an integer from 1 to task.size={n}")
    require(1 <= t.n_obs <= n * n, "task.n_obs", t.n_obs, f"an integer from 1 to task.size^2={n * n}")
    if t.pretrain_n_obs is not None:
        require(1 <= t.pretrain_n_obs <= n * n, "task.pretrain_n_obs", t.pretrain_n_obs, f"null or an integer from 1 to task.size^2={n * n}")
    require(t.pretrain_task in ("independent", "same"), "task.pretrain_task", t.pretrain_task, "independent or same")
    require(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    require(m.init in ("gaussian", "balanced", "aligned"), "model.init", m.init, "gaussian, balanced or aligned")
    require(m.init_scale > 0, "model.init_scale", m.init_scale, "a number > 0")
    require(cfg.switch.at_step >= 0, "switch.at_step", cfg.switch.at_step, "an integer >= 0")
    require(cfg.train.steps_after_switch >= 0, "train.steps_after_switch", cfg.train.steps_after_switch, "an integer >= 0")
    total = max_steps(cfg)
    require(total >= 1, "train.max_steps", total, "an integer >= 1")
    require(cfg.switch.at_step <= total, "switch.at_step", cfg.switch.at_step, f"a step within the run, <= train.max_steps={total}")
    require(1 <= cfg.log.sv_top_k <= n, "log.sv_top_k", cfg.log.sv_top_k, f"an integer from 1 to task.size={n}")
    validate_ode(cfg)
    validate_common(cfg)


def validate_ode(cfg: DictConfig) -> None:
    ode = cfg.ode
    require(ode.kind in ("factorization", "saxe", "braun"), "ode.kind", ode.kind, "factorization, saxe or braun")
    require(ode.every_n_steps >= 1, "ode.every_n_steps", ode.every_n_steps, "an integer >= 1")
    require(ode.rtol > 0, "ode.rtol", ode.rtol, "a number > 0")
    if ode.enabled and ode.kind in ("saxe", "braun"):
        require(cfg.model.depth == 2, "model.depth", cfg.model.depth, f"2 with ode.kind={ode.kind} (a depth-2 closed form)")


register_kind("matcomp", MatCompConfig, validate_matcomp)


def validate(cfg: DictConfig) -> None:
    """Semantic checks of a merged config (types were checked by the schema)."""
    _, validator = _schema_for(cfg.kind)
    validator(cfg)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into ``{"model.depth": 3, ...}`` (MLflow params)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out
