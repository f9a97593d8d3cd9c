"""A pool's tasks: onset chains dealt out so that the workers end together (cpl.batching.balance).

The planning tests build configs only (nothing trains); the last test runs a split chain and a whole
one and compares every cell's final test error."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cpl.batching import balance, cost, plan_groups
from cpl.config import make_config
from cpl.sweep import make_sweep, run_sweep
from test_sweep import tiny_base

#: the paper's onsets (x1/100) and 300 steps after each switch
ONSETS = [0, 10, 50, 100, 200, 400, 600, 800, 1000]


def cells(seeds, onsets=ONSETS, depth=3):
    return [
        make_config(seed=s, model=dict(depth=depth), switch=dict(at_step=t), train=dict(steps_after_switch=300))
        for s in seeds
        for t in onsets
    ]


def onsets_of(cfgs, group):
    return sorted(int(OmegaConf.select(cfgs[i], "switch.at_step")) for i in group)


def test_a_chain_costs_its_trunk_once_and_its_depth():
    cfgs = cells([0])
    assert cost(cfgs, range(9)) == 3 * (1000 + 9 * 300)  # the trunk to the last onset, then 300 a cell
    assert cost(cfgs, [5, 6, 7, 8]) == 3 * (1000 + 4 * 300)  # an upper part trains its trunk again
    assert cost(cells([0], depth=1), range(9)) == 1000 + 9 * 300


def test_five_equal_chains_on_two_workers_end_together():
    """The observation-count sweep's shape: 5 chains on 2 cores were dealt 3 + 2 (makespan 3 chains);
    one chain is now cut by onset and each worker runs 2.5 chains."""
    cfgs = cells(range(5))
    whole = [list(range(9 * s, 9 * s + 9)) for s in range(5)]
    shares = balance(cfgs, whole, workers=2)
    loads = [sum(cost(cfgs, p) for p in share) for share in shares]
    assert len(shares) == 2 and max(loads) < 1.03 * sum(loads) / 2  # within 3% of an even split
    assert max(loads) < 0.9 * 3 * cost(cfgs, whole[0])  # below the whole chains' makespan (3 chains)
    pieces = [p for share in shares for p in share]
    assert sorted(i for p in pieces for i in p) == list(range(45))  # every cell exactly once
    cut = [p for p in pieces if len(p) < 9]
    assert len(cut) == 2 and len({cfgs[i].seed for p in cut for i in p}) == 1
    low, high = sorted((onsets_of(cfgs, p) for p in cut), key=min)
    assert max(low) < min(high) and low + high == ONSETS  # cut at an onset: two contiguous parts

    groups = plan_groups(cfgs, max_members=64, workers=2)  # one batched run per worker
    assert sorted(len(g) for g in groups) == [22, 23]


@pytest.mark.parametrize("n_chains", [2, 4])
def test_chains_that_already_divide_evenly_stay_whole(n_chains):
    cfgs = cells(range(n_chains))
    groups = plan_groups(cfgs, max_members=64, workers=2)
    assert len(groups) == 2
    for g in groups:  # whole chains only: each seed's 9 onsets together
        seeds = {cfgs[i].seed for i in g}
        assert len(g) == 9 * len(seeds)


def test_one_process_keeps_the_grids_order_and_whole_chains():
    cfgs = cells(range(5))
    assert plan_groups(cfgs, max_members=64) == [list(range(45))]
    assert plan_groups(cfgs, max_members=20) == [list(range(18)), list(range(18, 36)), list(range(36, 45))]


def test_groups_of_different_shapes_are_never_merged():
    """The depth sweep: one chain per depth (costs 3 : 2 : 1) on two workers is balanced as it is
    (3 | 2 + 1), and depths 2 and 1 stay separate runs on the same worker."""
    cfgs = [c for d in (1, 2, 3) for c in cells([0], depth=d)]
    groups = plan_groups(cfgs, max_members=64, workers=2)
    assert sorted(sorted({cfgs[i].model.depth for i in g}) for g in groups) == [[1], [2], [3]]
    assert all(len(g) == 9 for g in groups)


def test_max_members_still_bounds_a_group():
    cfgs = cells(range(5))
    groups = plan_groups(cfgs, max_members=10, workers=2)
    assert max(len(g) for g in groups) <= 10
    assert sorted(i for g in groups for i in g) == list(range(45))


def test_a_single_chain_is_cut_across_two_workers_and_gives_the_same_results(tmp_path):
    """One chain on a 2-process pool runs as two parts (lower onsets; upper onsets with the trunk
    trained again); every cell's final test error equals the whole chain's in one process."""

    class Inline:  # a pool's planning, its tasks run here one after another
        def __init__(self, processes):
            self.processes, self.tasks = processes, []

        def map(self, fn, tasks):
            for task in tasks:
                self.tasks.append(sorted(c.config.switch.at_step for c in task))
                yield task, fn(task)

    finals = {}
    for processes in (1, 2):
        base = tiny_base(tmp_path / str(processes), trainer=dict(dtype="float64"))
        grid = {"switch.at_step": [0, 20, 60, 150]}
        sweep = make_sweep(base, name="cut", grid=grid, batched=True)
        executor = Inline(processes)
        result = run_sweep(sweep, executor=executor, progress=False)
        assert not result.failed
        finals[processes] = {int(r["switch.at_step"]): float(r["test/final_error"]) for r in result.rows}
        if processes == 1:
            assert executor.tasks == [[0, 20, 60, 150]]
        else:
            assert len(executor.tasks) == 2 and sorted(t for task in executor.tasks for t in task) == [0, 20, 60, 150]
            low, high = sorted(executor.tasks, key=min)
            assert max(low) < min(high)
    assert finals[1].keys() == finals[2].keys()
    for onset, err in finals[1].items():
        assert finals[2][onset] == pytest.approx(err, rel=1e-9, abs=1e-12)
