#!/usr/bin/env python
"""Screenshot of a sweep's cells compared in MLflow's UI (the README's docs/compare_depths.png).

usage: python scripts/ui_screenshot.py sweep=NAME [tracking.uri=URI] [out=docs/compare_depths.png] [port=5077]
                                      [plot=parallel|scatter]

Starts `cpl ui` on the store, opens the compare view of the latest run of the sweep's children in
headless Chromium (Debian's chromium + chromium-driver, driven by selenium), waits for the plot
and saves a PNG. Run the sweep first, e.g. `cpl sweep conf=matcomp_depth_sweep_quick`.
"""

import subprocess
import sys
import time
from pathlib import Path

FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1500,1100"
).split()


def _options(argv):
    opts = {"sweep": None, "tracking.uri": None, "out": "docs/compare_depths.png", "port": "5077", "plot": "parallel"}
    for a in argv:
        key, _, value = a.partition("=")
        if key not in opts or not value:
            raise SystemExit(f"error: unknown argument {a!r}; allowed: {', '.join(k + '=...' for k in opts)}")
        opts[key] = value
    if not opts["sweep"]:
        raise SystemExit("error: give sweep=NAME (a sweep recorded in the store)")
    return opts


def _children(uri: str, sweep: str) -> tuple[str, list[str]]:
    from cpl.tracking import get_client

    client = get_client(uri)
    exp = client.get_experiment_by_name("cpl")
    parent = client.search_runs(
        [exp.experiment_id],
        f"tags.`cpl.sweep.role` = 'parent' and tags.`cpl.sweep.name` = '{sweep}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=500)
    kids.sort(key=lambda r: int(r.data.tags["cpl.sweep.cell"]))
    return exp.experiment_id, [r.info.run_id for r in kids]


def _choose(driver, box: int, labels: list[str]) -> None:
    """Pick options by their text in the ``box``-th select of the page."""
    from selenium.webdriver.common.keys import Keys

    for label in labels:
        driver.find_elements("css selector", "[role='combobox']")[box].click()
        driver.switch_to.active_element.send_keys(label)  # filters the (virtualised) list
        time.sleep(1.5)
        options = driver.find_elements("xpath", "//*[@role='option' or contains(@class, 'select-item-option')]")
        pick = [e for e in options if e.text.strip() == label]
        if not pick:
            raise SystemExit(f"error: no option {label!r} in select {box}: {[e.text for e in options][:50]}")
        driver.execute_script("arguments[0].scrollIntoView(true);", pick[0])
        pick[0].click()
        time.sleep(1)
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)


def main(argv) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cpl.tracking.uri import compare_url, tracking_uri

    o = _options(argv)
    uri = tracking_uri(o["tracking.uri"])
    exp_id, kids = _children(uri, o["sweep"])
    ui = subprocess.Popen(
        [sys.executable, "-m", "cpl.cli", "ui", f"tracking.uri={uri}", f"port={o['port']}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in ui.stdout:
            if "MLflow UI" in line:
                break
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir=/tmp/cpl-shot-{time.time():.0f}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(compare_url(f"http://127.0.0.1:{o['port']}", exp_id, kids))
            time.sleep(15)
            for close in driver.find_elements("css selector", "button[aria-label='Close']")[:1]:
                close.click()  # the assistant's side panel
            if o["plot"] == "scatter":  # X: the onset, Y: the first headline metric (the default)
                driver.find_element("xpath", "//*[normalize-space(text())='Scatter Plot']").click()
                _choose(driver, 0, ["switch.at_step"])
            else:  # parallel coordinates: the grid keys, then the paper's test error
                driver.find_element("xpath", "//button[normalize-space(.)='Clear All']").click()
                _choose(driver, 0, ["model.depth", "switch.at_step"])
                _choose(driver, 1, ["final/test_error"])
            time.sleep(5)
            Path(o["out"]).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(o["out"])
            print(f"{o['out']}: {len(kids)} runs compared ({driver.current_url[:120]}...)")
        finally:
            driver.quit()
    finally:
        ui.terminate()
        ui.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
