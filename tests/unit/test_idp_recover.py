"""IDP through the shared recovery machinery on the tiny Llama: train, save, load, eval, capture view."""

from __future__ import annotations

import json

import pytest
import torch

from probe.errors import ProbeError
from probe.evaluation.run import EvalSpec, run_eval
from probe.recover.run import recover
from probe.runtime.kv_prefix import prefix_logits_fn
from probe.runtime.spec import VariantSpec
from probe.runtime.variant import capture_view, load_variant
from tests.unit.test_recover_run import TINY, fast, make_tiny_variant


@pytest.fixture
def trained(artifacts):
    make_tiny_variant()
    return recover(fast("idp", steps=3), with_eval=False)


def test_idp_trains_saves_and_reloads_as_a_variant(trained):
    adapter = trained / "adapter"
    assert (adapter / "idp.safetensors").is_file() and not list(adapter.glob("*.bin"))
    config = json.loads((adapter / "idp.json").read_text())
    manifest = json.loads((trained / "manifest.json").read_text())
    m, n = config["options"]["m"], config["options"]["n"]
    assert (m, n) == (4, 1) and manifest["spec"]["method"] == "idp"
    bias = m if config["options"]["router"] == "bias" else 0  # the bias router's bias counts too
    assert manifest["trainable_parameters"] == m * n * 64 + bias
    assert manifest["extra_kv_positions"] == n
    # the held-out KL reported is the inference router's: the routing report (IDPRouter) gives the same number
    report = manifest["report"]
    assert report["held_out_router"] == pytest.approx(manifest["held_out_after"], rel=1e-4)
    assert report["held_out_oracle"] <= report["held_out_router"] and report["n_windows"] == manifest["data"][
        "n_held_out"]
    # every training window was routed to exactly one prompt
    assert sum(config["train_usage"]) == 3 * manifest["spec"]["batch_size"]

    loaded = load_variant(VariantSpec(TINY, "idp", "fake3"))
    view = capture_view(loaded)
    assert view.prefix.n_prompts == m and view.prefix.n_tokens == n and view.select is not None


def test_idp_eval_records_the_chosen_prompt_per_fact(trained):
    spec = EvalSpec(VariantSpec(TINY, "idp", "fake3"), relations=("capital",))
    result = run_eval(spec)
    choices = result["idp_choice"]
    assert set(choices) == {f["fact_id"] for f in result["facts"]}
    assert all(0 <= c < 4 for c in choices.values())
    assert sum(result["idp_usage"]) == result["n_facts"]


def test_idp_forced_choice_equals_single_prompt_variant_logits(trained):
    """The loaded IDP variant, with its router forced to k, equals prepending pool prompt k."""
    loaded = load_variant(VariantSpec(TINY, "idp", "fake3"))
    model, pool = loaded.adapter.model, loaded.adapter.prompts.detach()
    enc = loaded.base.tokenizer(["The capital of France is", "Gold"], return_tensors="pt", padding=True)
    emb = model.get_input_embeddings()(enc.input_ids)
    real = enc.attention_mask.bool()
    with torch.no_grad():
        for k in range(pool.shape[0]):
            fn = prefix_logits_fn(model, loaded.adapter.prefix(), lambda i, m, k=k: torch.full((i.shape[0],), k))
            got = fn(enc.input_ids, enc.attention_mask)[0]
            full = torch.cat([pool[k].expand(2, -1, -1), emb], 1)
            mask = torch.cat([torch.ones(2, pool.shape[1], dtype=torch.long), enc.attention_mask], 1)
            want = model(inputs_embeds=full, attention_mask=mask).logits[:, pool.shape[1]:]
            assert (got - want)[real].abs().max().item() <= 1e-5


@pytest.mark.parametrize(("kw", "match"), [
    ({"idp_m": 0}, "m ≥ 1"),
    ({"idp_statistic": "median"}, "--idp-statistic"),
    ({"idp_routing": "random"}, "--idp-routing"),
    ({"idp_router": "solo"}, "--idp-router"),
    ({"idp_temperature": 0.0}, "--idp-temperature"),
])
def test_bad_idp_options(kw, match):
    with pytest.raises(ProbeError, match=match):
        fast("idp", **kw)


def test_recover_with_eval_saves_the_chosen_prompts(artifacts):
    make_tiny_variant()
    recover(fast("idp", steps=2))
    saved = list((artifacts / "eval" / "tiny-llama" / "fake3-idp").glob("*.json"))
    assert len(saved) == 1
    result = json.loads(saved[0].read_text())
    assert len(result["idp_choice"]) == result["n_facts"] and sum(result["idp_usage"]) == result["n_facts"]
