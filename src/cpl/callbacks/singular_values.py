"""SingularValueLogger: top-k singular values (and optionally projections on a reference basis)."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ..core.lightning_compat import callback_state_key
from ..core.linalg import as_members
from ..core.members import member_key
from ..core.readout import final_step, log_to_loggers
from ..core.spectrum import basis_projections, effective_rank, numerical_rank, singular_values
from ._contract import require_attr, resolve

__all__ = ["SingularValueLogger"]


class SingularValueLogger(Callback):
    """Log the top-k singular values of a matrix that the module exposes, every n steps.

    Module contract (checked in ``setup``): an attribute or method named ``matrix`` giving a tensor
    ``(n, m)`` or ``(E, n, m)`` (E members); with ``reference``, an attribute or method of that name
    giving ``(U, V)`` with shapes ``(..., n, k')`` and ``(..., m, k')``. Optionally
    ``members_to_log(step, every_n_steps) -> list[int]``: which members to log at a step (modules
    whose members have their own windows of steps); without it, all members on the interval.

    Args:
        every_n_steps: readout interval in global steps (step 0 and the last step are read too); every
            readout is kept in :meth:`history` (figures).
        log_every_n_steps: interval at which readouts go to the loggers (a multiple of
            ``every_n_steps``; None = every readout). Tracking stores are slow per row: a sweep
            keeps the paper's readout every 10 steps for its figures and logs every 100.
        top_k: how many singular values to log.
        matrix: name of the module's matrix (default ``end_to_end``).
        matrix_kwargs: keyword arguments for the ``matrix`` method, e.g. ``{"name": "a"}`` with
            ``matrix="pathway_map"`` to analyse one pathway of a multi-pathway module (give each
            such logger its own ``prefix``).
        reference: name of the module's reference basis, or None.
        prefix: metric prefix.
        rank_rtol: relative threshold of the numerical rank.

    Raises:
        ValueError: ``every_n_steps`` or ``top_k`` < 1.
        AttributeError: the module lacks the named matrix or reference.

    Logged metrics (per member, ``member{e}/`` in front when E > 1):
        ``{prefix}/1`` ... ``{prefix}/{top_k}``: singular values, largest first;
        ``{prefix}/effective_rank``: exp of the entropy of the normalised spectrum;
        ``{prefix}/numerical_rank``: count of singular values > ``rank_rtol`` * largest;
        ``{prefix}_ref/1`` ...: ``diag(U^T W V)`` in the reference basis (with ``reference``).

    Example::

        >>> cb = SingularValueLogger(every_n_steps=10, top_k=5, reference="reference_basis")
        >>> cb.state_key
        "SingularValueLogger{'prefix': 'sv', 'matrix': 'end_to_end'}"
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        top_k: int = 10,
        matrix: str = "end_to_end",
        reference: str | None = None,
        prefix: str = "sv",
        rank_rtol: float = 1e-2,
        matrix_kwargs: dict[str, Any] | None = None,
        log_every_n_steps: int | None = None,
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
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []  # each (E, k)
        self.projections: list[torch.Tensor] = []  # each (E, k)
        self._basis: tuple[torch.Tensor, torch.Tensor] | None = None
        self._special: set[int] = set()
        self._signature_of, self._signature_has_members = None, False

    @property
    def state_key(self) -> str:
        return callback_state_key(self, prefix=self.prefix, matrix=self.matrix)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_attr(pl_module, self.matrix, "SingularValueLogger", "a matrix to analyse")
        if self.reference is not None:
            require_attr(pl_module, self.reference, "SingularValueLogger", "a reference basis (U, V)")
        self._basis = None

    def history(self) -> dict[str, Any]:
        """Everything logged so far: ``steps`` (T,), ``values`` (T, E, k), ``projections`` or None."""
        return {
            "steps": list(self.steps),
            "values": torch.stack(self.values) if self.values else torch.empty(0),
            "projections": torch.stack(self.projections) if self.projections else None,
        }

    def _matrices(self, pl_module: L.LightningModule, members: list[int] | None) -> tuple[torch.Tensor, int]:
        """The selected members' matrices (M, n, m) and the module's member count E.

        A ``matrix`` method that takes a ``members`` argument computes only those members."""
        fn = getattr(pl_module, self.matrix)
        if members is not None and callable(fn) and self._takes_members(fn):
            return as_members(fn(members=members, **self.matrix_kwargs).detach()), int(getattr(pl_module, "n_members"))
        full = as_members(resolve(pl_module, self.matrix, **self.matrix_kwargs).detach())
        return (full if members is None else full[members]), full.shape[0]

    def _takes_members(self, fn) -> bool:
        key = getattr(fn, "__func__", fn)
        if self._signature_of is not key:  # inspect.signature costs tens of microseconds: once per method
            self._signature_of, self._signature_has_members = key, "members" in inspect.signature(fn).parameters
        return self._signature_has_members

    @torch.no_grad()
    def compute(
        self, pl_module: L.LightningModule, members: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Singular values (M, min(n,m)) and projections (M, k) or None of the selected members' matrices now."""
        w, _ = self._matrices(pl_module, members)
        return self._spectrum(pl_module, w, members)

    def _spectrum(
        self, pl_module: L.LightningModule, w: torch.Tensor, members: list[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = singular_values(w)
        proj = None
        if self.reference is not None:
            if self._basis is None:
                u, v = resolve(pl_module, self.reference)
                self._basis = (as_members(u).to(w), as_members(v).to(w))
            u, v = self._basis
            if members is not None and u.shape[0] > 1:
                u, v = u[members], v[members]
            k = min(self.top_k, u.shape[-1], v.shape[-1])
            proj = basis_projections(w, u[..., :k], v[..., :k])
        return s, proj

    def _members(self, trainer: L.Trainer, pl_module: L.LightningModule, every_n_steps: int) -> list[int] | None:
        """Members due now at this interval; None = all (modules without a member schedule)."""
        step = trainer.global_step
        fn = getattr(pl_module, "members_to_log", None)
        if callable(fn):
            return list(fn(step, every_n_steps))
        last = step == final_step(trainer)
        return None if step % every_n_steps == 0 or last else []

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.steps and self.steps[-1] == step:
            return
        members = self._members(trainer, pl_module, self.every_n_steps)
        if members is not None and not members:
            return
        with torch.no_grad():
            w, n = self._matrices(pl_module, members)
            s, proj = self._spectrum(pl_module, w, members)
        idx = list(range(n)) if members is None else members
        k = min(self.top_k, s.shape[-1])
        top = s[:, :k].cpu()
        er, nr = effective_rank(s).cpu(), numerical_rank(s, self.rank_rtol).cpu()
        metrics: dict[str, float] = {}
        send = set(idx)
        if self.log_every_n_steps != self.every_n_steps:  # readouts are kept; loggers get every log_every_n_steps
            due = self._members(trainer, pl_module, self.log_every_n_steps)
            send = set(idx if due is None else due)
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
        full = torch.full((n, k), float("nan"), dtype=top.dtype)
        full[idx] = top
        self.steps.append(step)
        self.values.append(full)
        if proj is not None:
            fp = torch.full((n, proj.shape[-1]), float("nan"), dtype=top.dtype)
            fp[idx] = proj.cpu().to(top.dtype)
            self.projections.append(fp)
        log_to_loggers(trainer, metrics, step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # steps off the interval that may still need a readout: the last step and members' ends
        self._special = {final_step(trainer), *(getattr(pl_module, "member_ends", None) or [])}
        self._log(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step in self._special:
            self._log(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        h = self.history()
        return {"steps": h["steps"], "values": h["values"], "projections": h["projections"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = list(state_dict.get("steps", []))
        values = state_dict.get("values")
        self.values = list(values) if values is not None and len(self.steps) else []
        proj = state_dict.get("projections")
        self.projections = list(proj) if proj is not None else []
