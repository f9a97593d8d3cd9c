"""Phase portraits of the scalar two-pathway system in the (K_a, K_b) plane (paper Figs. 1 and 7).

One task mode of singular value ``s``; each pathway has depth D, one entry ``p`` and ``D - 1``
entries ``q`` with ``q**2 - p**2 = c`` conserved (theory.md section 1, :mod:`cpl.theory.multipath`).

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
from typing import Optional, Sequence

import numpy as np

from .theory import multipath as theory

__all__ = ["PhaseInit", "INITS", "DEFICITS", "phase_trajectory", "flow_field", "phase_portrait_figure"]


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


INITS = {"large": PhaseInit("large init (q^2 - p^2 = 1)", c=1.0, p0=0.01), "small": PhaseInit("small init (balanced, K0 = 0.01)", c=0.0, k0=0.01)}
DEFICITS = {"early": (0, 15), "late": (100, 115)}


def phase_trajectory(depth: int, s: float, init: PhaseInit, dt: float = 0.01, n_epochs: int = 300, deficit: Optional[tuple[int, int]] = None) -> np.ndarray:
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


def flow_field(depth: int, s: float, c: float, n: int = 21, lim: Optional[float] = None, gated_b: bool = False) -> tuple[np.ndarray, ...]:
    """``(K_a, K_b, dK_a/dt, dK_b/dt)`` on an ``n x n`` grid over ``[0, lim]^2`` (``lim`` = 1.1 s)."""
    lim = 1.1 * s if lim is None else lim
    grid = np.linspace(0.0, lim, n)
    ka, kb = np.meshgrid(grid, grid)
    va, vb = theory.strength_velocity(ka.ravel(), kb.ravel(), s, depth, c, gated_b)
    return ka, kb, va.reshape(ka.shape), vb.reshape(ka.shape)


def phase_portrait_figure(init: PhaseInit, depths: Sequence[int] = (2, 5, 8, 13), s: float = 10.0, dt: float = 0.01, n_epochs: int = 300,
                          deficits: Optional[dict[str, tuple[int, int]]] = None):
    """One row per deficit, one column per depth: the flow field, the trajectory with the deficit
    (pathway b gated) and without (dashed), and the final share of pathway a in the title.

    Returns:
        ``(figure, shares)`` with ``shares[(deficit, depth)]`` = final ``K_a / (K_a + K_b)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deficits = DEFICITS if deficits is None else deficits
    fig, axes = plt.subplots(len(deficits), len(depths), figsize=(3.2 * len(depths), 3.2 * len(deficits)), dpi=110, squeeze=False)
    shares: dict[tuple[str, int], float] = {}
    # the flow field and the no-deficit trajectory depend on the depth only: once per column
    fields = {depth: flow_field(depth, s, init.c) for depth in depths}
    bases = {depth: phase_trajectory(depth, s, init, dt, n_epochs) for depth in depths}
    for r, (dlabel, window) in enumerate(deficits.items()):
        for col, depth in enumerate(depths):
            ax = axes[r, col]
            ka, kb, va, vb = fields[depth]
            speed = np.hypot(va, vb)
            ax.streamplot(ka, kb, va, vb, color=np.log1p(speed), cmap="Greys", density=0.7, linewidth=0.6, arrowsize=0.6)
            base = bases[depth]
            traj = phase_trajectory(depth, s, init, dt, n_epochs, window)
            ax.plot(base[:, 0], base[:, 1], color="tab:blue", ls="--", lw=1.2, label="no deficit")
            ax.plot(traj[:, 0], traj[:, 1], color="crimson", lw=1.6, label=f"b gated, epochs {window[0]}-{window[1]}")
            end = min(window[1], n_epochs)
            ax.plot(traj[end, 0], traj[end, 1], "o", color="crimson", ms=4)
            ax.plot([0, s], [s, 0], color="gray", lw=0.8, ls=":")
            share = float(traj[-1, 0] / traj[-1].sum())
            shares[(dlabel, depth)] = share
            ax.set_xlim(0, 1.1 * s)
            ax.set_ylim(0, 1.1 * s)
            ax.set_title(f"D={depth}, {dlabel} deficit: a holds {100 * share:.0f}%", fontsize=8)
            if r == len(deficits) - 1:
                ax.set_xlabel("$K_a$")
            if col == 0:
                ax.set_ylabel("$K_b$")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Two-pathway gradient flow, s={s}, {init.label}; one epoch = {dt} time units", fontsize=9)
    fig.tight_layout()
    return fig, shares
