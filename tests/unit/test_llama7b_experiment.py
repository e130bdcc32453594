"""`probe run experiments/llama7b.toml` end to end on CPU, its [model] path pointing at a small local HF folder.

The shipped file is run as it is — its compressions (llmcompressor GPTQ and SparseGPT), its four
recoveries, its capture, costs and analysis — with only the sizes a test can afford changed: the
folder (a small random Llama, or OPT under the name opt-6.7b, saved from a config), the device
(CPU), training steps, calibration texts and the probe file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from probe.experiment.run import run_experiment
from probe.experiment.spec import load_experiment
from probe.models.tiny import tiny_tokenizer
from probe.plan.predict import PlanSpec, plan_experiment
from tests.unit.test_experiment import _probes

ROOT = Path(__file__).parents[2]


def _folder(path: Path, arch: str) -> Path:
    """A small random model saved as an HF folder (hidden 128: GPTQ's default group of 128 columns fits)."""
    tok = tiny_tokenizer()
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = OPTConfig(vocab_size=len(tok), hidden_size=128, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=256, word_embed_proj_dim=128, bos_token_id=1, eos_token_id=2,
                        pad_token_id=2)
        model = OPTForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _shrunk(text: str, name: str, folder: Path, probes: Path) -> str:
    """The shipped experiment with a test's sizes: every other line as shipped."""
    subs = {r'^name = "llama7b"$': f'name = "{name}"', r'^path = .*$': f'path = "{folder}"',
            r'^device = "cuda"$': 'device = "cpu"', r'^n_calibration = \d+$': "n_calibration = 4",
            r'^steps = \d+$': "steps = 2", r'^probes = "builtin"$': f'probes = "{probes}"',
            r'^batch_size = \d+$': "batch_size = 8", r'^full_attention = \d+$': "full_attention = 2",
            r'^repeats = \d+$': "repeats = 1", r'^n_boot = \d+$': "n_boot = 100",
            r'^n_boot_cka = \d+$': "n_boot_cka = 20"}
    out = []
    for line in text.splitlines():
        code = line.split("#")[0].rstrip()
        for pattern, new in subs.items():
            if re.match(pattern, code):
                line = new
                break
        out.append(line)
    text = "\n".join(out) + "\n"
    for table, extra in (("[analyze]", "min_facts = 4"), ("[compress]", "evaluate = false"),
                         ("[recover]", "fast = true\nevaluate = false")):  # no eval-split scoring, small corpus
        text = text.replace(f"\n{table}\n", f"\n{table}\n{extra}\n", 1)
    return re.sub(r'^dtype = "float16".*$', 'dtype = "auto"', text, count=1, flags=re.M)  # [model]: CPU float32


@pytest.mark.timeout(1200)  # fifteen stages; about two minutes on a quiet 2-core machine
@pytest.mark.parametrize("arch,name", [("llama", "llama7b"), ("opt", "opt-6.7b")])
def test_the_llama7b_experiment_runs_end_to_end_on_a_small_local_folder(artifacts, tmp_path, arch, name):
    folder = _folder(tmp_path / f"small-{arch}", arch)
    shipped = (ROOT / "experiments" / "llama7b.toml").read_text()
    path = tmp_path / "llama7b.toml"
    path.write_text(_shrunk(shipped, name, folder, _probes(tmp_path)))
    spec = load_experiment(path)
    assert spec.compressions == ("gptq3", "sparsegpt50") and set(spec.recoveries) == {"prompt", "prefix", "idp",
                                                                                         "lora"}
    refused = [line for line in plan_experiment(spec, PlanSpec(disk_gb=100)).problems() if "recover:idp" in line]
    if arch == "opt":  # IDP needs a Llama-style decoder: `probe plan` says so before hours of stages
        assert refused and "drop idp from [recover] methods" in refused[0]
        path.write_text(path.read_text().replace('"idp", ', ""))
        spec = load_experiment(path)
    else:
        assert refused == []
    result = run_experiment(spec)
    assert {s.key: s.outcome for s in result.stages if s.key != "model"} == {
        **{f"compress:{m}": "built" for m in spec.compressions}, **{f"recover:{m}": "built" for m in spec.recoveries},
        **{f"capture:{v}": "built" for v in spec.variants}, "costs": "built", "analyze": "built"}
    verdict = json.loads((result.analysis / "verdict.json").read_text())
    assert verdict["n_eval"] == 8
    summary = json.loads((result.analysis / "summary.json").read_text())
    assert {r["variant"] for r in summary} == {"original", "compressed", *spec.recoveries}
