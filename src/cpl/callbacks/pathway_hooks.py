"""Interventions on named submodules through forward hooks: gating deficits and mode lesions.

Both callbacks act on ``pl_module.get_submodule(path)`` where ``path`` is ``f"{root}.{pathway}"``
(or ``pathway`` alone when ``root`` is ``""``), so they work on any LightningModule whose loss is
computed by calling that submodule. They change nothing in the parameters and keep no state that a
resume needs beyond the global step; the hooks are removed at ``teardown``.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ..core.events import ScheduleEvent
from ..core.lightning_compat import callback_state_key
from ..core.linalg import as_members
from ..core.readout import log_to_loggers
from ._contract import require_attr, resolve

__all__ = ["GatingDeficit", "ModeLesion"]


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _check_window(start: int, end: Optional[int]) -> tuple[int, Optional[int]]:
    if not isinstance(start, Integral) or start < 0:
        raise ValueError(f"Expected `start` >= 0, got {start}")
    if end is not None and (not isinstance(end, Integral) or end <= start):
        raise ValueError(f"Expected `end` > `start` ({start}) or None, got {end}")
    return int(start), None if end is None else int(end)


class _PathwayHook(Callback):
    """Shared machinery: resolve the submodule, keep the window flag, remove hooks at teardown."""

    _name = "PathwayHook"

    def __init__(self, pathway: str, start: int, end: Optional[int], root: str):
        if not isinstance(pathway, str) or not pathway:
            raise ValueError(f"Expected `pathway` to be a non-empty submodule name, got {pathway!r}")
        start, end = _check_window(start, end)
        self.pathway, self.start, self.end, self.root = pathway, start, end, root
        self.active = False
        self.active_steps = 0  #: gradient steps taken with the intervention in force
        self._handles: list[Any] = []

    @property
    def path(self) -> str:
        """The submodule's path inside the LightningModule."""
        return f"{self.root}.{self.pathway}" if self.root else self.pathway

    def in_window(self, step: int) -> bool:
        return self.start <= step and (self.end is None or step < self.end)

    def _submodule(self, pl_module: L.LightningModule) -> nn.Module:
        try:
            return pl_module.get_submodule(self.path)
        except AttributeError:
            names = [n for n, _ in pl_module.named_modules() if n][:20]
            raise AttributeError(
                f"{self._name} needs a LightningModule with a submodule `{self.path}` (the pathway to act on); "
                f"{type(pl_module).__name__} has none. Its submodules: {names}. Set `pathway` (and `root`) to "
                "one of them."
            ) from None

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _set(self, trainer: L.Trainer, step: int) -> None:
        active = self.in_window(step)
        if active != self.active:
            log_to_loggers(trainer, {f"{self.metric_prefix}/active": float(active)}, step)
        self.active = active

    @property
    def metric_prefix(self) -> str:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = False
        self._set(trainer, trainer.global_step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._set(trainer, trainer.global_step)
        if self.active:
            self.active_steps += 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove()
        self.active = False

    def state_dict(self) -> dict[str, Any]:
        return {"pathway": self.pathway, "start": self.start, "end": self.end, "active_steps": self.active_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.active_steps = int(state_dict.get("active_steps", 0))


class GatingDeficit(_PathwayHook):
    """Gate a pathway over steps ``[start, end)``: its output is detached (it enters the output, gets no gradient).

    The paper's gating deficit (App. A.1): the deprived pathway keeps contributing its current
    output, so the other pathways only learn what is left unexplained, but its parameters do not
    move. Implemented as a forward hook on the submodule that returns ``output.detach()`` (tensors,
    or tuples/lists/dicts of tensors) while the window is open; the window is set from
    ``trainer.global_step`` before every step, so a run resumed inside the window gates correctly.

    Module contract (checked in ``setup``): a submodule at ``f"{root}.{pathway}"`` (``pathway`` alone
    if ``root == ""``), resolved with ``pl_module.get_submodule``, whose forward the loss calls.

    Args:
        pathway: name of the pathway (submodule) to gate.
        start: first gated step (0-based global step).
        end: first step after the window; None = to the end of training.
        root: attribute path of the pathways' container (``"pathways"`` for
            :class:`~cpl.families.multipath.module.MultiPathwayModule`); ``""`` when ``pathway`` is a full path.

    Raises:
        ValueError: ``start`` < 0, ``end`` <= ``start``, or an empty ``pathway``.
        AttributeError: (in ``setup``) the module has no such submodule.

    Logged metrics:
        ``gate/{pathway}/active``: 1.0 at the step the window opens, 0.0 at the step it closes.

    Example::

        >>> cb = GatingDeficit(pathway="b", start=0, end=150)
        >>> cb.state_key, cb.schedule_events()[0].kind
        ("GatingDeficit{'pathway': 'b', 'start': 0, 'end': 150}", 'gate')
    """

    _name = "GatingDeficit"

    def __init__(self, pathway: str = "b", start: int = 0, end: Optional[int] = 150, root: str = "pathways"):
        super().__init__(pathway, start, end, root)

    @property
    def metric_prefix(self) -> str:
        return f"gate/{self.pathway}"

    @property
    def state_key(self) -> str:
        return callback_state_key(self, pathway=self.pathway, start=self.start, end=self.end)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        module = self._submodule(pl_module)
        self._remove()
        self._handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        return _detach(output) if self.active else None

    def schedule_events(self) -> list[ScheduleEvent]:
        """The window as a ``"gate"`` :class:`ScheduleEvent` (read by :class:`ODEReference`)."""
        return [ScheduleEvent("gate", start=self.start, end=self.end, target=self.pathway)]


class ModeLesion(_PathwayHook):
    """Remove one singular mode of a pathway's map in the task basis, for the whole run or a window.

    With ``u = U[:, mode]``, ``v = V[:, mode]`` of the module's task basis, the pathway's map becomes
    ``W' = (I - u u^T) W (I - v v^T)``: the projection ``U^T W V`` with row and column ``mode`` zeroed,
    mapped back (exactly so for complete bases; with the compact basis of a task, the components of
    ``W`` outside it are kept). Implemented on the pathway's *input and output*: a forward pre-hook
    projects the input columns with ``I - v v^T`` and a forward hook projects the output with
    ``I - u u^T``. The parameters are untouched, the lesioned mode receives no gradient, and the
    lesion ends cleanly when the window closes.

    Module contract (checked in ``setup``): a submodule at ``f"{root}.{pathway}"`` taking inputs
    ``(..., in, B)`` (columns) and returning ``(..., out, B)``; a ``basis`` attribute or method
    giving ``(U, V)`` of shapes ``([E,] out, k)`` and ``([E,] in, k)`` with ``mode < k``.

    Args:
        pathway: name of the pathway to lesion.
        mode: 0-based index of the mode (paper Fig. 3: mode 2 = index 1).
        start: first lesioned step.
        end: first step after the lesion; None = permanent.
        root: attribute path of the pathways' container (``""``: ``pathway`` is a full path).
        basis: name of the module's task basis ``(U, V)``.

    Raises:
        ValueError: ``mode`` < 0, ``start`` < 0, ``end`` <= ``start``; (in ``setup``) ``mode`` >= k.
        AttributeError: (in ``setup``) no such submodule or basis.

    Logged metrics:
        ``lesion/{pathway}_mode{mode}/active``: 1.0 when the lesion starts, 0.0 when it ends.

    Example::

        >>> cb = ModeLesion(pathway="a", mode=1)
        >>> ev = cb.schedule_events()[0]
        >>> ev.kind, ev.target, ev.info["mode"], ev.end
        ('lesion', 'a', 1, None)
    """

    _name = "ModeLesion"

    def __init__(
        self,
        pathway: str = "a",
        mode: int = 1,
        start: int = 0,
        end: Optional[int] = None,
        root: str = "pathways",
        basis: str = "task_basis",
    ):
        if not isinstance(mode, Integral) or mode < 0:
            raise ValueError(f"Expected `mode` >= 0, got {mode}")
        super().__init__(pathway, start, end, root)
        self.mode, self.basis = int(mode), basis
        self._u: Optional[torch.Tensor] = None
        self._v: Optional[torch.Tensor] = None

    @property
    def metric_prefix(self) -> str:
        return f"lesion/{self.pathway}_mode{self.mode}"

    @property
    def state_key(self) -> str:
        return callback_state_key(self, pathway=self.pathway, mode=self.mode, start=self.start, end=self.end)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        module = self._submodule(pl_module)
        require_attr(pl_module, self.basis, "ModeLesion", "the task basis (U, V)")
        with torch.no_grad():
            u, v = resolve(pl_module, self.basis)
            u, v = as_members(u.detach()), as_members(v.detach())
        k = min(u.shape[-1], v.shape[-1])
        if self.mode >= k:
            raise ValueError(
                f"ModeLesion: expected `mode` < {k} (the number of modes of the basis `{self.basis}`), got {self.mode}"
            )
        self._u, self._v = u[..., self.mode], v[..., self.mode]  # (E, out), (E, in)
        self._remove()
        self._handles.append(module.register_forward_pre_hook(self._pre_hook))
        self._handles.append(module.register_forward_hook(self._hook))

    @staticmethod
    def _project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``(I - w w^T) x`` for columns ``x`` of shape ``(E, n, B)`` and unit ``w`` of shape ``(E, n)``."""
        w = w.to(x)
        return x - w.unsqueeze(-1) * torch.einsum("en,enb->eb", w, x).unsqueeze(-2)

    def _pre_hook(self, module: nn.Module, args: tuple) -> Any:
        if not self.active:
            return None
        return (self._project(args[0], self._v), *args[1:])

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> Any:
        return self._project(output, self._u) if self.active else None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # metrics read after a step (at the new global step) see the lesion in force at that step
        self._set(trainer, trainer.global_step)

    def schedule_events(self) -> list[ScheduleEvent]:
        """The lesion as a ``"lesion"`` :class:`ScheduleEvent` with ``info={"mode": mode}``."""
        return [ScheduleEvent("lesion", start=self.start, end=self.end, target=self.pathway, info={"mode": self.mode})]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mode": self.mode}
