"""ODEReference: log an analytic reference (ODE solution, closed form) next to the SGD values.

The callback is model-agnostic. What it integrates is a :class:`Reference`: an object that,
given the run's schedule, predicts named quantities at given steps, and reads the same
quantities off the module. The reference comes from the ``reference`` argument or, if that is
None, from the module's ``ode_reference(schedule)`` method (so the model and its config choose).

The schedule (deficit windows, task switches, lesions) is read from the other callbacks on the
trainer: any callback with a ``schedule_events()`` method contributes its events, so no schedule
parameter is written twice in a config.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from ..core.events import ScheduleEvent, collect_schedule
from ..core.lightning_compat import callback_state_key
from ..core.readout import final_step, log_to_loggers

__all__ = ["Reference", "ODEReference"]


@runtime_checkable
class Reference(Protocol):
    """What :class:`ODEReference` needs from an analytic reference.

    Attributes:
        name: a label shown in MLflow tags and figures ("gradient flow (solve_ivp)", "exact discrete map", ...).
    """

    name: str

    def prepare(
        self,
        pl_module: L.LightningModule,
        schedule: Sequence[ScheduleEvent],
        lr: float,
        start_step: int,
        max_steps: int,
    ) -> None:
        """Read the state off the module at ``start_step`` (0, or the step a run resumed at) and
        solve over ``[start_step, max_steps]``, with time ``t = lr * step``."""

    def predict(self, step: int) -> dict[str, np.ndarray]:
        """Reference values at a global step: ``{quantity: array}`` (leading dim = members if any)."""

    def observe(self, pl_module: L.LightningModule) -> dict[str, np.ndarray]:
        """The same quantities measured on the module now (SGD)."""

    def conditions(self) -> Optional[str]:
        """None if the reference's assumptions hold for this run, else a sentence saying which fails."""


class ODEReference(Callback):
    """Log a reference solution next to SGD every n steps, with a deviation metric.

    Args:
        reference: the :class:`Reference`; None = ``pl_module.ode_reference(schedule)``.
        every_n_steps: logging interval in global steps (step 0 and the last step are logged too).
        prefix: metric prefix of the reference values (SGD values use ``sgd``).

    Raises:
        ValueError: ``every_n_steps`` < 1.
        AttributeError: no ``reference`` given and the module has no ``ode_reference`` method.

    Logged metrics:
        ``{prefix}/{quantity}_{i}`` and ``sgd/{quantity}_{i}`` for every component i (1-based);
        ``{prefix}/deviation``: max absolute difference over all quantities and components;
        ``{prefix}/rel_deviation``: the same divided by the largest reference magnitude.
        A reference used outside its conditions adds the tag ``cpl.ode_warning`` and one warning.

    Example::

        >>> cb = ODEReference(every_n_steps=10)
        >>> cb.every_n_steps
        10
    """

    def __init__(self, reference: Optional[Reference] = None, every_n_steps: int = 10, prefix: str = "ode"):
        if every_n_steps < 1:
            raise ValueError(f"Expected `every_n_steps` >= 1, got {every_n_steps}")
        self.reference, self.every_n_steps, self.prefix = reference, every_n_steps, prefix
        self._given = reference
        self.steps: list[int] = []
        self.ode: list[dict[str, np.ndarray]] = []
        self.sgd: list[dict[str, np.ndarray]] = []
        self.max_deviation = 0.0
        self.max_rel_deviation = 0.0
        self.warning: Optional[str] = None

    @property
    def state_key(self) -> str:
        return callback_state_key(self, prefix=self.prefix)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._given is None and not callable(getattr(pl_module, "ode_reference", None)):
            raise AttributeError(
                "ODEReference needs a `reference` argument or a LightningModule with an "
                "`ode_reference(schedule)` method; "
                f"{type(pl_module).__name__} has none."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = collect_schedule(trainer.callbacks)
        self.reference = self._given if self._given is not None else pl_module.ode_reference(schedule)
        lr = float(getattr(pl_module, "lr"))
        # the reference starts from the module's state now: step 0, or the step a run resumed at
        self.reference.prepare(pl_module, schedule, lr, int(trainer.global_step), int(trainer.max_steps))
        why = self.reference.conditions()
        if why and self.warning is None:
            self.warning = why
            warnings.warn(f"ODEReference ({self.reference.name}): {why}; logging it anyway.", stacklevel=2)
            for logger in trainer.loggers:  # a param for most loggers; cpl's MLflow logger makes it a tag
                logger.log_hyperparams({"cpl.ode_warning": why[:5000]})
        if trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step == final_step(trainer):
            self._log(trainer, pl_module)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.steps and self.steps[-1] == step:
            return
        ode = {k: np.asarray(v, dtype=float) for k, v in self.reference.predict(step).items()}
        sgd = {k: np.asarray(v, dtype=float) for k, v in self.reference.observe(pl_module).items()}
        metrics: dict[str, float] = {}
        dev, scale = 0.0, 0.0
        for key, ref in ode.items():
            got = sgd[key]
            for i, (r, g) in enumerate(zip(ref.reshape(-1), got.reshape(-1))):
                metrics[f"{self.prefix}/{key}_{i + 1}"] = float(r)
                metrics[f"sgd/{key}_{i + 1}"] = float(g)
            dev = max(dev, float(np.max(np.abs(ref - got))) if ref.size else 0.0)
            scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
        rel = dev / scale if scale > 0 else 0.0
        metrics[f"{self.prefix}/deviation"] = dev
        metrics[f"{self.prefix}/rel_deviation"] = rel
        self.max_deviation = max(self.max_deviation, dev)
        self.max_rel_deviation = max(self.max_rel_deviation, rel)
        self.steps.append(step)
        self.ode.append(ode)
        self.sgd.append(sgd)
        log_to_loggers(trainer, metrics, step)

    def history(self) -> dict[str, Any]:
        """``steps`` and, per quantity, stacked ``ode`` and ``sgd`` arrays (T, ...)."""
        keys = self.ode[0].keys() if self.ode else []
        return {
            "steps": np.asarray(self.steps),
            "ode": {k: np.stack([o[k] for o in self.ode]) for k in keys},
            "sgd": {k: np.stack([s[k] for s in self.sgd]) for k in keys},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "max_deviation": self.max_deviation,
            "max_rel_deviation": self.max_rel_deviation,
            "warning": self.warning,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.max_deviation = state_dict.get("max_deviation", 0.0)
        self.max_rel_deviation = state_dict.get("max_rel_deviation", 0.0)
        self.warning = state_dict.get("warning")
