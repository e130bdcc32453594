"""Fact scoring against a brute-force reference computed one unpadded sequence at a time."""

from __future__ import annotations

import pytest
import torch

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.knowledge.schema import Fact
from probe.knowledge.scoring import encode_pair, hf_logits_fn, score_facts
from probe.models.load import load_model

FACTS = [
    Fact("f1", "capital", "France", "Paris", ("The capital of France is",), aliases=("Paree",),
         distractors=("Rome", "Berlin", "Madrid")),
    Fact("f2", "symbol", "gold", "Au", ("The chemical symbol for gold is",), distractors=("Ag", "Fe", "Cu")),
    Fact("f3", "planet", "Moon", "Earth", ("The Moon orbits",), distractors=("Mars", "Venus", "Jupiter")),
]


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec("tiny-llama", dtype="float32"))


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def _seq_logprob(model, tok, prompt, cont):
    ctx, ans = encode_pair(tok, prompt, cont)
    lp = _logprobs(model, ctx + ans)
    return sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(ans)), ctx, ans, lp


def test_scores_match_brute_force(tiny):
    model, tok = tiny.model, tiny.tokenizer
    scores = score_facts(FACTS, tok, hf_logits_fn(model), batch_size=4)
    for fact, s in zip(FACTS, scores, strict=True):
        per_answer = [_seq_logprob(model, tok, fact.prompt, a) for a in fact.answers]
        first_ranks = []
        for _, ctx, ans, lp in per_answer:
            row = lp[len(ctx) - 1]
            first_ranks.append(int((row > row[ans[0]]).sum()))
        assert s.rank == min(first_ranks)
        assert s.answer_logprob == pytest.approx(max(p[0] for p in per_answer), abs=1e-4)
        greedy = [all(int(lp[len(ctx) - 1 + i].argmax()) == t for i, t in enumerate(ans))
                  for _, ctx, ans, lp in per_answer]
        assert s.exact_match == any(greedy)
        choice_lp = [_seq_logprob(model, tok, fact.prompt, c)[0] for c in (fact.object, *fact.distractors)]
        assert s.mc_correct == (max(range(4), key=choice_lp.__getitem__) == 0)
        norm = [lp / len(" " + c) for lp, c in zip(choice_lp, (fact.object, *fact.distractors), strict=True)]
        assert s.mc_norm_correct == (max(range(4), key=norm.__getitem__) == 0)


def test_batch_size_does_not_change_scores(tiny):
    fn = hf_logits_fn(tiny.model)
    a = score_facts(FACTS, tiny.tokenizer, fn, batch_size=1)
    b = score_facts(FACTS, tiny.tokenizer, fn, batch_size=64)
    for x, y in zip(a, b, strict=True):
        assert x.rank == y.rank and x.mc_correct == y.mc_correct
        assert x.answer_logprob == pytest.approx(y.answer_logprob, abs=1e-4)


def test_a_model_that_always_says_paris_knows_only_paris(tiny):
    """A LogitsFn with a fixed preference: the scorer must follow it exactly."""
    tok = tiny.tokenizer
    paris = encode_pair(tok, FACTS[0].prompt, "Paris")[1][0]

    base = hf_logits_fn(tiny.model)

    def fn(ids, mask, past=None, use_cache=False):
        _, cache = base(ids, mask, past, use_cache)
        logits = torch.zeros(*ids.shape, len(tok))
        logits[..., paris] = 10.0
        return logits, cache

    scores = score_facts(FACTS, tok, fn)
    assert scores[0].known and scores[0].rank == 0
    assert not scores[1].known and scores[1].rank >= 1


def test_prompt_longer_than_context_is_refused(tiny):
    long = Fact("long", "r", "s", "x", ("word " * 600,))
    with pytest.raises(ProbeError, match="longer than the model's context"):
        score_facts([long], tiny.tokenizer, hf_logits_fn(tiny.model), max_positions=512)


def test_no_facts_is_refused(tiny):
    with pytest.raises(ProbeError, match="no facts"):
        score_facts([], tiny.tokenizer, hf_logits_fn(tiny.model))
