"""The analytic references of matrix completion (cpl.theory.factorization, cpl.theory.closed_form)
against independent computations: gradient descent on the factors with a small lr, and tightly
integrated gradient flow (scipy.integrate.solve_ivp)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from cpl.families.matcomp.data import low_rank_matrix
from cpl.theory import closed_form, factorization
from cpl.theory.closed_form import (
    braun_qqt,
    braun_trajectory,
    joint_basis,
    lambda_balance,
    ntk,
    riccati_f,
    riccati_step,
    saxe_mode,
    saxe_piecewise,
)
from cpl.theory.factorization import (
    balance_gap,
    end_to_end_velocity,
    integrate_end_to_end,
    integrate_svd_flow,
    masked_gradient,
    svd_velocity,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("module", [factorization, closed_form])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def gradient_descent(factors, schedule, lr: float, steps: int, record_every: int):
    """Plain GD on ``1/(2 n_obs) sum_observed (W_D...W_1 - M)^2`` (torch autograd, float64).

    ``schedule(step) -> (M, mask)``. Returns the recorded steps and end-to-end matrices."""
    fs = [torch.tensor(f, dtype=torch.float64, requires_grad=True) for f in factors]
    out_steps, out_w = [], []
    for step in range(steps + 1):
        w = fs[0]
        for f in fs[1:]:
            w = f @ w
        if step % record_every == 0:
            out_steps.append(step)
            out_w.append(w.detach().numpy().copy())
        if step == steps:
            break
        target, mask = schedule(step)
        loss = 0.5 * ((w - target) ** 2 * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, fs)
        with torch.no_grad():
            for f, g in zip(fs, grads):
                f -= lr * g
    return np.array(out_steps), np.stack(out_w), [f.detach().numpy() for f in fs]


def two_tasks(n: int, r1: int, r2: int, n_obs: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m1, m2 = low_rank_matrix(n, r1, gen).numpy(), low_rank_matrix(n, r2, gen).numpy()
    mask = np.zeros(n * n)
    mask[torch.randperm(n * n, generator=gen)[:n_obs].numpy()] = 1
    return m1, m2, mask.reshape(n, n)


# --------------------------------------------------------------------------- section 2: deep factorisation


def test_masked_gradient_matches_autograd():
    rng = np.random.default_rng(0)
    w, m = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    mask = (rng.random((5, 4)) < 0.5).astype(float)
    wt = torch.tensor(w, requires_grad=True)
    (0.5 * ((wt - torch.tensor(m)) ** 2 * torch.tensor(mask)).sum() / mask.sum()).backward()
    np.testing.assert_allclose(masked_gradient(w, m, mask), wt.grad.numpy(), atol=1e-14)
    with pytest.raises(ValueError, match="Expected `mask` with at least one observed entry"):
        masked_gradient(w, m, 0 * mask)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_end_to_end_velocity_is_the_factor_flow(depth):
    """For balanced factors, -sum_j W_D..W_{j+1} (W_D..W_{j+1})^T G (W_{j-1}..W_1)^T W_{j-1}..W_1 (the chain
    rule through the factors) equals the end-to-end formula with fractional powers."""
    rng = np.random.default_rng(depth)
    n = 6
    # a balanced factorisation with distinct singular values: W_j = O_j diag(d) O_{j-1}^T
    d = np.array([1.3, 1.1, 0.9, 0.6, 0.4, 0.2])
    os_ = [orthogonal(n, rng) for _ in range(depth + 1)]
    fs = [os_[j + 1] @ np.diag(d) @ os_[j].T for j in range(depth)]
    assert balance_gap(fs) < 1e-12
    g = rng.normal(size=(n, n))
    w = np.linalg.multi_dot(fs[::-1]) if depth > 1 else fs[0]
    chain = np.zeros_like(w)
    for j in range(depth):  # dW/dt = sum_j (W_D..W_{j+1}) dW_j/dt (W_{j-1}..W_1), dW_j/dt = -A^T G B^T
        a = np.linalg.multi_dot([np.eye(n)] + fs[j + 1 :][::-1]) if j + 1 < depth else np.eye(n)
        b = np.linalg.multi_dot([np.eye(n)] + fs[:j][::-1]) if j > 0 else np.eye(n)
        chain -= a @ a.T @ g @ b.T @ b
    np.testing.assert_allclose(end_to_end_velocity(w, g, depth), chain, atol=1e-12)


def test_end_to_end_velocity_rejects_bad_depth():
    with pytest.raises(ValueError, match="Expected `depth` >= 1, got 0"):
        end_to_end_velocity(np.eye(2), np.eye(2), 0)


def test_end_to_end_ode_matches_gradient_descent_across_a_switch():
    """N = 20, D = 3, rank 3 -> rank 1, 300 observed entries, balanced (scaled orthogonal) init g = 0.1,
    lr = 0.05, 2000 steps on each task. Top-10 singular values: max_k |s_gd - s_ode| / s_ode,1 < 2%."""
    n, depth, lr, t1, t2 = 20, 3, 0.05, 2000, 2000
    m1, m2, mask = two_tasks(n, 3, 1, 300)
    rng = np.random.default_rng(1)
    factors = [0.1 ** (1 / depth) * orthogonal(n, rng) for _ in range(depth)]
    mt = [(torch.tensor(m1), torch.tensor(mask)), (torch.tensor(m2), torch.tensor(mask))]
    steps, w_gd, _ = gradient_descent(factors, lambda s: mt[0] if s < t1 else mt[1], lr, t1 + t2, 100)
    w_ode = integrate_end_to_end(w_gd[0], [(0.0, m1, mask), (lr * t1, m2, mask)], lr * steps, depth)
    s_gd = np.linalg.svd(w_gd, compute_uv=False)[:, :10]
    s_ode = np.linalg.svd(w_ode, compute_uv=False)[:, :10]
    rel = np.abs(s_gd - s_ode).max(axis=1) / s_ode[:, 0]
    assert rel.max() < 0.02, rel.max()
    # the dynamics really happened on both sides of the switch
    assert s_ode[steps == t1, 0] > 10 * 0.1 and np.linalg.norm(w_ode[-1] - m2) < 0.5 * np.linalg.norm(
        w_ode[steps == t1][0] - m2
    )


def test_integrate_end_to_end_splits_at_the_switch():
    """Integrating in one call across a switch equals two calls chained by hand."""
    rng = np.random.default_rng(3)
    n = 5
    m1, m2 = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    mask = np.ones((n, n))
    w0 = 0.1 * orthogonal(n, rng)
    both = integrate_end_to_end(
        w0, [(0.0, m1, mask), (3.0, m2, mask)], [1.0, 3.0, 7.0], depth=2, rtol=1e-10, atol=1e-12
    )
    first = integrate_end_to_end(w0, [(0.0, m1, mask)], [3.0], depth=2, rtol=1e-10, atol=1e-12)[-1]
    second = integrate_end_to_end(first, [(3.0, m2, mask)], [7.0], depth=2, t0=3.0, rtol=1e-10, atol=1e-12)[-1]
    np.testing.assert_allclose(both[1], first, atol=1e-12)
    np.testing.assert_allclose(both[2], second, atol=1e-9)
    with pytest.raises(ValueError, match="Expected the first piece to start at or before t0"):
        integrate_end_to_end(w0, [(1.0, m1, mask)], [2.0], depth=2)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_svd_velocity_reconstructs_the_end_to_end_velocity(depth):
    """d/dt (U S V^T) = dU S V^T + U dS V^T + U S dV^T equals the end-to-end formula; U^T dU is skew."""
    rng = np.random.default_rng(depth)
    n = 6
    w, g = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    u, s, vt = np.linalg.svd(w)
    ds, du, dv = svd_velocity(s, u, vt.T, g, depth)
    recon = du @ np.diag(s) @ vt + u @ np.diag(ds) @ vt + u @ np.diag(s) @ dv.T
    np.testing.assert_allclose(recon, end_to_end_velocity(w, g, depth), atol=1e-12)
    np.testing.assert_allclose(u.T @ du, -(u.T @ du).T, atol=1e-12)


def test_svd_velocity_errors():
    with pytest.raises(ValueError, match="Expected distinct singular values"):
        svd_velocity(np.array([1.0, 1.0]), np.eye(2), np.eye(2), np.eye(2), 2)
    with pytest.raises(ValueError, match="Expected positive singular values"):
        svd_velocity(np.array([1.0, 0.0]), np.eye(2), np.eye(2), np.eye(2), 2)


def test_svd_flow_matches_end_to_end_flow_across_a_switch():
    rng = np.random.default_rng(4)
    n, depth = 6, 3
    m1, m2 = (
        low_rank_matrix(n, 2, torch.Generator().manual_seed(0)).numpy(),
        low_rank_matrix(n, 3, torch.Generator().manual_seed(1)).numpy(),
    )
    mask = (rng.random((n, n)) < 0.7).astype(float)
    w0 = orthogonal(n, rng) @ np.diag(0.05 * (1 + 0.1 * np.arange(n))[::-1]) @ orthogonal(n, rng).T
    pieces = [(0.0, m1, mask), (20.0, m2, mask)]
    times = [5.0, 20.0, 40.0]
    s, u, v = integrate_svd_flow(w0, pieces, times, depth, rtol=1e-10, atol=1e-12)
    w = integrate_end_to_end(w0, pieces, times, depth, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.einsum("tik,tk,tjk->tij", u, s, v), w, atol=1e-6 * np.abs(w).max())


def test_balance_gap():
    rng = np.random.default_rng(0)
    assert balance_gap([rng.normal(size=(4, 4)), rng.normal(size=(4, 4))]) > 0.1
    assert balance_gap([np.eye(3)]) == 0.0


# --------------------------------------------------------------------------- section 3: Saxe


def aligned_factors(u, v, a0, rng):
    """D = 2, zero-balanced and aligned: W1 = R diag(sqrt a0) V^T, W2 = U diag(sqrt a0) R^T."""
    r = orthogonal(len(a0), rng)
    d = np.sqrt(a0)
    return [r @ np.diag(d) @ v.T, u @ np.diag(d) @ r.T]


def saxe_setting(n=20, seed=0):
    rng = np.random.default_rng(seed)
    u, v = orthogonal(n, rng), orthogonal(n, rng)
    s1 = np.zeros(n)
    s1[:4] = [12.0, 9.0, 6.0, 3.0]
    s2 = np.zeros(n)
    s2[:4] = [2.0, 4.0, 0.0, 14.0]  # shared vectors, values change (and their order)
    a0 = 0.01 * (1 + 0.1 * rng.random(n))
    return rng, u, v, s1, s2, a0


def saxe_gap(lr: float, t_switch: float = 160.0, t_end: float = 320.0, n: int = 20) -> float:
    """Max over steps and modes of |a_GD - a_Saxe| at full observation (tau = N^2, t = lr * step)."""
    rng, u, v, s1, s2, a0 = saxe_setting(n)
    m1, m2 = u @ np.diag(s1) @ v.T, u @ np.diag(s2) @ v.T
    full = torch.ones(n, n, dtype=torch.float64)
    k1 = int(round(t_switch / lr))
    mt = [(torch.tensor(m1), full), (torch.tensor(m2), full)]
    steps, w_gd, _ = gradient_descent(
        aligned_factors(u, v, a0, rng),
        lambda s: mt[0] if s < k1 else mt[1],
        lr,
        int(round(t_end / lr)),
        max(1, int(round(4 / lr))),
    )
    a_gd = np.einsum("ik,tij,jk->tk", u, w_gd, v)
    a_th = saxe_piecewise(lr * steps, [(0.0, s1), (t_switch, s2)], a0, time_constant=n * n)
    return float(np.abs(a_gd - a_th).max())


def test_saxe_mode_solves_the_logistic_ode():
    t = np.linspace(0, 3, 31)
    for s, a0 in ((5.0, 0.01), (0.0, 2.0), (1.0, 3.0)):
        sol = solve_ivp(lambda _, a: 2 / 7.0 * a * (s - a), (0, 3), [a0], t_eval=t, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(saxe_mode(t, s, a0, time_constant=7.0), sol.y[0], rtol=1e-9)
    with pytest.raises(ValueError, match="Expected `time_constant` > 0"):
        saxe_mode(1.0, 1.0, 1.0, time_constant=0.0)


def test_saxe_closed_form_gap_to_gradient_descent_shrinks_with_lr():
    """N = 20, D = 2, full observation, aligned zero-balanced init (a0 ~ 0.01), switch at t = 160 to a
    matrix with the same singular vectors. GD deviates from Saxe's curve by O(lr)."""
    gaps = [saxe_gap(lr) for lr in (4.0, 2.0, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.6 * gaps[1] < 0.6 * 0.6 * gaps[0]  # roughly halves with lr
    assert gaps[2] / 14.0 < 0.02  # within 2% of the largest target value at lr = 1


def test_saxe_piecewise_errors():
    with pytest.raises(ValueError, match="Expected pieces starting at or before t0"):
        saxe_piecewise([1.0], [(0.5, np.ones(1))], np.ones(1))


def test_joint_basis_detects_a_non_shared_basis():
    rng = np.random.default_rng(0)
    *_, res = joint_basis(
        0.01 * rng.normal(size=(5, 5)), [low_rank_matrix(5, 2, torch.Generator().manual_seed(0)).numpy()]
    )
    assert res > 1e-4


# --------------------------------------------------------------------------- section 4: Braun et al.


def gradient_flow_two_layer(w1, w2, pieces, times, rtol=1e-10, atol=1e-13):
    """Reference: integrate dW1/dt = W2^T (S - W2 W1), dW2/dt = (S - W2 W1) W1^T with solve_ivp."""
    nh, ni = w1.shape
    no = w2.shape[0]
    y = np.concatenate([w1.ravel(), w2.ravel()])
    out = []
    bounds = [p[0] for p in pieces[1:]] + [np.inf]
    for (start, s), end in zip(pieces, bounds):
        sel = [x for x in times if start <= x < end or (not np.isfinite(end) and x >= start)]
        stop = min(end, max(times))
        if stop <= start:
            break

        def rhs(_, z, s=s):
            a, b = z[: nh * ni].reshape(nh, ni), z[nh * ni :].reshape(no, nh)
            e = s - b @ a
            return np.concatenate([(b.T @ e).ravel(), (e @ a.T).ravel()])

        grid = sorted(set(sel) | {stop})
        sol = solve_ivp(rhs, (start, stop), y, method="DOP853", t_eval=grid, rtol=rtol, atol=atol)
        for x, z in zip(sol.t, sol.y.T):
            if x in sel:
                out.append((z[: nh * ni].reshape(nh, ni), z[nh * ni :].reshape(no, nh)))
        y = sol.y[:, -1]
    return out


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("nh", [6, 3])  # hidden width above the task's rank, and a bottleneck
def test_braun_matches_integrated_gradient_flow_fresh_and_pretrained(nh):
    """Fresh zero-balanced small init, then a switch from S1 to S2 (the state at the switch is a
    network pre-trained on S1): W, W1^T W1 and W2 W2^T agree with solve_ivp (rtol 1e-10) to 1e-6."""
    rng = np.random.default_rng(nh)
    ni, no = 5, 4
    k = min(nh, ni, no)
    s1, s2 = rng.normal(size=(no, ni)), rng.normal(size=(no, ni))
    r, v, u = orthogonal(nh, rng)[:, :k], orthogonal(ni, rng)[:, :k], orthogonal(no, rng)[:, :k]
    w1, w2 = 0.01 * r @ v.T, 0.01 * u @ r.T  # W2^T W2 = W1 W1^T = 1e-4 R R^T
    assert lambda_balance(w1, w2)[1] < 1e-12
    pieces = [(0.0, s1), (6.0, s2)]
    times = [0.0, 1.0, 3.0, 6.0, 8.0, 12.0]
    out = braun_trajectory(w1, w2, pieces, times)
    ref = gradient_flow_two_layer(w1, w2, pieces, times)
    for i, (a, b) in enumerate(ref):
        assert rel_err(out["w"][i], b @ a) < 1e-6
        assert rel_err(out["input_similarity"][i], a.T @ a) < 1e-6
        assert rel_err(out["output_similarity"][i], b @ b.T) < 1e-6


def test_braun_lambda_balanced():
    """lambda = 0.3 (a large, far from zero-balanced init) through a switch."""
    rng = np.random.default_rng(7)
    n, lam = 4, 0.3
    s1, s2 = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    a = np.array([0.3, 0.2, 0.15, 0.1])
    r, u, v = orthogonal(n, rng), orthogonal(n, rng), orthogonal(n, rng)
    w1, w2 = r @ np.diag(a) @ v.T, u @ np.diag(np.sqrt(a**2 + lam)) @ r.T
    lam_fit, res = lambda_balance(w1, w2)
    assert abs(lam_fit - lam) < 1e-12 and res < 1e-12
    assert lambda_balance(rng.normal(size=(n, n)), rng.normal(size=(n, n)))[1] > 0.1
    pieces, times = [(0.0, s1), (2.0, s2)], [0.5, 2.0, 5.0]
    out = braun_trajectory(w1, w2, pieces, times)
    for i, (p, q) in enumerate(gradient_flow_two_layer(w1, w2, pieces, times)):
        assert rel_err(out["w"][i], q @ p) < 1e-6


def test_braun_chaining_is_exact_at_large_times():
    """Many chained steps (mu_max t ~ 400) stay finite and converge to S; the chain and one step agree."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 3)) * 4
    q0 = np.vstack([0.01 * np.eye(3), 0.01 * np.eye(3)])
    mu_max = np.linalg.eigvalsh(riccati_f(s)).max()
    qq = braun_qqt(q0, s, [1.0 / mu_max, 400.0 / mu_max])
    assert np.all(np.isfinite(qq))
    np.testing.assert_allclose(qq[-1][3:, :3], s, atol=1e-8)
    mu, o = np.linalg.eigh(riccati_f(s))
    one = riccati_step(q0, mu, o, 1.0 / mu_max)
    np.testing.assert_allclose(qq[0], one @ one.T, atol=1e-14)
    with pytest.raises(ValueError, match="Expected `max_exponent` > 0"):
        braun_qqt(q0, s, [1.0], max_exponent=0)


def test_braun_reduces_to_saxe_for_an_aligned_init():
    rng, u, v, s1, s2, a0 = saxe_setting(n=8)
    s1, s2, a0 = s1[:8], s2[:8], a0[:8]
    w1, w2 = aligned_factors(u, v, a0, rng)
    times = np.array([0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0])
    out = braun_trajectory(w1, w2, [(0.0, u @ np.diag(s1) @ v.T), (1.0, u @ np.diag(s2) @ v.T)], times)
    a_braun = np.einsum("ik,tij,jk->tk", u, out["w"], v)
    a_saxe = saxe_piecewise(times, [(0.0, s1), (1.0, s2)], a0, time_constant=1.0)
    assert rel_err(a_braun, a_saxe) < 1e-9


def test_ntk_matches_the_jacobian():
    rng = np.random.default_rng(0)
    ni, nh, no, p = 3, 4, 2, 5
    w1, w2, x = rng.normal(size=(nh, ni)), rng.normal(size=(no, nh)), rng.normal(size=(ni, p))
    xt = torch.tensor(x)
    jac = torch.autograd.functional.jacobian(
        lambda a, b: (b @ a @ xt).reshape(-1), (torch.tensor(w1), torch.tensor(w2))
    )
    j = torch.cat([jj.reshape(no * p, -1) for jj in jac], dim=1).numpy()
    np.testing.assert_allclose(ntk(w1.T @ w1, w2 @ w2.T, x), j @ j.T, atol=1e-10)


def test_braun_trajectory_errors():
    with pytest.raises(ValueError, match="Expected `w2` with 2 columns"):
        braun_trajectory(np.ones((2, 3)), np.ones((3, 3)), [(0.0, np.ones((3, 3)))], [1.0])
    with pytest.raises(ValueError, match="Expected pieces starting at or before t0"):
        braun_trajectory(np.ones((2, 3)), np.ones((3, 2)), [(1.0, np.ones((3, 3)))], [1.0])
