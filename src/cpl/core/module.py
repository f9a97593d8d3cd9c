"""Shared machinery of the full-batch LightningModules.

One Lightning training step is one full-batch gradient step (manual optimisation with plain
SGD). Metrics are computed every ``log_every_n_steps`` steps (and at the first and last step)
and sent straight to ``trainer.loggers`` with the global step, so they are never dropped by
Lightning's ``log_every_n_steps`` throttle and cost nothing on the other steps.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping, Optional, Sequence

import lightning as L
import torch

from . import gemm
from .events import ChunkPlan, collect_schedule
from .lightning_compat import FastHookNameMixin, attached_trainer, step_counter_incrementer
from .members import member_metrics
from .optim import ActiveSGD
from .readout import final_step, log_to_loggers
from .windows import MemberWindows

__all__ = ["FullBatchModule", "ActiveSGD", "DivergenceError"]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class _Steps:
    """Placeholder data: the data live on the module, every batch is the full batch."""

    def __init__(self, length: int):
        self.length = length

    def __iter__(self) -> Iterator[int]:
        for i in range(self.length):
            yield i

    def __len__(self) -> int:
        return self.length


class FullBatchModule(FastHookNameMixin, MemberWindows, L.LightningModule):
    """Base class: subclasses implement :meth:`loss` and :meth:`compute_metrics`.

    Args:
        lr: learning rate of plain SGD.
        log_every_n_steps: interval of :meth:`compute_metrics`.
        max_steps: length of the run (the placeholder dataloader's length; gives the progress bar a total).
    """

    def __init__(self, lr: float, log_every_n_steps: int = 100, max_steps: int = 1):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"Expected `lr` > 0, got {lr}")
        if log_every_n_steps < 1:
            raise ValueError(f"Expected `log_every_n_steps` >= 1, got {log_every_n_steps}")
        self.automatic_optimization = False
        self.lr = lr
        self.log_every_n_steps = log_every_n_steps
        self.max_steps = max_steps
        self._last_step: float = float("inf")  # trainer.max_steps, read once per fit
        self.steps_per_call: int | str = 1  # see set_steps_per_call
        self.fused = True  # see supports_fused_sgd
        self._chunk_intervals: list[int] = []
        self._chunks: Optional[ChunkPlan] = None  # see _prepare_chunks
        self.progress: dict[str, float] = {}  # shown by cpl's progress bar
        self.progress_keys: tuple[str, ...] = ("train/loss",)
        self.last_metrics: dict[str, float] = {}

    # ---- to implement
    def loss(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_metrics(
        self, members: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """``{key: tensor (M,)}`` for the given members (None: all E)."""
        raise NotImplementedError

    # ---- Lightning hooks
    def train_dataloader(self):
        if self._chunks is not None and attached_trainer(self) is not None:
            # one batch per chunk, so that a progress bar's total is right
            return _Steps(max(self._chunks.count(self.global_step, int(self.trainer.max_steps)), 1))
        return _Steps(self.max_steps)

    def configure_optimizers(self):
        return ActiveSGD(self.parameters(), lr=self.lr, module=self)

    def backward_step(self) -> torch.Tensor:
        """Compute the loss and leave its gradient in ``p.grad`` (for the active members); return the loss.

        The default uses autograd; a module with a closed-form gradient may override it.
        """
        for p in self.parameters():
            p.grad = None
        loss = self.loss()
        loss.backward()
        return loss

    #: True in a subclass whose :meth:`sgd_step` applies ``p -= lr * grad`` in the same pass as the
    #: gradient (no ``p.grad``); used with plain SGD (:class:`ActiveSGD`) when ``fused`` is on.
    supports_fused_sgd: bool = False

    def sgd_step(self, lr: float) -> torch.Tensor:  # pragma: no cover - abstract
        """Compute the loss and apply one SGD step to the active members in place; return the loss."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        n = self._chunks.length(self.global_step) if self._chunks is not None else 1
        # members start and end only where a call stops (they are chunk events), so the active
        # set is chosen once per call and sources are copied once, after its last step
        scheduled = self.member_starts is not None
        if scheduled:
            self._select(self.global_step)
        sgd = opt.optimizer
        fused = self.fused and self.supports_fused_sgd and type(sgd) is ActiveSGD
        if fused:
            for p in self.parameters():
                p.grad = None  # ActiveSGD skips parameters without a gradient
            lr = sgd.param_groups[0]["lr"]
            closure = lambda: self.sgd_step(lr)  # noqa: E731
        # Lightning's optimizer wrapper (hooks, profiler, step counter) costs ~80 us a step: steps
        # inside a call go straight to the optimizer and advance the step counter themselves; the
        # call's last step goes through Lightning (``on_before_optimizer_step`` runs once a call)
        advance = step_counter_incrementer(self.trainer) if n > 1 else None
        with gemm.step_products():  # numpy's OpenBLAS where it beats torch's MKL (cpl.core.gemm)
            for i in range(n):
                last = i == n - 1 or advance is None
                if fused:
                    value = opt.step(closure=closure) if last else self.sgd_step(lr)
                else:
                    value = self.backward_step()
                    opt.step() if last else sgd.step()
                if not last:
                    advance(1)
        # once a call: a non-finite loss makes the weights, hence every later loss, non-finite
        self._check_finite(value, n)
        if scheduled:  # before any callback sees the new step (loggers, checkpoints)
            self._copy_sources(self.global_step)
        return value.detach()

    def _check_finite(self, loss: torch.Tensor, steps: int = 1) -> None:
        value = loss.detach()
        if value.device.type == "cpu" or self.global_step % self.log_every_n_steps == 0:
            v = value.item()
            if not math.isfinite(v):
                step = self.global_step
                where = f"step {step}" if steps == 1 else f"steps {step - steps + 1}-{step}"
                raise DivergenceError(
                    f"The training loss became {v} at {where}: the run diverged. "
                    f"Try a lower learning rate (optim.lr={self.lr})."
                )

    # ---- several gradient steps per Lightning step
    def set_steps_per_call(self, steps: int | str, intervals: Sequence[int] = ()) -> None:
        """Take up to ``steps`` gradient steps per Lightning training step (``"auto"``: no cap).

        Lightning's per-step machinery (hooks of every callback, the optimizer wrapper, the data
        fetcher) costs a few hundred microseconds, as much as a gradient step of these small
        networks. With ``steps`` > 1 a Lightning step stops early at every step where something
        happens: a multiple of ``intervals`` (logging, readouts, checkpoints) or of the intervals
        (``every_n_steps``) of the callbacks on the trainer, an event of their schedules
        (``schedule_events()``: switches, deficit windows), a member's start or end, the last step.
        ``global_step`` still counts gradient steps, so callbacks see every step they act on.
        ``"auto"`` lets a call run from one such step to the next, so the results are the same as
        with ``steps = 1`` (tested). Callbacks that must run at every step need ``steps = 1`` (the
        default of the class; cpl's runs use ``trainer.steps_per_call``, ``auto`` by default).
        """
        if steps != "auto" and (isinstance(steps, str) or steps < 1):
            raise ValueError(f"Expected `steps` >= 1 or 'auto', got {steps!r}")
        self.steps_per_call = steps if steps == "auto" else int(steps)
        self._chunk_intervals = [int(i) for i in intervals if i]

    def _prepare_chunks(self) -> None:
        intervals = [self.log_every_n_steps, *self._chunk_intervals]
        intervals += [
            cb.every_n_steps for cb in self.trainer.callbacks if isinstance(getattr(cb, "every_n_steps", None), int)
        ]
        events: list[Optional[int]] = (
            [int(self._last_step)] if self._last_step != float("inf") else []
        )  # set by on_fit_start
        for ev in collect_schedule(self.trainer.callbacks):
            events += [ev.start, ev.end]
        if self.member_starts is not None:
            events += [*self.member_starts, *self.member_ends]
        cap = None if self.steps_per_call == "auto" else int(self.steps_per_call)
        self._chunks = ChunkPlan.build(cap, intervals, events)

    def on_fit_start(self) -> None:
        last = final_step(self.trainer)
        self._last_step = float("inf") if last is None else last
        self._chunks = None
        if self.steps_per_call != 1:
            self._prepare_chunks()

    def on_train_start(self) -> None:
        self.log_metrics_now(self.members_to_log(self.global_step, self.log_every_n_steps))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        members = self.members_to_log(self.global_step, self.log_every_n_steps)
        if members:
            self.log_metrics_now(members)

    # ---- logging
    @torch.no_grad()
    def log_metrics_now(self, members: Sequence[int] | None = None) -> dict[str, float]:
        """Compute and log the metrics of ``members`` (default: all) now."""
        if members is not None and not members:
            return {}
        idx = None if members is None or list(members) == list(range(self.n_members)) else list(members)
        metrics = member_metrics(self.compute_metrics(idx), idx, self.n_members)
        self.last_metrics.update(metrics)
        self.log_to_loggers(metrics)
        self.progress = {k.split("/")[-1]: v for k, v in metrics.items() if k in self.progress_keys}
        return metrics

    def log_to_loggers(self, metrics: Mapping[str, float]) -> None:
        """Send metrics to every logger of the trainer at the current global step."""
        if attached_trainer(self) is not None:
            log_to_loggers(self.trainer, dict(metrics))
