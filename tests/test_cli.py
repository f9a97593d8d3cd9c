"""The ``cpl`` command: every subcommand on a tiny conf, dry runs that record nothing, run names
and tags, the links it prints, its light imports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cpl import plan
from cpl.cli import COMMANDS, main
from cpl.cli.main import Command
from cpl.config import load_config
from cpl.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]

#: a tiny matrix-completion conf (N = 20, 60 steps); overrides say the rest
TINY = """\
kind: matcomp
task: {size: 20, pretrain_rank: 4, final_rank: 2, n_obs: 150}
model: {depth: 3, init_scale: 0.1}
optim: {lr: 0.5}
switch: {at_step: 30}
train: {steps_after_switch: 30}
log: {every_n_steps: 10, sv_every_n_steps: 5, sv_top_k: 4}
trainer: {progress_bar: false, checkpoint_every_n_steps: 0}
"""
TINY_SWEEP = TINY + "sweep:\n  grid:\n    model.depth: [1, 2]\n    switch.at_step: [0, 30]\n  threshold: 0.01\n"


@pytest.fixture
def confs(tmp_path, monkeypatch):
    """A conf folder with `tiny` and `tiny_sweep`, and a store under tmp_path: ``(store uri, its db path)``."""
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY)
    (folder / "tiny_sweep.yaml").write_text(TINY_SWEEP)
    monkeypatch.setenv("CPL_CONF_DIR", str(folder))
    db = tmp_path / "store" / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)  # checkpoints/ and outputs/ land here
    return f"sqlite:///{db}", db


def _runs(uri: str, experiment: str = "cpl") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


# --------------------------------------------------------------------------- the command table


def test_help_lists_the_installed_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "sweep", "runs", "ui", "phase", "bench"):
        assert re.search(rf"^  {name}\s", out, re.M), name
    for name in ("reproduce", "replay"):  # optional parts: listed only where installed
        assert bool(re.search(rf"^  {name}\s", out, re.M)) == COMMANDS[name].installed()
    assert main([]) == 2 and main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_an_optional_command_runs_when_its_module_exists_and_answers_clearly_when_not(monkeypatch, capsys):
    fake = types.ModuleType("cpl_fake_command")
    fake.main = lambda argv: 7 if argv == ["conf=x"] else 0
    monkeypatch.setitem(sys.modules, "cpl_fake_command", fake)
    monkeypatch.setitem(COMMANDS, "fake", Command("cpl_fake_command", "main", "a fake command"))
    monkeypatch.setitem(COMMANDS, "absent", Command("cpl_no_such_module.sub", "main", "not installed"))
    assert main(["fake", "conf=x"]) == 7
    assert main(["absent"]) == 2
    assert "`cpl absent` is not available" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "a fake command" in out and "not installed" not in out


def console_script() -> Path | None:
    """Where `pip install` put the `cpl` console script (beside the interpreter, or on PATH)."""
    found = [Path(sysconfig.get_path("scripts")) / "cpl", Path(sys.executable).with_name("cpl")]
    found += [Path(p) for p in [shutil.which("cpl")] if p]
    return next((p for p in found if p.is_file()), None)


def test_console_script_and_module_entry_point():
    script = console_script()
    assert script is not None, "pip install -e . installs the `cpl` console script"
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "cpl.cli", "train", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0 and "usage: cpl" in out.stdout, out.stderr


# --------------------------------------------------------------------------- train


def test_train_names_the_run_after_its_overrides_tags_them_and_prints_its_page(confs, capsys):
    uri, _ = confs
    assert main(["train", "conf=tiny", "model.depth=2", "optim.lr=0.4", "trainer.checkpoint_dir=ck"]) == 0
    out = capsys.readouterr().out
    (run,) = _runs(uri)
    assert run.info.run_name == "tiny depth=2 lr=0.4" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["cpl.override.model.depth"] == "2" and tags["cpl.override.optim.lr"] == "0.4"
    assert tags["cpl.override.trainer.checkpoint_dir"] == "ck"  # a tag, but not in the name
    exp_id = run.info.experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run.info.run_id}?workflowType=machine_learning" in out
    # headline metrics: the run's final values under final/, logged at the last step
    client = MlflowClient(uri)
    m = run.data.metrics
    assert m["final/test_error"] == m["test/final_error"] and m["final/train_loss"] == m["train/loss"]
    assert m["final/w_effective_rank"] == m["sv/effective_rank"]
    assert [x.step for x in client.get_metric_history(run.info.run_id, "final/test_error")] == [60]
    assert f"{m['test/final_error']:.6g}" in out
    # figures as PNG and PDF
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert arts == {"figures/singular_values.png", "figures/singular_values.pdf"}
    pdf = Path(client.download_artifacts(run.info.run_id, "figures/singular_values.pdf", str(confs[1].parent)))
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_figure_formats_choose_what_a_run_logs(confs):
    uri, _ = confs
    assert main(["train", "conf=tiny", "log.figure_formats=[svg]", "trainer.checkpoint_dir=ck"]) == 0
    (run,) = _runs(uri)
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {"figures/singular_values.svg"}
    svg = Path(client.download_artifacts(run.info.run_id, "figures/singular_values.svg", str(confs[1].parent)))
    assert b"<svg" in svg.read_bytes()[:2000]


def test_train_refuses_a_sweep_conf_and_bad_options(confs, capsys):
    assert main(["train", "conf=tiny_sweep"]) == 2
    err = capsys.readouterr().err
    assert "is a sweep" in err and "cpl sweep conf=tiny_sweep" in err
    assert main(["train", "conf=tiny", "sweep.grid.model.depth=[1,2]"]) == 2
    assert main(["train", "conf=tiny", "--nope"]) == 2
    assert "Unknown option '--nope'" in capsys.readouterr().err
    assert main(["train", "conf=tiny", "--cfg", "--plan"]) == 2
    assert not confs[1].exists()


def test_cfg_prints_the_resolved_config_and_records_nothing(confs, capsys):
    uri, db = confs
    assert main(["train", "conf=tiny", "model.depth=4", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "depth: 4" in out and "run_name: tiny depth=4" in out
    assert main(["sweep", "conf=tiny_sweep", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "sweep:" in out and "model.depth:" in out
    assert not db.exists() and not Path("checkpoints").exists()


def test_paper_confs_dry_run_without_training_or_recording(tmp_path, monkeypatch, capsys):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plan, "CALIBRATION_STEPS", (10, 30))
    assert main(["train", "conf=matcomp_rank10to5", "--cfg"]) == 0
    assert load_config("matcomp_rank10to5").model.depth == 3 and "depth: 3" in capsys.readouterr().out
    assert main(["sweep", "conf=matcomp_depth_sweep", "--plan"]) == 0
    out = capsys.readouterr().out
    # 3 depths x 9 onsets; per depth one chain: the trunk to the last onset once, then 30000 steps per onset
    onsets = [0, 1000, 5000, 10000, 20000, 40000, 60000, 80000, 100000]
    shared = 3 * (max(onsets) + 9 * 30000)
    alone = 3 * sum(t + 30000 for t in onsets)
    assert "27 cells" in out and "depth=3 at_step=100000" in out
    assert f"Total: {shared:,} gradient steps".replace(",", " ") in out and f"{alone:,}".replace(",", " ") in out
    assert re.search(r"Time on this machine: ~[\d.]+ (s|min|h)", out) and "Memory:" in out
    assert "nothing was trained and nothing was recorded" in out
    assert not db.exists() and not (tmp_path / "checkpoints").exists() and not (tmp_path / "mlruns").exists()


def test_plan_of_a_run_lists_its_schedule_and_log_points(confs, capsys, monkeypatch):
    monkeypatch.setattr(plan, "CALIBRATION_STEPS", (10, 30))
    assert main(["train", "conf=tiny", "switch.at_step=20", "--plan"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s*20\s+switch from=pretrain to=final", out, re.M)
    assert re.search(r"^\s*50\s+end$", out, re.M)
    assert re.search(r"^\s*10\s+6\s+metrics: .*test/final_error", out, re.M)  # steps 0, 10, ..., 50
    assert re.search(r"^\s*5\s+11\s+SingularValueLogger sv", out, re.M)
    assert not confs[1].exists()


def test_time_estimate_is_the_calibrated_cost_model():
    cfgs = [c.config for c in load_sweep("matcomp_depth_sweep").cells]
    groups = plan.group_plans(cfgs)
    cal = plan.Calibration(step_seconds=1e-3, member_seconds=2e-3, run_seconds=0.5)
    expected = 3 * (0.5 + 1e-3 * 130000 + 2e-3 * 370000)
    assert plan.estimate_seconds(groups, {g.key: cal for g in groups}) == pytest.approx(expected)


def test_calibration_fits_are_short_untracked_runs(confs, one_thread):
    cfg = load_config("tiny")
    cal = plan.calibrate(cfg, steps=(10, 40), members=2)
    assert cal.steps == (10, 40) and cal.members == 2 and len(cal.fits) == 4 and all(t > 0 for t in cal.fits)
    assert cal.step_seconds >= 0 and cal.member_seconds >= 0 and cal.run_seconds >= 0
    assert cal.seconds(40, 80) > 0 and not confs[1].exists() and not Path("checkpoints").exists()


# --------------------------------------------------------------------------- sweep and runs


def test_sweep_names_children_by_grid_values_and_runs_lists_and_compares_them(confs, capsys):
    uri, _ = confs
    assert main(["sweep", "conf=tiny_sweep", "optim.lr=0.4", "log.figures=false"]) == 0
    out = capsys.readouterr().out
    runs = _runs(uri)
    parent = next(r for r in runs if r.data.tags.get("cpl.sweep.role") == "parent")
    kids = {r.info.run_name: r for r in runs if r is not parent}
    assert parent.info.run_name == "tiny_sweep lr=0.4"
    assert set(kids) == {"depth=1 at_step=0", "depth=1 at_step=30", "depth=2 at_step=0", "depth=2 at_step=30"}
    assert f"/runs/{parent.info.run_id}?workflowType=machine_learning" in out and "#/compare-runs?runs=[" in out

    assert main(["runs", "sweep=tiny_sweep"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^[0-9a-f]{8}\s+(depth=\d at_step=\d+)", out, re.M)
    assert names == ["depth=1 at_step=0", "depth=1 at_step=30", "depth=2 at_step=0", "depth=2 at_step=30"]
    kid = kids["depth=2 at_step=30"]
    line = next(ln for ln in out.splitlines() if "depth=2 at_step=30" in ln)
    assert f"{kid.data.metrics['final/test_error']:.4g}" in line  # the headline columns
    assert "critical_period/" in out

    ids = ",".join(kids[n].info.run_id[:10] for n in ("depth=1 at_step=30", "depth=2 at_step=30"))
    assert main(["runs", f"compare={ids}"]) == 0
    out = capsys.readouterr().out
    depth_row = next(ln for ln in out.splitlines() if ln.startswith("model.depth"))
    assert depth_row.split()[1:] == ["1", "2"]  # the parameters that differ, run by run
    assert not any(ln.startswith("switch.at_step") for ln in out.splitlines())  # equal: left out
    assert "final/test_error" in out and "#/compare-runs?runs=" in out
    assert main(["runs", "limt=3"]) == 2 and "Did you mean 'limit'" in capsys.readouterr().err
    assert main(["runs", "compare=zzzz"]) == 2


# --------------------------------------------------------------------------- phase, bench, ui


def test_phase_takes_key_value_and_writes_png_and_pdf(tmp_path, capsys):
    from cpl.families.multipath.phase import INITS, phase_trajectory

    uri = f"sqlite:///{tmp_path}/m.db"
    args = ["depths=[2]", "epochs=40", "inits=[large]", f"out={tmp_path}/ph", f"tracking.uri={uri}"]
    assert main(["phase", *args]) == 0
    assert (tmp_path / "ph" / "phase_large.png").is_file() and (tmp_path / "ph" / "phase_large.pdf").is_file()
    (run,) = _runs(uri, "cpl-phase")
    traj = phase_trajectory(2, 10.0, INITS["large"], 0.01, 40, (0, 15))
    assert run.data.metrics["phase/large/early/D2/share_a"] == pytest.approx(traj[-1, 0] / traj[-1].sum())
    assert main(["phase", "depths=[0]"]) == 2 and "'depths'" in capsys.readouterr().err
    assert main(["phase", "--depths", "2"]) == 2  # key=value, like every command


def test_bench_runs_on_a_tiny_conf(confs, capsys, one_thread):
    args = ["conf=tiny", "repeats=1", "switch.at_step=20", "train.steps_after_switch=20"]
    assert main(["bench", *args]) == 0
    out = capsys.readouterr().out
    assert "ratio Lightning+MLflow / plain" in out
    diff = float(re.search(r"max \|W_lightning - W_plain\|: (\S+)", out).group(1))
    assert diff < 1e-5  # the same steps


def test_ui_checks_its_options(capsys):
    assert main(["ui", "port=0"]) == 2 and "'port'" in capsys.readouterr().err
    assert main(["ui", "--help"]) == 0 and "model-training view" in capsys.readouterr().out


# --------------------------------------------------------------------------- instant start


def _imported(code: str) -> set[str]:
    """Top-level names of the modules ``code`` imports (``python -X importtime``: a count, not a timing)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return {ln.split("|")[-1].strip() for ln in out.stderr.splitlines() if ln.startswith("import time:")} - {"package"}


HEAVY = ("torch", "lightning", "mlflow", "matplotlib", "scipy", "numpy")
#: modules that `cpl --help`, `cpl train --help` and a config error may import (about 220 today)
LIGHT_BUDGET = 300


@pytest.mark.parametrize(
    "code",
    [
        "import cpl.config",
        "import cpl.cli; cpl.cli.main(['--help'])",
        "import cpl.cli; cpl.cli.main(['train', '--help'])",
        "import cpl.cli; cpl.cli.main(['train', 'conf=matcomp_rank10to5', 'model.depth=0'])",
        "import cpl.cli; cpl.cli.main(['sweep', 'conf=matcomp_depth_sweep', 'sweep.grid.model.dept=[1]'])",
        "import cpl.cli; cpl.cli.main(['sweep', 'conf=matcomp_depth_sweep', '--cfg'])",
        "import cpl.cli; cpl.cli.main(['runs', 'limt=1'])",
    ],
)
def test_help_and_config_errors_import_nothing_heavy(code):
    mods = _imported(code)
    assert len(mods) <= LIGHT_BUDGET, len(mods)
    assert not [m for m in mods if m.split(".")[0] in HEAVY]


@pytest.mark.slow  # two fresh interpreters importing Lightning: ~20 s on 2 busy cores
def test_callbacks_import_no_more_than_lightning_needs():
    lightning = _imported("import lightning.pytorch")
    callbacks = _imported("import cpl.callbacks")
    extra = {m for m in callbacks - lightning if not m.startswith("cpl")}
    assert len(extra) <= 10, sorted(extra)  # no MLflow, no matplotlib beyond what Lightning loads
    assert not [m for m in extra if m.split(".")[0] in ("mlflow", "matplotlib", "ray")]
