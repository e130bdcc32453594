"""`probe run EXPERIMENT.toml` on tiny-llama: every stage built once, then reused; bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.errors import ProbeError
from probe.experiment.run import plan, run_experiment
from probe.experiment.spec import load_experiment

ROOT = Path(__file__).parents[2]


def _probes(folder: Path) -> Path:
    from tests.unit.test_capture_helpers import FACTS

    path = folder / "capitals.jsonl"
    path.write_text("".join(json.dumps({"id": f"cap:{s}", "subject": s, "prompt": p, "answer": a,
                                        "relation": "capital", "split": "train" if i % 3 == 0 else "eval"}) + "\n"
                            for i, (s, p, a) in enumerate(FACTS)))
    return path


def _experiment(folder: Path, **extra: str) -> Path:
    path = folder / "exp.toml"
    path.write_text(f"""
name = "t"
[model]
name = "tiny-llama"
[compress]
methods = ["mag50"]
[recover]
methods = ["prompt", "idp"]
steps = 2
[capture]
probes = "{_probes(folder)}"
dtype = "float32"
full_attention = 2
[costs]
repeats = 1
[analyze]
n_boot = 100
n_boot_cka = 20
min_facts = 4
""" + "".join(f"{k}\n" for k in extra.values()))
    return path


def test_every_shipped_experiment_file_loads():
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        spec = load_experiment(path)
        assert spec.target in spec.compressions and spec.variants[:2] == ("original", "compressed"), path
    demo = load_experiment(ROOT / "experiments" / "smollm2.toml")
    assert demo.model == "smollm2-135m" and set(demo.recoveries) == {"prompt", "prefix", "idp", "lora"}
    assert demo.compressions == ("gptq3",)  # sparsegpt50 is the study's
    assert load_experiment(ROOT / "experiments" / "smollm2-study.toml").compressions == ("gptq3", "sparsegpt50")
    assert [s.key for s in plan(demo)] == [  # the quick, useful views first: knowledge, then a first comparison
        "model", "eval:original", "compress:gptq3", "capture:original", "capture:compressed",
        "recover:prompt", "capture:prompt", "recover:prefix", "capture:prefix", "recover:idp", "capture:idp",
        "recover:lora", "capture:lora", "costs", "analyze"]
    assert all(s.command.startswith("probe ") for s in plan(demo))


def test_a_tiny_experiment_builds_every_stage_then_reuses_them(artifacts, tmp_path):
    spec = load_experiment(_experiment(tmp_path))
    first = run_experiment(spec)
    outcomes = {s.key: s.outcome for s in first.stages}
    assert outcomes == {"model": "ready", "eval:original": "built", "compress:mag50": "built",
                        "recover:prompt": "built", "recover:idp": "built", "capture:original": "built",
                        "capture:compressed": "built",
                        "capture:prompt": "built", "capture:idp": "built", "costs": "built", "analyze": "built"}
    verdict = json.loads((first.analysis / "verdict.json").read_text())
    assert verdict["n_eval"] == 8 and "train-split" in verdict["decodability"]
    manifest = json.loads((first.analysis / "manifest.json").read_text())
    assert set(manifest["runs"]) == {"original", "compressed", "prompt", "idp"}
    recorded = json.loads((artifacts / "experiments" / "t.json").read_text())["built_seconds"]
    assert set(recorded) == set(outcomes) and all(v >= 0 for v in recorded.values())
    status = json.loads((artifacts / "experiments" / "t.status.json").read_text())
    assert status["state"] == "done" and [s["key"] for s in status["stages"]] == list(outcomes)
    assert all(s["state"] == "done" and s["elapsed"] >= 0 and s["started"] >= status["started"]
               for s in status["stages"])
    assert [s["outcome"] for s in status["stages"]] == list(outcomes.values())

    second = run_experiment(spec)
    assert {s.key: s.outcome for s in second.stages if s.key != "model"} == {
        k: "reused" for k in outcomes if k != "model"}

    changed = tmp_path / "exp.toml"  # more steps: the recoveries, their captures and the analysis are redone
    changed.write_text(changed.read_text().replace("steps = 2", "steps = 3"))
    third = {s.key: s.outcome for s in run_experiment(load_experiment(changed)).stages}
    assert [k for k, o in third.items() if o == "built"] == ["recover:prompt", "capture:prompt", "recover:idp",
                                                             "capture:idp", "costs", "analyze"]

    result = CliRunner().invoke(app, ["run", str(tmp_path / "exp.toml"), "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "stage times" in result.output and "Verdict: tiny-llama / mag50" in result.output


def test_a_failed_or_interrupted_stage_is_marked_in_the_status_file(artifacts, tmp_path, monkeypatch):
    """The Overview learns from the status file which stage failed, and that the run ended."""
    import probe.experiment.run as run

    spec = load_experiment(_experiment(tmp_path))
    for exc, state, error in ((KeyboardInterrupt(), "interrupted", "interrupted (Ctrl-C)"),
                              (RuntimeError("boom"), "failed", "RuntimeError: boom")):
        def fail(*_a, exc=exc, **_k):
            raise exc

        monkeypatch.setattr(run, "_eval_stage", fail)
        with pytest.raises(type(exc)):
            run_experiment(spec)
        status = json.loads((artifacts / "experiments" / "t.status.json").read_text())
        states = {s["key"]: s["state"] for s in status["stages"]}
        assert status["state"] == state and states["model"] == "done" and states["eval:original"] == "failed"
        assert {states[k] for k in states if k not in ("model", "eval:original")} == {"pending"}
        assert status["stages"][1]["error"] == error


@pytest.mark.parametrize(("text", "message"), [
    ("[model]\nname = 'tiny-llama'\n[recover]\nstepz = 3\n", r"unknown key \[recover\] stepz; known keys here"),
    ("[compress]\nmethods = ['mag50']\n", r"\[model\] name is required"),
    ("[model]\nname = 'tiny-llama'\n[recover]\nmethods = ['adapter']\n", r"unknown \['adapter'\]"),
    ("[model]\nname = 'tiny-llama'\n[recover]\ncompression = 'gptq4'\n", r"'gptq4' is not among \[compress\]"),
    ("[model]\nname = 'tiny-llama'\n[capture]\nbatch_size = 'big'\n", r"wrong type"),
    ("[model]\nname = 'tiny-llama'\n[recover]\nevaluate = 'no'\n", r"\[recover\] evaluate = 'no' has the wrong type"),
    ("[model\nname = 1", r"not valid TOML"),
])
def test_bad_experiment_files_are_refused_with_the_fix(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProbeError, match=message):
        load_experiment(path)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ProbeError, match=r"does not exist: give a TOML file like experiments/smollm2.toml"):
        load_experiment(tmp_path / "nope.toml")
