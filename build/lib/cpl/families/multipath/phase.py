"""Phase portraits of the scalar two-pathway system in the (K_a, K_b) plane (paper Figs. 1 and 7).

One task mode of singular value ``s``; each pathway has depth D, one entry ``p`` and ``D - 1``
entries ``q`` with ``q**2 - p**2 = c`` conserved (docs/theory.md section 1, :mod:`cpl.theory.multipath`).

Time units: as in the paper, time is counted in "epochs" of ``dt`` time units each (``dt = 0.01``
by default, i.e. one gradient step at lr 0.01), so epoch ``n`` is time ``t = n * dt``: the paper's
early deficit (epochs 0-15) is ``t`` in ``[0, 0.15)``, the late one (epochs 100-115) ``t`` in
``[1, 1.15)``. The trajectories are the gradient flow (``solve_ivp``, split at the deficit
boundaries) sampled every epoch: an explicit Euler step of ``dt = 0.01`` is unstable for deep
pathways near convergence at ``s = 10`` (rate ~ ``D s**(2-2/D)``), which is why the paper used a
smaller step. A gating deficit freezes pathway b's entries while ``K_b`` still enters the error.

Inits (both pathways start at the same point, so without a deficit the trajectory is the diagonal):

* ``large``: ``c = 1`` (``q**2 - p**2 = 1``, paper Fig. 1), ``p0 = 0.01`` (``K0`` ~ 0.01, ``q0`` ~ 1);
* ``small``: ``c = 0`` (balanced, paper Fig. 7), ``K0 = 0.01`` (``p0 = q0 = 0.01**(1/D)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...theory import multipath as theory

__all__ = ["PhaseInit", "INITS", "DEFICITS", "phase_trajectory", "flow_field"]


@dataclass(frozen=True)
class PhaseInit:
    """Initial state of both pathways: conserved ``c = q**2 - p**2`` and ``p0`` (or ``k0``: the strength)."""

    label: str
    c: float
    p0: Optional[float] = None
    k0: Optional[float] = None

    def state(self, depth: int) -> tuple[float, float]:
        """``(p0, q0)`` at this depth."""
        if self.p0 is not None:
            return self.p0, float(np.sqrt(self.p0**2 + self.c))
        p, q = theory.p_q_from_strength(np.array([self.k0]), depth, self.c)
        return float(p[0]), float(q[0])


INITS = {
    "large": PhaseInit("large init (q^2 - p^2 = 1)", c=1.0, p0=0.01),
    "small": PhaseInit("small init (balanced, K0 = 0.01)", c=0.0, k0=0.01),
}
DEFICITS = {"early": (0, 15), "late": (100, 115)}


def phase_trajectory(
    depth: int,
    s: float,
    init: PhaseInit,
    dt: float = 0.01,
    n_epochs: int = 300,
    deficit: Optional[tuple[int, int]] = None,
) -> np.ndarray:
    """``(n_epochs + 1, 2)`` array of ``(K_a, K_b)`` at every epoch (gradient flow), b gated over ``deficit`` epochs.

    >>> traj = phase_trajectory(2, 10.0, INITS["large"], deficit=(0, 15))
    >>> traj.shape, bool(traj[-1, 0] > traj[-1, 1])
    ((301, 2), True)
    """
    p0, q0 = init.state(depth)
    p = np.full((2, 1), p0)
    q = np.full((2, 1), q0)
    gates = [theory.Gate(1, *deficit)] if deficit is not None else []
    sol = theory.gradient_flow(p, q, np.array([s]), depth, dt, 0, n_epochs, gates, rtol=1e-8, atol=1e-10)
    ps, qs = sol(np.arange(n_epochs + 1))
    return theory.strengths(ps, qs, depth)[..., 0]


def flow_field(
    depth: int, s: float, c: float, n: int = 21, lim: Optional[float] = None, gated_b: bool = False
) -> tuple[np.ndarray, ...]:
    """``(K_a, K_b, dK_a/dt, dK_b/dt)`` on an ``n x n`` grid over ``[0, lim]^2`` (``lim`` = 1.1 s)."""
    lim = 1.1 * s if lim is None else lim
    grid = np.linspace(0.0, lim, n)
    ka, kb = np.meshgrid(grid, grid)
    va, vb = theory.strength_velocity(ka.ravel(), kb.ravel(), s, depth, c, gated_b)
    return ka, kb, va.reshape(ka.shape), vb.reshape(ka.shape)
