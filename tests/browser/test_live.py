"""The live mode in real headless Chromium: `probe run experiments/tiny.toml` serves the dashboard before its first
stage; the Overview, opened once, shows a stage change state and its result appear without a reload; Ctrl-C
stops the study and the server together and the status file says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.test_dashboard import free_port, shot

ROOT = Path(__file__).resolve().parents[2]
# stage kind → the Overview graph its artifact fills
FILLS = {"eval": "overview-relations", "compress": "overview-compression", "recover": "overview-recovery"}


def _states(driver) -> dict[str, str]:
    """Stage → state as the open page shows them (read in one script: the table is redrawn every 2 s)."""
    rows = driver.execute_script("return Array.from(document.querySelectorAll('#overview-status tr.stage'))"
                                 ".map(r => [r.dataset.stage, r.dataset.state])")
    return dict(map(tuple, rows))


def test_the_dashboard_starts_first_and_fills_in_while_the_tiny_experiment_runs(chromium, dash_duo, tmp_path):
    port = free_port()
    artifacts = tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, "-m", "probe", "run", "experiments/tiny.toml", "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PROBE_ARTIFACTS": str(artifacts)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    output: list[str] = []
    try:
        for line in proc.stdout:  # the URL comes before the first stage's rule
            output.append(line)
            if line.startswith("dashboard: "):
                break
        assert output and output[-1].startswith(f"dashboard: {url}"), "".join(output)
        assert not any("stage 1/" in line for line in output)
        driver = dash_duo.driver
        driver.get(url)
        driver.execute_script("window.__opened_once = true")  # gone if the page reloads
        WebDriverWait(driver, 60).until(lambda d: _states(d))
        states = _states(driver)
        kinds = {k: k.split(":")[0] for k in states}
        assert list(states)[:3] == ["model", "eval:original", "compress:mag50"]
        watched = next(k for k, s in states.items() if s != "done" and kinds[k] in FILLS)
        graph = FILLS[kinds[watched]]
        assert not driver.find_elements(By.ID, graph)  # not drawn before its stage ends: a notice says so
        shot(dash_duo, "live-overview-start")
        seen = {states[watched]}
        deadline = time.monotonic() + 420
        while _states(driver).get(watched) != "done":
            seen.add(_states(driver).get(watched))
            assert proc.poll() is None, "".join(output) + proc.stdout.read()
            assert time.monotonic() < deadline, f"stage {watched} not done within 420 s: {_states(driver)}"
            time.sleep(0.5)
        assert seen & {"pending", "running"}, seen  # the same open page showed it change state
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{graph} .main-svg"))
        assert driver.execute_script("return window.__opened_once === true")  # filled in without a reload
        shot(dash_duo, "live-overview")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the study and the dashboard stop together
        try:
            rest = proc.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
            print("".join(output)[-4000:] + rest[-4000:], file=sys.stderr)
            raise
    assert proc.returncode == 130, "".join(output) + rest
    status = json.loads((artifacts / "experiments" / "tiny.status.json").read_text())
    assert status["state"] in ("interrupted", "done"), status
    if status["state"] == "interrupted":
        assert any(s["state"] == "failed" and s["error"] == "interrupted (Ctrl-C)" for s in status["stages"])
    dash_duo.driver.get("about:blank")
    with pytest.raises(OSError):  # nothing answers any more: the server stopped with the study
        urllib.request.urlopen(url, timeout=5)
