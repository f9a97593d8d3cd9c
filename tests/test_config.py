"""Config errors: one test per message; every error is raised before any training."""

import subprocess
import sys
from pathlib import Path

import pytest

from cpl.config import ConfigError, available_confs, flatten, load_config, make_config, max_steps

ROOT = Path(__file__).resolve().parents[1]


def test_default_conf_is_the_paper_setting():
    cfg = load_config("matcomp_rank10to5")
    assert (cfg.task.size, cfg.task.pretrain_rank, cfg.task.final_rank, cfg.task.n_obs) == (100, 10, 5, 2000)
    assert (cfg.model.depth, cfg.model.init_scale, cfg.optim.lr) == (3, 1e-3, 0.2)
    assert (cfg.switch.at_step, max_steps(cfg)) == (20000, 50000)
    assert cfg.name == "matcomp_rank10to5"


def test_dotlist_overrides_apply():
    cfg = load_config("matcomp_rank10to5", ["model.depth=4", "task.n_obs=3000", "switch.at_step=40000"])
    assert (cfg.model.depth, cfg.task.n_obs, cfg.switch.at_step, max_steps(cfg)) == (4, 3000, 40000, 70000)
    assert flatten(cfg)["model.depth"] == 4


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(
        ConfigError,
        match=(
            r"Unknown config key 'model.dept'.*Allowed keys under 'model': depth, init, init_scale.*Did you "
            r"mean 'model.depth'"
        ),
    ):
        load_config("matcomp_rank10to5", ["model.dept=4"])


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match=r"Unknown config key 'modle'"):
        load_config("matcomp_rank10to5", ["modle.depth=4"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"Config key 'model.depth' .* has value 'abc' of the wrong type"):
        load_config("matcomp_rank10to5", ["model.depth=abc"])


def test_unknown_conf_lists_available():
    with pytest.raises(ConfigError, match=r"conf='nope' not found .* available confs: .*matcomp_rank10to5"):
        load_config("nope")


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("model.depth=0", r"'model.depth': got 0; allowed: an integer from 1 to 1000"),
        ("task.final_rank=101", r"'task.final_rank': got 101; allowed: an integer from 1 to task.size=100"),
        ("task.pretrain_rank=0", r"'task.pretrain_rank': got 0; allowed: an integer from 1 to task.size=100"),
        ("task.n_obs=10001", r"'task.n_obs': got 10001; allowed: an integer from 1 to task.size\^2=10000"),
        ("task.n_obs=0", r"'task.n_obs': got 0; allowed: an integer from 1 to task.size\^2=10000"),
        ("optim.lr=0", r"'optim.lr': got 0.0; allowed: a finite number > 0"),
        ("optim.lr=-0.1", r"'optim.lr': got -0.1; allowed: a finite number > 0"),
        ("model.init=xavier", r"'model.init': got 'xavier'; allowed: gaussian, balanced or aligned"),
        ("model.init_scale=0", r"'model.init_scale': got 0.0; allowed: a number > 0"),
        ("switch.at_step=-1", r"'switch.at_step': got -1; allowed: an integer >= 0"),
        ("task.pretrain_task=other", r"'task.pretrain_task': got 'other'; allowed: independent or same"),
        ("trainer.dtype=float16", r"'trainer.dtype': got 'float16'; allowed: float32 or float64"),
        ("log.every_n_steps=0", r"'log.every_n_steps': got 0; allowed: an integer >= 1"),
        (
            "trainer.ckpt_path=/no/such.ckpt",
            r"'trainer.ckpt_path': got '/no/such.ckpt'; allowed: the path of an existing checkpoint",
        ),
    ],
)
def test_impossible_values(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config("matcomp_rank10to5", [override])


def test_switch_beyond_end_of_run():
    with pytest.raises(
        ConfigError, match=r"'switch.at_step': got 60000; allowed: a step within the run, <= train.max_steps=50000"
    ):
        load_config("matcomp_rank10to5", ["switch.at_step=60000", "train.max_steps=50000"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"Could not parse overrides"):
        load_config("matcomp_rank10to5", ["=3"])


def test_make_config_checks_keys():
    with pytest.raises(ConfigError, match=r"Unknown config key 'task.sizes'"):
        make_config("matcomp", task={"sizes": 3})


def test_every_conf_loads():
    assert "matcomp_rank10to5" in available_confs()
    for name in available_confs():
        load_config(name)


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_help_lists_confs_and_syntax():
    out = _cli("--help")
    assert out.returncode == 0
    assert "conf=NAME" in out.stdout and "model.depth=4" in out.stdout and "matcomp_rank10to5" in out.stdout


def test_cli_reports_config_error_before_training():
    out = _cli("conf=matcomp_rank10to5", "model.depth=0")
    assert out.returncode == 2
    assert "error: Invalid value for 'model.depth': got 0" in out.stderr
    assert "Epoch" not in out.stderr + out.stdout


def test_sv_log_interval_must_be_a_multiple_of_the_readout():
    with pytest.raises(
        ConfigError, match=r"'log.sv_log_every_n_steps': got 15; allowed: null or a multiple of log.sv_every_n_steps=10"
    ):
        load_config("matcomp_rank10to5", ["log.sv_log_every_n_steps=15"])


# ---- composition: conf/base/*, conf/overlays/*, `defaults:` lists


def test_confs_compose_from_bases_and_the_quick_overlay():
    full, quick = load_config("matcomp_nobs_sweep"), load_config("matcomp_nobs_sweep_quick")
    base = load_config("matcomp_rank10to5")
    assert (full.task.size, full.model.depth, full.optim.lr, full.switch.at_step) == (100, 3, 0.2, 0)
    assert (quick.optim.lr, quick.train.steps_after_switch, quick.log.every_n_steps) == (10.0, 600, 50)
    assert (base.task.pretrain_rank, base.switch.at_step) == (10, 20000)
    # only top-level files are confs: bases and overlays are parts
    assert not any(name.startswith(("base", "overlays")) for name in available_confs())


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_merge_in_order_and_the_conf_last(tmp_path):
    _write(tmp_path, "parts/a", "model:\n  depth: 2\noptim:\n  lr: 0.1\n")
    _write(tmp_path, "parts/b", "optim:\n  lr: 0.3\n")
    _write(tmp_path, "mine", "defaults: [parts/a, parts/b]\nmodel:\n  init_scale: 0.01\n")
    cfg = load_config("mine", directory=tmp_path)
    assert (cfg.model.depth, cfg.optim.lr, cfg.model.init_scale) == (2, 0.3, 0.01)


def test_defaults_errors_name_the_file(tmp_path):
    _write(tmp_path, "missing", "defaults: [parts/nope]\n")
    with pytest.raises(ConfigError, match=r"Invalid value for 'defaults' \(from .*missing.yaml\): got 'parts/nope'"):
        load_config("missing", directory=tmp_path)
    _write(tmp_path, "loop_a", "defaults: [loop_b]\n")
    _write(tmp_path, "loop_b", "defaults: [loop_a]\n")
    with pytest.raises(ConfigError, match=r"'defaults' form a cycle \(loop_a -> loop_b -> loop_a\)"):
        load_config("loop_a", directory=tmp_path)
    _write(tmp_path, "notlist", "defaults: base\n")
    with pytest.raises(ConfigError, match=r"allowed: a list of conf paths"):
        load_config("notlist", directory=tmp_path)


def test_yaml_syntax_error_is_file_and_line(tmp_path):
    path = _write(tmp_path, "broken", "model:\n  depth: 3\n  init: [gaussian\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: YAML syntax error: "):
        load_config("broken", directory=tmp_path)
