"""Gradient flow of a balanced deep matrix factorisation (docs/theory.md section 2; Arora et al. 2018, 2019).

Loss as in training, ``L(W) = 1/(2 n_obs) sum_observed (W - M)_ij^2``, so the gradient with
respect to the end-to-end matrix is ``G = P_obs(W - M) / n_obs``. For a balanced factorisation
``W = W_D ... W_1`` (``W_{j+1}^T W_{j+1} = W_j W_j^T``) gradient flow on the factors moves ``W`` by

    dW/dt = - sum_{j=1..D} (W W^T)^((j-1)/D) G (W^T W)^((D-j)/D)

and its SVD ``W = U diag(s) V^T`` (distinct, nonzero ``s``) by

    ds_r/dt = - D s_r^(2 - 2/D) (U^T G V)_rr
    dU/dt   = - U (F o (U^T G V S + S V^T G^T U)) - (I - U U^T) G V S^(1 - 2/D)
    dV/dt   = - V (F o (S U^T G V + V^T G^T U S)) - (I - V V^T) G^T U S^(1 - 2/D)
    F_rr' = (s_r'^(2/D) - s_r^(2/D))^(-1) (r != r'), F_rr = 0.

Time is ``t = lr * step`` (one gradient step of size lr advances gradient flow by lr).
A run is a list of *pieces* ``(t_start, M, mask)``: the target and the observed set change
at each ``t_start`` (a task switch) and the integration is split there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.integrate import solve_ivp

__all__ = [
    "masked_gradient",
    "end_to_end_velocity",
    "integrate_end_to_end",
    "svd_velocity",
    "integrate_svd_flow",
    "balance_gap",
]

Piece = tuple  # (t_start: float, M: array (n, m), mask: array (n, m) of 0/1)


def masked_gradient(w: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``G = P_obs(W - M) / n_obs``: the gradient of ``1/(2 n_obs) sum_observed (W - M)^2``.

    >>> masked_gradient(np.array([[2.0, 1.0]]), np.zeros((1, 2)), np.array([[1.0, 0.0]]))
    array([[2., 0.]])
    """
    n_obs = float(np.sum(mask))
    if n_obs <= 0:
        raise ValueError(f"Expected `mask` with at least one observed entry, got {n_obs:g} observed")
    return mask * (w - target) / n_obs


def _powers(w: np.ndarray):
    """Full SVD of ``w`` and the eigenvalues of ``W W^T`` (left) and ``W^T W`` (right), zero-padded."""
    u, s, vt = np.linalg.svd(w, full_matrices=True)
    left = np.zeros(w.shape[0])
    right = np.zeros(w.shape[1])
    left[: s.size] = s**2
    right[: s.size] = s**2
    return u, left, right, vt.T


def end_to_end_velocity(w: np.ndarray, grad: np.ndarray, depth: int) -> np.ndarray:
    """``dW/dt = - sum_{j=1..D} (W W^T)^((j-1)/D) G (W^T W)^((D-j)/D)`` (balanced factorisation).

    Fractional powers of the PSD matrices ``W W^T = U diag(s^2) U^T`` and ``W^T W = V diag(s^2) V^T``
    come from one SVD; ``0^0 = 1`` so the ``j = 1`` and ``j = D`` terms carry an identity.

    >>> end_to_end_velocity(np.diag([4.0, 1.0]), np.eye(2), depth=2)
    array([[-8., -0.],
           [-0., -2.]])
    >>> end_to_end_velocity(np.diag([4.0, 1.0]), np.ones((2, 2)), depth=1)  # D = 1: plain gradient flow
    array([[-1., -1.],
           [-1., -1.]])
    """
    if depth < 1:
        raise ValueError(f"Expected `depth` >= 1, got {depth}")
    u, left, right, v = _powers(w)
    h = u.T @ grad @ v
    weights = np.zeros_like(h)
    for j in range(1, depth + 1):
        weights += np.outer(np.power(left, (j - 1) / depth), np.power(right, (depth - j) / depth))
    return -(u @ (weights * h) @ v.T)


def _piece_arrays(piece: Piece) -> tuple[np.ndarray, np.ndarray, float]:
    """Target, 0/1 mask (float arrays) and observation count of one piece of the schedule."""
    _, target, mask = piece
    mask = np.asarray(mask, float)
    return np.asarray(target, float), mask, float(mask.sum())


def _check_pieces(pieces: Sequence[Piece], t0: float) -> list[Piece]:
    if not pieces:
        raise ValueError("Expected at least one piece (t_start, M, mask), got none")
    pieces = sorted(pieces, key=lambda p: p[0])
    if pieces[0][0] > t0:
        raise ValueError(f"Expected the first piece to start at or before t0={t0}, got t_start={pieces[0][0]}")
    return pieces


def _integrate(
    rhs_for, y0: np.ndarray, pieces, times: np.ndarray, t0: float, rtol: float, atol: float, method: str
) -> np.ndarray:
    """Integrate ``dy/dt = rhs_for(piece)(t, y)`` piece by piece from ``y(t0) = y0``; ``y`` at each of ``times``.

    Each piece is solved by its own ``solve_ivp`` call, which starts from the state at the end
    of the previous one (the switch time), so the right-hand side is never discontinuous.
    """
    times = np.asarray(times, dtype=float)
    if times.size and (np.any(np.diff(times) < 0) or times[0] < t0):
        raise ValueError(f"Expected `times` sorted and >= t0={t0}, got {times[:3]}...")
    out = np.empty((times.size, y0.size))
    y, a = np.array(y0, dtype=float), t0
    out[times == t0] = y
    t_end = times[-1] if times.size else t0
    for i, piece in enumerate(pieces):
        b = min(pieces[i + 1][0] if i + 1 < len(pieces) else np.inf, t_end)
        if b <= a:
            continue
        idx = np.nonzero((times > a) & (times <= b))[0]
        grid = np.unique(np.append(times[idx], b))
        sol = solve_ivp(rhs_for(piece), (a, b), y, method=method, t_eval=grid, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on [{a}, {b}]: {sol.message}")
        out[idx] = sol.y.T[np.searchsorted(grid, times[idx])]
        y, a = sol.y[:, -1], b
    return out


def integrate_end_to_end(
    w0: np.ndarray,
    pieces: Sequence[Piece],
    times: Sequence[float],
    depth: int,
    t0: float = 0.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    method: str = "RK45",
) -> np.ndarray:
    """Solve ``dW/dt = end_to_end_velocity(W, P_obs(W - M)/n_obs, D)`` from ``W(t0) = w0``.

    Args:
        w0: (n, m) end-to-end matrix at ``t0``.
        pieces: ``(t_start, M, mask)``: from ``t_start`` on, the target is ``M`` observed on ``mask``
            (a task switch is a new piece; the integration restarts there from the current ``W``).
        times: sorted times >= t0 at which to return ``W``.
        depth: D.

    Returns:
        (len(times), n, m) array.

    >>> M = np.diag([3.0, 1.0]); mask = np.ones((2, 2))
    >>> w = integrate_end_to_end(0.01 * np.eye(2), [(0.0, M, mask)], [0.0, 200.0], depth=2)
    >>> np.round(w[-1], 4)
    array([[3., 0.],
           [0., 1.]])
    """
    w0 = np.asarray(w0, dtype=float)
    shape = w0.shape
    pieces = _check_pieces(pieces, t0)

    def rhs_for(piece):
        target, mask, n_obs = _piece_arrays(piece)

        def rhs(t, y):
            w = y.reshape(shape)
            return end_to_end_velocity(w, mask * (w - target) / n_obs, depth).ravel()

        return rhs

    return _integrate(rhs_for, w0.ravel(), pieces, np.asarray(times, float), t0, rtol, atol, method).reshape(-1, *shape)


def svd_velocity(
    s: np.ndarray, u: np.ndarray, v: np.ndarray, grad: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ds/dt, dU/dt, dV/dt)`` of ``W = U diag(s) V^T`` under the balanced flow (distinct nonzero ``s``).

        ds_r/dt = - D s_r^(2 - 2/D) (U^T G V)_rr
        dU/dt   = - U (F o (U^T G V S + S V^T G^T U)) - (I - U U^T) G V S^(1 - 2/D)
        dV/dt   = - V (F o (S U^T G V + V^T G^T U S)) - (I - V V^T) G^T U S^(1 - 2/D)
        F_rr'   = (s_r'^(2/D) - s_r^(2/D))^(-1), F_rr = 0

    ``u`` (n, k), ``v`` (m, k) with orthonormal columns, ``k <= min(n, m)``.

    >>> ds, du, dv = svd_velocity(np.array([4.0, 1.0]), np.eye(2), np.eye(2), np.eye(2), depth=2)
    >>> ds, float(np.abs(du).max()), float(np.abs(dv).max())
    (array([-8., -2.]), 0.0, 0.0)
    """
    s = np.asarray(s, dtype=float)
    if np.any(s <= 0):
        raise ValueError(f"Expected positive singular values `s`, got min {s.min():g}")
    p = s ** (2.0 / depth)
    diff = p[None, :] - p[:, None]  # s_r'^(2/D) - s_r^(2/D) at [r, r']
    off = ~np.eye(s.size, dtype=bool)
    if np.any(diff[off] == 0):
        raise ValueError("Expected distinct singular values `s`, got repeated ones")
    f = np.zeros_like(diff)
    f[off] = 1.0 / diff[off]
    h = u.T @ grad @ v
    big_s = np.diag(s)
    ds = -depth * s ** (2.0 - 2.0 / depth) * np.diag(h)
    sp = np.diag(s ** (1.0 - 2.0 / depth))
    du = -u @ (f * (h @ big_s + big_s @ h.T)) - (np.eye(u.shape[0]) - u @ u.T) @ grad @ v @ sp
    dv = -v @ (f * (big_s @ h + h.T @ big_s)) - (np.eye(v.shape[0]) - v @ v.T) @ grad.T @ u @ sp
    return ds, du, dv


def integrate_svd_flow(
    w0: np.ndarray,
    pieces: Sequence[Piece],
    times: Sequence[float],
    depth: int,
    rank: int | None = None,
    t0: float = 0.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate the ``(s, U, V)`` form from the top-``rank`` SVD of ``w0`` (the paper's Fig. 9 curves).

    Exact when ``W`` stays of rank ``rank`` or, for ``rank = min(n, m)``, while its singular values
    stay distinct and nonzero; use :func:`integrate_end_to_end` for the robust form.

    Returns:
        ``s`` (T, k), ``U`` (T, n, k), ``V`` (T, m, k).

    >>> M = np.diag([3.0, 1.0]); mask = np.ones((2, 2))
    >>> s, u, v = integrate_svd_flow(np.diag([0.02, 0.01]), [(0.0, M, mask)], [200.0], depth=2)
    >>> np.round(s[-1], 4)
    array([3., 1.])
    """
    w0 = np.asarray(w0, dtype=float)
    n, m = w0.shape
    u0, s0, vt0 = np.linalg.svd(w0, full_matrices=False)
    k = rank or s0.size
    y0 = np.concatenate([s0[:k], u0[:, :k].ravel(), vt0[:k].T.ravel()])
    pieces = _check_pieces(pieces, t0)

    def rhs_for(piece):
        target, mask, n_obs = _piece_arrays(piece)

        def rhs(t, y):
            s, u, v = y[:k], y[k : k + n * k].reshape(n, k), y[k + n * k :].reshape(m, k)
            w = (u * s) @ v.T
            ds, du, dv = svd_velocity(s, u, v, mask * (w - target) / n_obs, depth)
            return np.concatenate([ds, du.ravel(), dv.ravel()])

        return rhs

    y = _integrate(rhs_for, y0, pieces, np.asarray(times, float), t0, rtol, atol, "RK45")
    return y[:, :k], y[:, k : k + n * k].reshape(-1, n, k), y[:, k + n * k :].reshape(-1, m, k)


def balance_gap(factors: Sequence[np.ndarray]) -> float:
    """``max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F / max_j ||W_j W_j^T||_F`` (0 for a balanced factorisation).

    >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    >>> round(balance_gap([0.1 * q, 0.1 * q.T]), 12)
    0.0
    """
    factors = [np.asarray(f, dtype=float) for f in factors]
    if len(factors) < 2:
        return 0.0
    scale = max(np.linalg.norm(f @ f.T) for f in factors)
    gap = max(
        np.linalg.norm(factors[j + 1].T @ factors[j + 1] - factors[j] @ factors[j].T) for j in range(len(factors) - 1)
    )
    return float(gap / scale) if scale > 0 else 0.0
