"""The five cpl callbacks in an ordinary Lightning project (max_epochs, a DataModule, CSVLogger),
configured from the repository's YAML files and through LightningCLI, checked against independent
computations on the trained weights and on the batches each step trained on."""

from __future__ import annotations

import csv
from pathlib import Path

import cli
import lightning as L
import numpy as np
import pytest
import torch
import train
from lightning.pytorch.callbacks import ModelCheckpoint
from teacher_student import MLP, TeacherStudentData

from cpl.callbacks import GatingDeficit, ODEReference, SingularValueLogger, TaskSwitch

STEPS = 42  # 224 samples / 32 = 7 batches an epoch, 6 epochs: the last step is off the 5-step interval


class TaskSpy(L.Callback):
    """Which teacher made the batch that each optimizer step trains on (the batch's task ids)."""

    def __init__(self):
        self.tasks: dict[int, set[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.tasks.setdefault(trainer.global_step, set()).update(batch[2].tolist())


def read_csv(trainer: L.Trainer) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` from the CSVLogger's metrics.csv."""
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    out: dict[str, dict[int, float]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key not in ("step", "epoch") and value != "":
                    out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def end_to_end(module: MLP) -> torch.Tensor:
    w = module.net[0].weight.detach().double()
    for layer in list(module.net)[1:]:
        w = layer.weight.detach().double() @ w
    return w


def test_every_callback_logs_its_keys_at_the_right_steps(tmp_path):
    trainer = train.main(tmp_path)
    module, dm = trainer.lightning_module, trainer.datamodule
    assert trainer.global_step == STEPS
    log = read_csv(trainer)
    readouts = [*range(0, STEPS, 5), STEPS]  # every 5 steps, and the last step under max_epochs
    for key in ("sv/1", "sv/3", "sv/effective_rank", "sv/numerical_rank", "sv_ref/1", "ode/a_1", "sgd/a_3"):
        assert sorted(log[key]) == readouts, key
    assert sorted(log["ode/deviation"]) == readouts
    assert log["task/switched"] == {21: 1.0}
    assert log["gate/net.0/active"] == {0: 1.0, 10: 0.0}
    assert log["lesion/net_mode0/active"] == {30: 1.0}
    # the last readout against the trained weights, computed here
    w = end_to_end(module)
    s = torch.linalg.svdvals(w).numpy()
    for i in range(3):
        assert log[f"sv/{i + 1}"][STEPS] == pytest.approx(s[i], rel=1e-5)
    p = s / s.sum()
    assert log["sv/effective_rank"][STEPS] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    u, v = (t.double() for t in dm.teacher_basis())
    proj = np.diag(u.T @ w @ v)
    for i in range(3):
        assert log[f"sv_ref/{i + 1}"][STEPS] == pytest.approx(proj[i], rel=1e-5, abs=1e-7)
        assert log[f"sgd/a_{i + 1}"][STEPS] == pytest.approx(proj[i], rel=1e-9, abs=1e-12)
    # the deviation is the largest |ode - sgd| of the logged components, at every readout
    for step in readouts:
        dev = max(abs(log[f"ode/a_{i}"][step] - log[f"sgd/a_{i}"][step]) for i in (1, 2, 3))
        assert log["ode/deviation"][step] == pytest.approx(dev, rel=1e-9, abs=1e-12)


class SaveAt(L.Callback):
    """Saves ``step=<s>.ckpt`` when the global step reaches each of ``steps`` (as ModelCheckpoint does)."""

    def __init__(self, folder: Path, steps):
        self.folder, self.steps = folder, set(steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps:
            trainer.save_checkpoint(self.folder / f"step={trainer.global_step}.ckpt")


def _switch_run(tmp_path, ckpt_path=None, at_step=21, iterable=False, save=(), **trainer_args):
    spy, switch = TaskSpy(), TaskSwitch(at_step=at_step)
    trainer = train.make_trainer(tmp_path, [switch, spy, SaveAt(tmp_path, save)], **trainer_args)
    trainer.fit(MLP(), datamodule=TeacherStudentData(iterable=iterable), ckpt_path=ckpt_path)
    return spy.tasks, switch


def _check_exact(tasks: dict[int, set[int]], first: int = 0, at_step: int = 21) -> None:
    assert sorted(tasks) == list(range(first, STEPS))
    for step, seen in tasks.items():
        assert seen == ({0} if step < at_step else {1}), f"step {step} trained on tasks {seen}"


def test_switch_in_the_datamodule_lands_on_the_exact_step_also_after_a_resume(tmp_path):
    tasks, switch = _switch_run(tmp_path, save=(20, 27))
    _check_exact(tasks)
    assert switch.switched_at == [21]
    # resume just before the switch (the fit's first two batches load together), and past it
    for step in (20, 27):
        tasks, switch = _switch_run(tmp_path / f"resume{step}", ckpt_path=tmp_path / f"step={step}.ckpt")
        _check_exact(tasks, first=step)
        assert switch.switched_at == [21]


def test_switch_with_a_loader_without_length(tmp_path):
    """An iterable dataset: Lightning keeps one more batch loaded; the switch still lands on its step,
    inside an epoch and on an epoch's first step; on an epoch's second step it is one step late, with a warning."""
    for at_step in (18, 21):
        tasks, _ = _switch_run(tmp_path / str(at_step), at_step=at_step, iterable=True, max_epochs=-1, max_steps=STEPS)
        _check_exact(tasks, at_step=at_step)
    with pytest.warns(UserWarning, match=r"the switch at step 22 is the second step of an epoch"):
        tasks, _ = _switch_run(tmp_path / "late", at_step=22, iterable=True, max_epochs=-1, max_steps=STEPS)
    assert tasks[22] == {0} and tasks[23] == {1}


def test_monitor_and_accumulation(tmp_path):
    svl = SingularValueLogger(matrix=["net.0", "net.1", "net.2"], every_n_steps=5, top_k=2)
    gate = GatingDeficit(pathway="net.0", start=2, end=9)
    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="sv/effective_rank", mode="max", every_n_train_steps=5)
    trainer = train.make_trainer(tmp_path, [svl, gate, best], accumulate_grad_batches=2)
    trainer.fit(MLP(), datamodule=TeacherStudentData())
    steps = 6 * 4  # ceil(7 / 2) optimizer steps an epoch
    assert trainer.global_step == steps
    assert svl.steps == [0, 5, 10, 15, 20, steps]  # optimizer steps, not batches
    assert gate.active_steps == 7
    log = read_csv(trainer)
    checked = {s: v for s, v in log["sv/effective_rank"].items() if s and s % 5 == 0}
    assert best.best_model_path and float(best.best_model_score) == pytest.approx(max(checked.values()), rel=1e-6)


def test_lightning_cli_takes_every_callback_and_a_user_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(cli.__file__).with_name("config.yaml")
    run = cli.main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)])
    types = [type(cb).__name__ for cb in run.trainer.callbacks]
    for name in ("SingularValueLogger", "TaskSwitch", "GatingDeficit", "ModeLesion", "ODEReference"):
        assert name in types
    ode = next(cb for cb in run.trainer.callbacks if isinstance(cb, ODEReference))
    # the learning rate came from the optimizer (the module has no `lr` attribute)
    assert type(ode.reference).__name__ == "LinearFlowReference" and ode.lr is None and ode.reference.lr == 0.2
    log = read_csv(run.trainer)
    assert sorted(log["ode/deviation"]) == [*range(0, STEPS, 5), STEPS]
    assert log["task/switched"] == {21: 1.0}
    ckpt = next(cb for cb in run.trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor)
    assert Path(ckpt.best_model_path).is_file()
