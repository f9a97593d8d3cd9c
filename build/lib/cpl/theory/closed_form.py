"""Closed forms for depth 2: Saxe's logistic modes and the exact (Riccati) dynamics from any balanced init.

Saxe, McClelland & Ganguli (2014), docs/theory.md section 3: with every entry observed and an init
aligned with the task's singular vectors, each mode ``a`` of ``W = U diag(a) V^T`` with target
value ``s`` follows ``da/dt = (2 / tau) a (s - a)``:

    a(t) = s e^(2 s t / tau) / (e^(2 s t / tau) - 1 + s / a0)

with ``tau = N^2`` for the matrix-completion loss ``1/(2 N^2) ||W - M||^2`` and ``t = lr * step``.

Braun, Domine, Fitzgerald & Saxe (2022) / Fukumizu (1998), docs/theory.md section 4: for
``W = W2 W1`` trained by gradient flow on ``1/2 ||S - W2 W1||_F^2`` from a lambda-balanced init
(``W2^T W2 - W1 W1^T = lambda I``), ``Q = [W1^T; W2]`` obeys

    QQ^T(t) = e^{Ft} Q0 [I + Q0^T Phi(t) Q0]^{-1} Q0^T e^{Ft},
    F = [[-lambda/2 I, S^T], [S, lambda/2 I]],   Phi(t) = int_0^t e^{2Fs} ds,

chained in exact steps with ``mu_max dt <= 8`` that propagate the factor ``Q``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "saxe_mode",
    "saxe_piecewise",
    "joint_basis",
    "riccati_f",
    "riccati_step",
    "braun_qqt",
    "braun_trajectory",
    "lambda_balance",
    "ntk",
]


# --------------------------------------------------------------------------- Saxe


def saxe_mode(t, s, a0, time_constant: float = 1.0):
    """Logistic mode strength ``a(t)`` solving ``da/dt = (2/tau) a (s - a)``, ``a(0) = a0``.

        a(t) = s e^(2 s t / tau) / (e^(2 s t / tau) - 1 + s / a0)

    evaluated as ``a0 / (e^(-2st/tau) + a0 (1 - e^(-2st/tau)) / s)`` (no overflow; ``s = 0`` gives the
    limit ``a0 / (1 + 2 a0 t / tau)``). Broadcasts over ``t``, ``s`` and ``a0``.

    >>> float(saxe_mode(0.0, 5.0, 0.01)), round(float(saxe_mode(1e3, 5.0, 0.01)), 9)
    (0.01, 5.0)
    >>> float(saxe_mode(2.0, 0.0, 1.0))  # s = 0: a0 / (1 + 2 a0 t)
    0.2
    """
    t, s, a0 = (np.asarray(x, dtype=float) for x in (t, s, a0))
    if np.any(np.asarray(time_constant) <= 0):
        raise ValueError(f"Expected `time_constant` > 0, got {time_constant}")
    rate = 2.0 * t / time_constant
    decay = np.exp(-rate * s)
    safe = np.where(s == 0, 1.0, s)
    growth = np.where(s == 0, rate, -np.expm1(-rate * s) / safe)
    return a0 / (decay + a0 * growth)


def saxe_piecewise(
    t, pieces: Sequence[tuple[float, np.ndarray]], a0: np.ndarray, time_constant: float = 1.0, t0: float = 0.0
) -> np.ndarray:
    """Saxe's modes through task switches: restart :func:`saxe_mode` from the current values.

    Args:
        t: times >= ``t0``.
        pieces: ``(t_start, s)``: from ``t_start`` on, the target's mode values are ``s`` (k,).
        a0: (k,) mode values at ``t0``.

    Returns:
        (len(t), k) mode values.

    >>> a = saxe_piecewise([0.0, 50.0, 100.0], [(0.0, np.array([2.0])), (50.0, np.array([0.5]))], np.array([0.01]))
    >>> np.round(a[:, 0], 6)
    array([0.01, 2.  , 0.5 ])
    """
    t = np.atleast_1d(np.asarray(t, dtype=float))
    pieces = sorted(pieces, key=lambda p: p[0])
    if not pieces or pieces[0][0] > t0:
        raise ValueError(f"Expected pieces starting at or before t0={t0}, got {[p[0] for p in pieces]}")
    a_start = np.asarray(a0, dtype=float)
    out = np.empty((t.size, a_start.size))
    start = t0
    for i, (_, s) in enumerate(pieces):
        end = pieces[i + 1][0] if i + 1 < len(pieces) else np.inf
        if end <= start:
            continue
        sel = (t >= start) & (t <= end) if i + 1 == len(pieces) else (t >= start) & (t < end)
        out[sel] = saxe_mode(t[sel, None] - start, np.asarray(s, float)[None], a_start[None], time_constant)
        if np.isfinite(end):
            a_start = saxe_mode(end - start, np.asarray(s, float), a_start, time_constant)
            start = end
    return out


def joint_basis(
    w0: np.ndarray, targets: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], float]:
    """A common SVD basis of ``w0`` and the ``targets``, and how far they are from sharing one.

    The basis is the SVD of ``w0 + sum_k c_k M_k`` with fixed incommensurate ``c_k``: if all the
    matrices are ``U diag(.) V^T`` for one ``(U, V)`` it recovers it. Returns ``U``, ``V``,
    ``a0 = diag(U^T w0 V)``, ``[diag(U^T M_k V)]`` and the largest off-diagonal residual of the
    projections relative to the largest matrix norm (0 when the basis is shared).

    >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    >>> u, v, a0, (s,), res = joint_basis(q @ np.diag([0.2, 0.1, 0.1, 0.1]), [q @ np.diag([3.0, 1, 0, 0])])
    >>> np.round(np.sort(np.abs(s))[::-1], 6), bool(res < 1e-12)
    (array([3., 1., 0., 0.]), True)
    """
    w0 = np.asarray(w0, dtype=float)
    mats = [np.asarray(m, dtype=float) for m in targets]
    coeffs = [np.sqrt(2.0) ** -(k + 1) * (1 + 0.1 * np.pi * k) for k in range(len(mats))]
    combo = w0 + sum(c * m for c, m in zip(coeffs, mats))
    u, _, vt = np.linalg.svd(combo)
    v = vt.T
    scale = max([np.linalg.norm(w0)] + [np.linalg.norm(m) for m in mats]) or 1.0
    res, diags = 0.0, []
    for m in [w0, *mats]:
        p = u.T @ m @ v
        d = np.diag(p).copy()
        res = max(res, float(np.abs(p - np.diag(d)).max()) / scale)
        diags.append(d)
    return u, v, diags[0], diags[1:], res


# --------------------------------------------------------------------------- Braun et al. / Fukumizu


def riccati_f(target: np.ndarray, lam: float = 0.0) -> np.ndarray:
    """``F = [[-lambda/2 I_Ni, S^T], [S, lambda/2 I_No]]`` for a target ``S`` (No x Ni).

    >>> riccati_f(np.array([[2.0]]), lam=1.0)
    array([[-0.5,  2. ],
           [ 2. ,  0.5]])
    """
    s = np.asarray(target, dtype=float)
    n_out, n_in = s.shape
    return np.block([[-lam / 2 * np.eye(n_in), s.T], [s, lam / 2 * np.eye(n_out)]])


def riccati_step(q: np.ndarray, mu: np.ndarray, o: np.ndarray, dt: float) -> np.ndarray:
    """One exact step of length ``dt`` for the factor: ``Q <- e^{F dt} Q L^{-T}``, ``L L^T = I + Q^T Phi(dt) Q``.

    ``F = O diag(mu) O^T``; ``Phi(dt) = O diag((e^{2 mu dt} - 1) / (2 mu)) O^T`` (``dt`` where ``mu = 0``).
    Then ``Q_new Q_new^T = e^{F dt} Q [I + Q^T Phi Q]^{-1} Q^T e^{F dt}``.

    >>> mu, o = np.linalg.eigh(riccati_f(np.array([[1.0]])))
    >>> q = riccati_step(np.array([[0.1], [0.1]]), mu, o, 50.0)  # scalar W = w2 w1 -> S = 1
    >>> round(float(q[1, 0] * q[0, 0]), 9)
    1.0
    """
    qt = o.T @ q
    grow = np.exp(mu * dt)
    phi = np.where(mu == 0, dt, np.expm1(2 * mu * dt) / np.where(mu == 0, 1.0, 2 * mu))
    bracket = np.eye(q.shape[1]) + qt.T @ (phi[:, None] * qt)
    chol = np.linalg.cholesky(0.5 * (bracket + bracket.T))
    return o @ np.linalg.solve(chol, (grow[:, None] * qt).T).T


def braun_qqt(
    q0: np.ndarray, target: np.ndarray, times: Sequence[float], lam: float = 0.0, max_exponent: float = 8.0
) -> np.ndarray:
    """``Q Q^T(t)`` at sorted ``times >= 0`` from the factor ``Q0`` at ``t = 0`` (one target ``S``).

    Exact steps are chained with ``mu_max dt <= max_exponent`` and the factor ``Q`` propagated.

    >>> qq = braun_qqt(np.array([[0.1], [0.1]]), np.array([[2.0]]), [0.0, 100.0])
    >>> np.round(qq[:, 1, 0], 6)  # the network function W: 0.01 -> S = 2
    array([0.01, 2.  ])
    """
    if max_exponent <= 0:
        raise ValueError(f"Expected `max_exponent` > 0, got {max_exponent}")
    times = np.asarray(times, dtype=float)
    if times.size and (times[0] < 0 or np.any(np.diff(times) < 0)):
        raise ValueError(f"Expected sorted `times` >= 0, got {times[:3]}...")
    factors = _chain(np.asarray(q0, dtype=float), target, lam, times, max_exponent)
    return np.stack([f @ f.T for f in factors]) if factors else np.empty((0, len(q0), len(q0)))


def _chain(q: np.ndarray, target: np.ndarray, lam: float, times: np.ndarray, max_exponent: float) -> list[np.ndarray]:
    """The factor ``Q`` at each of the sorted ``times`` (from ``Q(0) = q``), in chained exact steps."""
    mu, o = np.linalg.eigh(riccati_f(target, lam))
    dt_max = max_exponent / mu.max() if mu.max() > 0 else np.inf
    t, out = 0.0, []
    for ti in times:
        while ti - t > dt_max:
            q, t = riccati_step(q, mu, o, dt_max), t + dt_max
        out.append(riccati_step(q, mu, o, ti - t) if ti > t else q)
    return out


def lambda_balance(w1: np.ndarray, w2: np.ndarray) -> tuple[float, float]:
    """``lambda`` with ``W2^T W2 - W1 W1^T ~ lambda I`` and the relative residual of that fit.

    >>> lam, res = lambda_balance(np.diag([1.0, 2.0]), np.diag([2.0, 2.5]))  # gap diag(3, 2.25)
    >>> round(lam, 6), round(res, 6)
    (2.625, 0.071469)
    >>> lambda_balance(np.diag([1.0, 2.0]), np.diag([2.0, np.sqrt(7.0)]))[1] < 1e-12
    True
    """
    w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
    gap = w2.T @ w2 - w1 @ w1.T
    lam = float(np.trace(gap) / gap.shape[0])
    scale = max(np.linalg.norm(w1 @ w1.T), np.linalg.norm(w2.T @ w2)) or 1.0
    return lam, float(np.linalg.norm(gap - lam * np.eye(gap.shape[0])) / scale)


def braun_trajectory(
    w1: np.ndarray,
    w2: np.ndarray,
    pieces: Sequence[tuple[float, np.ndarray]],
    times: Sequence[float],
    lam: float | None = None,
    t0: float = 0.0,
    max_exponent: float = 8.0,
) -> dict[str, np.ndarray]:
    """Exact two-layer gradient flow on ``1/2 ||S - W2 W1||^2`` through task switches.

    Args:
        w1: (Nh, Ni) first layer at ``t0``; w2: (No, Nh) second layer.
        pieces: ``(t_start, S)``: from ``t_start`` on the target is ``S`` (No x Ni); at a switch the
            solution restarts from ``Q Q^T`` (carried as its factor) with the new ``F``.
        times: sorted times >= ``t0``.
        lam: the balance constant; None = fitted by :func:`lambda_balance` (exact only if balanced).

    Returns:
        ``{"w": (T, No, Ni), "input_similarity": W1^T W1 (T, Ni, Ni), "output_similarity": W2 W2^T (T, No, No)}``.

    >>> pieces = [(0.0, np.array([[2.0]])), (10.0, np.array([[0.5]]))]
    >>> out = braun_trajectory(np.array([[0.1]]), np.array([[0.1]]), pieces, [0.0, 10.0, 80.0])
    >>> np.round(out["w"][:, 0, 0], 6)
    array([0.01, 2.  , 0.5 ])
    """
    w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
    n_in, n_out = w1.shape[1], w2.shape[0]
    if w2.shape[1] != w1.shape[0]:
        raise ValueError(f"Expected `w2` with {w1.shape[0]} columns (the hidden width of `w1`), got shape {w2.shape}")
    if lam is None:
        lam = lambda_balance(w1, w2)[0]
    times = np.asarray(times, dtype=float)
    if times.size and (times[0] < t0 or np.any(np.diff(times) < 0)):
        raise ValueError(f"Expected `times` sorted and >= t0={t0}, got {times[:3]}...")
    pieces = sorted(pieces, key=lambda p: p[0])
    if not pieces or pieces[0][0] > t0:
        raise ValueError(f"Expected pieces starting at or before t0={t0}, got {[p[0] for p in pieces]}")
    q = np.vstack([w1.T, w2])
    qqt = np.empty((times.size, n_in + n_out, n_in + n_out))
    start = t0
    for i, (_, target) in enumerate(pieces):
        end = pieces[i + 1][0] if i + 1 < len(pieces) else np.inf
        if end <= start:
            continue
        last = i + 1 == len(pieces)
        sel = np.nonzero((times >= start) & ((times <= end) if last else (times < end)))[0]
        grid = times[sel] - start
        if np.isfinite(end):
            grid = np.append(grid, end - start)
        # the factor at every grid point; the one at the switch starts the next piece
        factors = _chain(q, target, lam, grid, max_exponent)
        for j, f in zip(sel, factors):
            qqt[j] = f @ f.T
        if np.isfinite(end):
            q = factors[-1]
        start = end
        if not np.isfinite(end):
            break
    return {
        "w": qqt[:, n_in:, :n_in],
        "input_similarity": qqt[:, :n_in, :n_in],
        "output_similarity": qqt[:, n_in:, n_in:],
    }


def ntk(input_similarity: np.ndarray, output_similarity: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Neural tangent kernel of ``Y = W2 W1 X``: ``K = I_No (x) X^T (W1^T W1) X + (W2 W2^T) (x) X^T X``.

    Rows and columns are indexed by (output i, sample p), ``i * P + p``.

    >>> ntk(np.eye(2), 2 * np.eye(1), np.eye(2))
    array([[3., 0.],
           [0., 3.]])
    """
    x = np.asarray(x, dtype=float)
    n_out = output_similarity.shape[0]
    return np.kron(np.eye(n_out), x.T @ input_similarity @ x) + np.kron(output_similarity, x.T @ x)
