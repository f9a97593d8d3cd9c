"""MLflow contents after short real runs, failure/interrupt status, and checkpoint resume."""

import signal

import lightning as L
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import small_matcomp
from cpl import DivergenceError, train
from cpl.run import build


class InterruptAt(L.Callback):
    """Simulates Ctrl-C after ``step`` gradient steps."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def _run(client, run_id):
    return client.get_run(run_id)


def test_mlflow_run_contents(tmp_path):
    cfg = small_matcomp(tmp_path)
    result = train(cfg)
    assert result.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (
        p["model.depth"] == "3" and p["task.n_obs"] == "150" and p["switch.at_step"] == "30" and p["optim.lr"] == "0.5"
    )
    assert run.data.tags["cpl.conf"] == "test" and run.data.tags["cpl.kind"] == "matcomp"
    from cpl.tracking import git_commit

    commit = git_commit()
    if commit:  # tests run from a git checkout in CI; a plain copy of the sources has no commit
        assert run.data.tags["mlflow.source.git.commit"] == commit
    # metrics with their steps
    hist = client.get_metric_history(result.run_id, "test/final_error")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 10, 20, 30, 40, 50, 60]
    assert sorted(m.step for m in client.get_metric_history(result.run_id, "sv/1")) == list(range(0, 61, 5))
    assert [m.step for m in client.get_metric_history(result.run_id, "task/switched")] == [30]
    last = max(hist, key=lambda m: m.step)
    assert last.value == pytest.approx(result.metrics["test/final_error"], rel=1e-6)
    assert run.data.metrics["sv/effective_rank"] == pytest.approx(result.metrics["sv/effective_rank"], rel=1e-6)
    # artifacts: resolved config and the singular-value figure
    arts = {a.path for a in client.list_artifacts(result.run_id)} | {
        a.path for a in client.list_artifacts(result.run_id, "figures")
    }
    assert "config.yaml" in arts and "figures/singular_values.png" in arts
    from cpl.tracking.dense import load_dense

    dense = load_dense(client, result.run_id)  # the full-resolution readouts, one artifact
    steps, values = dense["singular_values"]
    assert steps.tolist() == list(range(0, 61, 5)) and values.shape == (13, 5)
    assert float(values[-1, 0]) == pytest.approx(run.data.metrics["sv/1"], rel=1e-6)
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run_id,
        artifact_path="config.yaml",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        dst_path=str(tmp_path / "dl"),
    )
    assert "depth: 3" in open(local).read()
    png = mlflow.artifacts.download_artifacts(
        run_id=result.run_id,
        artifact_path="figures/singular_values.png",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        dst_path=str(tmp_path / "dl"),
    )
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_diverging_run_is_failed_with_metrics_kept(tmp_path):
    cfg = small_matcomp(tmp_path, optim={"lr": 300.0}, model={"init_scale": 1.0}, log={"every_n_steps": 1})
    with pytest.raises(DivergenceError):
        train(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED"
    assert "lower learning rate" in run.data.tags["cpl.status_message"]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1


@pytest.mark.parametrize("steps_per_call", [1, 5, "auto"])
def test_interrupt_is_killed_and_resume_matches_uninterrupted(tmp_path, steps_per_call):
    handler = signal.getsignal(signal.SIGINT)
    cfg = small_matcomp(tmp_path, trainer={"dtype": "float64", "steps_per_call": steps_per_call})
    full = build(cfg)
    train(cfg, experiment=full)

    part = build(cfg)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, experiment=part, callbacks=[InterruptAt(20)])
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN is undone
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    killed = [
        r
        for r in client.search_runs([client.get_experiment_by_name("test").experiment_id])
        if r.info.status == "KILLED"
    ]
    assert len(killed) == 1
    run_id = killed[0].info.run_id
    assert max(m.step for m in client.get_metric_history(run_id, "sv/1")) == 20  # metrics so far are kept
    ckpt = tmp_path / "ckpt" / run_id / "last.ckpt"
    assert ckpt.is_file()

    resumed_cfg = small_matcomp(
        tmp_path, trainer={"dtype": "float64", "ckpt_path": str(ckpt), "steps_per_call": steps_per_call}
    )
    resumed = build(resumed_cfg)
    result = train(resumed_cfg, experiment=resumed)
    assert result.status == "FINISHED"
    assert resumed.callbacks[0].switched_at == [30]  # TaskSwitch ran after the resume, at the right step
    for a, b in zip(full.module.model.factors, resumed.module.model.factors):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # the singular-value history carries across the resume
    assert resumed.callbacks[1].history()["steps"] == full.callbacks[1].history()["steps"]


def test_tracking_uri_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    cfg = small_matcomp(tmp_path, tracking={"uri": None}, train={"steps_after_switch": 0}, switch={"at_step": 5})
    result = train(cfg)
    assert result.tracking_uri == f"sqlite:///{tmp_path}/env.db"
    assert MlflowClient(result.tracking_uri).get_run(result.run_id).info.status == "FINISHED"


def test_default_store_is_local_sqlite(tmp_path, monkeypatch):
    from cpl.tracking import DEFAULT_TRACKING_URI, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) == DEFAULT_TRACKING_URI == "sqlite:///mlruns/mlflow.db"
    monkeypatch.chdir(tmp_path)
    cfg = small_matcomp(tmp_path, tracking={"uri": None}, train={"steps_after_switch": 0}, switch={"at_step": 5})
    result = train(cfg)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    arts = list((tmp_path / "mlruns" / "artifacts").rglob("config.yaml"))
    assert len(arts) == 1 and result.run_id in str(arts[0])


# ---- the metric writer process


def _store(tmp_path):
    from cpl import tracking

    uri = f"sqlite:///{tmp_path}/writer.db"
    client = tracking.get_client(uri)
    run_id = tracking.start_run(client, "writer")
    return uri, client, run_id


def _rows(n, key="m", offset=0):
    return [(key, float(i) / 7, 1700000000000 + i, offset + i) for i in range(n)]


def _history(client, run_id, key="m"):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_writer_process_writes_every_row_in_chunks(tmp_path):
    from cpl.tracking.writer import MetricWriter

    uri, client, run_id = _store(tmp_path)
    writer = MetricWriter(uri)
    writer.send([(run_id, _rows(2500))])  # more than MLflow's 1000 rows per call
    writer.send([(run_id, _rows(10, key="other"))])
    writer.close()
    assert not writer.alive and writer.fallbacks == 0
    assert _history(client, run_id) == [(i, i / 7) for i in range(2500)]
    assert len(client.get_metric_history(run_id, "other")) == 10


def test_writer_process_errors_reach_the_parent_and_rows_are_spilled(tmp_path):
    from cpl.tracking import writer as w
    from cpl.tracking.spill import StoreUnreachable, read_spill

    uri, client, run_id = _store(tmp_path)
    w.configure(2.0, 1, tmp_path / "spill.jsonl")
    writer = w.MetricWriter(uri)
    writer.send([("0123456789abcdef0123456789abcdef", _rows(3))])  # no such run
    try:
        with pytest.raises(StoreUnreachable, match="did not take 3 metric rows"):
            writer.wait()
    finally:
        writer.close()
        w.configure(30.0, 2, None)
    assert read_spill(tmp_path / "spill.jsonl")[1] == [("0123456789abcdef0123456789abcdef", _rows(3))]


def test_writer_process_killed_loses_nothing_and_duplicates_nothing(tmp_path):
    """A batch the child did not acknowledge is written again by the parent (MLflow keeps one copy)."""
    from cpl.tracking.writer import MetricWriter

    uri, client, run_id = _store(tmp_path)
    writer = MetricWriter(uri)
    writer.send([(run_id, _rows(300))])
    writer._proc.kill()  # it may or may not have written the batch
    writer.wait()
    writer.send([(run_id, _rows(200, offset=300))])  # the child is gone: written here
    writer.close()
    assert writer.fallbacks >= 1
    assert _history(client, run_id) == [(i, i / 7) for i in range(300)] + [(300 + i, i / 7) for i in range(200)]


def test_router_logger_hands_writes_to_the_process_and_finalize_waits(tmp_path):
    from cpl.tracking import MemberRouterLogger

    uri, client, run_id = _store(tmp_path)
    logger = MemberRouterLogger(
        client, [run_id], flush_every_s=0.0, background=True
    )  # every call flushes in the background
    for step in range(50):
        logger.log_metrics({"a": step * 0.5, "b": -step}, step=step)
    assert logger._writer is not None and logger._writer.alive
    logger.finalize()
    assert not logger._writer.alive
    assert _history(client, run_id, "a") == [(s, s * 0.5) for s in range(50)]
    logger.log_metrics({"late": 1.0}, step=50)  # after finalize: written directly
    logger.flush()
    assert len(client.get_metric_history(run_id, "late")) == 1


def test_background_writes_config_reaches_the_logger(tmp_path, monkeypatch):
    """tracking.background_writes=true: a run that flushes during training writes through the helper process."""
    from cpl import tracking

    seen = {}

    class Eager(tracking.MemberRouterLogger):  # flushes at every call, as a long run does every few seconds
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.flush_every_s = 0.0

        def finalize(self, status="success"):
            seen["writer"] = self._writer is not None and self._writer.alive
            super().finalize(status)

    monkeypatch.setattr(tracking, "MemberRouterLogger", Eager)
    cfg = small_matcomp(tmp_path, tracking={"background_writes": True})
    result = train(cfg)
    assert seen["writer"] is True
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    steps = [m.step for m in client.get_metric_history(result.run_id, "test/final_error")]
    assert (
        steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == cfg.switch.at_step + cfg.train.steps_after_switch
    )
