"""The callbacks on plain Lightning modules: explicit targets, their errors in setup, monitorable
readouts, resume state, import cost (the full foreign project is examples/foreign_project)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import ListConfig
from torch import nn

from cpl.callbacks import GatingDeficit, ModeLesion, ODEReference, Reference, SingularValueLogger, TaskSwitch
from cpl.core.readout import final_step

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Net(L.LightningModule):
    """A bias-free linear MLP 6 -> 5 -> 4 on a fixed regression, plain SGD, batches of 8 rows."""

    def __init__(self, lr: float = 0.05, task_api: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Linear(5, 4, bias=False))
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 6, generator=gen)
        self.y = self.x @ torch.randn(6, 4, generator=gen)
        self.opt_lr = lr
        self.task = "a"
        if task_api:
            self.set_task = lambda name, wrong: None

    def training_step(self, batch, batch_idx):
        i = batch_idx % 4
        return nn.functional.mse_loss(self.net(self.x[8 * i : 8 * i + 8]), self.y[8 * i : 8 * i + 8])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.opt_lr)

    def train_dataloader(self):
        return range(4)


def _fit(module, callbacks, logger=False, ckpt_path=None, **kw):
    args = dict(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    args.update(kw)
    trainer = L.Trainer(logger=logger, callbacks=list(callbacks), **args)
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def _product(module):
    return (module.net[1].weight @ module.net[0].weight).detach()


@pytest.mark.parametrize(
    "matrix, expected",
    [
        ("net.0.weight", lambda m: m.net[0].weight.detach()),
        ("net.1", lambda m: m.net[1].weight.detach()),
        (["net.0", "net.1"], _product),
        (lambda m: m.net[1].weight @ m.net[0].weight, _product),
    ],
    ids=["parameter", "layer", "layers", "callable"],
)
def test_matrix_targets_under_max_epochs(matrix, expected, list_logger):
    svl = SingularValueLogger(every_n_steps=5, top_k=3, matrix=matrix)
    module = Net()
    trainer = _fit(module, [svl], logger=list_logger)
    assert trainer.global_step == 12
    assert sorted(list_logger.series("sv/1")) == [0, 5, 10, 12]  # the last step under max_epochs too
    s = torch.linalg.svdvals(expected(module).double())
    for i in range(3):
        assert list_logger.series(f"sv/{i + 1}")[12] == pytest.approx(float(s[i]), rel=1e-5)
    assert float(trainer.callback_metrics["sv/effective_rank"]) == list_logger.series("sv/effective_rank")[12]


def test_matrix_target_errors_in_setup():
    with pytest.raises(ValueError, match=r"`net` is a Sequential without a 2-D `weight`; give its layers as a list"):
        _fit(Net(), [SingularValueLogger(matrix="net")])
    with pytest.raises(ValueError, match=r"the layers \['net.1', 'net.0'\] do not chain: `net.0` takes 6 inputs"):
        _fit(Net(), [SingularValueLogger(matrix=["net.1", "net.0"])])
    with pytest.raises(AttributeError, match=r"needs a matrix to analyse at `net.2.weight`; Net.net has no `2`"):
        _fit(Net(), [SingularValueLogger(matrix="net.2.weight")])
    with pytest.raises(ValueError, match=r"Expected `matrix` to be a callable, a dotted path or a non-empty list"):
        SingularValueLogger(matrix=[])


def test_two_loggers_differing_only_in_matrix_kwargs_coexist(list_logger):
    class Maps(Net):
        def layer(self, index: int):
            return self.net[index].weight

    a = SingularValueLogger(every_n_steps=4, top_k=2, matrix="layer", matrix_kwargs={"index": 0})
    b = SingularValueLogger(every_n_steps=4, top_k=2, matrix="layer", matrix_kwargs={"index": 1})
    assert a.state_key != b.state_key
    _fit(Maps(), [a, b], logger=list_logger, max_epochs=1)
    assert [h["values"].shape[-1] for h in (a.history(), b.history())] == [2, 2]
    assert not torch.equal(a.history()["values"], b.history()["values"])


def test_readouts_reach_callback_metrics_for_early_stopping():
    svl = SingularValueLogger(every_n_steps=2, top_k=2, matrix=["net.0", "net.1"], prog_bar=True)
    stop = EarlyStopping(monitor="sv/effective_rank", mode="max", patience=0, check_on_train_epoch_end=True)
    trainer = _fit(Net(), [svl, stop], max_epochs=20)
    assert trainer.global_step < 80 and stop.stopped_epoch > 0  # stopped on a metric only the callback sets
    assert trainer.progress_bar_metrics["sv/effective_rank"] == float(trainer.callback_metrics["sv/effective_rank"])


def test_task_switch_contracts_and_sequences():
    assert TaskSwitch(at_step=ListConfig([40])).at_steps == [40]
    assert TaskSwitch(at_step=ListConfig([3, 5])).per_member
    with pytest.raises(ValueError, match=r"Expected `at_step` to be an integer or a sequence of integers, got 'x'"):
        TaskSwitch(at_step="x")
    with pytest.raises(TypeError, match=r"TaskSwitch calls `set_task\(name\)`; Net.set_task has the signature"):
        _fit(Net(task_api=True), [TaskSwitch(at_step=2)])
    seen = []
    switch = TaskSwitch(at_step=5, on_switch=lambda trainer, module, task: seen.append((trainer.global_step, task)))
    _fit(Net(), [switch])
    assert seen == [(0, "pretrain"), (5, "final")] and switch.switched_at == [5]
    with pytest.raises(ValueError, match=r"a per-member `at_step` needs the module's `set_task`, not `on_switch`"):
        _fit(Net(), [TaskSwitch(at_step=[1, 2], on_switch=print)])


def test_windows_count_optimizer_steps_under_accumulation(list_logger):
    gate = GatingDeficit(pathway="net.0", start=1, end=4)
    svl = SingularValueLogger(every_n_steps=2, top_k=1, matrix="net.0.weight")
    trainer = _fit(Net(), [gate, svl], logger=list_logger, accumulate_grad_batches=2, max_epochs=4)
    assert trainer.global_step == 8 and final_step(trainer) == 8
    assert gate.active_steps == 3 and list_logger.series("gate/net.0/active") == {1: 1.0, 4: 0.0}
    assert svl.steps == [0, 2, 4, 6, 8]
    # net.0 gets no gradient over optimizer steps 1-3: its readout at step 2 equals the one at step 4
    values = svl.history()["values"][:, 0, 0]
    assert float(values[1]) == float(values[2]) and float(values[0]) != float(values[1])


def test_mode_lesion_on_a_linear_layer_matches_a_hand_projected_loop():
    module = Net()
    gen = torch.Generator().manual_seed(3)
    u = torch.linalg.qr(torch.randn(5, 2, generator=gen))[0]
    v = torch.linalg.qr(torch.randn(6, 2, generator=gen))[0]
    w0, w1 = module.net[0].weight.detach().clone(), module.net[1].weight.detach().clone()
    lesion = ModeLesion(pathway="net.0", mode=1, start=2, basis=lambda m: (u, v))
    _fit(module, [lesion], max_epochs=2)
    pu, pv = torch.eye(5) - torch.outer(u[:, 1], u[:, 1]), torch.eye(6) - torch.outer(v[:, 1], v[:, 1])
    a, b = w0.clone().requires_grad_(True), w1.clone().requires_grad_(True)
    for step in range(8):
        i = step % 4
        first = pu @ a @ pv if step >= 2 else a
        loss = nn.functional.mse_loss(module.x[8 * i : 8 * i + 8] @ first.T @ b.T, module.y[8 * i : 8 * i + 8])
        ga, gb = torch.autograd.grad(loss, [a, b])
        with torch.no_grad():
            a -= 0.05 * ga
            b -= 0.05 * gb
    torch.testing.assert_close(module.net[0].weight.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.net[1].weight.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_mode_lesion_shape_errors():
    u, v = torch.eye(4)[:, :2], torch.eye(7)[:, :2]
    with pytest.raises(ValueError, match=r"`net.0` maps 6 inputs to 5 outputs, but the basis gives U with 4 rows"):
        _fit(Net(), [ModeLesion(pathway="net.0", mode=0, basis=lambda m: (u, v))])
    wide = ModeLesion(pathway="net", mode=0, basis=lambda m: (torch.eye(4)[:, :2], torch.eye(7)[:, :2]))
    with pytest.raises(ValueError, match=r"`net` got an input of shape \(8, 6\); expected 7 features in dim -1"):
        _fit(Net(), [wide])


class Decay:
    """A duck-typed reference (no cpl base class): every component of W relaxes as exp(-t)."""

    name = "decay"

    def prepare(self, pl_module, schedule, lr, start_step, max_steps):
        self.lr, self.start, self.max_steps = lr, start_step, max_steps
        self.w0 = self.observe(pl_module)["w"]

    def predict(self, step):
        return {"w": self.w0 * np.exp(-self.lr * (step - self.start))}

    def observe(self, pl_module):
        return {"w": pl_module.net[0].weight.detach().double().numpy()[0, :2].copy()}

    def conditions(self):
        return None


def test_ode_reference_reads_the_optimizer_lr_and_keeps_its_history_across_resume(tmp_path, list_logger):
    assert isinstance(Decay(), Reference) and issubclass(Decay, Reference)
    with pytest.raises(TypeError, match=r"Expected `reference` to be a Reference; int lacks \['prepare'"):
        ODEReference(reference=3)
    ode = ODEReference(reference=Decay(), every_n_steps=4)
    trainer = _fit(Net(lr=0.03), [ode], logger=list_logger, enable_checkpointing=True, default_root_dir=tmp_path)
    assert ode.reference.lr == 0.03 and ode.reference.max_steps == 12 and ode.steps == [0, 4, 8, 12]
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"][ode.state_key]  # loads without pickled objects
    again = ODEReference(reference=Decay(), every_n_steps=4)
    again.load_state_dict(state)
    assert again.steps == ode.steps
    np.testing.assert_array_equal(again.history()["ode"]["w"], ode.history()["ode"]["w"])
    resumed = ODEReference(reference=Decay(), every_n_steps=4)
    _fit(Net(lr=0.03), [resumed], max_epochs=5, ckpt_path=str(ckpt), default_root_dir=tmp_path)
    assert resumed.steps == [0, 4, 8, 12, 16, 20]


def test_ode_reference_lr_errors():
    class TwoGroups(Net):
        def configure_optimizers(self):
            return torch.optim.SGD(
                [{"params": self.net[0].parameters(), "lr": 0.1}, {"params": self.net[1].parameters()}], lr=0.2
            )

    with pytest.raises(ValueError, match=r"parameter groups have different learning rates \[0.1, 0.2\]; pass `lr=`"):
        _fit(TwoGroups(), [ODEReference(reference=Decay())])
    ode = ODEReference(reference=Decay(), lr=0.5, every_n_steps=100)
    _fit(TwoGroups(), [ode], max_epochs=1)
    assert ode.reference.lr == 0.5


def test_import_cost_of_the_callbacks():
    """``import cpl.callbacks`` adds a handful of cpl modules to ``import lightning``: no tracking, no
    plotting, no config or model family."""
    code = (
        "import sys, json, lightning\n"
        "before = set(sys.modules)\n"
        "import cpl.callbacks\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
        "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'mlflow']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    new, mlflow = json.loads(out[0]), json.loads(out[1])
    assert mlflow == []
    assert all(m == "cpl" or m.startswith(("cpl.callbacks", "cpl.core")) for m in new), new
    assert "cpl.core.module" not in new and not any(m.startswith("cpl.families") for m in new)
    assert len(new) <= 16, new
