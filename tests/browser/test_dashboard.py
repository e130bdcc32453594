"""The dashboard in real headless Chromium over tiny-llama artifacts made by the pipeline.

Screenshots go to ``test-outputs/screenshots/`` (git-ignored). Without Chromium these tests fail
with the install command; `make test` installs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.app import create_app
from tests.browser.conftest import COMPRESSION, MODEL, require_chromium, start_zarr_threads

SHOTS = Path(__file__).resolve().parents[2] / "test-outputs" / "screenshots"
EXP = f"{MODEL}/{COMPRESSION}"


@pytest.fixture
def chromium() -> None:
    require_chromium()


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
