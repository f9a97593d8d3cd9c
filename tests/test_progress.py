"""Progress in gradient steps: a sweep's bar totals the member-steps actually taken (and moves
inside a batched group); a single run's bar counts steps, not chunks."""

from __future__ import annotations

import pytest

import cpl.sweep.runner as runner
from conftest import small_matcomp
from cpl.core.progress import StepProgressBar
from cpl.families.matcomp.module import MatrixCompletionModule
from cpl.run import train
from cpl.sweep import make_sweep, run_sweep
from cpl.sweep.progress import StepsBar

pytestmark = pytest.mark.usefixtures("one_thread")


def _count_member_steps(monkeypatch) -> dict:
    """Counts every member's gradient steps where they are taken (the fused SGD step)."""
    taken = {"steps": 0, "reports": 0}
    sgd_step = MatrixCompletionModule.sgd_step

    def counting(self, lr):
        taken["steps"] += self.model.factors[0][self.active].shape[0]
        return sgd_step(self, lr)

    monkeypatch.setattr(MatrixCompletionModule, "sgd_step", counting)
    return taken


@pytest.mark.parametrize("batched", [True, False])
def test_sweep_bar_total_equals_the_member_steps_taken(tmp_path, monkeypatch, batched):
    taken = _count_member_steps(monkeypatch)
    bars: list[StepsBar] = []

    class Recording(StepsBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

        def put(self, item):
            taken["reports"] += 1
            before = self.n
            super().put(item)
            assert before < self.n <= self.total  # moves while a task runs, never past the total

    monkeypatch.setattr(runner, "StepsBar", Recording)
    base = small_matcomp(tmp_path, train={"steps_after_switch": 40})
    sweep = make_sweep(base, grid={"model.depth": [2, 3], "switch.at_step": [0, 25, 60]}, batched=batched)
    result = run_sweep(sweep, progress=True)
    assert not result.failed
    (bar,) = bars
    # batched: each depth's trunk (60 steps) once, then 40 steps per onset; else every cell from scratch
    expected = 2 * (60 + 3 * 40) if batched else 2 * (40 + 65 + 100)
    assert bar.total == taken["steps"] == expected and bar.n == bar.total
    assert taken["reports"] >= 2


def test_single_run_bar_counts_gradient_steps(tmp_path, monkeypatch):
    seen = {}

    def on_train_end(self, trainer, pl_module):
        seen.update(n=self.train_progress_bar.n, total=self.train_progress_bar.total, unit=self.train_progress_bar.unit)

    monkeypatch.setattr(StepProgressBar, "on_train_end", on_train_end)
    cfg = small_matcomp(tmp_path, trainer={"progress_bar": True})
    train(cfg)
    assert seen == {"n": 60, "total": 60, "unit": "steps"}  # 60 steps, not the number of chunks


def test_single_run_bar_is_never_drawn_in_epochs_or_batches(tmp_path, capsys):
    """Lightning's own bar ("Training 0/?", "Epoch 0: 0/<batches>") must not flash before the step bar."""
    cfg = small_matcomp(tmp_path, trainer={"progress_bar": True})
    train(cfg)
    out = capsys.readouterr().out
    assert "train" in out and "60/60" in out
    assert "Training" not in out and "Epoch" not in out
