"""Sweeps: grid validation, MLflow layout, failing cells, resume after an interrupt, the quick depth sweep."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient

from cpl.cli import sweep_main
from cpl.config import ConfigError, available_confs, conf_dir, make_config
from cpl.sweep import config_hash, load_sweep, make_sweep, run_sweep

#: a tiny matrix-completion problem: a cell trains in about a second
TINY = dict(
    task=dict(size=20, pretrain_rank=4, final_rank=2, n_obs=150),
    optim=dict(lr=3.0),
    switch=dict(at_step=0),
    train=dict(steps_after_switch=150),
    log=dict(every_n_steps=50, sv_every_n_steps=50, figures=False),
    trainer=dict(checkpoint_every_n_steps=0),
)


def tiny_base(tmp_path, **overrides):
    cfg = {**TINY, "name": "tiny", "tracking": dict(uri=f"sqlite:///{tmp_path}/m.db", experiment="sweeps")}
    cfg["trainer"] = dict(cfg["trainer"], checkpoint_dir=str(tmp_path / "ckpt"))
    cfg.update(overrides)
    return make_config(**cfg)


def children(client: MlflowClient, parent_id: str) -> list:
    exp_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)


def artifact_paths(client: MlflowClient, run_id: str, path: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "sweep, match",
    [
        (
            dict(grid={"model.dept": [1, 2], "switch.at_step": [0]}),
            r"Unknown config key 'model.dept'.*Did you mean 'model.depth'",
        ),
        (dict(grid={"model.depth": [0, 1], "switch.at_step": [0]}), r"Invalid value for 'model.depth': got 0"),
        (dict(grid={"model.depth": ["a"], "switch.at_step": [0]}), r"Config key 'model.depth'.*wrong type"),
        (
            dict(grid={"model.depth": 3, "switch.at_step": [0]}),
            r"Invalid value for 'sweep.grid.model.depth'.*a list of values",
        ),
        (
            dict(grid={"model.depth": [], "switch.at_step": [0]}),
            r"Invalid value for 'sweep.grid.model.depth'.*non-empty list",
        ),
        (
            dict(grid={"model.depth": [2, 2], "switch.at_step": [0]}),
            r"Invalid value for 'sweep.grid.model.depth'.*without repeated",
        ),
        (dict(grid={}), r"Invalid value for 'sweep.grid'"),
        (
            dict(grid={"tracking.uri": ["a", "b"], "switch.at_step": [0]}),
            r"Invalid value for 'sweep.grid.tracking.uri'",
        ),
        (
            dict(grid={"model.depth": [1], "switch.at_step": [0]}, group_by="seed"),
            r"Invalid value for 'sweep.group_by': got 'seed'",
        ),
        (dict(grid={"model.depth": [1]}), r"Invalid value for 'sweep.onset_key': got 'switch.at_step'"),
        (
            dict(grid={"model.depth": [1], "switch.at_step": [0]}, executor="slurm"),
            r"Invalid value for 'sweep.executor'",
        ),
        (dict(grid={"model.depth": [1], "switch.at_step": [0]}, processes=-1), r"Invalid value for 'sweep.processes'"),
        (
            dict(grid={"model.depth": [1], "switch.at_step": [0]}, grp_by="model.depth"),
            r"Unknown config key 'sweep.grp_by'.*Did you mean 'sweep.group_by'",
        ),
        (dict(grid={"switch.at_step": [0, 100000]}), r"Invalid value for 'switch.at_step'"),
    ],
)
def test_invalid_sweeps_raise_config_error_naming_the_key(tmp_path, sweep, match):
    with pytest.raises(ConfigError, match=match):
        make_sweep(tiny_base(tmp_path, train=dict(steps_after_switch=10, max_steps=100)), **sweep)


def test_sweep_needs_tracking(tmp_path):
    with pytest.raises(ConfigError, match=r"Invalid value for 'tracking.enabled'"):
        make_sweep(tiny_base(tmp_path, tracking=dict(enabled=False)), grid={"switch.at_step": [0]})


def test_inline_grid_and_misspelt_sweep_key_from_the_command_line():
    sweep = load_sweep(
        "matcomp_rank10to5", ["sweep.grid.model.depth=[1,2,3]", "sweep.grid.switch.at_step=[0,1000,5000]"]
    )
    assert len(sweep.cells) == 9 and sweep.settings.group_by == "model.depth"
    assert [c.values for c in sweep.cells[:2]] == [
        {"model.depth": 1, "switch.at_step": 0},
        {"model.depth": 1, "switch.at_step": 1000},
    ]
    assert all("sweep" not in c.config for c in sweep.cells)
    assert sweep.cells[4].config.model.depth == 2 and sweep.cells[4].config.switch.at_step == 1000
    assert sweep.cells[0].config.trainer.progress_bar is False
    with pytest.raises(ConfigError, match=r"Unknown config key 'sweep.exector'.*Did you mean 'sweep.executor'"):
        load_sweep("matcomp_depth_sweep", ["sweep.exector=ray"])
    with pytest.raises(ConfigError, match=r"Unknown config key 'model.dept'"):
        load_sweep("matcomp_depth_sweep", ["sweep.grid.model.dept=[1,2]"])


PAPER_SWEEPS = {  # conf -> (grid key besides the onset, its values, steps after the switch)
    "matcomp_depth_sweep": ("model.depth", [1, 2, 3], 30000),
    "matcomp_rank_sweep": ("task.pretrain_rank", [2, 5, 10, 15], 30000),
    "matcomp_nobs_sweep": ("task.n_obs", [1000, 1500, 2000, 3000, 4000], 30000),
    "matcomp_partial_info_sweep": ("task.n_obs", [1250, 1500, 1750, 2000], 30000),
    "matcomp_init_scale_sweep": ("model.init_scale", [1e-1, 1e-2, 1e-3, 1e-4], 50000),
    "matcomp_seed_sweep": ("seed", [1, 2, 3, 4], 30000),
}


@pytest.mark.parametrize("name", sorted(PAPER_SWEEPS))
def test_paper_sweep_confs_have_the_papers_grid(name):
    key, values, after = PAPER_SWEEPS[name]
    sweep = load_sweep(name)
    assert sweep.grid == {key: values, "switch.at_step": [0, 1000, 5000, 10000, 20000, 40000, 60000, 80000, 100000]}
    assert sweep.settings.group_by == key and len(sweep.cells) == 9 * len(values)
    base = sweep.base
    assert (base.task.size, base.optim.lr, base.train.steps_after_switch) == (100, 0.2, after)
    if name == "matcomp_partial_info_sweep":
        assert (base.task.pretrain_task, base.task.pretrain_n_obs) == ("same", 1000)
    quick = load_sweep(f"{name}_quick")
    assert list(quick.grid) == list(sweep.grid) and quick.grid[key] == values
    assert len(quick.cells) <= 16 and quick.base.task.size == 100 and quick.base.optim.lr == 10.0


def test_every_sweep_conf_is_listed():
    names = available_confs(conf_dir())
    assert {f"{n}{q}" for n in PAPER_SWEEPS for q in ("", "_quick")} <= set(names)


def test_config_hash_ignores_tracking_and_paths_only(tmp_path):
    a, b = tiny_base(tmp_path), tiny_base(tmp_path / "elsewhere")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(tiny_base(tmp_path, seed=1))


def test_cli_help_and_config_error(capsys):
    assert sweep_main(["--help"]) == 0
    assert "sweep.grid.KEY" in capsys.readouterr().out
    assert sweep_main(["conf=matcomp_depth_sweep", "sweep.grid.model.dept=[1]"]) == 2
    assert "model.dept" in capsys.readouterr().err


# --------------------------------------------------------------------------- running


def test_local_sweep_records_parent_children_and_summary(tmp_path):
    sweep = make_sweep(
        tiny_base(tmp_path), name="tiny_sweep", grid={"model.depth": [1, 2], "switch.at_step": [0, 150]}, threshold=0.01
    )
    result = run_sweep(sweep, progress=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")

    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["cpl.sweep.name"] == "tiny_sweep" and parent.data.tags["cpl.sweep.hash"] == sweep.sweep_hash
    assert json.loads(parent.data.params["sweep.grid.model.depth"]) == [1, 2]
    kids = children(client, result.parent_run_id)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)
    by_cell = {int(k.data.tags["cpl.sweep.cell"]): k for k in kids}
    for cell in sweep.cells:
        kid = by_cell[cell.index]
        assert kid.data.params["model.depth"] == str(cell.values["model.depth"])
        assert kid.data.params["switch.at_step"] == str(cell.values["switch.at_step"])
        assert kid.data.tags["cpl.sweep.cell_hash"] == cell.config_hash
        assert kid.data.tags["cpl.sweep.name"] == "tiny_sweep"
        assert "test/final_error" in kid.data.metrics
    # runs queryable by param
    exp_id = parent.info.experiment_id
    assert len(client.search_runs([exp_id], filter_string="params.`model.depth` = '2'")) == 2

    # summary: CSV, figures, metrics
    assert {
        "summary/critical_period_table.csv",
        "summary/relative_error.png",
        "summary/final_error.png",
    } <= artifact_paths(client, parent.info.run_id, "summary")
    local = client.download_artifacts(parent.info.run_id, "summary/critical_period_table.csv", str(tmp_path))
    table = list(csv.DictReader(io.StringIO(open(local).read())))
    assert len(table) == 4 and {r["status"] for r in table} == {"FINISHED"}
    rows = {(r["model.depth"], r["switch.at_step"]): r for r in table}
    for depth in ("1", "2"):
        assert float(rows[(depth, "0")]["relative_error"]) == 0.0
        expected = float(rows[(depth, "150")]["test/final_error"]) - float(rows[(depth, "0")]["test/final_error"])
        assert float(rows[(depth, "150")]["relative_error"]) == pytest.approx(expected)
        assert float(rows[(depth, "150")]["test/final_error"]) == pytest.approx(
            by_cell[sweep.cells[int(rows[(depth, "150")]["cell"])].index].data.metrics["test/final_error"]
        )
    m = parent.data.metrics
    assert m["sweep/n_cells"] == 4 and m["sweep/n_finished"] == 4 and m["sweep/n_failed"] == 0
    assert {"critical_period/model.depth_1", "critical_period/model.depth_2"} <= set(m)
    assert math.isnan(m["critical_period/model.depth_1"])  # depth 1: only observed entries move, no damage
    assert m["critical_period/model.depth_2"] == 150.0
    history = client.get_metric_history(parent.info.run_id, "relative_error/model.depth_2")
    assert sorted(h.step for h in history) == [0, 150]


def test_failing_cell_is_reported_and_the_sweep_goes_on(tmp_path):
    sweep = make_sweep(
        tiny_base(tmp_path, switch=dict(at_step=0), train=dict(steps_after_switch=60)),
        grid={"optim.lr": [3.0, 1.0e4], "switch.at_step": [0]},
    )
    result = run_sweep(sweep, progress=False)
    assert [r["status"] for r in result.rows] == ["FINISHED", "FAILED"]
    assert "DivergenceError" in result.rows[1]["error"] and len(result.failed) == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    statuses = sorted(k.info.status for k in children(client, result.parent_run_id))
    assert statuses == ["FAILED", "FINISHED"]
    assert result.rows[1]["run_id"] and client.get_run(result.rows[1]["run_id"]).info.status == "FAILED"
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["sweep/n_failed"] == 1 and "failed cells: 1" in parent.data.tags["cpl.status_message"]
    # running it again retries the failed cell only
    again = run_sweep(sweep, progress=False)
    assert again.parent_run_id == result.parent_run_id and [r["resumed"] for r in again.rows] == [True, False]
    assert sorted(k.info.status for k in children(client, result.parent_run_id)) == ["FAILED", "FAILED", "FINISHED"]


class InterruptAtFit(Callback):
    """Raise KeyboardInterrupt at the start of the n-th fit (the n-th cell run in this process)."""

    def __init__(self, n: int):
        self.n, self.fits = n, 0

    def on_train_start(self, trainer, pl_module):
        self.fits += 1
        if self.fits == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("batched", [False, True])
def test_interrupted_sweep_resumes_without_rerunning_finished_cells(tmp_path, batched):
    base = tiny_base(tmp_path)
    sweep = make_sweep(base, grid={"model.depth": [1, 2], "switch.at_step": [0, 100]}, batched=batched)
    with pytest.raises(KeyboardInterrupt):
        # one cell a fit, or (batched) one depth a fit: interrupt the 3rd cell's or the 2nd depth's fit
        run_sweep(sweep, callbacks=[InterruptAtFit(2 if batched else 3)], progress=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    parents = client.search_runs(
        [client.get_experiment_by_name("sweeps").experiment_id], filter_string="tags.`cpl.sweep.role` = 'parent'"
    )
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    parent_id = parents[0].info.run_id
    first = {k.info.run_id: k for k in children(client, parent_id)}
    assert sorted(k.info.status for k in first.values()) == ["FINISHED", "FINISHED", "KILLED"] + (
        ["KILLED"] if batched else []
    )
    finished = {k.data.tags["cpl.sweep.cell_hash"] for k in first.values() if k.info.status == "FINISHED"}

    # the same sweep again (rebuilt from scratch): same parent, finished cells skipped
    result = run_sweep(
        make_sweep(tiny_base(tmp_path), grid={"model.depth": [1, 2], "switch.at_step": [0, 100]}, batched=batched),
        progress=False,
    )
    assert result.resumed_parent and result.parent_run_id == parent_id
    kids = children(client, parent_id)
    new = [k for k in kids if k.info.run_id not in first]
    assert len(new) == 2 and all(k.info.status == "FINISHED" for k in new)
    assert not {k.data.tags["cpl.sweep.cell_hash"] for k in new} & finished
    assert [r["status"] for r in result.rows] == ["FINISHED"] * 4
    assert [r["resumed"] for r in result.rows] == [True, True, False, False]
    assert all(not math.isnan(r["test/final_error"]) for r in result.rows)
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert client.get_run(parent_id).data.metrics["sweep/n_resumed"] == 2


@pytest.mark.slow
def test_quick_depth_sweep_relative_error_rises_with_depth(tmp_path, monkeypatch):
    sweep = load_sweep(
        "matcomp_depth_sweep_quick",
        [f"tracking.uri=sqlite:///{tmp_path}/m.db", f"trainer.checkpoint_dir={tmp_path}/ckpt"],
    )
    result = run_sweep(sweep, progress=False)
    assert not result.failed
    last = max(sweep.grid["switch.at_step"])
    rel = {r["model.depth"]: r["relative_error"] for r in result.rows if r["switch.at_step"] == last}
    assert abs(rel[1]) < 0.01  # depth 1: only the observed entries move, the deficit does no damage
    assert rel[3] > rel[2] > rel[1] + 0.05
    crit = result.summary
    assert math.isnan(crit["critical_period/model.depth_1"])
    assert crit["critical_period/model.depth_3"] <= last


def test_a_sweep_conf_loads_as_its_base_for_a_single_run():
    from cpl.config import load_config

    cfg = load_config("matcomp_depth_sweep_quick", ["model.depth=2"])
    assert "sweep" not in cfg and cfg.model.depth == 2 and cfg.optim.lr == 10.0
    with pytest.raises(ConfigError, match=r"Unknown config key 'sweep'"):
        load_config("matcomp_depth_sweep_quick", ["sweep.threshold=0.1"])


def test_cli_runs_an_inline_grid_and_reports_failed_cells(tmp_path, capsys):
    args = [
        "conf=matcomp_rank10to5",
        "task.size=20",
        "task.pretrain_rank=4",
        "task.final_rank=2",
        "task.n_obs=150",
        "train.steps_after_switch=60",
        "log.figures=false",
        "log.every_n_steps=50",
        "log.sv_every_n_steps=50",
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
        f"trainer.checkpoint_dir={tmp_path}/ckpt",
        "sweep.grid.optim.lr=[3.0,1.0e4]",
        "sweep.grid.switch.at_step=[0]",
    ]
    assert sweep_main(args) == 1  # one cell diverges: reported, exit status 1
    out, err = capsys.readouterr()
    assert "| 0 | 3 | 0 | FINISHED |" in out and "| 1 | 1e+04 | 0 | FAILED |" in out
    assert "1 cell(s) FAILED" in err and "DivergenceError" in err


def test_tasks_start_longest_first(tmp_path):
    """A pool's makespan: the deepest (slowest) group starts first, so two cores end together on the
    depth sweep's three groups instead of running the two shortest one after the other."""

    class Recording:
        processes, order = 2, []

        def map(self, fn, tasks):
            for task in tasks:
                self.order.append((task[0].config.model.depth, len(task)))
                yield task, fn(task)

    grid = {"model.depth": [1, 2, 3], "switch.at_step": [0, 150]}
    sweep = make_sweep(tiny_base(tmp_path), name="order", grid=grid, batched=True)
    executor = Recording()
    assert not run_sweep(sweep, executor=executor, progress=False).failed
    assert executor.order == [(3, 2), (2, 2), (1, 2)]


@pytest.mark.parametrize("processes, expected", [(1, [[1, 1, 2, 2]]), (2, [[1, 1], [2, 2]])])
def test_cells_of_one_shape_are_split_across_a_pools_workers(tmp_path, processes, expected):
    """Cells that could all batch into one run (one shape) are split, whole onset chains at a time
    (both onsets of a seed in one task: its trunk trained once), so that every worker of a pool gets
    a task; one process keeps one batched run."""

    class Recording:
        def __init__(self, processes):
            self.processes, self.seeds = processes, []

        def map(self, fn, tasks):
            for task in tasks:
                self.seeds.append(sorted(c.config.seed for c in task))
                yield task, fn(task)

    grid = {"seed": [1, 2], "switch.at_step": [0, 150]}  # two onset chains of two cells, one shape
    sweep = make_sweep(tiny_base(tmp_path), name="split", grid=grid, batched=True)
    executor = Recording(processes)
    assert not run_sweep(sweep, executor=executor, progress=False).failed
    assert executor.seeds == expected


def test_a_callback_that_served_a_run_in_this_process_still_reaches_a_pool(tmp_path):
    """Lightning binds the module's log methods onto every callback of a fit: passed on to a pooled
    sweep afterwards, such a callback pickled the whole module and every cell FAILED (reproduce's
    full profile: the one-cell fig10 sweep in-process, then the pooled partial-information sweep)."""
    from cpl.run import train

    probe = Callback()
    train(tiny_base(tmp_path / "single"), callbacks=[probe])
    assert "log" in vars(probe)  # what Lightning left on it
    grid = {"model.depth": [1, 2], "switch.at_step": [0]}
    sweep = make_sweep(tiny_base(tmp_path), name="pooled", grid=grid, processes=2)
    result = run_sweep(sweep, callbacks=[probe], progress=False)
    assert [r["status"] for r in result.rows] == ["FINISHED"] * 2, result.failed
    assert "log" in vars(probe)  # the caller's object is left as it was
