"""`probe plan`: parameter counts from configs alone, the LLaMA-7B plan on an 80 GB GPU, and what it flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.config import ModelSpec
from probe.experiment.spec import load_experiment
from probe.models.tiny import build_tiny_llama, build_tiny_opt
from probe.plan.predict import GB, PlanSpec, plan_experiment, plan_lines
from probe.plan.shape import model_shape, shape_of

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("build", [build_tiny_llama, build_tiny_opt])
def test_parameters_counted_from_the_config_equal_the_models(build):
    model, _ = build()
    shape = shape_of(model.config.to_dict(), "test")
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_llama7b_comes_from_the_shipped_public_config(monkeypatch, artifacts):
    monkeypatch.delenv("PROBE_LLAMA7B_PATH", raising=False)
    shape = model_shape(ModelSpec("llama7b"))
    assert shape.params == 6_738_415_616  # LLaMA-7B's published parameter count
    assert (shape.layers, shape.hidden, shape.heads, shape.vocab) == (32, 4096, 32, 32000)
    assert "shipped" in shape.source


def test_llama7b_on_an_80_gb_gpu_fits_every_stage(monkeypatch, artifacts):
    monkeypatch.delenv("PROBE_LLAMA7B_PATH", raising=False)
    exp = load_experiment(ROOT / "experiments" / "llama7b.toml")
    plan = plan_experiment(exp, PlanSpec(memory_gb=80, host_memory_gb=64, disk_gb=500))
    stages = {s.key: s for s in plan.stages}
    assert set(stages) >= {"compress:gptq3", "recover:idp", "capture:lora", "costs", "analyze"}
    assert plan.problems() == [] and plan_lines(plan)[0].startswith("every stage fits")
    # the teacher and the student in float16: 2 × 13.5 GB; GPTQ: the original and the copy it compresses, both
    # float32 (2 × 27 GB), plus one layer's Hessians
    assert 27 * GB < stages["recover:prompt"].memory < 40 * GB
    assert 54 * GB < stages["compress:gptq3"].memory < 60 * GB
    assert stages["capture:original"].memory < stages["capture:lora"].memory  # LoRA's merged copy


def test_the_plan_names_the_setting_that_fixes_a_stage(monkeypatch, artifacts, tmp_path):
    monkeypatch.delenv("PROBE_LLAMA7B_PATH", raising=False)
    text = (ROOT / "experiments" / "llama7b.toml").read_text()
    path = tmp_path / "small.toml"
    path.write_text(text.replace("max_gb = 4", "max_gb = 1"))
    plan = plan_experiment(load_experiment(path), PlanSpec(memory_gb=24, host_memory_gb=8, disk_gb=500))
    problems = "\n".join(plan.problems())
    assert "recover:prompt needs" in problems and "24 GB available" in problems
    assert "[capture] max_gb = 3" in problems
    assert "analyze needs" in problems and "a host with at least 15 GB" in problems  # already float16


def test_probe_plan_prints_the_table(monkeypatch, artifacts):
    monkeypatch.delenv("PROBE_LLAMA7B_PATH", raising=False)
    result = CliRunner().invoke(app, ["plan", str(ROOT / "experiments" / "llama7b.toml"), "--memory-gb", "80",
                                      "--host-memory-gb", "64", "--disk-gb", "500"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "6.74 B parameters" in result.output and "every stage fits" in result.output
    assert json.dumps("capture:idp").strip('"') in result.output
