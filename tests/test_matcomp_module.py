"""MatrixCompletionModule against a plain PyTorch loop; member equivalence; logged metrics."""

import lightning as L
import numpy as np
import pytest
import torch

from conftest import small_matcomp
from cpl.callbacks import TaskSwitch
from cpl.families.matcomp.experiment import build_module
from cpl.families.matcomp.model import DeepMatrixFactorization
from reference import errors, plain_matcomp_gd


def fit(module, callbacks, logger=None, steps=None):
    trainer = L.Trainer(
        max_steps=steps or module.max_steps,
        max_epochs=-1,
        logger=logger or False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(module)
    return trainer


class RecordW(L.Callback):
    def __init__(self):
        self.ws = {}

    def on_train_start(self, trainer, pl_module):
        self.ws[trainer.global_step] = pl_module.end_to_end().double().numpy().copy()

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.ws[trainer.global_step] = pl_module.end_to_end().double().numpy().copy()


def test_module_follows_plain_gd_across_the_switch(tmp_path, list_logger):
    cfg = small_matcomp(tmp_path, trainer={"dtype": "float64"})
    module = build_module([cfg])
    init = [f[0].detach().clone() for f in module.model.factors]
    rec = RecordW()
    fit(module, [TaskSwitch(cfg.switch.at_step), rec], logger=list_logger)
    t = module.targets
    ref = plain_matcomp_gd(
        init, t[0, 0], module.masks[0, 0], t[1, 0], module.masks[1, 0], cfg.optim.lr, cfg.switch.at_step, 60
    )
    for step in (1, 29, 30, 31, 60):
        np.testing.assert_allclose(rec.ws[step][0], ref[step], rtol=1e-9, atol=1e-12)
    # logged test errors (every 10 steps and at step 0) equal an independent computation
    fin_t, fin_m = t[1, 0].numpy(), module.masks[1, 0].numpy()
    logged = list_logger.series("test/final_error")
    assert sorted(logged) == [0, 10, 20, 30, 40, 50, 60]
    for step, value in logged.items():
        all_err, unobs = errors(ref[step], fin_t, fin_m)
        assert value == pytest.approx(all_err, rel=1e-9)
        assert list_logger.series("test/final_error_unobserved")[step] == pytest.approx(unobs, rel=1e-9)
    # the training loss is the current task's loss: pre-training task before the switch
    pre_t, pre_m = t[0, 0].numpy(), module.masks[0, 0].numpy()
    loss20 = 0.5 * ((ref[20] - pre_t)[pre_m == 1] ** 2).mean()
    assert list_logger.series("train/loss")[20] == pytest.approx(loss20, rel=1e-9)
    cur_all, _ = errors(ref[20], pre_t, pre_m)
    assert list_logger.series("test/current_error")[20] == pytest.approx(cur_all, rel=1e-9)
    assert list_logger.series("test/current_error")[40] == pytest.approx(logged[40], rel=1e-12)


def test_member_equivalence(tmp_path):
    """Member e of an E = 3 module follows the trajectory of a separate E = 1 run with the same seed."""
    cfgs = [
        small_matcomp(tmp_path, seed=s, task={"n_obs": 120 + 20 * s}, model={"init_scale": 0.1 * (s + 1)})
        for s in range(3)
    ]
    batched = build_module(cfgs)
    singles = [build_module([cfg]) for cfg in cfgs]
    for e, single in enumerate(singles):
        for fb, fs in zip(batched.model.factors, single.model.factors):
            assert torch.equal(fb[e], fs[0])  # same init, bit for bit
        assert torch.equal(batched.targets[:, e], single.targets[:, 0]) and torch.equal(
            batched.masks[:, e], single.masks[:, 0]
        )
    rec = RecordW()
    fit(batched, [TaskSwitch([10, 30, 50]), rec], steps=60)
    for e, (single, at) in enumerate(zip(singles, [10, 30, 50])):
        rec1 = RecordW()
        fit(single, [TaskSwitch(at), rec1], steps=60)
        for step in (0, 25, 60):
            np.testing.assert_allclose(rec.ws[step][e], rec1.ws[step][0], rtol=1e-5, atol=1e-6)


def test_init_scale_and_balance():
    for init in ("gaussian", "balanced"):
        net = DeepMatrixFactorization(100, 3, seeds=[0, 1], init=init, init_scale=1e-3, dtype=torch.float64)
        norms = net().norm(dim=(-1, -2))
        assert torch.all((norms > 0.5e-3 * 10) & (norms < 2e-3 * 10)), norms  # ~ g sqrt(N)
    net = DeepMatrixFactorization(30, 4, seeds=[0], init="balanced", init_scale=1e-2, dtype=torch.float64)
    f = [w[0] for w in net.factors]
    for lo, hi in zip(f[:-1], f[1:]):
        torch.testing.assert_close(hi.T @ hi, lo @ lo.T)


def test_divergence_raises_with_advice(tmp_path):
    from cpl.core.module import DivergenceError

    cfg = small_matcomp(tmp_path, optim={"lr": 500.0}, model={"init_scale": 1.0})
    with pytest.raises(DivergenceError, match=r"became (nan|inf).*Try a lower learning rate \(optim.lr=500.0\)"):
        fit(build_module([cfg]), [TaskSwitch(cfg.switch.at_step)])


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_closed_form_gradient_equals_autograd(tmp_path, depth):
    """MatrixCompletionModule.backward_step (closed form) against autograd on the same loss."""
    module = build_module(
        [small_matcomp(tmp_path, seed=s, model={"depth": depth}, trainer={"dtype": "float64"}) for s in range(3)]
    )
    module.set_member_schedule([0, 0, 0], [10, 10, 0], [None, None, None])  # member 2 inactive
    module._select(0)
    loss = module.backward_step()
    grads = [p.grad[:2].clone() for p in module.model.factors]
    for p in module.model.factors:
        p.grad = None
    ref = module.loss()
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-12)
    for g, p in zip(grads, module.model.factors):
        torch.testing.assert_close(g, p.grad[:2], rtol=1e-10, atol=1e-14)
        assert torch.count_nonzero(p.grad[2]) == 0  # autograd agrees: no gradient for the inactive member


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("members", [(0, 1), (0, 2)])  # a slice of the parameters, and an index
def test_fused_sgd_step_equals_gradient_then_sgd(tmp_path, depth, members):
    """sgd_step (update fused into the products) against backward_step followed by the SGD update."""
    cfgs = [
        small_matcomp(tmp_path, seed=s, model={"depth": depth, "init_scale": 0.5}, trainer={"dtype": "float64"})
        for s in range(3)
    ]
    fused, plain = build_module(cfgs), build_module(cfgs)
    ends = [10 if e in members else 0 for e in range(3)]
    for m in (fused, plain):
        m.set_member_schedule([0, 0, 0], ends, [None, None, None])
        m._select(0)
    assert isinstance(fused.active, slice) == (members == (0, 1))
    before = [p.detach().clone() for p in fused.model.factors]
    lr = 0.3
    loss = fused.sgd_step(lr)
    ref = plain.backward_step()
    assert float(loss) == pytest.approx(float(ref), rel=1e-12)
    for p, q, b in zip(fused.model.factors, plain.model.factors, before):
        expected = b.clone()
        expected[list(members)] -= lr * q.grad[list(members)]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)
        assert p.grad is None
        assert not torch.equal(p.detach()[list(members)], b[list(members)])  # the step did move the active members


def test_fused_and_unfused_runs_agree(tmp_path):
    """optim.fused=false (gradients in p.grad, then the optimizer) takes the same steps as the fused default."""
    ws = []
    for fused in (True, False):
        cfg = small_matcomp(tmp_path, optim={"fused": fused}, trainer={"dtype": "float64", "steps_per_call": 5})
        module = build_module([cfg])
        assert module.fused is fused
        fit(module, [TaskSwitch(cfg.switch.at_step)])
        ws.append(module.end_to_end())
    torch.testing.assert_close(ws[0], ws[1], rtol=1e-10, atol=1e-13)
