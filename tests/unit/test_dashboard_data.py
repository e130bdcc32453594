"""The dashboard's read-only loaders on tiny-llama artifacts: path safety, messages, lazy cached slices, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dashboards.app
from dashboards import data
from dashboards.app import create_app
from probe.cli import app
from probe.errors import ProbeError
from tests.browser.conftest import COMPRESSION, MODEL, N_FULL, UNFINISHED, build_artifacts


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("dashboard-data"))


@pytest.fixture(scope="module")
def exp(root) -> data.Experiment:
    return data.find_experiment(root, f"{MODEL}/{COMPRESSION}")


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "..\\x", ".hidden", "x\0y"])
def test_names_that_could_leave_the_root_are_refused(root, part):
    with pytest.raises(ProbeError, match="refused"):
        data.store(root).capture(MODEL, part)
    with pytest.raises(ProbeError, match="refused"):
        data.open_capture(root, MODEL, part)


def test_unknown_and_unfinished_runs_and_experiments_get_clear_messages(root):
    with pytest.raises(ProbeError, match=r"unknown capture tiny-llama/nope: `probe runs` lists"):
        data.open_capture(root, MODEL, "nope")
    with pytest.raises(ProbeError, match=r"original-unfinished is unfinished \(0/3 batches\): rerun its `probe "
                                         r"capture`"):
        data.open_capture(root, MODEL, UNFINISHED)
    with pytest.raises(ProbeError, match=r"unknown experiment 'x/y': found tiny-llama/rtn3"):
        data.find_experiment(root, "x/y")
    with pytest.raises(ProbeError, match="no captures or analyses under"):
        data.find_experiment(root / "captures" / MODEL, None)


def test_experiment_lists_complete_variant_captures_and_its_analysis(exp):
    assert exp.variants == ["original", "compressed", "idp"]
    assert exp.analysis == "tiny-llama-rtn3"
    assert UNFINISHED not in exp.runs.values()


def test_attention_is_the_full_map_or_the_last_row_and_heads_average(root, exp):
    run = exp.runs["original"]
    n, q0 = data.probes(root, MODEL, run)[0]["n_tokens"], data.probes(root, MODEL, run)[0].get("query_start", 0)
    full, kind = data.attention(root, MODEL, run, 2, -1, 0)
    assert kind == "full" and full.shape == (n, n)
    np.testing.assert_allclose(np.tril(full)[q0:].sum(1), 1, atol=1e-5)  # causal rows of a softmax (the query's)
    assert not full[:q0].any()  # demonstration rows run as a cached prefix: not recorded
    heads = np.stack([data.attention(root, MODEL, run, 2, h, 0)[0] for h in range(4)])
    np.testing.assert_allclose(heads.mean(0), full, atol=1e-6)
    last, kind = data.attention(root, MODEL, run, 2, 1, N_FULL + 1)
    assert kind == "last" and last.shape == (1, data.probes(root, MODEL, run)[N_FULL + 1]["n_tokens"])
    np.testing.assert_allclose(last.sum(), 1, atol=1e-5)
    with pytest.raises(ProbeError, match="no pattern at layer 9"):
        data.attention(root, MODEL, run, 9, -1, 0)


def test_rows_are_read_lazily_and_cached(root, exp):
    data.clear_caches()
    name = data.hook(root, MODEL, exp.runs["original"], "resid_post", 1)
    first = data.row(root, MODEL, exp.runs["original"], name, 5)
    again = data.row(root, MODEL, exp.runs["original"], name, 5)
    assert first is again and data._row.cache_info().hits == 1 and first.shape == (64,)


def test_fact_status_lens_prompt_choice_and_figures(root, exp):
    status = data.fact_status(root, exp)
    top1 = {v: [p["answer_top1"] for p in data.probes(root, MODEL, r)] for v, r in exp.runs.items()}
    for i, s in enumerate(status["compressed"]):
        expected = "known" if top1["compressed"][i] else ("forgotten" if top1["original"][i] else "unknown")
        assert s == expected
    runs = (exp.runs["original"], exp.runs["compressed"])
    for run, ranks in zip(runs, data.lens_ranks(root, MODEL, runs, [0, 1, 2, 3], 2), strict=True):
        assert ranks[-1] == data.probes(root, MODEL, run)[2]["answer_rank"]  # last layer = the model
    np.testing.assert_array_equal(data.chosen_prompts(root, MODEL, exp.runs["idp"]), np.arange(12) % 3)
    assert data.chosen_prompts(root, MODEL, exp.runs["original"]).tolist() == [-1] * 12
    assert data.prompt_mass(root, MODEL, exp.runs["original"], [0, 1], 0) is None
    assert "cka_cka" in data.figure_names(root, exp) and data.figure(root, exp, "cka_cka").data
    assert data.figure(root, exp, "missing") is None
    with pytest.raises(ProbeError, match="refused"):
        data.figure(root, exp, "../manifest")


def test_create_app_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ProbeError, match="does not exist: pass --artifacts"):
        create_app(tmp_path / "nowhere")


def test_cli_binds_localhost_without_debug_unless_told(monkeypatch, root):
    calls = []
    monkeypatch.setattr(dashboards.app, "serve", lambda *a, **kw: calls.append((a, kw)))
    assert CliRunner().invoke(app, ["dashboard", "--artifacts", str(root)]).exit_code == 0
    assert CliRunner().invoke(app, ["dashboard", "--artifacts", str(root), "--host", "0.0.0.0", "--port", "9000",
                                    "--debug"]).exit_code == 0
    assert calls == [((str(root),), {"host": "127.0.0.1", "port": 8050, "debug": False}),
                     ((str(root),), {"host": "0.0.0.0", "port": 9000, "debug": True})]
