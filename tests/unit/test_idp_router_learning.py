"""The IDP router learns (tiny Llama): a planted group of inputs for which one prompt is clearly better.

The teacher is the frozen model run with a *planted* prompt per group (group A: prompts from the
first half of the vocabulary; group B: the second half); the student pool starts at the same two
prompts, the planting chosen so that the untrained router sends most inputs to the wrong one.
The hard-EM router must learn to send each group to its prompt; the untrained (``fixed``) router,
the rule the pool had before (score detached under ``no_grad``, never trained), does not: the
control that shows the test can fail.
"""

from __future__ import annotations

import pytest
import torch

from probe.config import ModelSpec
from probe.models.load import load_model
from probe.recover.idp_pool import RoutedStudent
from probe.recover.idp_report import routing_from_losses, usage_stats
from probe.recover.spec import RecoverSpec
from probe.recover.train import train
from probe.runtime.idp import IDPAdapter
from probe.runtime.idp_options import IDPOptions
from probe.runtime.kv_prefix import forward_with_prefix, prefix_from_embeddings


@pytest.fixture(scope="module")
def planted():
    model = load_model(ModelSpec("tiny-llama", dtype="float32")).model
    model.requires_grad_(False)
    vocab, d = model.config.vocab_size, model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(10, vocab // 2, (8, 6), generator=g),
                     torch.randint(vocab // 2, vocab, (8, 6), generator=g)])
    group = torch.tensor([0] * 8 + [1] * 8)
    pool = torch.randn(2, 2, d, generator=g) * 8 * float(model.get_input_embeddings().weight.std())
    with torch.no_grad():
        first = IDPAdapter(model, pool, None, IDPOptions(m=2, n=2, router="fixed")).router()(ids, torch.ones_like(ids))
    # group A's prompt is a, group B's 1 - a: the planting the untrained router gets most wrong
    wrong = {a: int((first == torch.where(group == 0, a, 1 - a)).sum()) for a in (0, 1)}
    a = min(wrong, key=wrong.get)
    good = torch.where(group == 0, a, 1 - a)
    prefix = prefix_from_embeddings(model, pool)
    with torch.no_grad():
        target = {tuple(r.tolist()): forward_with_prefix(model, prefix, k[None], r[None], torch.ones(1, 6,
                  dtype=torch.long)).logits[0] for r, k in zip(ids, good, strict=True)}
    return model, ids, good, pool, lambda i, m: torch.stack([target[tuple(r.tolist())] for r in i])


def _train(planted, router: str, steps: int = 12) -> float:
    model, ids, good, pool, teacher = planted
    adapter = IDPAdapter(model, pool.clone(), None, IDPOptions(m=2, n=2, router=router))
    spec = RecoverSpec(model="tiny-llama", compression="fake3", method="idp", fast=True, steps=steps, lr=0.05,
                       idp_m=2, n_tokens=2, idp_router=router, warmup=0.0, schedule="constant")
    gen = torch.Generator().manual_seed(1)
    batches = (ids[torch.randperm(16, generator=gen)[:8]] for _ in range(steps))
    train(RoutedStudent(adapter, teacher), [adapter.prompts], ((b, torch.ones_like(b)) for b in batches),
          teacher, spec)
    with torch.no_grad():
        choice = adapter.router()(ids, torch.ones_like(ids))
    return float((choice == good).float().mean())


def test_em_router_learns_the_planted_prompt_and_the_untrained_router_does_not(planted):
    assert _train(planted, "em") >= 0.8
    assert _train(planted, "fixed") <= 0.6


def test_bias_router_spreads_a_collapsed_pool(planted):
    """A pool whose score favours prompt 0 for every input (the per-prompt offset the issue measured)."""
    model, ids, _, pool, teacher = planted
    mask = torch.ones_like(ids)
    adapter = IDPAdapter(model, pool.clone(), None, IDPOptions(m=2, n=2, router="bias", bias_rate=0.25),
                         bias=torch.tensor([4.0, 0.0]))
    with torch.no_grad():
        before = usage_stats(adapter.router()(ids, mask), 2)["max_share"]
    student = RoutedStudent(adapter, teacher)
    for _ in range(30):
        with torch.enable_grad():
            student(ids, mask)  # a training forward records the batch's load
        student.after_step()
    with torch.no_grad():
        after = usage_stats(adapter.router()(ids, mask), 2)["max_share"]
    assert before == 1.0 and after <= 0.75
    assert adapter.bias[0] - adapter.bias[1] < 4.0


def test_routing_report_from_known_losses():
    losses = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.3, 0.9], [0.8, 0.6]])
    report = routing_from_losses(losses, torch.tensor([0, 0, 0, 1]))
    assert report["held_out_oracle"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)
    assert report["held_out_router"] == pytest.approx((0.1 + 0.4 + 0.3 + 0.6) / 4)
    assert report["best_single"] == 0 and report["held_out_best_single"] == pytest.approx(1.6 / 4)
    assert report["router_accuracy"] == 0.75 and report["max_share"] == 0.75
    assert 0 < report["usage_entropy"] < 1
