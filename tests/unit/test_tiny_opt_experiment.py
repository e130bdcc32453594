"""`probe run` on a saved tiny OPT folder: a second architecture through compress, recover, capture and analyze."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from probe.capture.store import open_run
from probe.cli import app
from probe.models.tiny import build_tiny_opt
from tests.unit.test_experiment import _probes


def _experiment(folder: Path, model: Path) -> Path:
    path = folder / "opt.toml"
    path.write_text(f"""
name = "opt"
[model]
name = "{model}"
[compress]
methods = ["mag50"]
evaluate = false
[recover]
methods = ["prompt"]
steps = 2
evaluate = false
[capture]
probes = "{_probes(folder)}"
dtype = "float32"
full_attention = 2
[costs]
repeats = 0
[analyze]
n_boot = 100
n_boot_cka = 20
min_facts = 4
""")
    return path


def test_probe_run_analyses_a_tiny_opt_folder(artifacts, tmp_path):
    model, tok = build_tiny_opt()
    model.save_pretrained(tmp_path / "tiny-opt")
    tok.save_pretrained(tmp_path / "tiny-opt")
    result = CliRunner().invoke(app, ["run", str(_experiment(tmp_path, tmp_path / "tiny-opt")), "--no-serve"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    path = artifacts / "analysis" / "tiny-opt-mag50"
    assert (path / "verdict.md").read_text().startswith(f"# Verdict: {tmp_path / 'tiny-opt'} / mag50")
    verdict = json.loads((path / "verdict.json").read_text())
    assert verdict["n_eval"] == 8 and verdict["distractors"].startswith("the probe file ")
    for table in ("lens", "divergence", "attention", "cka", "cross_cka", "decodability", "regimes", "summary"):
        assert (path / f"{table}.json").is_file() and (path / f"{table}.csv").is_file(), table
    assert {r["variant"] for r in json.loads((path / "summary.json").read_text())} == {"original", "compressed",
                                                                                      "prompt"}
    # the lens (OPT's own final LayerNorm and unembedding) at the last layer ranks answers as the model did
    original = open_run(artifacts / "captures" / "tiny-opt" / "original-capitals-all")
    evals = np.array([p["split"] == "eval" for p in original.probes])
    captured = np.log1p(original["logits/answer_rank"][:][evals]).mean()
    lens = [r for r in json.loads((path / "lens.json").read_text())
            if r["variant"] == "original" and r["metric"] == "log1p_answer_rank"]
    assert abs(lens[-1]["mean"] - captured) < 1e-9 and lens[-1]["layer"] == 3
