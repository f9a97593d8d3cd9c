"""The benchmark scripts' numbers: both sides do the same work and agree (timings are not asserted)."""

import math

import pytest

from cpl.bench import bench_sweep, onset_sweep_cells
from cpl.cli import bench_main


def test_sweep_bench_cells_follow_the_paper_onsets():
    cells = onset_sweep_cells(0.1)
    assert [c.switch.at_step for c in cells] == [0, 100, 500, 1000, 2000, 4000, 6000, 8000, 10000]
    assert {c.train.steps_after_switch for c in cells} == {3000}
    assert {c.model.depth for c in cells} == {3} and {c.task.size for c in cells} == {100}


def test_sweep_bench_agrees_with_the_plain_loop(one_thread):
    out = bench_sweep(
        scale=0.003, repeats=2, overrides=["model.init_scale=1.0", "optim.lr=1.0"]
    )  # onsets 0..300, 90 steps after each
    assert out["cells"] == 9 and out["repeats"] == 2 and len(out["speedups"]) == 2
    assert all(math.isfinite(r) and r > 0 for r in out["speedups"])
    assert out["speedup"] == pytest.approx(out["plain_seconds"] / out["framework_seconds"])
    # the same init, data and steps: final test errors agree to float32 rounding
    assert out["max_final_diff"] < 1e-5
    assert (
        max(out["plain_final"]) - min(out["plain_final"]) > 5e-3
    )  # the cells differ, so the comparison means something


@pytest.mark.parametrize("arg", ["scale=0", "scale=abc", "repeats=0", "speed=3"])
def test_sweep_bench_rejects_bad_arguments(arg, capsys):
    assert bench_main(["sweep", arg]) == 2
    assert "error:" in capsys.readouterr().err
