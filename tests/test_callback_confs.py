"""The ``callbacks:`` section of run configs: composed from callbacks/*.yaml, bound to the typed keys,
changed from the command line, checked before any work, and the same runs and hashes as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import LambdaCallback

from cpl.callbacks import ODEReference, SingularValueLogger, TaskSwitch
from cpl.callbacks.compose import instantiate, load_callbacks
from cpl.config import ConfigError, load_config
from cpl.run import build
from cpl.sweep import config_hash

REPO = Path(__file__).resolve().parents[1]


def test_every_callback_file_names_every_argument_with_a_comment():
    import inspect

    for path in sorted((REPO / "callbacks").glob("*.yaml")):
        node = yaml.safe_load(path.read_text())[path.stem]
        module, _, name = node["_target_"].rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        params = [p for p in inspect.signature(cls).parameters if p != "self"]
        assert sorted(node) == sorted(["_target_", *params]), path.name
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith("  ") and not ln.strip().startswith("_")]
        assert all("#" in ln for ln in lines), path.name
    built = load_callbacks(["singular_values", "task_switch", "gating_deficit", "mode_lesion", "ode_reference"])
    assert [type(cb).__name__ for cb in built] == [
        "SingularValueLogger",
        "TaskSwitch",
        "GatingDeficit",
        "ModeLesion",
        "ODEReference",
    ]


def test_confs_bind_their_callbacks_to_the_typed_keys():
    cfg = load_config("matcomp_rank10to5", ["switch.at_step=300", "log.sv_top_k=4"])
    assert cfg.callbacks.task_switch.at_step == 300 and cfg.callbacks.singular_values.top_k == 4
    exp = build(cfg)
    switch, svl = exp.callbacks[:2]
    assert isinstance(switch, TaskSwitch) and switch.at_steps == [300]
    assert isinstance(svl, SingularValueLogger) and (svl.top_k, svl.every_n_steps, svl.log_every_n_steps) == (
        4,
        10,
        100,
    )
    assert not any(isinstance(cb, ODEReference) for cb in exp.callbacks)  # ode.enabled=false


def test_command_line_selects_adds_and_removes_callbacks():
    cfg = load_config(
        "matcomp_rank10to5",
        [
            "callbacks=[singular_values,task_switch]",
            "+callbacks.probe._target_=lightning.pytorch.callbacks.LambdaCallback",
        ],
    )
    assert list(cfg.callbacks) == ["singular_values", "task_switch", "probe"]
    assert cfg.callbacks.singular_values.every_n_steps == 10  # kept its binding to log.sv_every_n_steps
    types = [type(cb) for cb in build(cfg).callbacks]
    assert types == [TaskSwitch, SingularValueLogger, LambdaCallback]
    cfg = load_config("matcomp_rank10to5", ["~callbacks.task_switch", "callbacks.singular_values.prefix=w"])
    exp = build(cfg)
    assert [type(cb) for cb in exp.callbacks] == [SingularValueLogger] and exp.callbacks[0].prefix == "w"
    cfg = load_config("multipath_depth4_gating", ["callbacks.gating_deficit=null", "deficit.enabled=false"])
    assert "gating_deficit" not in cfg.callbacks


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["callbacks=[nope]"], r"Invalid value for 'callbacks': got 'nope'; allowed: a file of .*singular_values"),
        (["+callbacks.x.every=3"], r"Invalid value for 'callbacks.x': got \{'every': 3\}; allowed: a mapping with"),
        (["~model.depth"], r"'~' removes a callback, e.g. ~callbacks.task_switch"),
        (["ode.enabled=true", "~callbacks.ode_reference"], r"ode.enabled=true needs the callback 'ode_reference'"),
    ],
)
def test_callback_config_errors_before_any_work(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("matcomp_rank10to5", overrides)


def test_bad_callback_arguments_fail_at_build_with_one_line():
    cfg = load_config("matcomp_rank10to5", ["callbacks.singular_values.top_kk=3"])
    with pytest.raises(ConfigError, match=r"Invalid value for 'callbacks.singular_values' .*'top_kk' is not accepted"):
        build(cfg)
    cfg = load_config("matcomp_rank10to5", ["+callbacks.p._target_=nowhere.Thing"])
    with pytest.raises(ConfigError, match=r"Invalid value for 'callbacks.p._target_': got 'nowhere.Thing'"):
        build(cfg)


def test_conf_files_add_callbacks_with_defaults(tmp_path):
    (tmp_path / "mine.yaml").write_text("defaults: [callbacks/gating_deficit]\nkind: matcomp\n")
    cfg = load_config("mine", directory=tmp_path)
    assert list(cfg.callbacks) == ["task_switch", "singular_values", "ode_reference", "gating_deficit"]
    assert cfg.callbacks.gating_deficit._target_ == "cpl.callbacks.GatingDeficit"


def test_hashes_ignore_the_default_callbacks_only():
    base = load_config("matcomp_rank10to5")
    assert config_hash(base) == config_hash(load_config("matcomp_rank10to5", ["callbacks.task_switch.to_task=final"]))
    assert config_hash(base) != config_hash(load_config("matcomp_rank10to5", ["callbacks.singular_values.top_k=3"]))


def test_loading_a_conf_with_callbacks_imports_no_torch():
    code = (
        "import sys\nfrom cpl.config import load_config\n"
        "load_config('multipath_lesion', ['callbacks=[gating_deficit,mode_lesion,singular_values,ode_reference]'])\n"
        "print('torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


def test_jsonargparse_and_lightning_cli_take_cpls_own_reference(tmp_path):
    cb = instantiate(
        {
            "_target_": "cpl.callbacks.ODEReference",
            "reference": {"_target_": "cpl.families.multipath.reference.MultiPathwayReference", "kind": "flow"},
        }
    )
    assert cb.reference.kind == "flow"
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.demos.boring_classes import BoringModel

    config = tmp_path / "cli.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: cpl.callbacks.ODEReference\n      init_args:\n"
        "        reference:\n          class_path: cpl.families.multipath.reference.MultiPathwayReference\n"
        "          init_args: {kind: flow}\n"
        "    - class_path: cpl.callbacks.TaskSwitch\n      init_args: {at_step: [40]}\n"
    )
    cli = LightningCLI(BoringModel, run=False, args=["--config", str(config), "--trainer.logger=false"])
    ode = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ODEReference))
    assert type(ode.reference).__name__ == "MultiPathwayReference"
