"""The dashboard in real headless Chromium over tiny-llama artifacts made by the pipeline.

Screenshots go to ``test-outputs/screenshots/`` (git-ignored). Without Chromium these tests fail
with the install command; `make test` installs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.app import create_app
from tests.browser.conftest import COMPRESSION, MODEL, start_zarr_threads

SHOTS = Path(__file__).resolve().parents[2] / "test-outputs" / "screenshots"
EXP = f"{MODEL}/{COMPRESSION}"


@pytest.fixture
def duo(chromium, dashboard_artifacts, dash_duo):
    """dash_duo serving the app over the tiny-llama artifacts; fails the test on SEVERE console errors."""
    start_zarr_threads()
    dash_duo.start_server(create_app(dashboard_artifacts))
    yield dash_duo
    severe = [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"


def shot(duo, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    duo.driver.save_screenshot(str(path))
    return path


def control(duo, page: str, key: str):
    """The URL-state dropdown ``key`` of ``page`` (Dash renders dict ids as sorted, compact JSON)."""
    dom_id = json.dumps({"key": key, "page": page, "type": "q"}, separators=(",", ":"))
    return duo.driver.find_element(By.XPATH, f"//*[@id='{dom_id}']")


def choose(duo, page: str, key: str, label: str) -> None:
    duo.select_dcc_dropdown(control(duo, page, key), value=label)


def title(duo, graph_id: str) -> str:
    return duo.find_element(f"#{graph_id} .gtitle").text


def wait_title(duo, graph_id: str, text: str, timeout: float = 60) -> str:
    WebDriverWait(duo.driver, timeout).until(lambda _: text in title(duo, graph_id))
    return title(duo, graph_id)


def open_page(duo, path: str) -> None:
    duo.driver.get(f"{duo.server_url}{path}")


@pytest.mark.parametrize(("nav", "marker", "text"), [
    ("overview", "#page h2", "Overview"),
    ("layers", "#layers-divergence .gtitle", "divergence"),
    ("attention", "#attention-heatmaps .gtitle", "layer 3, mean of heads"),
    ("probes", "#probes-table", "Paris"),
    ("verdict", "#verdict-text", "Verdict"),
])
def test_every_page_opens_from_the_navigation_and_renders(duo, nav, marker, text):
    open_page(duo, f"/?exp={EXP}")
    duo.wait_for_text_to_equal("#page h2", "Overview")
    duo.find_element(f"#nav-{nav}").click()
    duo.wait_for_contains_text(marker, text, timeout=60)
    assert f"exp={EXP}" in duo.driver.current_url
    shot(duo, f"{nav}")


def test_attention_layer_and_head_selectors_change_the_heatmaps_and_the_url(duo):
    open_page(duo, f"/attention?exp={EXP}&probe=0")
    wait_title(duo, "attention-heatmaps", "layer 3, mean of heads · full map", timeout=60)
    choose(duo, "attention", "layer", "1")
    wait_title(duo, "attention-heatmaps", "layer 1, mean of heads")
    choose(duo, "attention", "head", "2")
    wait_title(duo, "attention-heatmaps", "layer 1, head 2")
    WebDriverWait(duo.driver, 60).until(lambda d: "layer=1" in d.current_url and "head=2" in d.current_url)
    choose(duo, "attention", "variant", "idp")
    duo.wait_for_contains_text("#attention-idp-chosen", "probe 0 chose prompt 0", timeout=60)
    assert duo.find_elements("#attention-heatmaps .infolayer .g-xtitle")  # both panels drawn
    shot(duo, "attention-layer1-head2")
    url = duo.driver.current_url
    duo.driver.get(url)  # a shared link reopens the same view
    wait_title(duo, "attention-heatmaps", "layer 1, head 2", timeout=60)


def test_clicking_a_probe_opens_its_lens_trajectory_and_attention(duo):
    open_page(duo, f"/probes?exp={EXP}")
    first = wait_title(duo, "probes-attention", "probe 0", timeout=60)
    wait_title(duo, "probes-lens", "logit lens")
    cell = duo.driver.find_element(By.XPATH, "//td[@data-dash-column='subject' and .//*[text()='Kenya']]")
    cell.click()
    changed = wait_title(duo, "probes-attention", "probe 3")
    assert changed != first and "Kenya has its capital in" in changed
    duo.wait_for_contains_text("#probes-detail-title", "probe 3: Kenya has its capital in → Nairobi", timeout=60)
    assert "probe=3" in duo.driver.current_url
    assert len(duo.find_elements("#probes-lens .scatterlayer .trace")) == 3  # original, compressed, idp
    shot(duo, "probes-clicked")
    duo.find_element("#probes-attention-link").click()
    wait_title(duo, "attention-heatmaps", "probe 3", timeout=60)


def test_filtering_the_probe_table(duo):
    open_page(duo, f"/probes?exp={EXP}")
    duo.wait_for_contains_text("#probes-table", "Paris", timeout=60)
    box = duo.driver.find_element(By.CSS_SELECTOR, "#probes-table th.dash-filter[data-dash-column='subject'] input")
    box.send_keys("Kenya\n")
    WebDriverWait(duo.driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#probes-table td[data-dash-column='subject']")) == 1)


@pytest.mark.parametrize(("path", "message"), [
    ("/attention?exp=nope/none", "unknown experiment 'nope/none': found tiny-llama/rtn3"),
    ("/verdict?exp=..%2F..%2Fetc", "unknown experiment '../../etc'"),
    ("/", "capture tiny-llama/original-unfinished is unfinished (0/3 batches)"),
    ("/nowhere", "no page '/nowhere'"),
])
def test_unknown_escaping_or_unfinished_input_shows_a_message(duo, path, message):
    open_page(duo, path)
    duo.wait_for_contains_text("#page", message, timeout=60)
    if path == "/":
        shot(duo, "overview-unfinished-notice")


def rect(duo, selector: str) -> dict:
    """The bounding box of the first element matching ``selector`` (page pixels)."""
    return duo.driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};", selector)


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def tick_labels(duo, graph_id: str, axis: str) -> list[str]:
    """The tick labels of axis ``x``, ``y``, ``x2`` … of a graph."""
    return [e.text for e in duo.find_elements(f"#{graph_id} .{axis}tick text")]


def test_attention_axes_are_labelled_with_the_probes_tokens(duo, dashboard_artifacts):
    from dashboards import data

    exp = data.find_experiment(dashboard_artifacts, EXP)
    fact = data.probes(dashboard_artifacts, MODEL, exp.runs["original"])[0]
    open_page(duo, f"/attention?exp={EXP}&probe=0&layer=3")
    wait_title(duo, "attention-heatmaps", "layer 3, mean of heads · full map", timeout=60)
    for keys, queries in (("x", "y"), ("x2", "y2")):  # the original's and the variant's panels
        WebDriverWait(duo.driver, 30).until(
            lambda _, k=keys: len(tick_labels(duo, "attention-heatmaps", k)) == fact["n_tokens"])
        labels = tick_labels(duo, "attention-heatmaps", keys)  # every key: demonstrations, then the query
        rows = tick_labels(duo, "attention-heatmaps", queries)  # the query's own rows only
        assert rows == labels[fact.get("query_start", 0):]
        assert "".join(rows) == fact["prompt"].replace(" ", "")  # tiny-llama's tokens are characters
    shot(duo, "attention-token-axes")


@pytest.mark.parametrize(("path", "graphs"), [
    ("/probes", ("probes-lens", "probes-attention")),
    ("/attention", ("attention-heatmaps",)),
    ("/layers", ("layers-divergence", "layers-lens")),
])
def test_titles_are_clear_of_the_plot_toolbar(duo, path, graphs):
    open_page(duo, f"{path}?exp={EXP}&probe=0")
    for graph_id in graphs:
        duo.wait_for_element(f"#{graph_id} .gtitle", timeout=60)
        duo.wait_for_element(f"#{graph_id} .modebar", timeout=60)
        title, toolbar = rect(duo, f"#{graph_id} .gtitle"), rect(duo, f"#{graph_id} .modebar")
        assert toolbar["bottom"] > toolbar["top"] and title["bottom"] > title["top"]
        assert not overlap(title, toolbar), f"{graph_id}: title {title} under the toolbar {toolbar}"
    shot(duo, f"titles{path.replace('/', '-')}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probe_dashboard_serves_through_waitress_without_the_development_server_warning(chromium, dash_duo,
                                                                                        dashboard_artifacts):
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "probe", "dashboard", "--artifacts", str(dashboard_artifacts),
                             "--port", str(port)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.headers["Server"] == "probe dashboard"
                    break
            except OSError:
                assert proc.poll() is None, f"probe dashboard exited: {proc.stdout.read()}"
                assert time.monotonic() < deadline, "probe dashboard did not answer within 90 s"
                time.sleep(0.5)
        dash_duo.driver.get(f"{url}probes?exp={EXP}")
        dash_duo.wait_for_contains_text("#probes-table", "Paris", timeout=60)
        shot(dash_duo, "waitress-probes")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"dashboard: {url} (Ctrl-C to stop)" in output
    assert "development server" not in output.lower()
