"""`probe run` on the real SmolLM2: an experiment file drives compress → capture → costs → analyze.

A small experiment (50% magnitude pruning, which needs no llmcompressor calibration run, on 48
built-in facts of three relations) so that it finishes in a couple of minutes; the recovery
stage has its own SmolLM2 tests. Checks that the stages ran in order on the real model, that the
verdict counts facts the way the captures say, and that a second run reuses every stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def _probe_file(folder: Path) -> Path:
    from probe.knowledge.loaders import load_probes

    rows = []
    for relation in ("capital", "chemical_symbol", "city_country"):
        facts = [f for f in load_probes("builtin").facts if f.relation == relation]
        for split in ("train", "eval"):
            rows += [{"id": f.id, "subject": f.subject, "prompt": f.prompts[0], "answer": f.object,
                      "relation": f.relation, "split": split} for f in facts if f.split == split][:8]
    path = folder / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_folder):
    from probe.experiment.run import run_experiment
    from probe.experiment.spec import load_experiment
    from tests.conftest import module_artifacts

    with module_artifacts(tmp_path_factory, smollm2_folder, "experiment") as root:
        folder = root.parent
        path = folder / "smollm2-small.toml"
        path.write_text(f"""
name = "smollm2-small"
[model]
name = "smollm2-135m"
[compress]
methods = ["mag50"]
n_calibration = 32
evaluate = false
[recover]
methods = []
[capture]
probes = "{_probe_file(folder)}"
full_attention = 4
[costs]
repeats = 1
n_probes = 8
[analyze]
n_boot = 200
n_boot_cka = 20
min_facts = 4
""")
        spec = load_experiment(path)
        first = run_experiment(spec)
        second = run_experiment(spec)
        yield root, first, second


def test_every_stage_runs_once_then_is_reused(run):
    root, first, second = run
    assert [s.key for s in first.stages] == ["model", "compress:mag50", "capture:original", "capture:compressed",
                                             "costs", "analyze"]
    assert all(s.outcome in ("built", "ready") for s in first.stages)
    assert all(s.outcome == "reused" for s in second.stages if s.key != "model")
    costs = json.loads((root / "costs" / "smollm2-135m" / "mag50.json").read_text())
    assert {r["variant"] for r in costs["rows"]} == {"original", "compressed"}


def test_the_verdict_counts_lost_facts_as_the_captures_do(run):
    from probe.capture.store import open_run

    _, first, _ = run
    verdict = json.loads((first.analysis / "verdict.json").read_text())
    runs = json.loads((first.analysis / "manifest.json").read_text())["runs"]
    # known as the captures decide it: the probe format's definition, stored in each probe table
    top1 = {v: np.array([row["known"] for row in open_run(p).probes], bool) for v, p in runs.items()}
    split = np.array([p["split"] for p in open_run(runs["original"]).probes])
    ev = split == "eval"
    assert verdict["n_eval"] == int(ev.sum()) == 24
    assert verdict["n_lost"] == int((top1["original"] & ~top1["compressed"])[ev].sum())
    assert verdict["known_original"]["mean"] == pytest.approx(top1["original"][ev].mean())
    assert "train-split" in verdict["decodability"]
    assert (first.analysis / "verdict.md").read_text().startswith("# Verdict: smollm2-135m / mag50")
