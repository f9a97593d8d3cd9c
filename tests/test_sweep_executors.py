"""Sweeps on the other executors: a local process pool, and Ray logging to an MLflow tracking server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from cpl.config import make_config
from cpl.sweep import make_sweep, run_sweep
from test_sweep import TINY

GRID = {"model.depth": [1, 2], "switch.at_step": [0, 150]}


def tiny_base(uri: str, ckpt: str):
    return make_config(
        name="tiny",
        **{
            **TINY,
            "tracking": dict(uri=uri, experiment="sweeps"),
            "trainer": dict(checkpoint_dir=ckpt, checkpoint_every_n_steps=0),
        },
    )


def check_sweep(client: MlflowClient, result, n_cells: int) -> None:
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    exp_id = parent.info.experiment_id
    kids = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(kids) == n_cells and {k.info.status for k in kids} == {"FINISHED"}
    assert {k.data.tags["cpl.sweep.cell"] for k in kids} == {str(i) for i in range(n_cells)}
    depth2 = client.search_runs([exp_id], filter_string="params.`model.depth` = '2'")
    assert len(depth2) == n_cells // 2 and all(
        r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in depth2
    )
    assert {"summary/critical_period_table.csv", "summary/relative_error.png", "summary/final_error.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "summary")
    }
    assert parent.data.metrics["sweep/n_finished"] == n_cells and "critical_period/model.depth_2" in parent.data.metrics


@pytest.mark.slow
def test_process_pool_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    sweep = make_sweep(tiny_base(uri, str(tmp_path / "ckpt")), grid=GRID, processes=2)
    result = run_sweep(sweep, progress=False)
    assert [r["status"] for r in result.rows] == ["FINISHED"] * 4
    check_sweep(MlflowClient(uri), result, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(uri: str, proc: subprocess.Popen, log_path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on loopback with a SQLite backend: ``(uri, wait)``.

    The server boots while the test goes on (Ray starts meanwhile); ``wait()`` blocks until /health answers.
    """
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--default-artifact-root",
        "mlflow-artifacts:/",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        yield uri, lambda: _wait_healthy(uri, proc, log_path)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="the ray extra is part of the dev install: pip install -e '.[dev]'")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None,
    )
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_logs_to_a_tracking_server(tmp_path, mlflow_server, local_ray):
    mlflow_server, wait_for_server = mlflow_server
    wait_for_server()
    sweep = make_sweep(tiny_base(mlflow_server, str(tmp_path / "ckpt")), name="ray_sweep", grid=GRID, executor="ray")
    result = run_sweep(sweep, progress=False)
    assert [r["status"] for r in result.rows] == ["FINISHED"] * 4 and result.tracking_uri == mlflow_server
    client = MlflowClient(mlflow_server)
    check_sweep(client, result, 4)
    assert client.get_run(result.parent_run_id).data.tags["cpl.sweep.executor"] == "ray"
    # the same sweep again resumes from the server without running a cell
    again = run_sweep(
        make_sweep(tiny_base(mlflow_server, str(tmp_path / "ckpt")), name="ray_sweep", grid=GRID, executor="ray"),
        progress=False,
    )
    assert again.parent_run_id == result.parent_run_id and all(r["resumed"] for r in again.rows)
    check_sweep(client, again, 4)


def test_a_stopped_worker_starts_no_further_task(monkeypatch):
    """After the sweep's SIGTERM (here through a run's guard: KeyboardInterrupt) a pool worker refuses
    the task queued to it, so no cell is created after the signal; SIGTERM outside a run exits quietly."""
    import signal

    from cpl.sweep import executors

    monkeypatch.setitem(executors._STOPPING, "signum", None)
    calls = []

    def interrupted(task):
        calls.append(task)
        raise KeyboardInterrupt("by SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        executors._in_worker(interrupted, ["a"])
    with pytest.raises(SystemExit) as info:
        executors._in_worker(calls.append, ["b"])
    assert calls == [["a"]] and info.value.code == 128 + signal.SIGTERM

    monkeypatch.setitem(executors._STOPPING, "signum", None)
    with pytest.raises(SystemExit) as info:
        executors._worker_stop(signal.SIGTERM, None)
    assert info.value.code == 143 and executors._STOPPING["signum"] == signal.SIGTERM
