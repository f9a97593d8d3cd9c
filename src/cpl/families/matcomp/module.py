"""Matrix completion with a deep linear factorisation (paper Sec. 4)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torchmetrics.functional import mean_squared_error

from ...core import gemm
from ...core.members import trunk_owner
from ...core.module import FullBatchModule
from .model import DeepMatrixFactorization
from .references import REFERENCES, make_reference

__all__ = ["MatrixCompletionModule"]


class MatrixCompletionModule(FullBatchModule):
    """Full-batch gradient descent on ``L = 1/(2 n_obs) sum_observed (W_ij - M_ij)^2`` per member.

    The tasks are named; each has a target and a 0/1 observation mask per member. The member's
    current task is a buffer (``task_index``), so it is saved in and restored from checkpoints.
    The loss of the module is the sum of the members' losses, so every member follows its own
    gradient exactly.

    Args:
        model: the factorisation, with E members.
        tasks: ``{name: (targets, masks)}``, each of shape ``(E, N, N)``.
        lr: learning rate.
        initial_task: the task every member trains on first.
        final_task: the task the test error is measured against.
        trace_every_n_steps: also record the test error (final task, all entries) of the weights
            before every n-th step, from the loss's own forward pass (nearly free; the paper's
            per-step curve). Read it with :meth:`test_error_trace`; ``cpl.run`` saves it as an artifact.
        ode_kind: the analytic reference :meth:`ode_reference` builds: ``"factorization"``,
            ``"saxe"`` or ``"braun"`` (see :mod:`cpl.families.matcomp.references`).
        ode_options: keyword arguments of that reference (``top_k``, ``every_n_steps``, ``rtol``).

    Contract offered to callbacks:
        ``task_names``, ``set_task(name, members=None)``, ``current_tasks``, ``end_to_end()``,
        ``reference_basis()`` (top singular vectors of the final task), ``n_members``,
        ``ode_reference(schedule)`` (the analytic reference of :class:`~cpl.callbacks.ODEReference`).

    Logged metrics (per member, see :func:`cpl.core.members.member_key`):
        ``train/loss`` (current task, observed entries, the training loss);
        ``test/final_error``, ``test/final_error_unobserved``: mean squared error against the
        final task over all entries (the paper's test error) and over its unobserved entries;
        ``test/current_error``, ``test/current_error_unobserved``: likewise against the current task.
    """

    def __init__(
        self,
        model: DeepMatrixFactorization,
        tasks: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        lr: float,
        initial_task: str = "pretrain",
        final_task: str = "final",
        log_every_n_steps: int = 100,
        max_steps: int = 1,
        ode_kind: str = "factorization",
        ode_options: Optional[Mapping[str, Any]] = None,
        trace_every_n_steps: Optional[int] = None,
    ):
        super().__init__(lr=lr, log_every_n_steps=log_every_n_steps, max_steps=max_steps)
        if trace_every_n_steps is not None and trace_every_n_steps < 1:
            raise ValueError(f"Expected `trace_every_n_steps` >= 1 or None, got {trace_every_n_steps}")
        self.trace_every_n_steps = trace_every_n_steps
        self._selected_for, self._selection = None, None  # see _selected
        self.trace: list[tuple[int, tuple[int, ...], torch.Tensor]] = []  # (step, members, ||W - final target||_F)
        self.model = model
        self.task_names = list(tasks)
        for name in (initial_task, final_task):
            if name not in tasks:
                raise ValueError(f"Expected a task named {name!r}, got tasks {self.task_names}")
        e, n = model.n_members, model.size
        dtype = model.factors[0].dtype
        for name, (target, mask) in tasks.items():
            if tuple(target.shape) != (e, n, n) or tuple(mask.shape) != (e, n, n):
                raise ValueError(
                    f"Task {name!r}: expected target and mask of shape {(e, n, n)}, got {tuple(target.shape)} "
                    f"and {tuple(mask.shape)}"
                )
        self.register_buffer("targets", torch.stack([t for t, _ in tasks.values()]).to(dtype))
        self.register_buffer("masks", torch.stack([m for _, m in tasks.values()]).to(dtype))
        n_obs = self.masks.sum(dim=(-1, -2))
        if (n_obs < 1).any():
            raise ValueError("Every task needs at least one observed entry per member")
        self.register_buffer("weights", self.masks / n_obs[..., None, None])
        self.register_buffer("task_index", torch.full((e,), self.task_names.index(initial_task), dtype=torch.long))
        self.final_index = self.task_names.index(final_task)
        self.progress_keys = ("train/loss", "test/final_error")
        if ode_kind not in REFERENCES:
            raise ValueError(f"Expected `ode_kind` in {tuple(REFERENCES)}, got {ode_kind!r}")
        self.ode_kind, self.ode_options = ode_kind, dict(ode_options or {})
        self._refresh()

    # ---- task contract
    @property
    def current_tasks(self) -> list[str]:
        return [self.task_names[i] for i in self.task_index.tolist()]

    def set_task(self, name: str, members: Sequence[int] | None = None) -> None:
        """Train ``members`` (default: all) on task ``name`` from the next step on."""
        if name not in self.task_names:
            raise ValueError(f"Unknown task {name!r}; this module has tasks {self.task_names}")
        idx = self.task_names.index(name)
        if members is None:
            self.task_index.fill_(idx)
        else:
            self.task_index[list(members)] = idx
        self._refresh()

    def _refresh(self) -> None:
        self._selected_for = None  # see _selected
        members = torch.arange(self.n_members, device=self.task_index.device)
        self._target = self.targets[self.task_index, members]
        self._weight = self.weights[self.task_index, members]

    def _apply(self, fn, *args, **kwargs):  # keep the cached views on the module's device/dtype
        out = super()._apply(fn, *args, **kwargs)
        self._refresh()
        return out

    def on_train_start(self) -> None:
        self._refresh()  # task_index may have been restored from a checkpoint
        super().on_train_start()

    # ---- maths
    def end_to_end(self, members: Sequence[int] | None = None) -> torch.Tensor:
        """The end-to-end matrices ``W`` of shape ``(E, N, N)``, or of the given members (detached)."""
        return self.model.product(self.member_index(members)).detach()

    def reference_basis(self, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top singular vectors ``(U, V)`` of the final task's targets, each ``(E, N, k)``."""
        u, _, vh = torch.linalg.svd(self.targets[self.final_index].double())
        k = k or u.shape[-1]
        return u[..., :k].to(self.targets.dtype), vh.mT[..., :k].to(self.targets.dtype)

    def ode_reference(self, schedule: Sequence = ()):
        """The analytic reference chosen by ``ode_kind`` (the schedule reaches it in ``prepare``)."""
        return make_reference(self.ode_kind, **self.ode_options)

    def _selected(self, sel) -> tuple:
        """``(factor views or None, targets, weights, final targets, trace from residual)`` of the
        selected members, cached until the active members or the tasks change (slicing costs
        microseconds a step). Views of the factors are cached only for a slice."""
        if self._selected_for is not sel:
            self._selected_for = sel
            with torch.no_grad():  # the same cached views whichever path (autograd or closed form) asks first
                self._selection = (
                    [f[sel] for f in self.model.factors] if isinstance(sel, slice) else None,
                    self._target[sel],
                    self._weight[sel],
                    self.targets[self.final_index][sel],
                    # while every active member trains on the final task, the residual is the test error
                    bool((self.task_index[sel] == self.final_index).all()),
                )
        return self._selection

    def _record_trace(self, w: torch.Tensor, r: torch.Tensor, sel) -> None:
        """Record the test error (final task, all entries) of the weights before this step, from the
        forward pass's ``w`` and residual ``r = w - current target`` (nearly free)."""
        if self.trace_every_n_steps and self.global_step % self.trace_every_n_steps == 0:
            _, _, _, final, from_residual = self._selected(sel)
            with torch.no_grad():
                d = r if from_residual else w - final
                norm = torch.linalg.vector_norm(d.detach(), dim=(-1, -2))  # error = norm^2 / N^2, squared when read
            self.trace.append((self.global_step, self._active_key or tuple(range(self.n_members)), norm))

    def loss(self) -> torch.Tensor:
        sel = self.active
        _, target, weight, _, _ = self._selected(sel)
        w = self.model.product(sel)
        r = w - target
        self._record_trace(w, r, sel)
        return 0.5 * (r.pow(2) * weight).sum()

    def _residual(self, sel) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Factors of the selected members (views when ``sel`` is a slice), their prefix products
        ``W_i ... W_1``, the loss gradient ``G = dL/dW`` and the loss."""
        views, target, weight, _, _ = self._selected(sel)
        factors = views if views is not None else [f[sel] for f in self.model.factors]
        prefixes = [factors[0]]
        for f in factors[1:]:
            prefixes.append(gemm.bmm(f, prefixes[-1]))
        w = prefixes[-1]
        r = w - target
        self._record_trace(w, r, sel)
        g = r * weight
        return factors, prefixes, g, 0.5 * torch.dot(g.reshape(-1), r.reshape(-1))

    @torch.no_grad()
    def backward_step(self) -> torch.Tensor:
        """The loss and its closed-form gradient, written into ``p.grad`` for the active members.

        For ``W = W_D ... W_1`` and ``G = dL/dW``: ``dL/dW_i = (W_D ... W_{i+1})^T G (W_{i-1} ... W_1)^T``,
        computed with the forward prefix products and one backward sweep: the same 3(D-1) matrix
        products as autograd, without its graph (about 40% faster for these small matrices).
        Tests compare it with autograd and with a plain autograd loop.
        """
        sel = self.active
        factors, prefixes, back, loss = self._residual(sel)
        for i in range(len(factors) - 1, -1, -1):
            grad = gemm.bmm(back, prefixes[i - 1].mT) if i > 0 else back
            p = self.model.factors[i]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad[sel] = grad
            if i > 0:
                back = gemm.bmm(factors[i].mT, back)
        return loss

    supports_fused_sgd = True

    @torch.no_grad()
    def sgd_step(self, lr: float) -> torch.Tensor:
        """One SGD step ``W_i -= lr dL/dW_i`` of the active members with the closed-form gradient,
        each update fused into the product that computes it (``baddbmm``, no gradient tensors).

        Each factor is updated right after the products that still need its old value; the
        result equals :meth:`backward_step` followed by SGD up to rounding (tested).
        """
        sel = self.active
        in_place = isinstance(sel, slice)  # the factors are views of the parameters
        factors, prefixes, back, loss = self._residual(sel)
        for i in range(len(factors) - 1, -1, -1):
            f = factors[i]
            if i > 0:
                nxt = gemm.bmm(f.mT, back)
                gemm.baddbmm_(f, back, prefixes[i - 1].mT, alpha=-lr)
                back = nxt
            else:
                f.add_(back, alpha=-lr)
            if not in_place:
                self.model.factors[i][sel] = f
        return loss

    def test_error_trace(self, member: int, schedule=None) -> tuple[list[int], list[float]]:
        """``(steps, test errors)`` of a member recorded every ``trace_every_n_steps`` steps (weights
        before the step), with its trunk's values before its own start when ``schedule`` is given."""
        steps, values = [], []
        n_entries = self.targets.shape[-1] * self.targets.shape[-2]
        for step, members, err in self.trace:
            owner = trunk_owner(schedule, member, step) if schedule is not None else member
            if owner in members and (self.member_ends is None or step < self.member_ends[member]):
                steps.append(step)
                values.append(float(err[members.index(owner)]) ** 2 / n_entries)
        return steps, values

    @torch.no_grad()
    def compute_metrics(self, members: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        sel = self.member_index(members)
        w = self.model.product(sel)
        members_t = torch.arange(self.n_members, device=w.device)[sel]
        task_index = self.task_index[sel]
        out = {"train/loss": 0.5 * ((w - self._target[sel]).pow(2) * self._weight[sel]).sum(dim=(-1, -2))}
        m = w.shape[0]
        flat_w = w.reshape(m, -1).T  # (N^2, M): torchmetrics' multi-output layout, one output per member
        for label, idx in (("final", torch.full_like(task_index, self.final_index)), ("current", task_index)):
            target, hidden = self.targets[idx, members_t], 1 - self.masks[idx, members_t]
            out[f"test/{label}_error"] = mean_squared_error(flat_w, target.reshape(m, -1).T, num_outputs=m).reshape(m)
            # mean over the unobserved entries of each member (0 when every entry is observed)
            n_hidden = hidden.sum(dim=(-1, -2))
            sq = ((w - target).pow(2) * hidden).sum(dim=(-1, -2))
            out[f"test/{label}_error_unobserved"] = torch.where(
                n_hidden > 0, sq / n_hidden.clamp_min(1), torch.zeros_like(sq)
            )
        return out
