"""The foundation on the real SmolLM2: hooked parity, classic facts, `probe eval` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from probe.knowledge.schema import Fact
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.models.bridge import hook_model
from tests.cli_helpers import CliResult, run_cli
from tests.conftest import load_smollm2

pytestmark = pytest.mark.integration

CLASSIC = [
    ("The capital of France is", "Paris"),
    ("The capital of Japan is", "Tokyo"),
    ("The capital of Italy is", "Rome"),
    ("The chemical symbol for gold is", "Au"),
    ("The chemical symbol for iron is", "Fe"),
    ("The largest planet in the solar system is", "Jupiter"),
    ("The planet closest to the Sun is", "Mercury"),
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The author of Romeo and Juliet is William", "Shakespeare"),
]


def test_smollm2_knows_classic_facts(smollm2_folder):
    loaded = load_smollm2(smollm2_folder)
    facts = [Fact(f"c{i}", "classic", "", a, (p,)) for i, (p, a) in enumerate(CLASSIC)]
    scores = score_facts(facts, loaded.tokenizer, hf_logits_fn(loaded.model))
    known = [s.fact_id for s in scores if s.known]
    assert len(known) >= 7, [(f.prompt, s.prediction) for f, s in zip(facts, scores, strict=True)]


def test_bridge_logits_equal_hf_eager_smollm2(smollm2_folder):
    ref = load_smollm2(smollm2_folder)
    hooked = hook_model(load_smollm2(smollm2_folder))
    batch = ref.tokenizer(["The capital of France is", "Gold is a chemical element with symbol"],
                          return_tensors="pt", padding=True)
    with torch.no_grad():
        want = ref.model(**batch).logits
        got = hooked(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")
    assert (got - want).abs().max().item() <= 1e-4


def test_bridge_soft_prompt_equals_hf_inputs_embeds_smollm2(smollm2_folder):
    ref = load_smollm2(smollm2_folder)
    hooked = hook_model(load_smollm2(smollm2_folder))
    ids = ref.tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    emb = ref.model.get_input_embeddings()
    prompt = emb(torch.tensor([[100, 200, 300, 400]])).detach()  # initialised from vocabulary
    embeds = torch.cat([prompt, emb(ids)], dim=1)
    with torch.no_grad():
        want = ref.model(inputs_embeds=embeds).logits
        got = hooked(embeds, return_type="logits")
    assert (got - want).abs().max().item() <= 1e-4


def _probe(*args: str, env_root) -> CliResult:
    return run_cli(*args, env={"PROBE_ARTIFACTS": str(env_root), "HF_HUB_OFFLINE": "1"})


def test_probe_eval_json_on_builtin(smollm2_artifacts):
    # four relations (136 facts, currencies with multi-token answers): the whole set's numbers are measured by
    # scripts/measure_protocol.py, not here
    res = _probe("eval", "--model", "smollm2-135m", "--probes", "builtin", "--split", "eval", "--json",
                 "--relations", "capital,chemical_symbol,currency,moon_planet", env_root=smollm2_artifacts)
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    for key in ("model", "variant", "n_facts", "n_relations", "top1_accuracy", "mc_accuracy", "per_relation",
                "known_ids"):
        assert key in data
    assert data["model"] == "smollm2-135m" and data["variant"] == "original"
    assert data["n_relations"] == 4 and data["n_facts"] == 48 + 32 + 29 + 27
    assert 0.05 < data["top1_accuracy"] < 0.95 and 0.05 < data["known_rate"] < 0.95
    assert data["protocol"]["shots"] == 3 and data["known_definition"] == data["protocol"]["known"] == "full_answer"
    assert len(data["known_ids"]) == round(data["known_rate"] * data["n_facts"])
    assert data["known_rate"] == pytest.approx(data["exact_match"])  # full answer: known is the greedy match
    saved = list((smollm2_artifacts / "eval" / "smollm2-135m" / "original").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["known_ids"] == data["known_ids"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "smolm2"], "did you mean"),
    (["--relations", "no_such_relation"], "unknown relation"),
    (["--device", "cuda:9"], "cuda"),
    (["--probes", "/nonexistent/probes.jsonl"], "probes.jsonl"),
])
def test_probe_eval_bad_input_is_one_clear_line(smollm2_artifacts, args, needle):
    res = _probe("eval", *args, env_root=smollm2_artifacts)
    assert res.code == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert not (smollm2_artifacts / "eval").exists()
