"""The run guard: every way out of a run is FINISHED, FAILED or KILLED, checks come before the run,
and no metric row is lost when the store fails (short real runs against a temporary store)."""

from __future__ import annotations

import errno
import os
import signal

import lightning as L
import pytest
from mlflow.tracking import MlflowClient

from conftest import small_matcomp
from cpl.config import ConfigError
from cpl.guard import RunInterrupted, exit_code
from cpl.run import train
from cpl.tracking import spill
from cpl.tracking import writer as w


class SignalAt(L.Callback):
    """Sends ``signum`` to this process after ``step`` gradient steps (as `kill` from outside would)."""

    def __init__(self, step, signum):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("test")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def _stored_rows(client, run) -> set:
    return {
        (m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in client.get_metric_history(run.info.run_id, key)
    }


def test_sigterm_is_killed_like_ctrl_c_and_exits_non_zero(tmp_path, one_thread):
    cfg = small_matcomp(tmp_path)
    with pytest.raises(RunInterrupted) as info:
        train(cfg, callbacks=[SignalAt(20, signal.SIGTERM)])
    assert info.value.signum == signal.SIGTERM and exit_code(info.value) == 143
    client, runs = _runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    ckpt = tmp_path / "ckpt" / runs[0].info.run_id / "last.ckpt"
    assert ckpt.is_file() and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]  # one checkpoint
    message = runs[0].data.tags["cpl.status_message"]
    assert message == f"interrupted by SIGTERM at step 20; resume with trainer.ckpt_path={ckpt}" == info.value.message
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_failure_while_logging_figures_is_failed_with_metrics_kept(tmp_path, one_thread, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cpl.run.log_figure", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(small_matcomp(tmp_path))
    client, runs = _runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["cpl.failure_reason"] == "OSError"
    assert max(m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")) == 60  # all kept


def test_finished_run_leaves_no_checkpoint(tmp_path, one_thread):
    result = train(small_matcomp(tmp_path, trainer={"checkpoint_every_n_steps": 10}))
    assert result.status == "FINISHED" and not (tmp_path / "ckpt" / result.run_id).exists()


@pytest.mark.parametrize(
    "section, match",
    [
        ({"trainer": {"accelerator": "gpu"}}, r"'trainer.accelerator': got 'gpu'; allowed: cpu or auto \(no CUDA"),
        ({"tracking": {"uri": "http://127.0.0.1:1", "timeout_s": 2}}, r"'tracking.uri': got 'http://127.0.0.1:1'"),
        (
            {"tracking": {"uri": "sqlite:/mlflow.db"}},
            r"'tracking.uri': got 'sqlite:/mlflow.db'; allowed: sqlite:///PATH",
        ),
        (
            {"tracking": {"uri": "htp://host:5000"}},
            r"'tracking.uri': got 'htp://host:5000'; allowed: a URI with scheme",
        ),
        ({"tracking": {"uri": "http://host:port"}}, r"'tracking.uri': got 'http://host:port'; allowed: a well-formed"),
        ({"task": {"size": 60000, "n_obs": 10, "pretrain_rank": 1, "final_rank": 1}}, r"'task.size': got 60000.*GiB"),
    ],
)
def test_prechecks_answer_in_one_line_before_any_run(tmp_path, section, match):
    if "accelerator" in str(section):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    cfg = small_matcomp(tmp_path, **section)
    with pytest.raises(ConfigError, match=match) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert _runs(tmp_path)[1] == []


def test_unwritable_checkpoint_dir_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(
        ConfigError, match=r"'trainer.checkpoint_dir': got .*; allowed: a folder this process can write"
    ):
        train(small_matcomp(tmp_path, trainer={"checkpoint_dir": str(tmp_path / "file" / "ckpt")}))
    assert _runs(tmp_path)[1] == []


def test_ctrl_c_while_the_run_is_created_leaves_it_killed(tmp_path, monkeypatch):
    from cpl import tracking

    start = tracking.start_run

    def start_then_ctrl_c(*args, **kwargs):
        run_id = start(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # arrives before the run's id is returned
        return run_id

    monkeypatch.setattr(tracking, "start_run", start_then_ctrl_c)
    with pytest.raises(RunInterrupted):
        train(small_matcomp(tmp_path))
    assert [r.info.status for r in _runs(tmp_path)[1]] == ["KILLED"]


def test_unreachable_store_spills_rows_then_replay_restores_them_once(tmp_path, one_thread, monkeypatch):
    """Rows in the store + the spill file == rows produced; replay writes each spilled row exactly once."""
    real, calls = w._store_write, []

    def fails_after_two(client, batch):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "database or disk is full")
        real(client, batch)

    monkeypatch.setattr(w, "_store_write", fails_after_two)
    cfg = small_matcomp(tmp_path, tracking={"timeout_s": 2, "retries": 1}, train={"steps_after_switch": 3000})
    before = w.POLICY.rows
    with pytest.raises(spill.StoreUnreachable) as info:
        train(cfg)
    produced = w.POLICY.rows - before
    client, runs = _runs(tmp_path)
    (run,) = runs
    assert run.info.status == "FAILED" and run.data.tags["cpl.spill_file"] == str(info.value.path)
    _, batch, _ = spill.read_spill(info.value.path)
    spilled = [row for _, rows in batch for row in rows]
    in_store = _stored_rows(client, run)
    assert produced > len(in_store) > 0 and len(in_store) + len(spilled) == produced
    monkeypatch.setattr(w, "_store_write", real)
    assert spill.main([str(info.value.path)]) == 0
    assert spill.main([str(info.value.path)]) == 2  # renamed *.replayed: not replayed twice by accident
    after = _stored_rows(client, client.get_run(run.info.run_id))
    assert len(after) == produced and after == in_store | {tuple(r) for r in spilled}
