"""The per-mode two-pathway reference (docs/theory.md section 1) for :class:`cpl.callbacks.ODEReference`."""

from __future__ import annotations

from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch

from ...core.events import ScheduleEvent
from ...theory import multipath as theory

__all__ = ["MultiPathwayReference"]


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
        ValueError: an unknown ``kind``; in ``prepare``, a nonlinear network, an event naming an
            unknown pathway or a per-member event (not supported).

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
    def interventions(
        schedule: Sequence[ScheduleEvent], names: Sequence[str]
    ) -> tuple[list[theory.Gate], list[theory.Lesion]]:
        """The schedule's gates and lesions, with pathway names turned into indices."""
        gates, lesions = [], []
        for ev in schedule:
            if ev.kind not in ("gate", "lesion"):
                continue
            if ev.target not in names:
                raise ValueError(
                    f"Schedule event {ev.kind!r} targets pathway {ev.target!r}; the module has pathways {list(names)}"
                )
            if ev.members is not None:
                raise ValueError(
                    f"Per-member {ev.kind!r} events are not supported by the multi-pathway reference, got "
                    f"members={ev.members}"
                )
            idx = list(names).index(ev.target)
            if ev.kind == "gate":
                gates.append(theory.Gate(idx, ev.start, ev.end))
            else:
                lesions.append(theory.Lesion(idx, int(ev.info["mode"]), ev.start, ev.end))
        return gates, lesions

    @torch.no_grad()
    def prepare(
        self,
        pl_module: L.LightningModule,
        schedule: Sequence[ScheduleEvent],
        lr: float,
        start_step: int,
        max_steps: int,
    ) -> None:
        nonlinearity = getattr(pl_module.model, "nonlinearity", "identity")
        if nonlinearity != "identity":
            raise ValueError(
                f"The two-pathway ODE reference holds for linear pathways only, got nonlinearity={nonlinearity!r}; "
                "use nonlinearity='identity' or drop the ODE reference"
            )
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
            self._p, self._q = theory.discrete_map(
                p0, p0.copy(), s, self.depth, lr, max(0, max_steps - start_step), self.gates, self.lesions, start_step
            )
        else:
            self._flow = theory.gradient_flow(
                p0,
                p0.copy(),
                s,
                self.depth,
                lr,
                start_step,
                max(start_step, max_steps),
                self.gates,
                self.lesions,
                self.rtol,
                self.atol,
            )

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
                reasons.append(
                    f"pathway {name!r} is not diagonal in the task basis (off-diagonal/diagonal = {float(off):.2g})"
                )
            fs = [f.double() for f in path.factors]
            for i in range(len(fs) - 1):
                a, b = fs[i + 1].mT @ fs[i + 1], fs[i] @ fs[i].mT
                gap = (a - b).norm() / b.norm().clamp_min(1e-300)
                if gap > 1e-4:
                    reasons.append(
                        f"pathway {name!r} layers {i + 1},{i + 2} are not balanced (relative gap {float(gap):.2g})"
                    )
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
