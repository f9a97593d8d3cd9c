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

import abc
import warnings
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..core.events import ScheduleEvent, collect_schedule
from ..core.lightning_compat import callback_state_key, publish_metrics
from ..core.readout import final_step, log_to_loggers

__all__ = ["Reference", "ODEReference"]

_METHODS = ("prepare", "predict", "observe", "conditions")


class Reference(abc.ABC):
    """What :class:`ODEReference` needs from an analytic reference.

    Subclass it, or write any class with the four methods below: ``isinstance`` and ``issubclass``
    accept both (as :class:`collections.abc.Iterable` does), so LightningCLI / jsonargparse take a
    ``class_path`` to either for ``ODEReference(reference=...)``.

    Attributes:
        name: a label shown in tags and figures ("gradient flow (solve_ivp)", "exact discrete map", ...).
    """

    name: str = "reference"

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:
        if cls is Reference:
            return all(callable(getattr(other, m, None)) for m in _METHODS) or NotImplemented
        return NotImplemented

    @abc.abstractmethod
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

    @abc.abstractmethod
    def predict(self, step: int) -> dict[str, np.ndarray]:
        """Reference values at a global step: ``{quantity: array}`` (leading dim = members if any)."""

    @abc.abstractmethod
    def observe(self, pl_module: L.LightningModule) -> dict[str, np.ndarray]:
        """The same quantities measured on the module now (SGD)."""

    def conditions(self) -> Optional[str]:
        """None if the reference's assumptions hold for this run, else a sentence saying which fails."""
        return None


def learning_rate(trainer: Any, pl_module: Any, given: Optional[float] = None) -> float:
    """The learning rate that turns steps into time: ``given``, else the module's ``lr``, else the
    first optimizer's (all its parameter groups must agree)."""
    if given is not None:
        return float(given)
    lr = getattr(pl_module, "lr", None)
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return float(lr)
    optimizers = getattr(trainer, "optimizers", None) or []
    if not optimizers:
        raise AttributeError(
            f"ODEReference needs a learning rate: pass `lr=`, give {type(pl_module).__name__} an `lr` attribute, or "
            "configure an optimizer."
        )
    rates = sorted({float(g["lr"]) for g in optimizers[0].param_groups})
    if len(rates) != 1:
        raise ValueError(
            f"ODEReference: the optimizer's parameter groups have different learning rates {rates}; pass `lr=`"
        )
    return rates[0]


class ODEReference(Callback):
    """Log a reference solution next to SGD every n optimizer steps, with a deviation metric.

    The run's length (``max_steps``, or ``max_epochs`` through
    ``trainer.estimated_stepping_batches``) and the learning rate (``lr``, else the module's ``lr``
    attribute, else ``trainer.optimizers[0]``) are read at ``on_train_start``. The history (steps,
    reference and SGD values) is saved in checkpoints, so a resumed run keeps it; the reference
    itself restarts from the module's state at the resume step.

    Args:
        reference: a :class:`Reference` (a subclass or any class with its methods); None =
            ``pl_module.ode_reference(schedule)``.
        every_n_steps: logging interval in optimizer steps (step 0 and the last step are logged too).
        prefix: metric prefix of the reference values (SGD values use ``sgd``).
        lr: the learning rate of ``t = lr * step``; None = read it (see above).

    Raises:
        ValueError: ``every_n_steps`` < 1; (at train start) a run of unknown length, optimizer groups
            with different learning rates.
        TypeError: ``reference`` lacks one of ``prepare``, ``predict``, ``observe``, ``conditions``.
        AttributeError: (in ``setup``) no ``reference`` and no ``ode_reference`` method; (at train start) no
            learning rate.

    Logged metrics:
        ``{prefix}/{quantity}_{i}`` and ``sgd/{quantity}_{i}`` for every component i (1-based);
        ``{prefix}/deviation``: max absolute difference over all quantities and components;
        ``{prefix}/rel_deviation``: the same divided by the largest reference magnitude.
        A reference used outside its conditions adds the hyperparameter ``cpl.ode_warning`` (a tag
        with cpl's MLflow logger) and one warning.

    Example::

        >>> cb = ODEReference(every_n_steps=10)
        >>> cb.every_n_steps, cb.state_key
        (10, "ODEReference{'prefix': 'ode'}")
    """

    def __init__(
        self,
        reference: Optional[Reference] = None,
        every_n_steps: int = 10,
        prefix: str = "ode",
        lr: Optional[float] = None,
    ):
        if every_n_steps < 1:
            raise ValueError(f"Expected `every_n_steps` >= 1, got {every_n_steps}")
        if reference is not None and not isinstance(reference, Reference):
            missing = [m for m in _METHODS if not callable(getattr(reference, m, None))]
            raise TypeError(f"Expected `reference` to be a Reference; {type(reference).__name__} lacks {missing}")
        self.reference, self.every_n_steps, self.prefix, self.lr = reference, every_n_steps, prefix, lr
        self._given = reference
        self._last: Optional[int] = None
        self.steps: list[int] = []
        self.ode: list[dict[str, np.ndarray]] = []
        self.sgd: list[dict[str, np.ndarray]] = []
        self.max_deviation = 0.0
        self.max_rel_deviation = 0.0
        self.warning: Optional[str] = None

    @property
    def state_key(self) -> str:
        return callback_state_key(self, prefix=self.prefix)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._given is None and not callable(getattr(pl_module, "ode_reference", None)):
            raise AttributeError(
                "ODEReference needs a `reference` argument or a LightningModule with an "
                "`ode_reference(schedule)` method; "
                f"{type(pl_module).__name__} has none."
            )

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = collect_schedule(trainer.callbacks)
        self.reference = self._given if self._given is not None else pl_module.ode_reference(schedule)
        lr = learning_rate(trainer, pl_module, self.lr)
        last = final_step(trainer)
        if last is None:
            raise ValueError(
                "ODEReference needs a run of known length: set `max_steps`, or `max_epochs` with a sized train loader"
            )
        # the reference starts from the module's state now: step 0, or the step a run resumed at
        self.reference.prepare(pl_module, schedule, lr, int(trainer.global_step), int(last))
        self._last = int(last)
        why = self.reference.conditions()
        if why and self.warning is None:
            self.warning = why
            name = getattr(self.reference, "name", type(self.reference).__name__)
            warnings.warn(f"ODEReference ({name}): {why}; logging it anyway.", stacklevel=2)
            for logger in trainer.loggers:  # a param for most loggers; cpl's MLflow logger makes it a tag
                logger.log_hyperparams({"cpl.ode_warning": why[:5000]})
        if trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step == self._last:
            self._log(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.reference is not None and (not self.steps or self.steps[-1] != trainer.global_step):
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
        publish_metrics(trainer, {k: metrics[k] for k in (f"{self.prefix}/deviation", f"{self.prefix}/rel_deviation")})

    def history(self) -> dict[str, Any]:
        """``steps`` and, per quantity, stacked ``ode`` and ``sgd`` arrays (T, ...)."""
        keys = self.ode[0].keys() if self.ode else []
        return {
            "steps": np.asarray(self.steps),
            "ode": {k: np.stack([o[k] for o in self.ode]) for k in keys},
            "sgd": {k: np.stack([s[k] for s in self.sgd]) for k in keys},
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        # tensors and plain types only: checkpoints load with torch.load(weights_only=True)
        keys = list(self.ode[0]) if self.ode else []
        return {
            "max_deviation": self.max_deviation,
            "max_rel_deviation": self.max_rel_deviation,
            "warning": self.warning,
            "steps": list(self.steps),
            "ode": {k: torch.from_numpy(np.stack([o[k] for o in self.ode])) for k in keys},
            "sgd": {k: torch.from_numpy(np.stack([s[k] for s in self.sgd])) for k in keys},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.max_deviation = state_dict.get("max_deviation", 0.0)
        self.max_rel_deviation = state_dict.get("max_rel_deviation", 0.0)
        self.warning = state_dict.get("warning")
        self.steps = [int(t) for t in state_dict.get("steps", [])]
        ode, sgd = state_dict.get("ode", {}), state_dict.get("sgd", {})
        self.ode = [{k: v[i].numpy() for k, v in ode.items()} for i in range(len(self.steps))]
        self.sgd = [{k: v[i].numpy() for k, v in sgd.items()} for i in range(len(self.steps))]
        if self.steps and not ode:
            warnings.warn(
                "ODEReference: the checkpoint has steps but no values; the history is not restored.", stacklevel=2
            )
            self.steps = []
