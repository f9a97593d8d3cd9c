"""Per-mode dynamics of the multi-pathway deep linear network (docs/theory.md section 1; paper Eqs. 5-8).

For every task mode ``alpha`` with singular value ``s`` and every pathway ``P`` of depth ``D``,
one layer carries the diagonal entry ``p`` and the other ``D - 1`` layers carry ``q``, so the
pathway's mode strength is ``K_P = p * q**(D-1)``. With the output error ``Omega = s - sum_P K_P``
(lesioned strengths excluded) gradient flow on ``1/2 * sum_items ||y - y_hat||^2`` reads::

    dp/dt = q**(D-1) * Omega,      dq/dt = p * q**(D-2) * Omega,

so ``q**2 - p**2`` is conserved (paper Eq. 8); ``p == q`` is the balanced case ``K = p**D``,
``dp/dt = p**(D-1) * Omega``. Interventions make the dynamics piecewise:

* gating deficit of pathway ``P`` over steps ``[start, end)``: ``P``'s entries do not move, but
  ``K_P`` still enters ``Omega`` (its output is detached, not removed);
* lesion of mode ``alpha`` in pathway ``P`` over ``[start, end)``: ``K_P`` of that mode is left out
  of ``Omega`` (the output is projected off the mode) and its entries receive no gradient.

Two references are offered, clearly distinct:

* :func:`discrete_map`: the **exact discrete map**, one explicit Euler step of size ``lr`` per
  gradient step. Under the aligned balanced SVD init it *is* gradient descent (up to round-off).
* :func:`gradient_flow`: the **gradient-flow curve** from :func:`scipy.integrate.solve_ivp`
  (tight tolerances, segments split at every intervention boundary), time ``t = lr * step``.
  It differs from gradient descent by O(lr).

Arrays: ``p`` and ``q`` have shape ``(P, *batch, k)`` (pathways first, modes last, e.g.
``(P, E, k)`` with E members); ``s`` broadcasts against ``(*batch, k)``. Steps are integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.integrate import solve_ivp

__all__ = [
    "Gate",
    "Lesion",
    "strengths",
    "rhs",
    "masks_at",
    "discrete_map",
    "gradient_flow",
    "FlowSolution",
    "p_q_from_strength",
    "strength_velocity",
    "pathway_share",
]


@dataclass(frozen=True)
class Gate:
    """Gating deficit of pathway index ``pathway`` over steps ``[start, end)`` (``end`` None = forever)."""

    pathway: int
    start: int
    end: Optional[int] = None


@dataclass(frozen=True)
class Lesion:
    """Lesion of mode ``mode`` of pathway index ``pathway`` over steps ``[start, end)``."""

    pathway: int
    mode: int
    start: int = 0
    end: Optional[int] = None


def _active(start: int, end: Optional[int], step: int) -> bool:
    return start <= step and (end is None or step < end)


def strengths(p: np.ndarray, q: np.ndarray, depth: int, lesioned: Optional[np.ndarray] = None) -> np.ndarray:
    """Mode strengths ``K = p * q**(D-1)``, zero where ``lesioned`` (the output the network sees).

    >>> strengths(np.array([0.5]), np.array([2.0]), depth=3)
    array([2.])
    """
    k = p * q ** (depth - 1)
    if lesioned is not None:
        k = np.where(lesioned, 0.0, k)
    return k


def masks_at(
    step: int, shape: tuple[int, ...], gates: Sequence[Gate] = (), lesions: Sequence[Lesion] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """``(frozen, lesioned)`` boolean masks of shape ``shape = (P, *batch, k)`` in force at ``step``.

    ``frozen``: entries that receive no gradient (gated pathways, lesioned modes);
    ``lesioned``: strengths left out of the output.
    """
    frozen = np.zeros(shape, dtype=bool)
    lesioned = np.zeros(shape, dtype=bool)
    for g in gates:
        if _active(g.start, g.end, step):
            frozen[g.pathway] = True
    for les in lesions:
        if _active(les.start, les.end, step):
            lesioned[les.pathway, ..., les.mode] = True
    return frozen | lesioned, lesioned


def rhs(
    p: np.ndarray,
    q: np.ndarray,
    s: np.ndarray,
    depth: int,
    frozen: Optional[np.ndarray] = None,
    lesioned: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Time derivatives ``(dp/dt, dq/dt)`` of the per-mode system (see the module docstring).

    >>> dp, dq = rhs(np.full((2, 1), 0.5), np.full((2, 1), 0.5), np.array([1.0]), depth=2)
    >>> float(dp[0, 0]), float(dq[0, 0])   # Omega = 1 - 2 * 0.25 = 0.5; dp = q * Omega
    (0.25, 0.25)
    """
    omega = s - strengths(p, q, depth, lesioned).sum(axis=0)
    if depth == 1:
        dp, dq = np.broadcast_to(omega, p.shape).copy(), np.zeros_like(q)
    else:
        dp = q ** (depth - 1) * omega
        dq = p * q ** (depth - 2) * omega
    if frozen is not None:
        dp = np.where(frozen, 0.0, dp)
        dq = np.where(frozen, 0.0, dq)
    return dp, dq


def discrete_map(
    p0: np.ndarray,
    q0: np.ndarray,
    s: np.ndarray,
    depth: int,
    lr: float,
    n_steps: int,
    gates: Sequence[Gate] = (),
    lesions: Sequence[Lesion] = (),
    start_step: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact discrete map: ``n_steps`` explicit Euler steps of size ``lr`` from ``start_step``.

    Step ``n`` uses the interventions in force at step ``n`` (as gradient descent does), so under
    the aligned balanced SVD init this reproduces gradient descent to round-off.

    Returns:
        ``(p, q)``, each ``(n_steps + 1, *p0.shape)``: the state before step ``start_step`` and after
        every step.

    Example (one pathway of depth 2 learns ``s = 2``; two pathways share it equally)::

        >>> half = np.full((2, 1), 0.5)
        >>> p, q = discrete_map(half, half, np.array([2.0]), depth=2, lr=0.01, n_steps=3000)
        >>> np.round(strengths(p[-1], q[-1], 2).ravel(), 6)
        array([1., 1.])
        >>> p, q = discrete_map(half, half, np.array([2.0]), depth=2, lr=0.01, n_steps=3000, gates=[Gate(1, 0, 3000)])
        >>> np.round(strengths(p[-1], q[-1], 2).ravel(), 6)   # b gated throughout: a learns the rest
        array([1.75, 0.25])
    """
    if lr <= 0:
        raise ValueError(f"Expected `lr` > 0, got {lr}")
    if n_steps < 0:
        raise ValueError(f"Expected `n_steps` >= 0, got {n_steps}")
    p, q = np.array(p0, dtype=float), np.array(q0, dtype=float)
    ps, qs = [p.copy()], [q.copy()]
    for n in range(start_step, start_step + n_steps):
        frozen, lesioned = masks_at(n, p.shape, gates, lesions)
        dp, dq = rhs(p, q, s, depth, frozen, lesioned)
        p, q = p + lr * dp, q + lr * dq
        ps.append(p)
        qs.append(q)
    return np.stack(ps), np.stack(qs)


@dataclass
class FlowSolution:
    """Piecewise dense gradient-flow solution; call with a step (or array of steps) -> ``(p, q)``."""

    lr: float
    shape: tuple[int, ...]
    boundaries: list[int]  #: steps where a segment starts (sorted), the last one is the end
    pieces: list[Callable[[np.ndarray], np.ndarray]]

    def __call__(self, step) -> tuple[np.ndarray, np.ndarray]:
        steps = np.atleast_1d(np.asarray(step, dtype=float))
        out = np.empty((len(steps), 2 * int(np.prod(self.shape))))
        for j, st in enumerate(steps):
            i = int(np.searchsorted(self.boundaries, st, side="right")) - 1
            i = min(max(i, 0), len(self.pieces) - 1)
            out[j] = self.pieces[i](self.lr * st)
        n = out.shape[1] // 2
        p = out[:, :n].reshape((len(steps), *self.shape))
        q = out[:, n:].reshape((len(steps), *self.shape))
        if np.ndim(step) == 0:
            return p[0], q[0]
        return p, q


def gradient_flow(
    p0: np.ndarray,
    q0: np.ndarray,
    s: np.ndarray,
    depth: int,
    lr: float,
    start_step: int,
    end_step: int,
    gates: Sequence[Gate] = (),
    lesions: Sequence[Lesion] = (),
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> FlowSolution:
    """The gradient-flow curve, integrated with ``solve_ivp`` (DOP853) over ``t = lr * step``.

    The interval ``[start_step, end_step]`` is split at every gate/lesion boundary; each segment is
    integrated with the masks in force on it and a dense output.

    Example (balanced depth 2, one pathway: the logistic curve ``K(t) = s / (1 + (s/K0 - 1) e^{-2 s t})``)::

        >>> p0 = np.full((1, 1), 0.1)
        >>> sol = gradient_flow(p0, p0, np.array([1.0]), 2, lr=0.01, start_step=0, end_step=500)
        >>> p, q = sol(300)
        >>> k = float(strengths(p, q, 2)[0, 0]); exact = 1 / (1 + 99 * np.exp(-2 * 3.0))
        >>> bool(abs(k - exact) < 1e-8)
        True
    """
    if lr <= 0:
        raise ValueError(f"Expected `lr` > 0, got {lr}")
    if end_step < start_step:
        raise ValueError(f"Expected `end_step` >= `start_step` ({start_step}), got {end_step}")
    shape = np.shape(p0)
    cuts = {start_step, end_step}
    for ev in [*gates, *lesions]:
        for b in (ev.start, ev.end):
            if b is not None and start_step < b < end_step:
                cuts.add(int(b))
    bounds = sorted(cuts)
    y = np.concatenate([np.ravel(p0), np.ravel(q0)]).astype(float)
    n = y.size // 2
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        frozen, lesioned = masks_at(a, shape, gates, lesions)

        def f(t, yy, frozen=frozen, lesioned=lesioned):
            dp, dq = rhs(yy[:n].reshape(shape), yy[n:].reshape(shape), s, depth, frozen, lesioned)
            return np.concatenate([dp.ravel(), dq.ravel()])

        with np.errstate(over="ignore", invalid="ignore"):  # trial steps that overflow are rejected by the integrator
            sol = solve_ivp(f, (lr * a, lr * b), y, method="DOP853", rtol=rtol, atol=atol, dense_output=True)
        if not sol.success:  # pragma: no cover - integrator failure
            raise RuntimeError(f"solve_ivp failed on steps [{a}, {b}]: {sol.message}")
        pieces.append(sol.sol)
        y = sol.y[:, -1]
    if not pieces:  # an empty interval: a constant solution
        const = y.copy()
        pieces.append(lambda t, c=const: c)
    return FlowSolution(lr=lr, shape=shape, boundaries=bounds, pieces=pieces)


def p_q_from_strength(k: np.ndarray, depth: int, c: float = 0.0, iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Invert ``K = p * q**(D-1)`` on the manifold ``q**2 - p**2 = c`` (``c >= 0``), ``q > 0``.

    ``c = 0`` is the balanced case ``p = q = K**(1/D)`` (sign of K on p). Solved by bisection,
    since ``p -> p * (p**2 + c)**((D-1)/2)`` is increasing.

    >>> p, q = p_q_from_strength(np.array([2.0]), depth=3, c=1.0)
    >>> round(float(p[0] * q[0] ** 2), 9), round(float(q[0] ** 2 - p[0] ** 2), 9)
    (2.0, 1.0)
    """
    if c < 0:
        raise ValueError(f"Expected `c` >= 0, got {c}")
    k = np.asarray(k, dtype=float)
    sign, mag = np.sign(k), np.abs(k)
    if depth == 1:
        return k.copy(), np.sqrt(k**2 + c)
    if c == 0:
        p = mag ** (1.0 / depth)
        return sign * p, p
    lo, hi = np.zeros_like(mag), np.maximum(mag, 1.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        val = mid * (mid**2 + c) ** ((depth - 1) / 2)
        lo, hi = np.where(val < mag, mid, lo), np.where(val < mag, hi, mid)
    p = 0.5 * (lo + hi)
    return sign * p, np.sqrt(p**2 + c)


def strength_velocity(
    ka: np.ndarray, kb: np.ndarray, s: float, depth: int, c: float = 0.0, gated_b: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(dK_a/dt, dK_b/dt)`` of the scalar two-pathway system at strengths ``(K_a, K_b)``.

    Uses ``dK/dt = (q**(2D-2) + (D-1) p**2 q**(2D-4)) * Omega`` on the manifold ``q**2 - p**2 = c``
    (the flow field of the paper's phase portraits); ``gated_b`` freezes pathway b.

    >>> va, vb = strength_velocity(np.array([0.0]), np.array([0.0]), s=1.0, depth=1)
    >>> float(va[0]), float(vb[0])
    (1.0, 1.0)
    """
    omega = s - ka - kb
    out = []
    for k, frozen in ((ka, False), (kb, gated_b)):
        p, q = p_q_from_strength(k, depth, c)
        if depth == 1:
            gain = np.ones_like(p)
        else:
            gain = q ** (2 * depth - 2) + (depth - 1) * p**2 * q ** (2 * depth - 4)
        out.append(np.zeros_like(omega) if frozen else gain * omega)
    return out[0], out[1]


def pathway_share(k: np.ndarray, pathway: int = 0) -> np.ndarray:
    """Fraction of each mode's total strength held by ``pathway``: ``K_P / sum_P K_P`` (axis 0 = pathways).

    >>> pathway_share(np.array([[3.0, 1.0], [1.0, 1.0]]))
    array([0.75, 0.5 ])
    """
    total = k.sum(axis=0)
    return k[pathway] / np.where(total == 0, np.nan, total)
