"""The few-shot probe format on the real SmolLM2 tokenizer and weights: the shared demonstration cache
gives the scores of the whole text, and the demonstrations' tokens split where the text does."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_shared_demonstration_cache_equals_the_whole_text_on_smollm2(smollm2_folder):
    from probe.knowledge.loaders import load_probes
    from probe.knowledge.protocol import build_prompts
    from probe.knowledge.scoring import hf_logits_fn, score_facts
    from tests.conftest import load_smollm2

    loaded = load_smollm2(smollm2_folder)
    tok = loaded.tokenizer
    pool = load_probes("builtin")
    facts = [f for f in pool.split("eval").facts if f.relation in ("capital", "currency")][:24]
    asked = build_prompts(facts, pool.facts, 3)
    for a in asked:  # prefix + query tokenised apart = the whole text tokenised at once
        assert tok(a.prefix).input_ids + tok(a.query, add_special_tokens=False).input_ids == tok(a.text).input_ids
    fn = hf_logits_fn(loaded.model)
    shared = score_facts(facts, tok, fn, prompted=asked, batch_size=8)
    whole = score_facts(facts, tok, fn, prompted=asked, batch_size=8, share_prefix=False)
    for s, w in zip(shared, whole, strict=True):
        assert s.rank == w.rank and s.exact_match == w.exact_match and s.prediction == w.prediction
        assert s.answer_logprob == pytest.approx(w.answer_logprob, abs=1e-3)
