"""Activation patching on tiny Llamas: the sanity checks of a causal method, and the scorer's encoding.

The "compressed" model is the tiny Llama with noise added to every block's weights; each fact's
answer is the original's own greedy continuation, so the original knows every fact and the
noisy model loses some.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.analysis.patching import MODES, Patcher, PatchItem, patch_facts, patch_items, subject_span
from probe.knowledge.protocol import build_prompts
from probe.knowledge.schema import Fact
from probe.models.bridge import hook_module
from probe.models.tiny import build_tiny_llama, tiny_tokenizer

N_LAYERS = 4


def _model(noise: float):
    model, _ = build_tiny_llama()
    if noise:
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, w in model.named_parameters():
                if ".layers." in name and w.ndim == 2:
                    w.add_(torch.randn(w.shape, generator=gen) * noise * w.std())
    return hook_module(model)


def _load(name: str):
    return _model(0.0 if name == "original" else 0.8)


@pytest.fixture(scope="module")
def items() -> list[PatchItem]:
    """40 random prompts; the answer is the original's greedy two-token continuation."""
    gen = torch.Generator().manual_seed(0)
    bridge = _load("original")
    out = []
    for i in range(40):
        prompt = torch.randint(3, 200, (6 + i % 5,), generator=gen).tolist()
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(2):
                ids.append(int(bridge(torch.tensor([ids]))[0, -1].argmax()))
        answer = tuple(ids[len(prompt):])
        out.append(PatchItem(tuple(prompt) + answer[:-1], len(prompt), answer, (answer[0],), (1, 2)))
    return out


@pytest.fixture(scope="module")
def result(items):
    return patch_facts(items, _load, range(N_LAYERS), pad_id=2, batch_size=8)


def test_the_original_knows_every_fact_and_the_noisy_model_loses_some(result):
    assert result.unpatched_original.top1.all() and result.unpatched_original.full.all()
    lost = ~result.unpatched_compressed.top1
    assert 5 <= lost.sum() < len(lost)


def test_patching_the_last_layer_everywhere_restores_every_lost_fact_and_breaks_every_known_one(result):
    lost = ~result.unpatched_compressed.top1
    assert result.sanity_restored[lost].all()  # the last layer's residual is the whole output
    assert result.sanity_broken[lost].all()


def test_patching_nothing_restores_nothing(items):
    """A patch that writes the compressed model's own residual back changes no outcome, at any layer."""
    comp = Patcher(_load("compressed"), items, 2, 8)
    plain, own = comp.record(range(N_LAYERS), N_LAYERS - 1)
    for layer in range(N_LAYERS):
        for mode in MODES:
            again = comp.patched(own, layer, mode)
            np.testing.assert_array_equal(again.top1, plain.top1)
            np.testing.assert_array_equal(again.full, plain.full)


def test_the_last_token_at_the_last_layer_decides_the_first_token(result):
    """At the last layer the last token's residual is the first-token output: restored exactly where lost."""
    lost = ~result.unpatched_compressed.top1
    assert result.restored["last"][lost, -1].all()
    assert result.broken["last"][lost, -1].all()
    assert result.restored["last"].shape == (40, N_LAYERS) and result.runs == 2 * N_LAYERS * len(MODES) + 2
    assert result.seconds_per_fact_layer > 0
    # subject tokens (positions 1–2) at the last layer do not reach the last token's output
    assert not result.restored["subject"][lost, -1].any()


def test_items_come_from_the_scorers_encoding_with_the_subject_positions():
    tok = tiny_tokenizer()
    fact = Fact(id="f", relation="capital", subject="France", object="Paris", prompts=("The capital of France is",),
                split="eval")
    (item,) = patch_items([fact], tok, 512)
    prompt = tok("The capital of France is").input_ids
    assert list(item.ids[: item.n_prompt]) == prompt and item.positions("last") == (len(prompt) - 1,)
    assert tok.decode([item.ids[p] for p in item.subject]).strip() == "France"
    assert item.firsts == (item.answer[0],) and tok.decode(list(item.answer)).strip() == "Paris"
    assert subject_span(tok, "nothing here", "France", 5) == ()


def test_few_shot_items_carry_the_demonstrations_and_the_querys_own_subject():
    """Patching asks as the captures ask: demonstrations first, the subject found in the query, not in them."""
    tok = tiny_tokenizer()
    demo = Fact(id="d", relation="capital", subject="Spain", object="Madrid", prompts=("The capital of Spain is",),
                split="train")
    fact = Fact(id="f", relation="capital", subject="France", object="Paris", prompts=("The capital of France is",),
                split="eval")
    prompted = build_prompts([fact], [demo, fact], 1, 0, warn=False)
    (item,) = patch_items([fact], tok, 512, 0, prompted)
    (plain,) = patch_items([fact], tok, 512)
    assert prompted[0].prefix and item.n_prompt > plain.n_prompt
    assert tok.decode(list(item.ids[: item.n_prompt])).startswith(prompted[0].prefix.strip()[:10])
    assert tok.decode([item.ids[p] for p in item.subject]).strip() == "France"
    assert item.subject[0] > item.n_prompt - plain.n_prompt - 1  # inside the query, after the demonstrations
    assert item.answer == plain.answer
