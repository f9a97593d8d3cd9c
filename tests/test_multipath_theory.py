"""Pure-function checks of the two-pathway theory, the hierarchical task and the phase portraits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpl.families.multipath.data import hierarchical_targets, hierarchical_task
from cpl.families.multipath.figures import phase_portrait_figure
from cpl.families.multipath.model import svd_init_gains
from cpl.families.multipath.phase import INITS, flow_field, phase_trajectory
from cpl.theory import multipath as th

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hierarchical_task_structure_and_svd():
    t = hierarchical_task(3)
    y = t.targets
    assert tuple(y.shape) == (15, 8)
    assert y[0].tolist() == [1.0] * 8  # root
    assert y[1:3].sum().item() == 8 and torch.equal(y[7:], torch.eye(8, dtype=y.dtype))  # halves, leaves
    assert torch.allclose(t.u @ torch.diag(t.s) @ t.v.T, y, atol=1e-12)
    assert torch.allclose(t.u.T @ y @ t.v, torch.diag(t.s), atol=1e-12)
    assert np.allclose(t.s.numpy() ** 2, [15, 7, 3, 3, 1, 1, 1, 1])


def test_hierarchical_targets_rejects_negative_levels():
    with pytest.raises(ValueError, match=r"Expected `levels` >= 0, got -1"):
        hierarchical_targets(-1)


def _hand_euler(p, q, s, depth, lr, n, gate_b, lesion_a_mode):
    """Independent scalar loop: pathways a (0) and b (1), per mode, written out by hand."""
    p, q = [list(map(float, p[0])), list(map(float, p[1]))], [list(map(float, q[0])), list(map(float, q[1]))]
    for step in range(n):
        gated = gate_b[0] <= step < gate_b[1]
        for m in range(len(s)):
            lesioned = m == lesion_a_mode
            ka = 0.0 if lesioned else p[0][m] * q[0][m] ** (depth - 1)
            kb = p[1][m] * q[1][m] ** (depth - 1)
            omega = s[m] - ka - kb
            new = {}
            for P in (0, 1):
                if (P == 1 and gated) or (P == 0 and lesioned):
                    continue
                new[P] = (
                    p[P][m] + lr * q[P][m] ** (depth - 1) * omega,
                    q[P][m] + lr * p[P][m] * q[P][m] ** (depth - 2) * omega,
                )
            for P, (pp, qq) in new.items():
                p[P][m], q[P][m] = pp, qq
    return np.array(p), np.array(q)


@pytest.mark.parametrize("depth,c", [(3, 0.0), (4, 0.5)])
def test_discrete_map_matches_hand_written_loop(depth, c):
    s = hierarchical_task(3).s.numpy()
    p0 = np.stack([np.linspace(0.2, 0.3, 8), np.linspace(0.25, 0.15, 8)])
    q0 = np.sqrt(p0**2 + c)
    p, q = th.discrete_map(p0, q0, s, depth, 0.01, 300, [th.Gate(1, 20, 120)], [th.Lesion(0, 1)])
    hp, hq = _hand_euler(p0, q0, s, depth, 0.01, 300, (20, 120), 1)
    assert np.allclose(p[-1], hp, rtol=1e-12) and np.allclose(q[-1], hq, rtol=1e-12)
    # gated: b does not move inside the window; lesioned: a's mode 1 never moves
    assert np.array_equal(p[20:121, 1], np.broadcast_to(p[20, 1], p[20:121, 1].shape))
    assert np.all(p[:, 0, 1] == p0[0, 1])


def test_flow_conserves_q2_minus_p2_and_is_exact_for_the_logistic_case():
    s = np.array([10.0])
    p0 = np.array([[0.01], [0.02]])
    q0 = np.sqrt(p0**2 + 1.0)
    sol = th.gradient_flow(p0, q0, s, 5, lr=0.01, start_step=0, end_step=300, gates=[th.Gate(1, 0, 15)])
    p, q = sol(np.arange(301))
    assert np.max(np.abs(q**2 - p**2 - 1.0)) < 1e-8
    assert sol.boundaries == [0, 15, 300]  # split at the deficit's end


def test_flow_vs_discrete_deviation_is_order_lr():
    """The solve_ivp curve and the discrete map (= gradient descent) differ by O(lr)."""
    s = hierarchical_task(3).s.numpy()
    depth, devs = 4, {}
    for lr in (0.01, 0.005):
        d = svd_init_gains(8, depth, 0).numpy()
        p0 = np.stack([d, d])
        n, gates = int(round(10 / lr)), [th.Gate(1, 0, int(round(1.5 / lr)))]
        p, q = th.discrete_map(p0, p0.copy(), s, depth, lr, n, gates)
        pf, qf = th.gradient_flow(p0, p0.copy(), s, depth, lr, 0, n, gates)(np.arange(n + 1))
        devs[lr] = float(np.max(np.abs(th.strengths(p, q, depth) - th.strengths(pf, qf, depth))))
    print(
        f"\nmax |K_discrete - K_flow| (deficit 0-1.5 time units, D=4): lr=0.01: {devs[0.01]:.4f}, lr=0.005: "
        f"{devs[0.005]:.4f}"
    )
    assert devs[0.01] < 0.5
    assert 1.7 < devs[0.01] / devs[0.005] < 2.3  # first order in lr


def test_p_q_inverse_and_strength_velocity_match_the_ode():
    k = np.array([0.5, 2.0, 7.0])
    for depth, c in ((1, 0.0), (3, 0.0), (5, 1.0)):
        p, q = th.p_q_from_strength(k, depth, c)
        assert np.allclose(th.strengths(p, q, depth), k, rtol=1e-10)
        assert np.allclose(q**2 - p**2, c, atol=1e-10)
        # dK/dt from the chain rule on the (p, q) system
        pp, qq = np.stack([p, p[::-1]]), np.stack([q, q[::-1]])
        dp, dq = th.rhs(pp, qq, np.full(3, 10.0), depth)
        eps = 1e-7
        fd = (th.strengths(pp + eps * dp, qq + eps * dq, depth) - th.strengths(pp, qq, depth)) / eps
        va, vb = th.strength_velocity(k, k[::-1], 10.0, depth, c)
        assert np.allclose(fd[0], va, rtol=1e-5) and np.allclose(fd[1], vb, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Expected `c` >= 0, got -1"):
        th.p_q_from_strength(k, 3, -1)


def test_theory_argument_errors():
    z = np.ones((2, 1))
    with pytest.raises(ValueError, match=r"Expected `lr` > 0, got 0"):
        th.discrete_map(z, z, np.ones(1), 2, 0, 10)
    with pytest.raises(ValueError, match=r"Expected `end_step` >= `start_step` \(5\), got 3"):
        th.gradient_flow(z, z, np.ones(1), 2, 0.01, 5, 3)


def depth_table(depths=(2, 3, 4, 6), deficit_ends=(25, 50, 150), n_steps=2000, lr=0.01):
    """Pathway a's final share per mode after an early gating deficit of b, SVD init eps = 0.01.

    The exact discrete map equals gradient descent under this init (test_multipath_run proves it
    to 1e-4), so the table is what the runs give.
    """
    s = hierarchical_task(3).s.numpy()
    out = {}
    for end in deficit_ends:
        for depth in depths:
            d = svd_init_gains(8, depth, 0).numpy()
            p0 = np.stack([d, d])
            p, q = th.discrete_map(p0, p0.copy(), s, depth, lr, n_steps, [th.Gate(1, 0, end)])
            out[end, depth] = th.pathway_share(th.strengths(p[-1], q[-1], depth))
    return out


def test_depth_table_effect_grows_with_depth():
    table = depth_table()
    lines = ["deficit  D   share of a, modes 1,2,3(=4),5(=...8)"]
    for (end, depth), share in table.items():
        lines.append(f"0-{end:<5d} {depth:<3d} " + " ".join(f"{x:.3f}" for x in share[[0, 1, 2, 4]]))
    print("\n" + "\n".join(lines))
    for end in (25, 50):  # short deficits: the share grows with depth for every mode
        shares = np.stack([table[end, d] for d in (2, 3, 4, 6)])
        assert np.all(np.diff(shares, axis=0) > 0), (end, shares)
    assert all(np.all(table[150, d] > 0.9) for d in (2, 3, 4, 6))  # the paper's 150 steps: saturated


def test_phase_portrait_trajectories_and_figure():
    for name, init in INITS.items():
        early = phase_trajectory(5, 10.0, init, deficit=(0, 15))
        late = phase_trajectory(5, 10.0, init, deficit=(100, 115))
        none = phase_trajectory(5, 10.0, init)
        assert abs(early[-1].sum() - 10) < 1e-6 and abs(none[-1].sum() - 10) < 1e-6
        assert early[-1, 0] / 10 > 0.9, name  # early deficit: a wins
        assert np.allclose(late[-1], none[-1], atol=1e-6), name  # late deficit: nothing changes
    ka, kb, va, vb = flow_field(3, 10.0, 1.0, n=5)
    assert ka.shape == va.shape == (5, 5)
    fig, shares = phase_portrait_figure(INITS["large"], depths=(2, 5), n_epochs=150)
    assert shares["early", 5] > shares["early", 2] > 0.5 and abs(shares["late", 2] - 0.5) < 1e-6
    import matplotlib.pyplot as plt

    plt.close(fig)


def _phase_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "phase_portrait.py"
    spec = importlib.util.spec_from_file_location("phase_portrait_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_phase_portrait_script(tmp_path, capsys):
    script = _phase_script()
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0 and "--depths" in capsys.readouterr().out
    assert (
        script.main(
            ["--depths", "2", "5", "--epochs", "120", "--inits", "small", "--out", str(tmp_path), "--no-mlflow"]
        )
        == 0
    )
    assert (tmp_path / "phase_small.png").is_file()
    assert "early D=5" in capsys.readouterr().out
