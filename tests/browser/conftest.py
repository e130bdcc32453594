"""Tiny-llama artifacts for the dashboard tests, and headless Chromium for Dash's ``dash_duo``.

The artifacts are made by the pipeline itself (capture original and a 3-bit RTN variant, then
`probe analyze`), reusing the analysis tests' builders. To keep the fixture fast, the "idp" capture
is a copy of the compressed capture labelled idp and given a chosen-prompt vector (real IDP captures
are tested by the capture and notebook tests); an unfinished copy of the original tests the
half-finished message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,1000")
MODEL, COMPRESSION, N_FULL = "tiny-llama", "rtn3", 6
UNFINISHED = "original-unfinished"


def build_artifacts(root: Path) -> Path:
    """Captures (original, rtn3 compressed, an idp-labelled copy, an unfinished copy) and their analysis."""
    import zarr

    from probe.analysis.run import analyze
    from probe.analysis.spec import AnalyzeSpec
    from probe.artifacts import write_json_atomic
    from probe.capture.run import capture
    from tests.unit.test_analysis_run import _probes, _rtn3_variant
    from tests.unit.test_capture_helpers import build_capture_cfg

    artifacts = root / "artifacts"
    mp = pytest.MonkeyPatch()
    mp.setenv("PROBE_ARTIFACTS", str(artifacts))
    try:
        probes = _probes(root)
        kw = {"split": "all", "positions": ("last",), "full_attention": N_FULL}
        original = capture(build_capture_cfg(probes, **kw))
        _rtn3_variant(artifacts)
        compressed = capture(build_capture_cfg(probes, variant="compressed", compression=COMPRESSION, **kw))
        idp = compressed.with_name(f"{COMPRESSION}-idp-capitals-all")
        shutil.copytree(compressed, idp)
        manifest = json.loads((idp / "manifest.json").read_text())
        write_json_atomic(idp / "manifest.json", {**manifest, "variant": "idp",
                                                  "prompt": {**manifest["prompt"], "n_prompts": 3}})
        group = zarr.open_group(idp / "arrays", mode="r+")
        group["prompt/chosen"][:] = np.arange(group["prompt/chosen"].shape[0]) % 3
        analyze(AnalyzeSpec(model=MODEL, compression=COMPRESSION, min_facts=4, n_boot=200, n_boot_cka=20))
        unfinished = original.with_name(UNFINISHED)
        shutil.copytree(original, unfinished)
        write_json_atomic(unfinished / "manifest.json", {**json.loads((original / "manifest.json").read_text()),
                                                         "status": "running"})
        shutil.rmtree(unfinished / "done")
        (unfinished / "done").mkdir()
    finally:
        mp.undo()
    return artifacts


@pytest.fixture(scope="session")
def dashboard_artifacts(tmp_path_factory) -> Path:
    """The tiny-llama artifacts root, built once per session (read-only for the tests)."""
    return build_artifacts(tmp_path_factory.mktemp("dashboard"))


def require_chromium() -> None:
    """Fail (never skip) when the browser is missing: `make test` installs it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"browser tests need Chromium: {', '.join(missing)} not found. Install it with "
                    f"`apt-get update && apt-get install -y chromium chromium-driver` (`make test` does this)",
                    pytrace=False)


@pytest.fixture
def chromium() -> None:
    require_chromium()


def pytest_setup_options():
    """Chrome options for dash_duo: Debian's Chromium, headless, sandbox-free, no background traffic."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-')}"):
        options.add_argument(flag)
    return options


def start_zarr_threads() -> None:
    """Start zarr's I/O loop and every worker of its thread pool now, before a dash_duo server starts.

    dash_duo stops its server by raising SystemExit in every thread created while the server ran.
    Zarr creates its event-loop thread and pool workers lazily, on the first read that needs them,
    so a page that reads concurrently (the lens trajectory) would start workers that the next
    server stop kills, and every later read would wait forever on a dead pool. Started here,
    they predate the server and are left alone. (Zarr internals: test harness only.)
    """
    import threading

    from zarr.core.sync import _get_executor, _get_loop

    _get_loop()
    pool = _get_executor()
    barrier = threading.Barrier(pool._max_workers)
    list(pool.map(lambda _: barrier.wait(timeout=30), range(pool._max_workers)))
