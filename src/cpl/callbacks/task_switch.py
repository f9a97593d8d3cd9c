"""TaskSwitch: change the training target at a step (the deficit ends, the final task begins)."""

from __future__ import annotations

import inspect
import math
import warnings
from numbers import Integral
from typing import Any, Callable, Optional, Sequence, Union

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..core.events import ScheduleEvent
from ..core.lightning_compat import callback_state_key, publish_metrics
from ..core.members import member_key
from ..core.readout import log_to_loggers
from ._contract import target_name

__all__ = ["TaskSwitch"]

_HOLDERS = ("module", "datamodule")


def _steps(at_step: Any) -> list[int]:
    """``at_step`` as a list of steps: an integer, or any sequence of them (lists, tuples, OmegaConf ListConfig)."""
    if isinstance(at_step, Integral) and not isinstance(at_step, bool):
        return [int(at_step)]
    if isinstance(at_step, (str, bytes)) or not hasattr(at_step, "__iter__"):
        raise ValueError(f"Expected `at_step` to be an integer or a sequence of integers, got {at_step!r}")
    steps = list(at_step)
    if not steps or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in steps):
        raise ValueError(f"Expected `at_step` to be an integer or a sequence of integers, got {at_step!r}")
    return [int(s) for s in steps]


def fetched_step(global_step: int, batch_idx: int, accumulate: int, ahead: int) -> int:
    """The optimizer step of the batch Lightning loads next, seen from ``on_train_batch_end``.

    Lightning loads a batch before the hooks of its step run; for a loader without a length it
    also keeps one more batch loaded (``ahead=1``) to know which batch is the last. When batch
    ``i`` of an epoch ends (``global_step`` steps taken), the next load is batch ``i + 1 + ahead``.
    With ``accumulate`` batches per optimizer step, batch ``i + 1`` belongs to step ``global_step``
    and batch ``i + 2`` to the next step when it starts a new group.

    >>> fetched_step(10, 4, 1, ahead=0), fetched_step(10, 4, 1, ahead=1)
    (10, 11)
    >>> fetched_step(10, 4, 2, ahead=1), fetched_step(10, 5, 2, ahead=1)
    (11, 10)
    """
    return global_step + int(ahead > 0 and (batch_idx + 2) % accumulate == 0)


class TaskSwitch(Callback):
    """Train on ``from_task`` before ``at_step`` and on ``to_task`` from ``at_step`` on.

    Step ``s`` (0-based) is the ``s``-th optimizer step (``trainer.global_step``): with
    ``at_step=T`` the first ``T`` steps use ``from_task``. The schedule is applied at the start of
    every fit, so a run resumed from a checkpoint on either side of the switch trains on the right task.

    Where the task lives (checked in ``setup``):

    - ``on_switch(trainer, pl_module, task)``: a callable that makes ``task`` current;
    - else the LightningModule's ``set_task(name)`` (``set_task(name, members=...)`` for a
      per-member ``at_step``), if it has one; else the trainer's DataModule's ``set_task(name)``.
      A holder with ``task_names`` has both tasks checked against them.

    A task held by the module is set before the step's batch starts. A task held by the DataModule
    (``task_holder="datamodule"``, the default when the module has no ``set_task``) is set before
    the step's batch is *loaded*: Lightning loads a batch before the hooks of its step run, so the
    switch is applied at the end of the previous step and the batch of step ``at_step`` is the
    first one of ``to_task``, also after a resume on either side of the switch. Loaders without a
    length (iterable datasets) keep one more batch loaded, which is taken into account; for them a
    switch on the second step of an epoch after the first lands one step late, because Lightning
    loads an epoch's first two batches together (warned). Worker processes (``num_workers > 0``)
    load further ahead (warned).

    Args:
        at_step: the switch step, or one per member (any sequence, e.g. an OmegaConf ``ListConfig``).
        to_task: name of the task after the switch.
        from_task: name of the task before it.
        on_switch: a callable ``(trainer, pl_module, task)`` used instead of ``set_task``.
        task_holder: ``"module"`` or ``"datamodule"``: who holds the task (sets the timing; with
            ``on_switch``, ``"datamodule"`` means that the callable changes the data). None = auto.

    Raises:
        ValueError: a negative step, an empty or non-integer ``at_step``, an unknown ``task_holder``;
            (in ``setup``) an unknown task, a per-member list of the wrong length or without a module ``set_task``.
        AttributeError: (in ``setup``) neither the module nor the DataModule has ``set_task``.
        TypeError: (in ``setup``) ``set_task`` does not take a task name (and ``members`` per member).

    Logged metrics:
        ``task/switched`` (per member): 1.0 at the step a member switches.

    Example::

        >>> cb = TaskSwitch(at_step=20000, from_task="pretrain", to_task="final")
        >>> cb.state_key
        "TaskSwitch{'from': 'pretrain', 'to': 'final', 'on_switch': None}"
    """

    def __init__(
        self,
        at_step: Union[int, Sequence[int]],
        to_task: str = "final",
        from_task: str = "pretrain",
        on_switch: Optional[Callable[[L.Trainer, L.LightningModule, str], None]] = None,
        task_holder: Optional[str] = None,
    ):
        steps = _steps(at_step)
        if any(s < 0 for s in steps):
            raise ValueError(f"Expected `at_step` >= 0, got {list(steps) if len(steps) > 1 else steps[0]}")
        if task_holder is not None and task_holder not in _HOLDERS:
            raise ValueError(f"Expected `task_holder` in {_HOLDERS} or None, got {task_holder!r}")
        if on_switch is not None and not callable(on_switch):
            raise ValueError(f"Expected `on_switch` to be a callable (trainer, pl_module, task), got {on_switch!r}")
        self.at_steps = steps
        self.per_member = len(steps) > 1
        self.to_task, self.from_task = to_task, from_task
        self.on_switch, self.task_holder = on_switch, task_holder
        self.switched_at: list[Optional[int]] = [None] * len(steps)
        self._applied: Optional[list[str]] = None
        self._set: Optional[Callable[..., Any]] = None
        self._data = False  # the task is in the data: applied before the batch is fetched
        self._resume_step: Optional[int] = None
        self._ahead = 0  # batches a loader keeps loaded beyond the current one (1 without a length)
        self._prefetched = 0  # whether that batch is loaded (see on_train_batch_end)

    @property
    def state_key(self) -> str:
        on_switch = None if self.on_switch is None else target_name(self.on_switch)
        return callback_state_key(self, **{"from": self.from_task, "to": self.to_task, "on_switch": on_switch})

    # ---- contract
    def _holder(self, trainer: Any, pl_module: Any) -> tuple[Any, str]:
        """The object with ``set_task`` and its kind ("module" or "datamodule")."""
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if self.task_holder in (None, "module") and callable(getattr(pl_module, "set_task", None)):
            return pl_module, "module"
        if self.task_holder in (None, "datamodule") and callable(getattr(dm, "set_task", None)):
            return dm, "datamodule"
        where = {None: "the LightningModule or the trainer's DataModule", "module": "the LightningModule"}
        dm_name = "no DataModule" if dm is None else f"the DataModule {type(dm).__name__} has none"
        raise AttributeError(
            f"TaskSwitch needs `set_task(name)` on {where.get(self.task_holder, 'the DataModule')}, or an "
            f"`on_switch` callable; {type(pl_module).__name__} has no `set_task` and the trainer has {dm_name}."
        )

    @staticmethod
    def _check_signature(fn: Callable, owner: str, per_member: bool) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        try:
            sig.bind("task", members=[0]) if per_member else sig.bind("task")
        except TypeError:
            need = "`set_task(name, members=None)` (one `at_step` per member)" if per_member else "`set_task(name)`"
            raise TypeError(
                f"TaskSwitch calls {need}; {owner}.set_task has the signature {sig}. Give it a task name "
                "parameter, or pass `on_switch=`."
            ) from None

    def _check_tasks(self, holder: Any) -> None:
        names = getattr(holder, "task_names", None)
        if names is None:
            return
        for task in (self.from_task, self.to_task):
            if task not in names:
                raise ValueError(f"TaskSwitch: task {task!r} is not one of the module's tasks {list(names)}")

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.on_switch is not None:
            if self.per_member:
                raise ValueError("TaskSwitch: a per-member `at_step` needs the module's `set_task`, not `on_switch`")
            self._set = lambda task: self.on_switch(trainer, pl_module, task)
            self._data = self.task_holder == "datamodule"
        else:
            holder, kind = self._holder(trainer, pl_module)
            if self.per_member and kind != "module":
                raise ValueError("TaskSwitch: a per-member `at_step` needs `set_task(name, members=...)` on the module")
            self._check_signature(holder.set_task, type(holder).__name__, self.per_member)
            self._check_tasks(holder)
            self._set, self._data = holder.set_task, kind == "datamodule"
        n = int(getattr(pl_module, "n_members", 1)) if self.per_member else 1
        if self.per_member and len(self.at_steps) != n:
            raise ValueError(f"TaskSwitch: expected one `at_step` per member ({n}), got {len(self.at_steps)}")
        if not self.per_member and len(self.switched_at) != 1:
            self.switched_at = self.switched_at[:1]
        self._applied = None

    # ---- applying the schedule
    def task_at(self, step: int) -> list[str]:
        """The task of every member at optimizer step ``step``."""
        return [self.to_task if step >= s else self.from_task for s in self.at_steps]

    def _apply(self, step: int) -> None:
        wanted = self.task_at(step)
        if wanted == self._applied:
            return
        if not self.per_member:
            self._set(wanted[0])
        else:
            for task in (self.from_task, self.to_task):
                members = [
                    e for e, w in enumerate(wanted) if w == task and (self._applied is None or self._applied[e] != task)
                ]
                if members:
                    self._set(task, members=members)
        self._applied = wanted

    def _record(self, trainer: L.Trainer) -> None:
        step, fresh = trainer.global_step, {}
        n = len(self.at_steps)
        for e, s in enumerate(self.at_steps):
            if step >= s and self.switched_at[e] is None:
                self.switched_at[e] = step
                fresh[member_key("task/switched", e, n)] = 1.0
        log_to_loggers(trainer, fresh)
        publish_metrics(trainer, fresh)

    @override
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume_step = checkpoint.get("global_step")

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before Lightning restores the step and loads the first batch: apply the step the fit resumes at
        if self._data:
            self._applied = None
            self._apply(int(self._resume_step or 0))
        self._resume_step = None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._data:
            self._applied = None  # the module's task may come from a checkpoint: set it again
            self._apply(trainer.global_step)
            return
        # a loader without a length has its first batch loaded already (in setup_data); the next load is batch 2
        self._ahead = int(math.isinf(trainer.num_training_batches))
        self._prefetched = self._ahead
        self._apply(trainer.global_step + self._ahead * int(trainer.accumulate_grad_batches == 1))
        self._warn_workers(trainer)

    def _warn_workers(self, trainer: L.Trainer) -> None:
        loader = getattr(trainer, "train_dataloader", None)
        loaders = loader if isinstance(loader, (list, tuple)) else [loader]
        if any(getattr(dl, "num_workers", 0) > 0 for dl in loaders):
            warnings.warn(
                "TaskSwitch: the DataModule's train loader uses worker processes, which load batches ahead; the "
                "switch cannot land on an exact step. Use num_workers=0 or a task held by the module.",
                stacklevel=2,
            )

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._data and self._ahead and self._prefetched == 0:  # a new epoch of a loader without a length
            step = trainer.global_step
            self._apply(step)
            second = step + int(trainer.accumulate_grad_batches == 1)
            if self.task_at(second) != self.task_at(step):
                warnings.warn(
                    f"TaskSwitch: the switch at step {second} is the second step of an epoch; Lightning loads the "
                    "first two batches of an epoch of a loader without a length together, so the DataModule's "
                    "task changes one step late.",
                    stacklevel=2,
                )
            self._prefetched = 1

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._data:
            self._apply(trainer.global_step)
        self._record(trainer)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._data:
            return
        if self._ahead and trainer.is_last_batch:
            self._prefetched = 0  # the next load is the next epoch's first batch, after on_train_epoch_start
        else:
            k = trainer.accumulate_grad_batches
            self._apply(fetched_step(trainer.global_step, batch_idx, k, self._ahead))

    def schedule_events(self) -> list[ScheduleEvent]:
        """The switch as :class:`~cpl.core.events.ScheduleEvent` s (read by ``ODEReference``, module chunking)."""
        by_step: dict[int, list[int]] = {}
        for e, s in enumerate(self.at_steps):
            by_step.setdefault(s, []).append(e)
        n = len(self.at_steps)
        return [
            ScheduleEvent(
                "switch",
                start=s,
                info={"from": self.from_task, "to": self.to_task},
                members=None if len(m) == n else tuple(m),
            )
            for s, m in sorted(by_step.items())
        ]

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"at_steps": list(self.at_steps), "switched_at": list(self.switched_at)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = list(state_dict.get("switched_at", self.switched_at))
        if len(saved) == len(self.switched_at):
            self.switched_at = saved
        else:
            warnings.warn(
                f"TaskSwitch: the checkpoint has {len(saved)} switch steps, this callback {len(self.switched_at)}; "
                "`switched_at` is not restored.",
                stacklevel=2,
            )
