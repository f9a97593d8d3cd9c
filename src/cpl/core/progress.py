"""Progress in gradient steps: a single run's bar ("12000/50000 steps") and the member-steps a
batched run reports to a sweep's bar while it trains.

A module with several members (:class:`~cpl.core.windows.MemberWindows`) trains member e over its
window ``[start_e, end_e)``; the work done at global step g is the sum over members of the steps
of their windows before g (the member-steps). A sweep counts its total in the same unit, so its
bar moves inside a batched group and ends exactly at its total.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

__all__ = ["member_steps", "MemberStepReporter", "StepProgressBar"]


def member_steps(module: Any, step: int) -> int:
    """Gradient steps of all members of ``module`` up to global step ``step``."""
    starts, ends = getattr(module, "member_starts", None), getattr(module, "member_ends", None)
    if starts is None:
        return int(getattr(module, "n_members", 1)) * step
    return sum(min(max(step - s, 0), e - s) for s, e in zip(starts, ends))


class MemberStepReporter(Callback):
    """Sends ``(key, member-steps done since the last report)`` to ``sink.put`` while a run trains,
    at most every ``every_s`` seconds and at the end (a sweep's bar; ``sink`` may be a queue of a
    ``multiprocessing.Manager``, so the callback pickles into worker processes)."""

    def __init__(self, sink: Any, key: Any = None, every_s: float = 0.5):
        self.sink, self.key, self.every_s = sink, key, every_s
        self._sent, self._last = 0, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._sent, self._last = member_steps(pl_module, trainer.global_step), time.monotonic()

    def _report(self, trainer, pl_module, force: bool) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        done = member_steps(pl_module, trainer.global_step)
        if done > self._sent:
            self.sink.put((self.key, done - self._sent))
            self._sent = done
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._report(trainer, pl_module, force=False)

    def on_train_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, force=True)


class StepProgressBar(TQDMProgressBar):
    """A run's bar in gradient steps ("12000/50000 steps", rate in steps/s), whatever the number of
    steps per Lightning step, with the module's latest metrics (``progress``)."""

    def __init__(self, refresh_steps: int = 1):
        super().__init__(refresh_rate=1)
        self.refresh_steps = max(1, int(refresh_steps))
        self._shown: Optional[int] = None

    def get_metrics(self, trainer, pl_module):
        return dict(getattr(pl_module, "progress", {}))

    def init_train_tqdm(self):
        """The bar is made in gradient steps from the start: Lightning's own ("Training 0/?", then
        "Epoch 0: 0/<batches>") would be drawn once before a reset could fix it."""
        trainer = self.trainer
        return Tqdm(
            desc="train",
            total=int(trainer.max_steps),
            initial=int(trainer.global_step),
            unit="steps",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer, *args) -> None:
        # Lightning's would reset the bar to the epoch's batches; a run's bar counts its steps throughout
        self._shown = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step - (self._shown or 0) >= self.refresh_steps or step >= trainer.max_steps:
            bar = self.train_progress_bar
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
            self._shown = step
