"""Interventions on named submodules through forward hooks: gating deficits and mode lesions.

Both callbacks act on ``pl_module.get_submodule(path)`` where ``path`` is ``pathway`` (a submodule
path such as ``"net.0"``) or ``f"{root}.{pathway}"`` when ``root`` is set (``root="pathways"`` for
cpl's two-pathway module), so they work on any LightningModule whose loss is computed by calling
that submodule. Windows are in optimizer steps (``trainer.global_step``), also under gradient
accumulation. They change nothing in the parameters and keep no state that a resume needs beyond
the global step; the hooks are removed at ``teardown``.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from ..core.events import ScheduleEvent
from ..core.lightning_compat import callback_state_key, publish_metrics
from ..core.linalg import as_members
from ..core.readout import log_to_loggers
from ._contract import resolve_path, target_name

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
        self.active_steps = 0  #: optimizer steps taken with the intervention in force
        self._handles: list[Any] = []
        self._step_before = 0

    @property
    def path(self) -> str:
        """The submodule's path inside the LightningModule."""
        return f"{self.root}.{self.pathway}" if self.root else self.pathway

    def in_window(self, step: int) -> bool:
        return self.start <= step and (self.end is None or step < self.end)

    def steps_in_window(self, first: int, stop: int) -> int:
        """How many of the optimizer steps ``first .. stop - 1`` lie in the window."""
        hi = stop if self.end is None else min(stop, self.end)
        return max(0, hi - max(first, self.start))

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
            metrics = {f"{self.metric_prefix}/active": float(active)}
            log_to_loggers(trainer, metrics, step)
            publish_metrics(trainer, metrics)
        self.active = active

    @property
    def metric_prefix(self) -> str:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = False
        self._set(trainer, trainer.global_step)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_before = trainer.global_step
        self._set(trainer, trainer.global_step)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # optimizer steps taken by this batch (0 while gradients accumulate, several in cpl's chunked steps)
        self.active_steps += self.steps_in_window(self._step_before, trainer.global_step)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove()
        self.active = False

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"pathway": self.pathway, "start": self.start, "end": self.end, "active_steps": self.active_steps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.active_steps = int(state_dict.get("active_steps", 0))


class GatingDeficit(_PathwayHook):
    """Gate a pathway over steps ``[start, end)``: its output is detached (it enters the output, gets no gradient).

    The paper's gating deficit (App. A.1): the deprived pathway keeps contributing its current
    output, so the other pathways only learn what is left unexplained, but its parameters (and
    those of the layers feeding it) do not move. Implemented as a forward hook on the submodule that
    returns ``output.detach()`` (tensors, or tuples/lists/dicts of tensors) while the window is open;
    the window is set from ``trainer.global_step`` before every batch, so a run resumed inside the
    window gates correctly.

    Module contract (checked in ``setup``): a submodule at ``pathway`` (``f"{root}.{pathway}"`` when
    ``root`` is set), resolved with ``pl_module.get_submodule``, whose forward the loss calls.

    Args:
        pathway: path of the submodule to gate (``"net.0"``), or its name under ``root``.
        start: first gated optimizer step (0-based global step).
        end: first step after the window; None = to the end of training.
        root: path of the pathways' container, ``""`` = none (``"pathways"`` for
            :class:`~cpl.families.multipath.module.MultiPathwayModule`).

    Raises:
        ValueError: ``start`` < 0, ``end`` <= ``start``, or an empty ``pathway``.
        AttributeError: (in ``setup``) the module has no such submodule (the message lists them).

    Logged metrics:
        ``gate/{pathway}/active``: 1.0 at the step the window opens, 0.0 at the step it closes.

    Example::

        >>> cb = GatingDeficit(pathway="b", start=0, end=150, root="pathways")
        >>> cb.path, cb.schedule_events()[0].kind
        ('pathways.b', 'gate')
    """

    _name = "GatingDeficit"

    def __init__(self, pathway: str = "b", start: int = 0, end: Optional[int] = 150, root: str = ""):
        super().__init__(pathway, start, end, root)

    @property
    def metric_prefix(self) -> str:
        return f"gate/{self.pathway}"

    @property
    def state_key(self) -> str:
        return callback_state_key(self, pathway=self.path, start=self.start, end=self.end)

    @override
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
    """Remove one singular mode of a pathway's map in a basis, for the whole run or a window.

    With ``u = U[:, mode]``, ``v = V[:, mode]`` of the basis, the pathway's map becomes
    ``W' = (I - u u^T) W (I - v v^T)``: the projection ``U^T W V`` with row and column ``mode`` zeroed,
    mapped back (exactly so for complete bases; with the compact basis of a task, the components of
    ``W`` outside it are kept). Implemented on the pathway's *input and output*: a forward pre-hook
    projects the input with ``I - v v^T`` and a forward hook projects the output with ``I - u u^T``.
    The parameters are untouched, the lesioned mode receives no gradient, and the lesion ends
    cleanly when the window closes.

    Module contract (checked in ``setup``): a submodule at ``pathway`` (``f"{root}.{pathway}"`` with
    ``root``) whose map is ``W`` of shape ``(out, in)``: with ``layout="rows"`` it takes inputs
    ``(..., in)`` and returns ``(..., out)`` (``nn.Linear``, an ``nn.Sequential`` of linear layers);
    with ``layout="columns"`` inputs ``([E,] in, B)`` and outputs ``([E,] out, B)`` (cpl's pathways).
    ``basis`` gives ``(U, V)`` of shapes ``([E,] out, k)`` and ``([E,] in, k)`` with ``mode < k``: a
    callable ``(pl_module) -> (U, V)`` or a dotted path (``"task_basis"``, ``"datamodule.teacher_basis"``).
    An input whose feature size is not ``in`` is refused with a ValueError at the first forward.

    Args:
        pathway: path of the submodule to lesion, or its name under ``root``.
        mode: 0-based index of the mode (paper Fig. 3: mode 2 = index 1).
        start: first lesioned optimizer step.
        end: first step after the lesion; None = permanent.
        root: path of the pathways' container, ``""`` = none.
        basis: the basis ``(U, V)`` (see above).
        layout: ``"rows"`` (features last, PyTorch's convention) or ``"columns"`` (features in dim -2).

    Raises:
        ValueError: ``mode`` < 0, ``start`` < 0, ``end`` <= ``start``, an unknown ``layout``; (in ``setup``)
            ``mode`` >= k, a basis whose sizes do not match an ``nn.Linear``'s; (in forward) a wrong input size.
        AttributeError: (in ``setup``) no such submodule or basis.

    Logged metrics:
        ``lesion/{pathway}_mode{mode}/active``: 1.0 when the lesion starts, 0.0 when it ends.

    Example::

        >>> cb = ModeLesion(pathway="a", mode=1, root="pathways", layout="columns")
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
        root: str = "",
        basis: Union[str, Callable[[L.LightningModule], Any]] = "task_basis",
        layout: str = "rows",
    ):
        if not isinstance(mode, Integral) or mode < 0:
            raise ValueError(f"Expected `mode` >= 0, got {mode}")
        if layout not in ("rows", "columns"):
            raise ValueError(f"Expected `layout` in ('rows', 'columns'), got {layout!r}")
        super().__init__(pathway, start, end, root)
        self.mode, self.basis, self.layout = int(mode), basis, layout
        self._u: Optional[torch.Tensor] = None
        self._v: Optional[torch.Tensor] = None

    @property
    def metric_prefix(self) -> str:
        return f"lesion/{self.pathway}_mode{self.mode}"

    @property
    def state_key(self) -> str:
        return callback_state_key(self, pathway=self.path, mode=self.mode, start=self.start, end=self.end)

    def _read_basis(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        if callable(self.basis):
            value = self.basis(pl_module)
        else:
            value = resolve_path(pl_module, self.basis, "ModeLesion", "the basis (U, V)")
            value = value() if callable(value) and not isinstance(value, torch.Tensor) else value
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(
                f"ModeLesion: the basis `{target_name(self.basis)}` must give a pair (U, V), got {type(value).__name__}"
            )
        with torch.no_grad():
            return as_members(value[0].detach()), as_members(value[1].detach())

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        module = self._submodule(pl_module)
        u, v = self._read_basis(pl_module)
        k = min(u.shape[-1], v.shape[-1])
        if self.mode >= k:
            raise ValueError(
                f"ModeLesion: expected `mode` < {k} (the number of modes of the basis "
                f"`{target_name(self.basis)}`), got {self.mode}"
            )
        sizes = (getattr(module, "out_features", None), getattr(module, "in_features", None))
        if self.layout == "rows" and None not in sizes and sizes != (u.shape[-2], v.shape[-2]):
            raise ValueError(
                f"ModeLesion: `{self.path}` maps {sizes[1]} inputs to {sizes[0]} outputs, but the basis gives U with "
                f"{u.shape[-2]} rows and V with {v.shape[-2]} (expected U: (out, k), V: (in, k))"
            )
        if self.layout == "rows" and u.shape[0] > 1:
            raise ValueError(f"ModeLesion: layout 'rows' takes a basis of one member, got {u.shape[0]} members")
        self._u, self._v = u[..., self.mode], v[..., self.mode]  # (E, out), (E, in)
        self._remove()
        self._handles.append(module.register_forward_pre_hook(self._pre_hook))
        self._handles.append(module.register_forward_hook(self._hook))

    def _project(self, x: torch.Tensor, w: torch.Tensor, where: str) -> torch.Tensor:
        """``(I - w w^T)`` applied to the features of ``x`` (unit ``w`` of shape ``(E, n)``)."""
        w = w.to(x)
        dim = -1 if self.layout == "rows" else -2
        if x.dim() < 2 - (self.layout == "rows") or x.shape[dim] != w.shape[-1]:
            raise ValueError(
                f"ModeLesion: `{self.path}` got an {where} of shape {tuple(x.shape)}; expected {w.shape[-1]} features "
                f"in dim {dim} (layout {self.layout!r}, the basis has {w.shape[-1]} rows)"
            )
        if self.layout == "rows":
            w = w[0]
            return x - (x @ w).unsqueeze(-1) * w
        return x - w.unsqueeze(-1) * torch.einsum("en,enb->eb", w, x).unsqueeze(-2)

    def _pre_hook(self, module: nn.Module, args: tuple) -> Any:
        if not self.active:
            return None
        return (self._project(args[0], self._v, "input"), *args[1:])

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> Any:
        return self._project(output, self._u, "output") if self.active else None

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # metrics read after a step (at the new global step) see the lesion in force at that step
        self._set(trainer, trainer.global_step)

    def schedule_events(self) -> list[ScheduleEvent]:
        """The lesion as a ``"lesion"`` :class:`ScheduleEvent` with ``info={"mode": mode}``."""
        return [ScheduleEvent("lesion", start=self.start, end=self.end, target=self.pathway, info={"mode": self.mode})]

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mode": self.mode}
