"""The LightningModule of the multi-pathway network on the hierarchical task (paper Sec. 3)."""

from __future__ import annotations

from typing import Sequence

import torch

from ...core.events import ScheduleEvent
from ...core.module import FullBatchModule
from ...core.spectrum import basis_projections
from .data import HierarchicalTask
from .model import MultiPathwayNet
from .reference import MultiPathwayReference

__all__ = ["MultiPathwayModule"]


class MultiPathwayModule(FullBatchModule):
    """Full-batch gradient descent on ``L = 1/2 * sum_items ||y - y_hat||^2`` (per member, summed).

    Inputs are one-hot (``X = I``), so a pathway fed ``X`` returns its end-to-end map. Interventions
    are callbacks acting through forward hooks on the named pathways
    (:class:`~cpl.callbacks.GatingDeficit`, :class:`~cpl.callbacks.ModeLesion`); every map below is
    computed through the pathways' ``forward`` and so includes their effect.

    Args:
        model: the :class:`~cpl.families.multipath.model.MultiPathwayNet` with E members.
        task: the :class:`~cpl.families.multipath.data.HierarchicalTask` (target and its SVD basis).
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

    Logged metrics (per member, see :func:`cpl.core.members.member_key`):
        ``train/loss``: the training loss;
        ``train/mode_error_{i}``: ``s_i - sum_P K_{P,i}``, the output error of task mode i (1-based).

    Example::

        >>> from cpl.families.multipath.data import hierarchical_task
        >>> task = hierarchical_task(3)
        >>> net = MultiPathwayNet(8, 15, depth=2, width=10, basis=(task.u, task.v), dtype=torch.float64)
        >>> module = MultiPathwayModule(net, task, lr=0.01)
        >>> tuple(module.mode_strengths().shape)   # (pathways, members, modes)
        (2, 1, 8)
    """

    def __init__(
        self,
        model: MultiPathwayNet,
        task: HierarchicalTask,
        lr: float = 0.01,
        log_every_n_steps: int = 10,
        max_steps: int = 1000,
        ode_kind: str = "discrete",
    ):
        super().__init__(lr=lr, log_every_n_steps=log_every_n_steps, max_steps=max_steps)
        if (model.in_dim, model.out_dim) != (task.n_items, task.n_features):
            raise ValueError(
                f"Expected a model with in_dim={task.n_items} and out_dim={task.n_features}, got "
                f"{model.in_dim} and {model.out_dim}"
            )
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
        maps = [
            self.model.pathways[n].weight() if raw else self.model.pathways[n](self.inputs) for n in self.pathway_names
        ]
        return torch.stack([basis_projections(w, self.basis_u, self.basis_v) for w in maps])

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

    def ode_reference(self, schedule: Sequence[ScheduleEvent]) -> MultiPathwayReference:
        """The per-mode reference chosen by ``ode_kind`` (the schedule is read in ``prepare``)."""
        return MultiPathwayReference(kind=self.ode_kind)
