"""The dashboard beside a running experiment: stage status, pages that wait for their stage, pages that fill in."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from dash import dcc, html, no_update

from dashboards import data
from dashboards.app import PAGES, render
from dashboards.pages import overview
from probe.artifacts import write_json_atomic
from probe.experiment.dashboard import LiveDashboard
from probe.experiment.run import DEFAULT_SECONDS, StatusFile, plan
from probe.experiment.spec import load_experiment
from probe.store import ArtifactStore

ROOT = Path(__file__).parents[2]


def _walk(node):
    yield node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            yield from _walk(child)


def _text(node) -> str:
    return " ".join(str(n.children) for n in _walk(node) if isinstance(getattr(n, "children", None), str))


def _graphs(node) -> list:
    return [n for n in _walk(node) if isinstance(n, dcc.Graph)]


@pytest.fixture
def store_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    monkeypatch.setenv("PROBE_ARTIFACTS", str(root))
    data.clear_caches()
    return root


def _status(root: Path) -> StatusFile:
    """The tiny experiment's status file, every stage pending (as `probe run` writes it before stage 1)."""
    spec = load_experiment(ROOT / "experiments" / "tiny.toml")
    stages = plan(spec)
    return StatusFile(spec, stages, {s.key: DEFAULT_SECONDS[s.kind] for s in stages})


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_on_an_empty_store_says_what_produces_its_inputs_and_draws_no_plot(store_root, path):
    page, _ = render(store_root, path, "", None)
    assert _graphs(page) == [], path  # never an empty plot
    assert any("notice" in (getattr(n, "className", "") or "") for n in _walk(page)), path
    text = _text(page)
    assert "probe " in text, (path, text)  # names the command that produces what is missing
    assert "Traceback" not in text


@pytest.mark.parametrize(("path", "stage", "command"), [
    ("/", "eval original", "probe eval --model tiny-llama"),
    ("/layers", "capture original", "probe capture --model tiny-llama --variant original --split all"),
    ("/attention", "capture original", "probe capture --model tiny-llama --variant original"),
    ("/probes", "capture original", "probe capture --model tiny-llama --variant original"),
    ("/verdict", "analyze mag50", "probe analyze --model tiny-llama --compression mag50"),
])
def test_while_an_experiment_runs_a_page_names_the_stage_that_fills_it(store_root, path, stage, command):
    _status(store_root)
    page, _ = render(store_root, path, "", None)
    text = _text(page)
    assert f"Stage “{stage}” of experiment tiny" in text and command in text, text
    assert "pending" in text and _graphs(page) == []


def test_the_overview_lists_every_stage_and_follows_their_state(store_root):
    status = _status(store_root)
    rows = [n for n in _walk(html.Div(overview.status_view(store_root))) if isinstance(n, html.Tr)][1:]
    keys = [s.key for s in plan(load_experiment(ROOT / "experiments" / "tiny.toml"))]
    assert [getattr(r, "data-stage") for r in rows] == keys
    assert {getattr(r, "data-state") for r in rows} == {"pending"}
    status.stage(0, state="done", outcome="ready", elapsed=1.0)
    status.stage(1, state="running", started=time.time() - 30)
    rows = [n for n in _walk(html.Div(overview.status_view(store_root))) if isinstance(n, html.Tr)][1:]
    assert [getattr(r, "data-state") for r in rows[:3]] == ["done", "running", "pending"]
    assert "running" in _text(html.Div(overview.status_view(store_root)))


def test_elapsed_ticks_the_estimate_of_what_is_left_shrinks_and_a_dead_run_shows_as_stopped(store_root):
    status = _status(store_root)
    estimates = [s["estimate"] for s in status.doc["stages"]]
    now = time.time()
    status.stage(0, state="done", outcome="ready", elapsed=2.0)
    status.stage(1, state="running", started=now - 30)
    (doc,) = data.experiment_status(store_root, now=now)
    assert doc["state"] == "running" and doc["stages"][1]["elapsed"] == pytest.approx(30, abs=0.2)
    assert doc["left"] == pytest.approx(max(0, estimates[1] - 30) + sum(estimates[2:]), abs=0.2)
    (later,) = data.experiment_status(store_root, now=now + 10)
    assert later["stages"][1]["elapsed"] == pytest.approx(40, abs=0.2) and later["left"] < doc["left"]
    status.doc["pid"] = 2 ** 22 + 12345  # no such process: the run was killed
    status.write()
    (dead,) = data.experiment_status(store_root)
    assert dead["state"] == "stopped"
    assert "rerun the same command" in _text(html.Div(overview.status_view(store_root)))


def test_a_page_is_rebuilt_when_the_store_changes_and_only_then(store_root):
    status = _status(store_root)
    _page, key = render(store_root, "/verdict", "", None)
    assert isinstance(key["store"], str)  # through the browser unchanged (a large int would lose digits in JS)
    assert render(store_root, "/verdict", "", key) == (no_update, no_update)  # a clock tick, nothing new
    time.sleep(0.01)
    status.stage(0, state="running", started=time.time())
    again, new_key = render(store_root, "/verdict", "", key)
    assert again is not no_update and new_key != key


def _finished(folder: Path, files: dict) -> None:
    """A finished artifact folder: its files and a complete manifest."""
    folder.mkdir(parents=True)
    for name, content in files.items():
        write_json_atomic(folder / name, content)
    write_json_atomic(folder / "manifest.json", {"status": "complete", "spec_hash": "x"})


@pytest.mark.parametrize("curves", [False, True])
def test_the_overview_shows_knowledge_per_relation_the_compression_report_and_recovery_curves(store_root, curves):
    store = ArtifactStore.default()
    store.eval("tiny-llama", "original", None, "builtin:eval").write(
        {"manifest": {"status": "complete", "spec_hash": "x"}, "split": "eval", "top1_accuracy": 0.5,
         "per_relation_detail": {"capital": {"n": 4, "top1": 0.75},
                                                                        "currency": {"n": 4, "top1": 0.25}}})
    _finished(store.variant("tiny-llama", "gptq3").path, {"report.json": {
        "label": "gptq3", "sparsity": 0.0, "effective_bits": 3.5, "layer_sparsity": {"a": 0.0, "b": 0.0},
        "reconstruction_error": {"a": 0.01, "b": 0.02},
        "knowledge": {"original_top1": 0.5, "top1_accuracy": 0.25, "facts_forgotten": 2,
                      "original_perplexity": 30.0, "perplexity": 50.0}}})
    losses = {"losses": [3.0, 2.0, 1.5], "held_out_before": 0.5, "held_out_after": 0.3, "objective": "kl"}
    if curves:
        losses["curves"] = {"train": {"step": [1, 2, 3], "kl": [0.9, 0.7, 0.6]},
                            "heldout": {"step": [0, 3], "kl": [0.5, 0.3]}}
    _finished(store.recovery("tiny-llama", "gptq3", "prompt").path, {"losses.json": losses})
    page, _ = render(store_root, "/", "", None)
    figures = {g.id: g.figure for g in _graphs(page)}
    assert list(figures["overview-relations"].data[0].y) == [0.75, 0.25]
    assert list(figures["overview-compression"].data[0].y) == [0.01, 0.02]
    train, heldout = figures["overview-recovery"].data
    assert list(train.y) == ([0.9, 0.7, 0.6] if curves else [3.0, 2.0, 1.5])
    assert list(heldout.y) == [0.5, 0.3]
    assert "25.0%" in json.dumps([r for n in _walk(page) if getattr(n, "data", None) for r in n.data])


def test_the_live_dashboard_serves_in_a_thread_and_stops_cleanly(store_root):
    live = LiveDashboard(store_root, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(live.url, timeout=20) as resp:
            assert resp.status == 200 and resp.headers["Server"] == "probe dashboard"
    finally:
        live.close()
    assert not live.thread.is_alive()
