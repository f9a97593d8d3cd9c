"""SingularValueLogger: top-k singular values (and optionally projections on a reference basis)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..core.lightning_compat import callback_state_key, publish_metrics
from ..core.linalg import as_members
from ..core.members import member_key
from ..core.readout import final_step, log_to_loggers
from ..core.spectrum import basis_projections, effective_rank, numerical_rank, singular_values
from ._contract import MatrixTarget, resolve_path, target_name

__all__ = ["SingularValueLogger"]


class SingularValueLogger(Callback):
    """Log the top-k singular values of a matrix of the module every n optimizer steps.

    The matrix (``matrix``, checked in ``setup``) is any of: a callable ``(pl_module) -> Tensor``; a
    dotted path to a parameter or buffer (``"net.0.weight"``), to a layer with a 2-D ``weight``
    (``"net.0"``) or to an attribute/method (``"end_to_end"``, called with ``matrix_kwargs``); a list
    of layer paths whose weights multiply into the end-to-end map, first layer first
    (``["net.0", "net.1"]`` gives ``W_1 W_0``). It gives ``(n, m)`` or ``(E, n, m)`` (E members).
    ``reference`` (optional) is a callable or dotted path giving ``(U, V)`` of shapes ``(..., n, k')``
    and ``(..., m, k')`` (``"datamodule.basis"`` reads the trainer's DataModule). A module with
    ``members_to_log(step, every_n_steps) -> list[int]`` chooses the members read at a step.

    Readouts happen at step 0, every ``every_n_steps`` optimizer steps (``trainer.global_step``, so
    gradient accumulation counts optimizer steps), at the last step under ``max_steps`` or
    ``max_epochs`` (:func:`cpl.core.readout.final_step`) and in ``on_train_end`` if the run stopped
    elsewhere. Readouts sent to the loggers also reach ``trainer.callback_metrics``, so
    ``ModelCheckpoint(monitor="sv/effective_rank")`` and ``EarlyStopping`` can use them.

    Args:
        every_n_steps: readout interval; every readout is kept in :meth:`history` (figures).
        top_k: how many singular values to log.
        matrix: the matrix (see above); default ``end_to_end``.
        reference: the reference basis ``(U, V)``, or None.
        prefix: metric prefix.
        rank_rtol: relative threshold of the numerical rank.
        matrix_kwargs: keyword arguments of a ``matrix`` method, e.g. ``{"name": "a"}`` with
            ``matrix="pathway_map"`` (give each such logger its own ``prefix``).
        log_every_n_steps: interval at which readouts go to the loggers (a multiple of
            ``every_n_steps``; None = every readout).
        prog_bar: also show ``{prefix}/effective_rank`` in the progress bar.

    Raises:
        ValueError: ``every_n_steps`` or ``top_k`` < 1, a ``log_every_n_steps`` that is not a multiple,
            a ``matrix`` of another type; (in ``setup``) layers that do not chain, a module without a 2-D weight.
        AttributeError: (in ``setup``) the module lacks the named matrix or reference.

    Logged metrics (per member, ``member{e}/`` in front when E > 1):
        ``{prefix}/1`` ... ``{prefix}/{top_k}``: singular values, largest first;
        ``{prefix}/effective_rank``: exp of the entropy of the normalised spectrum;
        ``{prefix}/numerical_rank``: count of singular values > ``rank_rtol`` * largest;
        ``{prefix}_ref/1`` ...: ``diag(U^T W V)`` in the reference basis (with ``reference``).

    Example::

        >>> cb = SingularValueLogger(every_n_steps=10, top_k=5, matrix=["net.0", "net.2"], prefix="e2e")
        >>> cb.state_key
        "SingularValueLogger{'prefix': 'e2e', 'matrix': ['net.0', 'net.2'], 'matrix_kwargs': {}, 'reference': None}"
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        top_k: int = 10,
        matrix: Union[str, Sequence[str], Callable[[L.LightningModule], torch.Tensor]] = "end_to_end",
        reference: Union[str, Callable[[L.LightningModule], Any], None] = None,
        prefix: str = "sv",
        rank_rtol: float = 1e-2,
        matrix_kwargs: Optional[dict[str, Any]] = None,
        log_every_n_steps: Optional[int] = None,
        prog_bar: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError(f"Expected `every_n_steps` >= 1, got {every_n_steps}")
        if top_k < 1:
            raise ValueError(f"Expected `top_k` >= 1, got {top_k}")
        if log_every_n_steps is not None and (log_every_n_steps < 1 or log_every_n_steps % every_n_steps):
            raise ValueError(
                f"Expected `log_every_n_steps` to be a multiple of `every_n_steps`={every_n_steps}, got "
                f"{log_every_n_steps}"
            )
        self.every_n_steps, self.top_k = every_n_steps, top_k
        self.log_every_n_steps = log_every_n_steps or every_n_steps
        self.matrix, self.reference, self.prefix, self.rank_rtol = matrix, reference, prefix, rank_rtol
        self.matrix_kwargs = dict(matrix_kwargs or {})
        self.prog_bar = prog_bar
        self._target = MatrixTarget(matrix, self.matrix_kwargs)
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []  # each (E, k)
        self.projections: list[torch.Tensor] = []  # each (E, k)
        self._basis: tuple[torch.Tensor, torch.Tensor] | None = None
        self._special: set[int] = set()

    @property
    def state_key(self) -> str:
        return callback_state_key(
            self,
            prefix=self.prefix,
            matrix=target_name(self.matrix),
            matrix_kwargs=self.matrix_kwargs,
            reference=None if self.reference is None else target_name(self.reference),
        )

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._target.check(pl_module)
        if isinstance(self.reference, str):
            resolve_path(pl_module, self.reference, "SingularValueLogger", "a reference basis (U, V)")
        self._basis = None

    def history(self) -> dict[str, Any]:
        """Everything logged so far: ``steps`` (T,), ``values`` (T, E, k), ``projections`` or None."""
        return {
            "steps": list(self.steps),
            "values": torch.stack(self.values) if self.values else torch.empty(0),
            "projections": torch.stack(self.projections) if self.projections else None,
        }

    def _matrices(self, pl_module: L.LightningModule, members: list[int] | None) -> tuple[torch.Tensor, int]:
        """The selected members' matrices (M, n, m) and the module's member count E."""
        w, selected = self._target(pl_module, members)
        if selected:
            return w, int(getattr(pl_module, "n_members"))
        return (w if members is None else w[members]), w.shape[0]

    @torch.no_grad()
    def compute(
        self, pl_module: L.LightningModule, members: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Singular values (M, min(n,m)) and projections (M, k) or None of the selected members' matrices now."""
        w, _ = self._matrices(pl_module, members)
        return self._spectrum(pl_module, w, members)

    def _reference_basis(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        ref = self.reference
        if callable(ref):
            value = ref(pl_module)
        else:
            value = resolve_path(pl_module, ref, "SingularValueLogger", "a reference basis (U, V)")
            value = value() if callable(value) else value
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(
                f"SingularValueLogger: the reference `{target_name(ref)}` must give a pair (U, V), got "
                f"{type(value).__name__}"
            )
        return value[0], value[1]

    def _spectrum(
        self, pl_module: L.LightningModule, w: torch.Tensor, members: list[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = singular_values(w)
        proj = None
        if self.reference is not None:
            if self._basis is None:
                u, v = self._reference_basis(pl_module)
                self._basis = (as_members(u.detach()).to(w), as_members(v.detach()).to(w))
            u, v = self._basis
            if members is not None and u.shape[0] > 1:
                u, v = u[members], v[members]
            k = min(self.top_k, u.shape[-1], v.shape[-1])
            proj = basis_projections(w, u[..., :k], v[..., :k])
        return s, proj

    def _members(
        self, trainer: L.Trainer, pl_module: L.LightningModule, every_n_steps: int, force: bool = False
    ) -> list[int] | None:
        """Members due now at this interval; None = all (modules without a member schedule)."""
        step = trainer.global_step
        fn = getattr(pl_module, "members_to_log", None)
        if callable(fn) and not force:
            return list(fn(step, every_n_steps))
        last = force or step == final_step(trainer)
        return None if step % every_n_steps == 0 or last else []

    def _metrics(self, idx: list[int], send: set[int], n: int, s: torch.Tensor, proj) -> dict[str, float]:
        k = min(self.top_k, s.shape[-1])
        top = s[:, :k].cpu()
        er, nr = effective_rank(s).cpu(), numerical_rank(s, self.rank_rtol).cpu()
        metrics: dict[str, float] = {}
        for j, e in enumerate(idx):
            if e not in send:
                continue
            for i in range(k):
                metrics[member_key(f"{self.prefix}/{i + 1}", e, n)] = float(top[j, i])
            metrics[member_key(f"{self.prefix}/effective_rank", e, n)] = float(er[j])
            metrics[member_key(f"{self.prefix}/numerical_rank", e, n)] = float(nr[j])
            if proj is not None:
                for i in range(proj.shape[-1]):
                    metrics[member_key(f"{self.prefix}_ref/{i + 1}", e, n)] = float(proj[j, i])
        return metrics

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, force: bool = False) -> None:
        step = trainer.global_step
        if self.steps and self.steps[-1] == step:
            return
        members = self._members(trainer, pl_module, self.every_n_steps, force)
        if members is not None and not members:
            return
        with torch.no_grad():
            w, n = self._matrices(pl_module, members)
            s, proj = self._spectrum(pl_module, w, members)
        idx = list(range(n)) if members is None else members
        send = set(idx)
        if self.log_every_n_steps != self.every_n_steps and not force:  # readouts kept; loggers get fewer
            due = self._members(trainer, pl_module, self.log_every_n_steps)
            send = set(idx if due is None else due)
        metrics = self._metrics(idx, send, n, s, proj)
        k = min(self.top_k, s.shape[-1])
        top = s[:, :k].cpu()
        full = torch.full((n, k), float("nan"), dtype=top.dtype)
        full[idx] = top
        self.steps.append(step)
        self.values.append(full)
        if proj is not None:
            fp = torch.full((n, proj.shape[-1]), float("nan"), dtype=top.dtype)
            fp[idx] = proj.cpu().to(top.dtype)
            self.projections.append(fp)
        log_to_loggers(trainer, metrics, step)
        prog = [f"{self.prefix}/effective_rank"] if self.prog_bar else []
        publish_metrics(trainer, metrics, prog)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # steps off the interval that may still need a readout: the last step and members' ends
        self._special = {final_step(trainer), *(getattr(pl_module, "member_ends", None) or [])}
        self._log(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step in self._special:
            self._log(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last state of a run that stopped off the interval (early stopping, max_time, a short last epoch)
        if not self.steps or self.steps[-1] != trainer.global_step:
            self._log(trainer, pl_module, force=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        h = self.history()
        return {"steps": h["steps"], "values": h["values"], "projections": h["projections"]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = list(state_dict.get("steps", []))
        values = state_dict.get("values")
        self.values = list(values) if values is not None and len(self.steps) else []
        proj = state_dict.get("projections")
        self.projections = list(proj) if proj is not None else []
