"""``cpl ui``: MLflow's UI on the project's store, opened in its model-training view; run links.

MLflow 3 opens an experiment in its GenAI view; ``?workflowType=machine_learning`` opens the
model-training view (runs table, metric charts, compare), as checked in headless Chromium by
``tests/test_ui_browser.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..config import ConfigError, require
from ..tracking.uri import DEFAULT_TRACKING_URI, compare_url, experiment_url, run_url, tracking_uri, ui_base
from .options import StoreOptions, parse_options, store_field

__all__ = ["main", "print_run_links", "UiOptions"]

USAGE = """\
usage: cpl ui [tracking.uri=URI] [tracking.experiment=cpl] [port=5000] [host=127.0.0.1] [workers=1]

Start MLflow's UI (`mlflow ui`) on the store and print the address of the experiment's runs in
the model-training view (MLflow 3 opens the GenAI view otherwise). Ctrl-C stops it. For a store
that is already a server (tracking.uri=http://...) it only prints the address.

  tracking.uri          the store (default $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)
  tracking.experiment   the experiment to open (default cpl; sweeps and runs of confs use cpl)
  port, host, workers   where the UI listens (localhost only by default) and its worker processes
  timeout               seconds to wait for the UI to answer (default 300)
"""


@dataclass
class UiOptions:
    tracking: StoreOptions = store_field()
    port: int = 5000
    host: str = "127.0.0.1"
    workers: int = 1
    timeout: float = 300.0


def _check(o: UiOptions) -> None:
    require(1 <= o.port <= 65535, "port", o.port, "an integer from 1 to 65535")
    require(o.workers >= 1, "workers", o.workers, "an integer >= 1")
    require(o.timeout > 0, "timeout", o.timeout, "a number of seconds > 0")


def _experiment_id(uri: str, name: str) -> Optional[str]:
    from ..tracking import get_client

    exp = get_client(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None


def _address(base: str, uri: str, experiment: str) -> str:
    exp_id = _experiment_id(uri, experiment)
    return experiment_url(base, exp_id) if exp_id is not None else f"{base}/#/experiments"


def print_run_links(uri: str, run_ids: Sequence[str], compare: Sequence[str] = (), heading: str = "MLflow run") -> None:
    """Print where the runs are and their pages in the UI's model-training view (after a run or a sweep)."""
    from ..tracking import get_client

    base = ui_base(uri)
    client = get_client(uri)
    exp_id = client.get_run(run_ids[0]).info.experiment_id
    for run_id in run_ids:
        print(f"  {heading} {run_id} in {uri}")
        print(f"  view it:  {run_url(base, exp_id, run_id)}")
    if compare:
        print(f"  compare the {len(compare)} cells:  {compare_url(base, exp_id, list(compare))}")
    if not uri.startswith(("http://", "https://")):
        store = "" if uri == DEFAULT_TRACKING_URI else f" tracking.uri={uri}"
        print(f"  (start the UI first:  cpl ui{store})")


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(o: UiOptions, uri: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", o.host, "--port", str(o.port), "--workers", str(o.workers)]
    # the UI's job runner serves GenAI judges only: one process fewer to start
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:  # the server's own log: shown if it fails
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    o, code = parse_options(argv, UiOptions, USAGE, _check)
    if code is not None:
        return code
    uri = tracking_uri(o.tracking.uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI of {uri}: {_address(ui_base(uri), uri, o.tracking.experiment)}", flush=True)
        return 0
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        print(f"note: no store at {uri} yet; the UI starts empty (train a run first)", file=sys.stderr)
    base = f"http://{o.host}:{o.port}"
    log = Path(tempfile.mkdtemp(prefix="cpl-ui-")) / "mlflow-ui.log"
    proc = _start(o, uri, log)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the UI as Ctrl-C does
    try:
        print(f"starting MLflow's UI on {uri} (log: {log}) ...", file=sys.stderr, flush=True)
        address = _address(base, uri, o.tracking.experiment)
        if not _wait_ready(proc, base, o.timeout):
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
            why = "exited" if proc.poll() is not None else f"did not answer within {o.timeout:g} s"
            raise ConfigError(f"MLflow's UI {why} (port {o.port} in use? try port=5001); its log:\n" + "\n".join(tail))
        print(f"MLflow UI (model-training view): {address}", flush=True)
        print("Ctrl-C stops it.", file=sys.stderr, flush=True)
        proc.wait()
        return 0 if proc.returncode in (0, -signal.SIGTERM) else 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)
