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


@pytest.mark.parametrize("arg", ["scale=0", "scale=x", "conf=nope", "subset=depth", "speed=3"])
def test_users_bench_rejects_bad_arguments(arg, capsys):
    assert bench_main(["users", arg]) == 2
    assert "error:" in capsys.readouterr().err


def test_users_bench_overrides_scale_the_onsets_and_keep_the_conf_unmodified_at_scale_1():
    from cpl.bench import scaled_sweep_overrides
    from cpl.sweep import load_sweep

    assert scaled_sweep_overrides("matcomp_depth_sweep") == []
    over = scaled_sweep_overrides("matcomp_depth_sweep", 0.1, ["model.depth=[3]"])
    sweep = load_sweep("matcomp_depth_sweep", over)
    assert [c.config.switch.at_step for c in sweep.cells] == [0, 100, 500, 1000, 2000, 4000, 6000, 8000, 10000]
    assert {c.config.model.depth for c in sweep.cells} == {3} and {
        c.config.train.steps_after_switch for c in sweep.cells
    } == {3000}


@pytest.mark.slow
def test_users_bench_runs_the_sweep_script_and_matches_the_plain_loop(one_thread):
    from cpl.bench import bench_users

    out = bench_users("matcomp_depth_sweep_quick", subset=["model.depth=[2]"])  # 4 onsets, lr 10, 600 steps after
    assert out["cells"] == out["finished_cells"] == 4
    assert out["max_rel_final_diff"] < 1e-4  # the same cells, the same steps, float32 rounding
    assert out["metric_rows"] > 100 and out["store_mb"] > 0 and out["users_seconds"] > 0
    assert out["speedup"] == pytest.approx(out["plain_seconds"] / out["users_seconds"])
