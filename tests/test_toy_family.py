"""A third model family is a package plus one registry line: the toy family in tests/toy_family/
loads from a conf, validates, trains, sweeps and is recorded in MLflow like cpl's own families."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from cpl.config import FAMILIES, ConfigError, load_config, register_family
from cpl.run import train
from cpl.sweep import make_sweep, run_sweep
from toy_family.experiment import toy_data


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", FAMILIES.get("toy", ""))  # restored after the test
    register_family("toy", "toy_family")  # the one registry line
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "toy_run.yaml").write_text(
        "kind: toy\ntask:\n  dim: 3\n  samples: 8\noptim:\n  lr: 0.2\ntrain:\n  max_steps: 40\n"
        f"tracking:\n  uri: sqlite:///{tmp_path}/mlflow.db\n  experiment: toy\n"
        f"trainer:\n  progress_bar: false\n  checkpoint_dir: {tmp_path}/ckpt\n"
    )
    return conf


def _plain_gd(cfg) -> float:
    x, y = (t.numpy() for t in toy_data(cfg))
    w = np.zeros(x.shape[1])
    for _ in range(cfg.train.max_steps):
        w -= cfg.optim.lr * x.T @ (x @ w - y) / len(y)
    return 0.5 * float(np.mean((x @ w - y) ** 2))


def test_toy_family_loads_validates_trains_and_is_tracked(toy):
    cfg = load_config("toy_run", directory=toy)
    assert (cfg.kind, cfg.task.dim, cfg.optim.lr) == ("toy", 3, 0.2)
    result = train(cfg)
    assert result.metrics["train/loss"] == pytest.approx(_plain_gd(cfg), rel=1e-10)
    run = MlflowClient(cfg.tracking.uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cpl.kind"] == "toy"
    assert run.data.metrics["train/loss"] == pytest.approx(result.metrics["train/loss"])


def test_toy_family_schema_errors(toy):
    with pytest.raises(ConfigError, match=r"Unknown config key 'task.dimm'.*Did you mean 'task.dim'"):
        load_config("toy_run", ["task.dimm=2"], directory=toy)
    with pytest.raises(ConfigError, match=r"Invalid value for 'task.dim': got 0; allowed: an integer >= 1"):
        load_config("toy_run", ["task.dim=0"], directory=toy)


def test_toy_family_sweeps_without_batching(toy):
    base = load_config("toy_run", directory=toy)
    sweep = make_sweep(base, grid={"optim.lr": [0.1, 0.2]}, onset_key=None, metric="train/loss")
    result = run_sweep(sweep, progress=False)
    assert [r["status"] for r in result.rows] == ["FINISHED", "FINISHED"]
    for row in result.rows:
        cfg = load_config("toy_run", [f"optim.lr={row['optim.lr']}"], directory=toy)
        assert row["train/loss"] == pytest.approx(_plain_gd(cfg), rel=1e-10)


def test_unknown_kind_lists_the_families():
    with pytest.raises(ConfigError, match=r"Invalid value for 'kind': got 'nope'; allowed: matcomp, multipath"):
        from cpl.config import make_config

        make_config("nope")
