"""Schema sections every model family shares (optimiser, logging, tracking, trainer) and their checks.

Families compose their root schema from these (``cpl.families.<kind>.schema``). The key lists
here say which keys describe *how* a run is executed or recorded rather than *what* it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from .errors import require

__all__ = [
    "OptimConfig",
    "LogConfig",
    "TrackingConfig",
    "TrainerConfig",
    "validate_common",
    "NON_RESULT_KEYS",
    "RUN_SHARED_KEYS",
    "validate_bounds",
    "MAX_STEPS",
]

#: the formats a figure can be logged in (``log.figure_formats``)
FORMATS = ("png", "pdf", "svg")

#: keys that do not change what a run computes: left out of config hashes (sweep resume)
NON_RESULT_KEYS = (
    "name",
    "tracking",
    "trainer.progress_bar",
    "trainer.checkpoint_dir",
    "trainer.checkpoint_every_n_steps",
    "trainer.ckpt_path",
    "trainer.steps_per_call",  # any value takes the same steps (tested)
    "trainer.force_resume",
    "log.figure_formats",
)
#: keys that every member of one batched run shares, whatever the family (one trainer, one store)
RUN_SHARED_KEYS = (
    "kind",
    "trainer.accelerator",
    "trainer.checkpoint_dir",
    "trainer.steps_per_call",
    "log.figures",
    "log.figure_formats",
    "tracking.uri",
    "tracking.experiment",
    "tracking.enabled",
    "tracking.background_writes",
    "tracking.curve_points",
)


@dataclass
class OptimConfig:
    lr: float = 0.2  #: constant learning rate of full-batch gradient descent
    #: apply the closed-form gradient inside its own matrix products (matrix completion; the same
    #: steps up to rounding, ~20% faster). false: gradients go to p.grad first, for callbacks that
    #: read them in on_before_optimizer_step
    fused: bool = True


@dataclass
class LogConfig:
    every_n_steps: int = 100  #: train loss and test errors
    sv_every_n_steps: int = 10  #: singular values of W (paper: every 10 steps)
    sv_top_k: int = 10
    #: interval at which singular values go to MLflow (a multiple of sv_every_n_steps); null = every readout
    sv_log_every_n_steps: Optional[int] = None
    sv_reference: bool = True  #: also log diag(U^T W V) in the final task's basis (sv_ref/k)
    #: record the test error every n steps (null = off); saved in the artifact traces/dense.npz
    trace_every_n_steps: Optional[int] = None
    figures: bool = True  #: figures logged as MLflow artifacts at the end
    #: the formats each figure is logged in: png (the MLflow UI shows it), pdf and svg (vector, for
    #: papers). A figure costs ~0.15-0.2 s per format; the paper sweeps' cells log png only
    figure_formats: list[str] = field(default_factory=lambda: ["png", "pdf"])


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
    #: at most about this many points per metric curve and run in MLflow (uniformly thinned,
    #: always with step 0, every switch/deficit boundary and the last step); null = every point.
    #: Full-resolution traces go to the artifact traces/dense.npz
    curve_points: Optional[int] = 1000
    #: seconds a metric write may take, all retries included, before its rows go to a spill file
    #: beside the checkpoint (cpl replay writes them back); also the time a server has to answer
    #: the check before a run starts
    timeout_s: float = 30.0
    retries: int = 2  #: retries of a failed metric write within timeout_s


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"  #: "cpu", "gpu" or "auto"
    dtype: str = "float32"  #: "float32" or "float64"
    progress_bar: bool = True
    checkpoint_dir: str = "checkpoints"  #: checkpoints go to <checkpoint_dir>/<run id>/
    checkpoint_every_n_steps: int = 10000  #: 0 = only on interrupt and at the end
    #: gradient steps per Lightning step. "auto": from one logging/readout/checkpoint step or
    #: scheduled event to the next, so every callback sees the steps it acts on and results equal
    #: one step per call (tested); an integer caps it. Set 1 for your own per-step callbacks.
    steps_per_call: Any = "auto"
    ckpt_path: Optional[str] = None  #: resume from this checkpoint
    force_resume: bool = False  #: resume even if the checkpoint was written with another config (--force)


#: the most gradient steps of one run (more is a typo, not an experiment)
MAX_STEPS = 10**9
#: a rough rate of the small matrix products, to turn an absurd step count into a time
_NOMINAL_STEPS_PER_S = 2000


def validate_bounds(cfg: DictConfig, total_steps: int) -> None:
    """Bounds every family shares: the seed, the step count (with a time estimate), the store's patience."""
    seed = cfg.get("seed", 0)
    require(0 <= seed < 2**32, "seed", seed, "an integer from 0 to 2^32-1")
    days = total_steps / _NOMINAL_STEPS_PER_S / 86400
    require(
        total_steps <= MAX_STEPS,
        "train.max_steps",
        total_steps,
        f"at most {MAX_STEPS:.0e} steps (this many would take ~{days:.3g} days at ~{_NOMINAL_STEPS_PER_S} steps/s)",
    )
    t = cfg.tracking
    require(0 < t.timeout_s <= 3600, "tracking.timeout_s", t.timeout_s, "a number of seconds in (0, 3600]")
    require(0 <= t.retries <= 100, "tracking.retries", t.retries, "an integer from 0 to 100")


def validate_common(cfg: DictConfig) -> None:
    require(cfg.optim.lr > 0 and cfg.optim.lr < float("inf"), "optim.lr", cfg.optim.lr, "a finite number > 0")
    require(
        cfg.trainer.accelerator in ("cpu", "gpu", "cuda", "mps", "auto"),
        "trainer.accelerator",
        cfg.trainer.accelerator,
        "cpu, gpu, cuda, mps or auto",
    )
    require(cfg.trainer.dtype in ("float32", "float64"), "trainer.dtype", cfg.trainer.dtype, "float32 or float64")
    spc = cfg.trainer.get("steps_per_call", "auto")
    require(
        spc == "auto" or (isinstance(spc, int) and not isinstance(spc, bool) and spc >= 1),
        "trainer.steps_per_call",
        spc,
        "auto or an integer >= 1",
    )
    require(
        cfg.trainer.checkpoint_every_n_steps >= 0,
        "trainer.checkpoint_every_n_steps",
        cfg.trainer.checkpoint_every_n_steps,
        "an integer >= 0 (0 = only on interrupt and at the end)",
    )
    if cfg.trainer.ckpt_path is not None:
        require(
            Path(cfg.trainer.ckpt_path).is_file(),
            "trainer.ckpt_path",
            cfg.trainer.ckpt_path,
            "the path of an existing checkpoint file",
        )
    points = cfg.tracking.get("curve_points")
    require(points is None or points >= 10, "tracking.curve_points", points, "null or an integer >= 10")
    for key in ("every_n_steps", "sv_every_n_steps"):
        require(cfg.log[key] >= 1, f"log.{key}", cfg.log[key], "an integer >= 1")
    formats = list(cfg.log.get("figure_formats") or [])
    require(
        bool(formats) and set(formats) <= set(FORMATS) and len(set(formats)) == len(formats),
        "log.figure_formats",
        formats,
        f"a non-empty list of distinct formats out of {', '.join(FORMATS)}",
    )
    trace = cfg.log.get("trace_every_n_steps")
    if trace is not None:
        require(trace >= 1, "log.trace_every_n_steps", trace, "null or an integer >= 1")
    sv_log = cfg.log.get("sv_log_every_n_steps")
    if sv_log is not None:
        require(
            sv_log >= 1 and sv_log % cfg.log.sv_every_n_steps == 0,
            "log.sv_log_every_n_steps",
            sv_log,
            f"null or a multiple of log.sv_every_n_steps={cfg.log.sv_every_n_steps}",
        )
