"""`probe capture --model llama7b --variant idp` uses the study's compression (printed) and, without weights,
stops on the one line that names --model-path and the environment variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.errors import ProbeError
from probe.runtime.spec import VariantSpec

ROOT = Path(__file__).resolve().parents[2]


def test_a_variant_without_compression_gets_the_studys_and_says_so(capsys):
    spec = VariantSpec(ModelSpec("tiny-llama"), "idp")
    assert spec.compression == DEFAULT_COMPRESSION == "gptq3"
    assert "compression: gptq3 (default)" in capsys.readouterr().err
    assert VariantSpec(ModelSpec("tiny-llama"), "lora", "sparsegpt50").compression == "sparsegpt50"
    assert VariantSpec(ModelSpec("tiny-llama")).compression is None
    with pytest.raises(ProbeError, match="does not apply to --variant original"):
        VariantSpec(ModelSpec("tiny-llama"), "original", "gptq3")


def test_the_command_users_type_stops_only_on_missing_weights(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROBE_LLAMA7B_PATH"}
    env.update(PYTHONPATH=str(ROOT), PROBE_ARTIFACTS=str(tmp_path), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-m", "probe", "capture", "--model", "llama7b", "--variant", "idp"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "compression: gptq3 (default)" in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--model-path" in errors[0] and "PROBE_LLAMA7B_PATH" in errors[0]
    assert "needs --compression" not in out.stderr
