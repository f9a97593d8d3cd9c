"""``cpl ui`` in a real browser: the printed address opens MLflow's model-training view, where the
run is found by its override-bearing name.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them with apt-get) and selenium
(dev extras). Marked ``browser``: not in the default run; CI runs ``pytest -m browser`` with
``CPL_REQUIRE_BROWSER=1``, where a missing browser fails instead of skipping.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cpl.cli import main

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1500,1000"
).split()


def _browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        why = "needs chromium, chromium-driver (apt-get install -y chromium chromium-driver) and selenium"
        if os.environ.get("CPL_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(proc: subprocess.Popen) -> "queue.Queue[str]":
    q: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in proc.stdout], daemon=True).start()
    return q


def _wait_for_text(driver, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(1)
    raise AssertionError(f"{text!r} not on the page {driver.current_url} after {timeout} s; it shows:\n{body[:1500]}")


def test_cpl_ui_opens_the_model_training_view_with_the_run_by_name(tmp_path, monkeypatch, capsys):
    driver = _browser(tmp_path)
    uri = f"sqlite:///{tmp_path}/store/m.db"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny.yaml").write_text(
        "task: {size: 20, pretrain_rank: 4, final_rank: 2, n_obs: 150}\nmodel: {init_scale: 0.1}\noptim: {lr: 0.5}\n"
        "switch: {at_step: 20}\ntrain: {steps_after_switch: 20}\nlog: {every_n_steps: 10, sv_every_n_steps: 10}\n"
        "trainer: {progress_bar: false, checkpoint_every_n_steps: 0}\n"
    )
    monkeypatch.setenv("CPL_CONF_DIR", str(tmp_path / "conf"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "conf=tiny", "model.depth=2", "optim.lr=0.4", f"tracking.uri={uri}"]) == 0
    run_page = next(ln.split()[-1] for ln in capsys.readouterr().out.splitlines() if "view it:" in ln)

    port = _free_port()
    cmd = [sys.executable, "-m", "cpl.cli", "ui", f"tracking.uri={uri}", f"port={port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        lines, url, deadline = _lines(proc), None, time.monotonic() + 240
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if "MLflow UI (model-training view):" in line:
                url = line.split()[-1]
        assert url is not None, f"cpl ui printed no address (exit code {proc.poll()})"
        assert url == f"http://127.0.0.1:{port}/#/experiments/1/runs?workflowType=machine_learning"

        driver.get(url)  # the experiment's runs, in the model-training view
        body = _wait_for_text(driver, "tiny depth=2 lr=0.4")
        assert "Model training" in body and "Runs" in body and "Traces" in body
        assert "workflowType=machine_learning" in driver.current_url
        driver.save_screenshot(str(tmp_path / "runs.png"))

        driver.get(run_page.replace("127.0.0.1:5000", f"127.0.0.1:{port}"))  # the link `cpl train` printed
        body = _wait_for_text(driver, "final/test_error")
        assert "tiny depth=2 lr=0.4" in body and "Model metrics" in body
    finally:
        driver.quit()
        os.kill(proc.pid, signal.SIGTERM)  # cpl ui stops its MLflow server, as on Ctrl-C
        assert proc.wait(timeout=60) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
