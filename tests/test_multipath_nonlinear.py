"""The multipath ``nonlinearity`` option: identity is the deep linear network, relu/tanh against a
plain PyTorch loop (gating deficit and lesion hooks included), logging of strengths and shares, and
the ODE reference's refusal of a nonlinear network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpl.config import ConfigError, load_config
from cpl.families.multipath.data import hierarchical_task
from cpl.families.multipath.model import MultiPathwayNet
from cpl.families.multipath.module import MultiPathwayModule
from cpl.families.multipath.reference import MultiPathwayReference
from test_multipath_run import run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.width=16", "train.max_steps=60", "deficit.start=10", "deficit.end=40", "model.depth=3"]
#: the nonlinearities written out independently of torch.relu / torch.tanh
ACT = {
    "identity": lambda x: x,
    "relu": lambda x: x.clamp_min(0),
    "tanh": lambda x: (x.exp() - (-x).exp()) / (x.exp() + (-x).exp()),
}


def fit(cfg) -> MultiPathwayModule:
    """Train the run of a config (the same Trainer as tests/test_multipath_run.py, through its ``run``)."""
    exp, _, _ = run(cfg)
    return exp.module


def plain_loop(factors, act, target, lr, steps, gate=None, lesion=None, basis=None):
    """Full-batch GD written out by hand: pathways as lists of (out, in) matrices on one-hot inputs.

    ``gate = (pathway, start, end)`` detaches that pathway's output on steps [start, end);
    ``lesion = (pathway, mode)`` projects its input and output off task mode ``mode`` at every step.
    """
    ws = {p: [f.clone().requires_grad_(True) for f in fs] for p, fs in factors.items()}
    x = torch.eye(target.shape[1], dtype=target.dtype)

    def path(p, w):
        h = x
        if lesion is not None and lesion[0] == p:
            v = basis[1][:, lesion[1] : lesion[1] + 1]
            h = h - v @ (v.T @ h)
        for i, m in enumerate(w):
            h = m @ h
            if i < len(w) - 1:
                h = act(h)
        if lesion is not None and lesion[0] == p:
            u = basis[0][:, lesion[1] : lesion[1] + 1]
            h = h - u @ (u.T @ h)
        return h

    for t in range(steps):
        y = 0
        for p, w in ws.items():
            out = path(p, w)
            y = y + (out.detach() if gate is not None and gate[0] == p and gate[1] <= t < gate[2] else out)
        loss = 0.5 * (y - target).pow(2).sum()
        params = [m for w in ws.values() for m in w if m.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for m, g in zip(params, grads):
                if g is not None:
                    m -= lr * g
    return {p: [m.detach() for m in w] for p, w in ws.items()}


def pathway_map(factors, act):
    """A pathway's outputs on the one-hot items (no hooks)."""
    h = torch.eye(factors[0].shape[1], dtype=factors[0].dtype)
    for i, m in enumerate(factors):
        h = m @ h
        if i < len(factors) - 1:
            h = act(h)
    return h


def initial_factors(cfg):
    from cpl.families.multipath.experiment import build_module

    return {p: [f.detach()[0].clone() for f in path.factors] for p, path in build_module(cfg).pathways.items()}


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh", "identity"])
def test_against_plain_pytorch_loop_with_gating_and_lesion(nonlinearity):
    over = SMALL + [f"model.nonlinearity={nonlinearity}", "ode.enabled=false", "lesion.enabled=true", "lesion.mode=1"]
    cfg = load_config("multipath_depth4_gating", over)
    start = initial_factors(cfg)
    module = fit(cfg)
    task = hierarchical_task(3)
    factors = plain_loop(
        start,
        ACT[nonlinearity],
        task.targets.double(),
        lr=0.01,
        steps=60,
        gate=("b", 10, 40),
        lesion=("a", 1),
        basis=(task.u.double(), task.v.double()),
    )
    for p, fs in factors.items():
        for i, f in enumerate(fs):
            got = module.pathways[p].factors[i].detach()[0]
            assert torch.allclose(got, f, rtol=0, atol=1e-12), (p, i)
        # the module's readout after the run (hooks removed) is the pathway's map on the items
        assert torch.allclose(module.pathway_map(p)[0], pathway_map(fs, ACT[nonlinearity]), rtol=0, atol=1e-12)
    moved = max(float((module.pathways["a"].factors[0][0] - start["a"][0]).abs().max()), 0.0)
    assert moved > 1e-4  # the run did learn something


def test_identity_is_the_deep_linear_network_exactly():
    cfg = load_config("multipath_depth4_gating", SMALL + ["model.nonlinearity=identity"])
    linear = load_config("multipath_depth4_gating", SMALL)
    assert linear.model.nonlinearity == "identity"  # the default
    a, b = fit(cfg), fit(linear)
    for p in ("a", "b"):
        # the pathway's map on one-hot inputs is the product of its factors
        assert torch.allclose(a.pathway_map(p), a.pathways[p].weight(), rtol=0, atol=1e-14)
        for fa, fb in zip(a.pathways[p].factors, b.pathways[p].factors):
            assert torch.equal(fa, fb)


def test_nonlinear_net_output_differs_and_has_no_matrix():
    task = hierarchical_task(3)
    kw = dict(depth=3, width=16, basis=(task.u, task.v), dtype=torch.float64, seeds=[0])
    lin, relu = MultiPathwayNet(8, 15, **kw), MultiPathwayNet(8, 15, nonlinearity="relu", **kw)
    x = torch.eye(8, dtype=torch.float64).expand(1, 8, 8)
    assert not torch.allclose(lin(x), relu(x))  # same init, a different function
    with pytest.raises(ValueError, match="nonlinearity='relu' has no end-to-end matrix"):
        relu.pathways["a"].weight()
    with pytest.raises(ValueError, match=r"Expected `nonlinearity` in \('identity', 'relu', 'tanh'\), got 'gelu'"):
        MultiPathwayNet(8, 15, nonlinearity="gelu", **kw)


def test_ode_refuses_a_nonlinear_network_at_config_time():
    with pytest.raises(ConfigError) as err:
        load_config("multipath_depth4_gating", ["model.nonlinearity=tanh"])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        "Invalid value for 'model.nonlinearity': got 'tanh'; allowed: identity while ode.enabled=true (the "
        "two-pathway ODE holds for linear pathways only; set ode.enabled=false)"
    )
    with pytest.raises(ConfigError, match="'model.nonlinearity': got 'gelu'; allowed: identity, relu, tanh"):
        load_config("multipath_depth4_gating", ["model.nonlinearity=gelu", "ode.enabled=false"])
    assert load_config("multipath_depth4_gating", ["model.nonlinearity=tanh", "ode.enabled=false"])


def test_ode_reference_refuses_a_nonlinear_module():
    task = hierarchical_task(3)
    net = MultiPathwayNet(8, 15, depth=2, width=10, basis=(task.u, task.v), dtype=torch.float64, nonlinearity="relu")
    with pytest.raises(ValueError, match="ODE reference holds for linear pathways only, got nonlinearity='relu'"):
        MultiPathwayReference().prepare(MultiPathwayModule(net, task), [], 0.01, 0, 10)


def test_strengths_and_shares_are_logged_for_a_nonlinear_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from cpl.run import train

    over = SMALL + [
        "model.nonlinearity=tanh",
        "ode.enabled=false",
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
        f"trainer.checkpoint_dir={tmp_path}",
        "trainer.progress_bar=false",
        "log.figures=false",
    ]
    cfg = load_config("multipath_depth4_gating", over)
    start = initial_factors(cfg)
    result = train(cfg)
    task = hierarchical_task(3)
    factors = plain_loop(start, ACT["tanh"], task.targets.double(), lr=0.01, steps=60, gate=("b", 10, 40))
    maps = {p: pathway_map(fs, ACT["tanh"]) for p, fs in factors.items()}
    k = {p: torch.diagonal(task.u.double().T @ m @ task.v.double()).numpy() for p, m in maps.items()}
    metrics = MlflowClient(f"sqlite:///{tmp_path}/m.db").get_run(result.run_id).data.metrics
    for p in ("a", "b"):
        logged = np.array([metrics[f"pathway_{p}_ref/{i + 1}"] for i in range(8)])
        assert np.allclose(logged, k[p], rtol=0, atol=1e-10)
    share_a = k["a"].sum() / (k["a"].sum() + k["b"].sum())
    assert metrics["final/share_a"] == pytest.approx(share_a, abs=1e-10)
