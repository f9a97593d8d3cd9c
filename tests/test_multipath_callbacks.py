"""GatingDeficit and ModeLesion: short real runs against hand-written PyTorch loops, reuse on a
non-cpl nonlinear module, the module contract and error messages."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from cpl.callbacks import GatingDeficit, ModeLesion, ScheduleEvent, SingularValueLogger, collect_schedule
from cpl.families.multipath.data import hierarchical_task
from cpl.families.multipath.model import MultiPathwayNet
from cpl.families.multipath.module import MultiPathwayModule

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _trainer(callbacks, max_steps):
    return L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def _module(depth=3, width=12, init="svd", max_steps=60):
    task = hierarchical_task(3)
    net = MultiPathwayNet(
        8, 15, depth=depth, width=width, basis=(task.u, task.v), init=init, init_scale=0.05, dtype=torch.float64
    )
    return MultiPathwayModule(net, task, lr=0.05, log_every_n_steps=10, max_steps=max_steps)


def _factors(module):
    return {name: [f.detach().clone() for f in module.pathways[name].factors] for name in module.pathway_names}


def _prod(fs):
    w = fs[0]
    for f in fs[1:]:
        w = f @ w
    return w


def _hand_loop(factors, target, lr, steps, gate=None, lesion=None):
    """Plain PyTorch GD on 1/2 ||Y - W_a' - W_b'||^2 with the detach / projection done by hand."""
    params = {n: [f.clone().requires_grad_(True) for f in fs] for n, fs in factors.items()}
    for step in range(steps):
        out = 0
        for name, fs in params.items():
            w = _prod(fs)
            if lesion is not None and name == lesion[0] and lesion[4] <= step < lesion[5]:
                u, v = lesion[1], lesion[2]
                w = (
                    (torch.eye(u.shape[0], dtype=w.dtype) - u[:, None] * u[None])
                    @ w
                    @ (torch.eye(v.shape[0], dtype=w.dtype) - v[:, None] * v[None])
                )
            if gate is not None and name == gate[0] and gate[1] <= step < gate[2]:
                w = w.detach()
            out = out + w
        loss = 0.5 * (out - target).pow(2).sum()
        grads = torch.autograd.grad(loss, [f for fs in params.values() for f in fs], allow_unused=True)
        with torch.no_grad():
            for f, g in zip([f for fs in params.values() for f in fs], grads):
                if g is not None:
                    f -= lr * g
    return {n: [f.detach() for f in fs] for n, fs in params.items()}


def test_gating_deficit_matches_hand_detached_loop():
    module = _module()
    init = _factors(module)
    gate = GatingDeficit(pathway="b", start=10, end=35, root="pathways")
    _trainer([gate], 60).fit(module)
    ref = _hand_loop(init, module.targets, module.lr, 60, gate=("b", 10, 35))
    for name in ("a", "b"):
        for got, want in zip(module.pathways[name].factors, ref[name]):
            assert torch.allclose(got.detach(), want, rtol=0, atol=1e-12)
    assert gate.active_steps == 25
    assert not module.pathways["b"]._forward_hooks  # removed at teardown


def test_gated_pathway_does_not_move_inside_the_window():
    module = _module()
    before = _factors(module)["b"]

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 20:
                self.mid = [f.detach().clone() for f in pl_module.pathways["b"].factors]

    probe = Probe()
    _trainer([GatingDeficit("b", start=0, end=20, root="pathways"), probe], 40).fit(module)
    assert all(torch.equal(x, y) for x, y in zip(before, probe.mid))
    assert not all(torch.equal(x, y.detach()) for x, y in zip(before, module.pathways["b"].factors))


def test_mode_lesion_matches_hand_projected_loop_and_ends():
    module = _module()
    init = _factors(module)
    u, v = module.task_basis()
    lesion = ModeLesion(pathway="a", mode=1, start=5, end=40, root="pathways", layout="columns")
    _trainer([lesion], 60).fit(module)
    ref = _hand_loop(init, module.targets, module.lr, 60, lesion=("a", u[0, :, 1], v[0, :, 1], None, 5, 40))
    for name in ("a", "b"):
        for got, want in zip(module.pathways[name].factors, ref[name]):
            assert torch.allclose(got.detach(), want, rtol=0, atol=1e-12)
    assert lesion.active_steps == 35


def test_mode_lesion_zeroes_the_mode_in_the_task_basis():
    module = _module(max_steps=20)
    lesion = ModeLesion(pathway="a", mode=2, root="pathways", layout="columns")
    svs = SingularValueLogger(
        every_n_steps=5,
        top_k=8,
        matrix="pathway_map",
        matrix_kwargs={"name": "a"},
        reference="task_basis",
        prefix="pathway_a",
    )
    _trainer([lesion, svs], 20).fit(module)
    k = svs.history()["projections"][:, 0]  # (T, 8): K_a per mode, as logged
    assert torch.all(k[:, 2].abs() < 1e-12) and torch.all(k[:, [0, 1, 3]].abs() > 1e-3)
    raw = module.mode_strengths(raw=True)[0, 0]
    assert raw[2].abs() > 1e-3  # the parameters still carry the (frozen) mode


class TwoBranch(L.LightningModule):
    """A non-cpl module: two nonlinear branches on a regression task, automatic optimisation."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.ModuleDict(
            {
                "left": nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)),
                "right": nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)),
            }
        )
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(16, 4, generator=g)
        self.y = torch.randn(16, 2, generator=g)

    def forward(self, x):
        return self.encoder["left"](x) + self.encoder["right"](x)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=16)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 0.5 * (self(x) - y).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_gating_deficit_on_a_non_cpl_nonlinear_module():
    module = TwoBranch()
    ref = copy.deepcopy(module)
    gate = GatingDeficit(pathway="right", root="encoder", start=0, end=15)
    _trainer([gate], 25).fit(module)
    # the same by hand: detach the right branch for the first 15 steps
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    right0 = [p.detach().clone() for p in ref.encoder["right"].parameters()]
    for step in range(25):
        opt.zero_grad()
        r = ref.encoder["right"](ref.x)
        out = ref.encoder["left"](ref.x) + (r.detach() if step < 15 else r)
        (0.5 * (out - ref.y).pow(2).sum()).backward()
        opt.step()
        if step == 14:
            assert all(torch.equal(a, b) for a, b in zip(right0, ref.encoder["right"].parameters()))
    for a, b in zip(module.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not module.encoder["right"]._forward_hooks


def test_contract_errors_in_setup():
    with pytest.raises(
        AttributeError, match=r"GatingDeficit needs a LightningModule with a submodule `encoder.middle`"
    ):
        _trainer([GatingDeficit("middle", root="encoder")], 2).fit(TwoBranch())
    with pytest.raises(
        AttributeError, match=r"ModeLesion needs the basis \(U, V\) at `task_basis`; TwoBranch has no `task_basis`"
    ):
        _trainer([ModeLesion("left", root="encoder")], 2).fit(TwoBranch())
    with pytest.raises(ValueError, match=r"ModeLesion: expected `mode` < 8 .* got 8"):
        _trainer([ModeLesion("a", mode=8, root="pathways", layout="columns")], 2).fit(_module())


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GatingDeficit(start=-1), r"Expected `start` >= 0, got -1"),
        (lambda: GatingDeficit(start=5, end=5), r"Expected `end` > `start` \(5\) or None, got 5"),
        (lambda: GatingDeficit(pathway=""), r"Expected `pathway` to be a non-empty submodule name, got ''"),
        (lambda: ModeLesion(mode=-2), r"Expected `mode` >= 0, got -2"),
        (lambda: ModeLesion(start=3, end=1), r"Expected `end` > `start` \(3\) or None, got 1"),
    ],
)
def test_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedule_state_keys_and_state_dict():
    g1, g2 = GatingDeficit("b", 0, 150), GatingDeficit("b", 400, 550)
    les = ModeLesion("a", mode=1)
    assert g1.state_key != g2.state_key and g1.state_key != les.state_key
    trainer = _trainer([g2, les, g1], 1)
    events = collect_schedule(trainer)
    assert [(e.kind, e.start) for e in events] == [("lesion", 0), ("gate", 0), ("gate", 400)]  # by start step
    assert events[1] == ScheduleEvent("gate", 0, 150, target="b")
    assert events[0].info == {"mode": 1} and events[0].end is None and events[0].target == "a"
    g1.active_steps = 7
    g3 = GatingDeficit("b", 0, 150)
    g3.load_state_dict(g1.state_dict())
    assert g3.active_steps == 7
    g3.load_state_dict({})
    assert g3.active_steps == 0


def test_net_and_module_argument_errors():
    task = hierarchical_task(3)
    with pytest.raises(ValueError, match=r"init='svd' needs the task `basis`"):
        MultiPathwayNet(8, 15, depth=2, width=10)
    with pytest.raises(ValueError, match=r"Expected `init` in \('svd', 'gaussian'\), got 'xavier'"):
        MultiPathwayNet(8, 15, depth=2, width=10, init="xavier")
    with pytest.raises(ValueError, match=r"Expected `depth` >= 1, got 0"):
        MultiPathwayNet(8, 15, depth=0, width=10, init="gaussian")
    with pytest.raises(ValueError, match=r"Expected one or more distinct `pathways` names"):
        MultiPathwayNet(8, 15, depth=2, width=10, init="gaussian", pathways=["a", "a"])
    with pytest.raises(ValueError, match=r"k <= width=4"):
        MultiPathwayNet(8, 15, depth=2, width=4, basis=(task.u, task.v))
    net = MultiPathwayNet(4, 7, depth=2, width=10, init="gaussian")
    with pytest.raises(ValueError, match=r"Expected a model with in_dim=8 and out_dim=15, got 4 and 7"):
        MultiPathwayModule(net, task)
    with pytest.raises(ValueError, match=r"Expected `ode_kind` in \('discrete', 'flow'\), got 'rk4'"):
        MultiPathwayModule(MultiPathwayNet(8, 15, depth=2, width=10, init="gaussian"), task, ode_kind="rk4")
    with pytest.raises(ValueError, match=r"Unknown pathway 'c'"):
        _module().pathway_map("c")


def test_svd_init_is_balanced_diagonal_and_shared_across_pathways():
    module = _module(depth=4, width=20)
    k = module.mode_strengths()
    assert torch.allclose(k[0], k[1])  # same d in both pathways
    path = module.pathways["a"]
    fs = path.factors
    for i in range(len(fs) - 1):
        assert torch.allclose(fs[i + 1].mT @ fs[i + 1], fs[i] @ fs[i].mT, atol=1e-12)
    u, v = module.task_basis()
    m = u.mT @ path.weight() @ v
    assert torch.allclose(m, torch.diag_embed(torch.diagonal(m, dim1=-2, dim2=-1)), atol=1e-12)
    assert torch.all(torch.diff(k[0, 0]) <= 0)  # sorted descending
