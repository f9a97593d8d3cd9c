"""The multi-pathway network on the hierarchical task (paper Sec. 3), and its ODE reference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import lightning as L
import numpy as np
import torch

from ..hierarchy import HierarchicalTask
from ..pathways import MultiPathwayNet
from ..theory import multipath as theory
from .base import FullBatchModule

if TYPE_CHECKING:  # pragma: no cover
    from ..callbacks.ode_reference import ScheduleEvent

__all__ = ["MultiPathwayModule", "MultiPathwayReference"]


class MultiPathwayModule(FullBatchModule):
    """Full-batch gradient descent on ``L = 1/2 * sum_items ||y - y_hat||^2`` (per member, summed).

    Inputs are one-hot (``X = I``), so a pathway fed ``X`` returns its end-to-end map. Interventions
    are callbacks acting through forward hooks on the named pathways
    (:class:`~cpl.callbacks.GatingDeficit`, :class:`~cpl.callbacks.ModeLesion`); every map below is
    computed through the pathways' ``forward`` and so includes their effect.

    Args:
        model: the :class:`~cpl.pathways.MultiPathwayNet` with E members.
        task: the :class:`~cpl.hierarchy.HierarchicalTask` (target and its SVD basis).
        lr: learning rate (paper: 0.01).
        log_every_n_steps: interval of the metrics.
        max_steps: length of the run.
        ode_kind: ``"discrete"`` (exact discrete map) or ``"flow"`` (``solve_ivp`` gradient flow),
            the reference that :meth:`ode_reference` returns.

    Raises:
        ValueError: a model whose sizes do not match the task, or an unknown ``ode_kind``.

    Contract offered to callbacks:
        ``pathways`` (the :class:`torch.nn.ModuleDict` of pathways: hook targets ``pathways.<name>``),
        ``pathway_names``, ``pathway_map(name)``, ``end_to_end()``, ``task_basis()`` ``(U, V)``,
        ``mode_strengths()``, ``n_members``, ``ode_reference(schedule)``.

    Logged metrics (per member, see :func:`cpl.modules.base.member_key`):
        ``train/loss``: the training loss;
        ``train/mode_error_{i}``: ``s_i - sum_P K_{P,i}``, the output error of task mode i (1-based).

    Example::

        >>> from cpl.hierarchy import hierarchical_task
        >>> task = hierarchical_task(3)
        >>> net = MultiPathwayNet(8, 15, depth=2, width=10, basis=(task.u, task.v), dtype=torch.float64)
        >>> module = MultiPathwayModule(net, task, lr=0.01)
        >>> tuple(module.mode_strengths().shape)   # (pathways, members, modes)
        (2, 1, 8)
    """

    def __init__(self, model: MultiPathwayNet, task: HierarchicalTask, lr: float = 0.01, log_every_n_steps: int = 10, max_steps: int = 1000, ode_kind: str = "discrete"):
        super().__init__(lr=lr, log_every_n_steps=log_every_n_steps, max_steps=max_steps)
        if (model.in_dim, model.out_dim) != (task.n_items, task.n_features):
            raise ValueError(f"Expected a model with in_dim={task.n_items} and out_dim={task.n_features}, got {model.in_dim} and {model.out_dim}")
        if ode_kind not in ("discrete", "flow"):
            raise ValueError(f"Expected `ode_kind` in ('discrete', 'flow'), got {ode_kind!r}")
        self.model, self.ode_kind = model, ode_kind
        dtype = next(model.parameters()).dtype
        e = model.n_members
        self.register_buffer("inputs", torch.eye(task.n_items, dtype=dtype).expand(e, -1, -1).clone())
        self.register_buffer("targets", task.targets.to(dtype).expand(e, -1, -1).clone())
        self.register_buffer("basis_u", task.u.to(dtype).expand(e, -1, -1).clone())
        self.register_buffer("basis_v", task.v.to(dtype).expand(e, -1, -1).clone())
        self.register_buffer("singular_values", task.s.to(dtype).expand(e, -1).clone())
        self.progress_keys = ("train/loss",)

    # ---- contract
    @property
    def pathways(self) -> torch.nn.ModuleDict:
        return self.model.pathways

    @property
    def pathway_names(self) -> list[str]:
        return self.model.pathway_names

    @property
    def depth(self) -> int:
        return self.model.depth

    def pathway_map(self, name: str) -> torch.Tensor:
        """End-to-end map ``(E, out, in)`` of pathway ``name``, through its forward hooks (detached)."""
        if name not in self.model.pathways:
            raise ValueError(f"Unknown pathway {name!r}; this module has pathways {self.pathway_names}")
        with torch.no_grad():
            return self.model.pathways[name](self.inputs)

    def end_to_end(self) -> torch.Tensor:
        """The network's map ``(E, out, in)`` (sum of the pathways, detached)."""
        with torch.no_grad():
            return self.model(self.inputs)

    def task_basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's singular vectors ``(U, V)``: ``(E, out, k)`` and ``(E, in, k)``."""
        return self.basis_u, self.basis_v

    @torch.no_grad()
    def mode_strengths(self, raw: bool = False) -> torch.Tensor:
        """``K_{P, i} = (U^T W_P V)_{ii}`` for every pathway P, shape ``(P, E, k)``.

        ``raw=True`` reads the maps off the parameters (ignoring hooks such as lesions).
        """
        maps = [self.model.pathways[n].weight() if raw else self.model.pathways[n](self.inputs) for n in self.pathway_names]
        return torch.stack([torch.einsum("eik,eij,ejk->ek", self.basis_u, w, self.basis_v) for w in maps])

    # ---- maths
    def member_losses(self) -> torch.Tensor:
        return 0.5 * (self.model(self.inputs) - self.targets).pow(2).sum(dim=(-1, -2))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.model(self.inputs) - self.targets).pow(2).sum()

    @torch.no_grad()
    def compute_metrics(self, members: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        out = {"train/loss": self.member_losses()}
        err = self.singular_values - self.mode_strengths().sum(dim=0)
        for i in range(err.shape[-1]):
            out[f"train/mode_error_{i + 1}"] = err[:, i]
        return out if members is None else {k: v[list(members)] for k, v in out.items()}

    def ode_reference(self, schedule: Sequence["ScheduleEvent"]) -> "MultiPathwayReference":
        """The per-mode reference chosen by ``ode_kind`` (the schedule is read in ``prepare``)."""
        return MultiPathwayReference(kind=self.ode_kind)


class MultiPathwayReference:
    """Per-mode two-pathway reference (:mod:`cpl.theory.multipath`) for :class:`~cpl.callbacks.ODEReference`.

    At ``prepare`` it reads each pathway's raw per-mode strength ``K`` off the parameters and sets
    ``p = q = K**(1/D)`` (the balanced case), turns the schedule's ``"gate"`` and ``"lesion"`` events
    into piecewise dynamics and solves. Quantities: ``K_<pathway>`` of shape ``(E, k)``, the
    effective strengths (lesioned modes read 0), as :meth:`MultiPathwayModule.mode_strengths` gives.

    Args:
        kind: ``"discrete"``: the exact discrete map (Euler, step = lr; equals gradient descent under
            the aligned balanced SVD init); ``"flow"``: the gradient-flow curve from ``solve_ivp``.
        rtol, atol: tolerances of ``solve_ivp``.

    Raises:
        ValueError: an unknown ``kind``; in ``prepare``, an event naming an unknown pathway or a
            per-member event (not supported).

    Example::

        >>> MultiPathwayReference("flow").name
        'gradient flow (solve_ivp)'
    """

    NAMES = {"discrete": "exact discrete map (Euler, step = lr)", "flow": "gradient flow (solve_ivp)"}

    def __init__(self, kind: str = "discrete", rtol: float = 1e-10, atol: float = 1e-12):
        if kind not in self.NAMES:
            raise ValueError(f"Expected `kind` in {tuple(self.NAMES)}, got {kind!r}")
        self.kind, self.rtol, self.atol = kind, rtol, atol
        self.name = self.NAMES[kind]
        self._why: Optional[str] = None

    @staticmethod
    def interventions(schedule: Sequence["ScheduleEvent"], names: Sequence[str]) -> tuple[list[theory.Gate], list[theory.Lesion]]:
        """The schedule's gates and lesions, with pathway names turned into indices."""
        gates, lesions = [], []
        for ev in schedule:
            if ev.kind not in ("gate", "lesion"):
                continue
            if ev.target not in names:
                raise ValueError(f"Schedule event {ev.kind!r} targets pathway {ev.target!r}; the module has pathways {list(names)}")
            if ev.members is not None:
                raise ValueError(f"Per-member {ev.kind!r} events are not supported by the multi-pathway reference, got members={ev.members}")
            idx = list(names).index(ev.target)
            if ev.kind == "gate":
                gates.append(theory.Gate(idx, ev.start, ev.end))
            else:
                lesions.append(theory.Lesion(idx, int(ev.info["mode"]), ev.start, ev.end))
        return gates, lesions

    @torch.no_grad()
    def prepare(self, pl_module: L.LightningModule, schedule: Sequence["ScheduleEvent"], lr: float, start_step: int, max_steps: int) -> None:
        self.names = list(pl_module.pathway_names)
        self.depth = int(pl_module.depth)
        self.start_step = start_step
        self.gates, self.lesions = self.interventions(schedule, self.names)
        k = pl_module.mode_strengths(raw=True).double().cpu().numpy()  # (P, E, k)
        p0 = theory.p_q_from_strength(k, self.depth)[0]  # balanced factors: p = sign(K) |K|^(1/D)
        s = pl_module.singular_values.double().cpu().numpy()
        self.shape = k.shape
        self._why = self._check(pl_module)
        if self.kind == "discrete":
            self._p, self._q = theory.discrete_map(p0, p0.copy(), s, self.depth, lr, max(0, max_steps - start_step), self.gates, self.lesions, start_step)
        else:
            self._flow = theory.gradient_flow(p0, p0.copy(), s, self.depth, lr, start_step, max(start_step, max_steps), self.gates, self.lesions, self.rtol, self.atol)

    @staticmethod
    def _check(pl_module) -> Optional[str]:
        reasons = []
        init = getattr(pl_module.model, "init", None)
        if init != "svd":
            reasons.append(f"the init is {init!r}, not the aligned balanced SVD init")
        u, v = pl_module.task_basis()
        for name in pl_module.pathway_names:
            path = pl_module.pathways[name]
            w = path.weight().double()
            m = torch.einsum("eik,eij,ejl->ekl", u.double(), w, v.double())
            diag = torch.diagonal(m, dim1=-2, dim2=-1)
            off = (m - torch.diag_embed(diag)).norm() / diag.norm().clamp_min(1e-300)
            if off > 1e-4:
                reasons.append(f"pathway {name!r} is not diagonal in the task basis (off-diagonal/diagonal = {float(off):.2g})")
            fs = [f.double() for f in path.factors]
            for i in range(len(fs) - 1):
                a, b = fs[i + 1].mT @ fs[i + 1], fs[i] @ fs[i].mT
                gap = (a - b).norm() / b.norm().clamp_min(1e-300)
                if gap > 1e-4:
                    reasons.append(f"pathway {name!r} layers {i + 1},{i + 2} are not balanced (relative gap {float(gap):.2g})")
                    break
        if not reasons:
            return None
        return "; ".join(reasons) + ": the per-mode reference is only approximate"

    def _state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "discrete":
            i = min(max(step - self.start_step, 0), len(self._p) - 1)
            return self._p[i], self._q[i]
        return self._flow(step)

    def predict(self, step: int) -> dict[str, np.ndarray]:
        p, q = self._state(step)
        _, lesioned = theory.masks_at(step, self.shape, (), self.lesions)
        k = theory.strengths(p, q, self.depth, lesioned)
        return {f"K_{n}": k[i] for i, n in enumerate(self.names)}

    def observe(self, pl_module: L.LightningModule) -> dict[str, np.ndarray]:
        k = pl_module.mode_strengths().double().cpu().numpy()
        return {f"K_{n}": k[i] for i, n in enumerate(pl_module.pathway_names)}

    def conditions(self) -> Optional[str]:
        return self._why
