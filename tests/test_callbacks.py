"""TaskSwitch and SingularValueLogger in short real runs, checked against independent computations."""

import lightning as L
import numpy as np
import pytest
import torch

from conftest import small_matcomp
from cpl.callbacks import SingularValueLogger, TaskSwitch, effective_rank, numerical_rank
from cpl.families.matcomp.experiment import build_module
from test_matcomp_module import RecordW, fit


def test_task_switch_schedule_per_member(tmp_path, list_logger):
    cfgs = [small_matcomp(tmp_path, seed=s) for s in range(3)]
    module = build_module(cfgs)
    seen = {}

    class Spy(L.Callback):  # runs after TaskSwitch: which task does each member train on at step s?
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen[trainer.global_step] = list(pl_module.current_tasks)

    switch = TaskSwitch([0, 7, 100], from_task="pretrain", to_task="final")
    fit(module, [switch, Spy()], logger=list_logger, steps=20)
    assert seen[0] == ["final", "pretrain", "pretrain"]
    assert seen[6] == ["final", "pretrain", "pretrain"]
    assert seen[7] == ["final", "final", "pretrain"]
    assert seen[19] == ["final", "final", "pretrain"]
    assert switch.switched_at == [0, 7, None]
    assert list_logger.series("member1/task/switched") == {7: 1.0}
    assert list_logger.series("member0/task/switched") == {0: 1.0}
    assert [(ev.start, ev.members) for ev in switch.schedule_events()] == [(0, (0,)), (7, (1,)), (100, (2,))]


def test_task_switch_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Expected `at_step` >= 0, got -3"):
        TaskSwitch(-3)
    module = build_module([small_matcomp(tmp_path)])
    with pytest.raises(
        ValueError, match=r"TaskSwitch: task 'other' is not one of the module's tasks \['pretrain', 'final'\]"
    ):
        fit(module, [TaskSwitch(3, to_task="other")], steps=2)
    with pytest.raises(ValueError, match=r"TaskSwitch: expected one `at_step` per member \(1\), got 2"):
        fit(module, [TaskSwitch([1, 2])], steps=2)

    class Bare(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    with pytest.raises(
        AttributeError,
        match=r"TaskSwitch needs `set_task\(name\)` on the LightningModule or the trainer's DataModule, or an "
        r"`on_switch` callable; Bare has no `set_task` and the trainer has no DataModule",
    ):
        TaskSwitch(1).setup(None, Bare(), "fit")


def test_singular_value_logger_values_and_interval(tmp_path, list_logger):
    cfgs = [small_matcomp(tmp_path, seed=s) for s in range(2)]
    module = build_module(cfgs)
    rec = RecordW()
    svl = SingularValueLogger(every_n_steps=7, top_k=4, reference="reference_basis")
    fit(module, [TaskSwitch(10), svl, rec], logger=list_logger, steps=30)
    logged = list_logger.series("member1/sv/1")
    assert sorted(logged) == [0, 7, 14, 21, 28, 30]  # every 7 steps, plus step 0 and the last step
    u_ref, _, vh_ref = np.linalg.svd(module.targets[1].double().numpy())  # final task, per member
    for step in logged:
        for e in range(2):
            w = rec.ws[step][e]
            s = np.linalg.svd(w, compute_uv=False)
            for i in range(4):
                assert list_logger.series(f"member{e}/sv/{i + 1}")[step] == pytest.approx(s[i], rel=1e-4)
                proj = u_ref[e][:, i] @ w @ vh_ref[e][i]
                assert list_logger.series(f"member{e}/sv_ref/{i + 1}")[step] == pytest.approx(proj, rel=1e-3, abs=1e-6)
            p = s / s.sum()
            assert list_logger.series(f"member{e}/sv/effective_rank")[step] == pytest.approx(
                np.exp(-(p * np.log(p)).sum()), rel=1e-4
            )
            assert list_logger.series(f"member{e}/sv/numerical_rank")[step] == int((s > 1e-2 * s[0]).sum())
    hist = svl.history()
    assert hist["steps"] == sorted(logged) and tuple(hist["values"].shape) == (6, 2, 4)


def test_singular_value_logger_errors():
    with pytest.raises(ValueError, match=r"Expected `every_n_steps` >= 1, got 0"):
        SingularValueLogger(every_n_steps=0)
    with pytest.raises(ValueError, match=r"Expected `top_k` >= 1, got 0"):
        SingularValueLogger(top_k=0)

    class Bare(L.LightningModule):
        pass

    with pytest.raises(
        AttributeError,
        match=r"SingularValueLogger needs a matrix to analyse at `end_to_end`; Bare has no `end_to_end`",
    ):
        SingularValueLogger().setup(None, Bare(), "fit")


def test_singular_value_logger_on_a_foreign_module(list_logger):
    """The contract is one attribute: works on any LightningModule exposing a 2-D matrix."""

    class Linear(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 5, bias=False)

        def training_step(self, batch, batch_idx):
            x = torch.randn(16, 6, generator=torch.Generator().manual_seed(batch_idx))
            return (self.lin(x) - x[:, :5]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return range(12)

    module = Linear()
    svl = SingularValueLogger(every_n_steps=4, top_k=3, matrix="weight_matrix")
    Linear.weight_matrix = property(lambda self: self.lin.weight)
    trainer = L.Trainer(
        max_steps=12,
        logger=list_logger,
        callbacks=[svl],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module)
    s = torch.linalg.svdvals(module.lin.weight.detach())
    assert list_logger.series("sv/1")[12] == pytest.approx(float(s[0]), rel=1e-5)
    assert sorted(list_logger.series("sv/2")) == [0, 4, 8, 12]


def test_rank_helpers():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    p = np.array([3, 2, 1]) / 6
    assert float(effective_rank(s)) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(numerical_rank(s, 0.5)) == 2


def test_singular_value_logger_keeps_readouts_and_logs_coarser(tmp_path, list_logger):
    module = build_module([small_matcomp(tmp_path)])
    svl = SingularValueLogger(every_n_steps=5, top_k=2, log_every_n_steps=20)
    fit(module, [TaskSwitch(10), svl], logger=list_logger, steps=45)
    assert svl.history()["steps"] == list(range(0, 46, 5))  # every readout kept (figures)
    assert sorted(list_logger.series("sv/1")) == [0, 20, 40, 45]  # loggers: every 20 steps and the last step
    with pytest.raises(ValueError, match=r"Expected `log_every_n_steps` to be a multiple of `every_n_steps`=5, got 12"):
        SingularValueLogger(every_n_steps=5, log_every_n_steps=12)


@pytest.mark.parametrize("shape", [(100, 100), (3, 40, 60), (2, 60, 40)])
def test_singular_values_match_float64_svd(shape):
    """The float64-Gram singular values against float64 svdvals, on spectra spanning eight decades."""
    from cpl.callbacks.singular_values import singular_values

    g = torch.Generator().manual_seed(0)
    n, m = shape[-2:]
    k = min(n, m)
    u = torch.linalg.qr(torch.randn(*shape[:-2], n, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(*shape[:-2], m, k, generator=g, dtype=torch.float64))[0]
    s = torch.cat(
        [
            torch.tensor([30.0, 20.0, 10.0, 5.0, 1.0], dtype=torch.float64),
            torch.logspace(-2, -8, k - 5, dtype=torch.float64),
        ]
    )
    w = ((u * s) @ v.mT).float()
    ref = torch.linalg.svdvals(w.double())
    got = singular_values(w)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.all(got[..., :-1] >= got[..., 1:])  # largest first
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)
    # at least as accurate as float32 svdvals on the leading values
    assert (
        float((got[..., :10].double() - ref[..., :10]).abs().max())
        <= float((torch.linalg.svdvals(w)[..., :10].double() - ref[..., :10]).abs().max()) + 1e-7
    )
