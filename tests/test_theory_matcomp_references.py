"""Matrix-completion references on the module, the ``ode`` config section, the new task / init
options, and the two confs (fast_dev_run smoke tests and short tracked runs)."""

from __future__ import annotations

import warnings

import mlflow
import numpy as np
import pytest
import torch

from cpl.callbacks import ODEReference, ScheduleEvent, TaskSwitch
from cpl.config import ConfigError, load_config, make_config
from cpl.families.matcomp.data import make_matcomp_tasks
from cpl.families.matcomp.model import DeepMatrixFactorization
from cpl.families.matcomp.references import BraunReference, FactorizationReference, SaxeReference, make_reference
from cpl.run import build, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One temporary MLflow store for the module (creating a sqlite store takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/m.db"


def small(tmp_path, **over):
    """A small config (N = 20) with the ODE on, every path in tmp_path."""
    base = dict(
        task=dict(size=20, pretrain_rank=3, final_rank=2, n_obs=400, shared_basis=True),
        model=dict(depth=2, init="aligned", init_scale=0.01),
        optim=dict(lr=0.5),
        switch=dict(at_step=300),
        train=dict(steps_after_switch=300),
        log=dict(every_n_steps=100, sv_every_n_steps=50, sv_top_k=5),
        ode=dict(enabled=True, kind="saxe", every_n_steps=50),
        tracking=dict(uri=f"sqlite:///{tmp_path}/m.db"),
        trainer=dict(progress_bar=False, checkpoint_dir=str(tmp_path), checkpoint_every_n_steps=0, dtype="float64"),
    )
    for key, value in over.items():
        base.setdefault(key, {}).update(value) if isinstance(value, dict) else base.__setitem__(key, value)
    return make_config(**base)


# --------------------------------------------------------------------------- config, tasks, init


def test_default_config_is_unchanged():
    cfg = make_config()
    assert cfg.ode.enabled is False and cfg.task.shared_basis is False and cfg.model.init == "gaussian"
    assert not any(
        type(cb).__name__ == "ODEReference"
        for cb in build(
            make_config(task=dict(size=10, n_obs=50), switch=dict(at_step=2), train=dict(steps_after_switch=3))
        ).callbacks
    )


@pytest.mark.parametrize(
    "over, match",
    [
        (
            dict(ode=dict(kind="euler")),
            "Invalid value for 'ode.kind': got 'euler'; allowed: factorization, saxe or braun",
        ),
        (dict(ode=dict(every_n_steps=0)), "Invalid value for 'ode.every_n_steps'"),
        (dict(ode=dict(rtol=0.0)), "Invalid value for 'ode.rtol'"),
        (
            dict(ode=dict(enabled=True, kind="saxe")),
            r"Invalid value for 'model.depth': got 3; allowed: 2 with ode.kind=saxe",
        ),
        (dict(ode=dict(enabled=True, kind="braun")), r"allowed: 2 with ode.kind=braun"),
        (dict(model=dict(init="orthogonal")), "allowed: gaussian, balanced or aligned"),
    ],
)
def test_ode_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**over)


def test_default_tasks_and_inits_are_bit_identical():
    """The new options leave the foundation's draws alone."""
    a = make_matcomp_tasks(12, 3, 2, 50, seed=4)
    b = make_matcomp_tasks(12, 3, 2, 50, seed=4, shared_basis=False)
    for x, y in zip(a.as_dict().values(), b.as_dict().values()):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    g = DeepMatrixFactorization(8, 3, [1], "gaussian", 1e-3)
    g2 = DeepMatrixFactorization(8, 3, [1], "gaussian", 1e-3, bases=None)
    assert all(torch.equal(p, q) for p, q in zip(g.factors, g2.factors))


def test_shared_basis_tasks_share_singular_vectors():
    t = make_matcomp_tasks(15, 4, 3, 100, seed=0, shared_basis=True, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(t.pretrain_target)
    proj = u.T @ t.final_target @ vh.T
    assert torch.allclose(proj, torch.diag(torch.diagonal(proj)), atol=1e-10)
    assert round(float(t.pretrain_target.norm()), 8) == round(float(t.final_target.norm()), 8) == 15.0
    assert int(torch.linalg.matrix_rank(t.final_target)) == 3


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_aligned_init_is_balanced_and_aligned(depth):
    from cpl.theory.factorization import balance_gap

    rng = np.random.default_rng(0)
    u, v = (torch.tensor(np.linalg.qr(rng.normal(size=(6, 6)))[0]) for _ in range(2))
    net = DeepMatrixFactorization(6, depth, [0, 1], "aligned", 0.01, dtype=torch.float64, bases=[(u, v), (u, v)])
    w = net()[1]
    a = u.T @ w @ v
    assert torch.allclose(a, torch.diag(torch.diagonal(a)), atol=1e-15)
    assert (torch.diagonal(a) >= 0.01).all() and (torch.diagonal(a) < 0.0111).all()
    assert balance_gap([f[1].detach().numpy() for f in net.factors]) < 1e-12
    with pytest.raises(ValueError, match="Expected `bases`"):
        DeepMatrixFactorization(6, depth, [0], "aligned")


# --------------------------------------------------------------------------- references on a module


def fitted(cfg, steps: int):
    """Train the module of ``cfg`` by hand for ``steps`` GD steps (no Lightning) and return it."""
    exp = build(cfg)
    module = exp.module
    opt = torch.optim.SGD(module.parameters(), lr=cfg.optim.lr)
    for step in range(steps):
        if step == cfg.switch.at_step:
            module.set_task("final")
        opt.zero_grad()
        module.loss().backward()
        opt.step()
    return module


@pytest.mark.parametrize("kind", ["factorization", "saxe", "braun"])
def test_reference_predicts_gd_through_the_switch(tmp_path, kind):
    cfg = small(tmp_path, ode=dict(kind=kind))
    module = build(cfg).module
    schedule = TaskSwitch(at_step=300).schedule_events()
    ref = module.ode_reference(schedule)
    ref.prepare(module, schedule, cfg.optim.lr, 0, 600)
    assert ref.conditions() is None
    before = ref.predict(0)["sv"]
    np.testing.assert_allclose(before, ref.observe(module)["sv"], rtol=1e-10)
    module = fitted(cfg, 600)
    got, want = ref.observe(module)["sv"], ref.predict(600)["sv"]
    assert got.shape == want.shape == (1, 5)
    assert np.abs(got - want).max() / want.max() < 0.03
    assert want.max() > 100 * before.max()  # it learned something


def test_references_agree_with_each_other(tmp_path):
    """Aligned zero-balanced init, full observation, D = 2: gradient flow, Saxe and Braun coincide."""
    cfg = small(tmp_path)
    module = build(cfg).module
    schedule = [ScheduleEvent("switch", start=300, info={"from": "pretrain", "to": "final"})]
    preds = {}
    for kind in ("factorization", "saxe", "braun"):
        ref = make_reference(kind, top_k=5, rtol=1e-10)
        ref.prepare(module, schedule, 0.5, 0, 600)
        preds[kind] = np.stack([ref.predict(s)["sv"] for s in (100, 300, 450, 600)])
    scale = preds["saxe"].max()
    assert np.abs(preds["braun"] - preds["saxe"]).max() / scale < 1e-8
    assert np.abs(preds["factorization"] - preds["saxe"]).max() / scale < 1e-5


def test_reference_conditions_out_of_conditions(tmp_path):
    cfg = small(tmp_path, task=dict(n_obs=300, shared_basis=False), model=dict(init="gaussian"))
    module = build(cfg).module
    for cls in (SaxeReference, BraunReference):
        ref = cls(top_k=3)
        ref.prepare(module, [], 0.5, 0, 10)
        why = ref.conditions()
        assert "only 300 of the 400 entries are observed" in why
        assert ("do not share singular vectors" in why) if cls is SaxeReference else ("not lambda-balanced" in why)
    ref = FactorizationReference(top_k=3)
    ref.prepare(module, [], 0.5, 0, 10)
    assert "not balanced" in ref.conditions()
    ref.prepare(module, [ScheduleEvent("gate", start=0, end=5, target="b")], 0.5, 0, 10)
    assert "schedule events of kind 'gate' are not modelled" in ref.conditions()


def test_reference_errors(tmp_path):
    with pytest.raises(ValueError, match="Expected `kind` in"):
        make_reference("euler")
    with pytest.raises(ValueError, match="Expected `top_k` >= 1, got 0"):
        SaxeReference(top_k=0)
    with pytest.raises(ValueError, match="Expected `rtol` > 0"):
        FactorizationReference(rtol=-1.0)
    module = build(small(tmp_path, model=dict(depth=3, init="balanced"), ode=dict(enabled=False))).module
    with pytest.raises(ValueError, match="Expected a depth-2 factorisation for Saxe's closed form, got depth 3"):
        SaxeReference().prepare(module, [], 0.5, 0, 10)
    with pytest.raises(ValueError, match="Expected `ode_kind` in"):
        type(module)(
            module.model,
            {"pretrain": (module.targets[0], module.masks[0]), "final": (module.targets[1], module.masks[1])},
            lr=0.1,
            ode_kind="x",
        )


def test_task_pieces_follow_the_schedule(tmp_path):
    module = build(small(tmp_path)).module
    ev = [ScheduleEvent("switch", start=300, info={"from": "pretrain", "to": "final"})]
    assert MatCompReferenceOf(module, ev, 0) == [[(0, 0), (300, 1)]]
    assert MatCompReferenceOf(module, ev, 300) == [[(300, 1)]]  # resumed at/after the switch
    assert MatCompReferenceOf(module, [], 0) == [[(0, 0)]]


def MatCompReferenceOf(module, schedule, start):
    from cpl.families.matcomp.references import MatCompReference

    return MatCompReference.task_pieces(module, schedule, start)


# --------------------------------------------------------------------------- through train(): MLflow


def test_out_of_conditions_run_warns_tags_and_still_logs(tmp_path, store):
    cfg = small(
        tmp_path,
        tracking=dict(uri=store),
        task=dict(n_obs=300),
        model=dict(init="balanced"),
        ode=dict(kind="braun"),
        switch=dict(at_step=50),
        train=dict(steps_after_switch=50),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg)
    assert sum("ODEReference" in str(w.message) for w in caught) == 1
    client = mlflow.MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["cpl.ode_warning"].startswith("only 300 of the 400 entries are observed")
    assert [m.step for m in client.get_metric_history(result.run_id, "ode/sv_1")] == [0, 50, 100]
    assert len(client.get_metric_history(result.run_id, "sgd/sv_1")) == 3


@pytest.mark.parametrize("conf", ["matcomp_ode_depth3", "matcomp_closed_form"])
def test_conf_fast_dev_run(conf, tmp_path):
    import lightning as L

    cfg = load_config(conf, [f"trainer.checkpoint_dir={tmp_path}"])
    exp = build(cfg)
    assert any(isinstance(cb, ODEReference) for cb in exp.callbacks)
    trainer = L.Trainer(
        fast_dev_run=True, callbacks=exp.callbacks, enable_progress_bar=False, enable_model_summary=False, logger=False
    )
    trainer.fit(exp.module)
    assert trainer.global_step == 1


@pytest.mark.parametrize(
    "conf, over",
    [
        # N = 40 keeps the rank-8 -> rank-2 dynamics of the depth-3 conf inside 400 steps with a larger init
        (
            "matcomp_ode_depth3",
            [
                "task.size=40",
                "task.n_obs=800",
                "model.init_scale=0.3",
                "switch.at_step=200",
                "train.steps_after_switch=200",
                "ode.every_n_steps=50",
            ],
        ),
        (
            "matcomp_closed_form",
            [
                "task.size=30",
                "task.n_obs=900",
                "switch.at_step=300",
                "train.steps_after_switch=300",
                "ode.every_n_steps=50",
                "optim.lr=2.0",
            ],
        ),
    ],
)
def test_conf_short_tracked_run_logs_ode_and_overlay(conf, over, tmp_path, store):
    cfg = load_config(
        conf, over + [f"tracking.uri={store}", f"trainer.checkpoint_dir={tmp_path}", "trainer.progress_bar=false"]
    )
    result = train(cfg)
    client = mlflow.MlflowClient(result.tracking_uri)
    history = client.get_metric_history(result.run_id, "ode/sv_1")
    assert [m.step for m in history] == list(range(0, cfg.switch.at_step + cfg.train.steps_after_switch + 1, 50))
    sgd = [m.value for m in client.get_metric_history(result.run_id, "sgd/sv_1")]
    ode = [m.value for m in history]
    assert np.max(np.abs(np.subtract(sgd, ode))) / np.max(ode) < 0.05
    assert "cpl.ode_warning" not in client.get_run(result.run_id).data.tags
    names = [a.path for a in client.list_artifacts(result.run_id, "figures")]
    assert "figures/ode_overlay.png" in names and "figures/singular_values.png" in names
