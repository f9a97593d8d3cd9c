"""TaskSwitch: change the training target at a step (the deficit ends, the final task begins)."""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..core.events import ScheduleEvent
from ..core.lightning_compat import callback_state_key
from ..core.members import member_key
from ..core.readout import log_to_loggers
from ._contract import require_attr

__all__ = ["TaskSwitch"]


class TaskSwitch(Callback):
    """Train on ``from_task`` before ``at_step`` and on ``to_task`` from ``at_step`` on.

    Step ``s`` (0-based) is the ``s``-th gradient step: with ``at_step=T`` the first ``T`` steps
    use ``from_task``. The schedule is re-applied at the start of every fit, so a run resumed from
    a checkpoint on either side of the switch trains on the right task.

    Module contract (checked in ``setup``): ``task_names`` (names of the tasks),
    ``set_task(name, members=None)``; with a per-member ``at_step``, also ``n_members``.

    Args:
        at_step: the switch step, or one per member.
        to_task: name of the task after the switch.
        from_task: name of the task before it.

    Raises:
        ValueError: a negative step, or a per-member list of the wrong length.
        AttributeError: the module does not offer the contract.

    Logged metrics:
        ``task/switched`` (per member): 1.0 at the step a member switches.

    Example::

        >>> cb = TaskSwitch(at_step=20000, from_task="pretrain", to_task="final")
        >>> cb.state_key
        "TaskSwitch{'from': 'pretrain', 'to': 'final'}"
    """

    def __init__(self, at_step: int | Sequence[int], to_task: str = "final", from_task: str = "pretrain"):
        steps = [int(s) for s in at_step] if isinstance(at_step, (list, tuple)) else [int(at_step)]
        if any(s < 0 for s in steps):
            raise ValueError(f"Expected `at_step` >= 0, got {at_step}")
        self.at_steps = steps
        self.per_member = isinstance(at_step, (list, tuple))
        self.to_task, self.from_task = to_task, from_task
        self.switched_at: list[int | None] = [None] * len(steps)
        self._applied: list[str | None] | None = None

    @property
    def state_key(self) -> str:
        return callback_state_key(self, **{"from": self.from_task, "to": self.to_task})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        names = require_attr(pl_module, "task_names", "TaskSwitch", "named tasks")
        require_attr(pl_module, "set_task", "TaskSwitch", "a method to change the task")
        for task in (self.from_task, self.to_task):
            if task not in names:
                raise ValueError(f"TaskSwitch: task {task!r} is not one of the module's tasks {list(names)}")
        n = getattr(pl_module, "n_members", 1)
        if self.per_member and len(self.at_steps) != n:
            raise ValueError(f"TaskSwitch: expected one `at_step` per member ({n}), got {len(self.at_steps)}")
        if not self.per_member:
            self.at_steps = self.at_steps * n
            self.switched_at = [self.switched_at[0]] * n
        self._applied = None

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        wanted = [self.to_task if step >= s else self.from_task for s in self.at_steps]
        if wanted == self._applied:
            return
        for task in (self.from_task, self.to_task):
            members = [
                e for e, w in enumerate(wanted) if w == task and (self._applied is None or self._applied[e] != task)
            ]
            if members:
                pl_module.set_task(task, members=members)
        fresh = {}
        for e, w in enumerate(wanted):
            if w == self.to_task and self.switched_at[e] is None:
                self.switched_at[e] = step
                fresh[member_key("task/switched", e, len(wanted))] = 1.0
        log_to_loggers(trainer, fresh)
        self._applied = wanted

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

    def state_dict(self) -> dict[str, Any]:
        return {"at_steps": list(self.at_steps), "switched_at": list(self.switched_at)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.switched_at = list(state_dict.get("switched_at", self.switched_at))
