"""Recovery methods on the tiny Llama: our KV-prefix path equals peft's own forward; LoRA merge."""

from __future__ import annotations

import pytest
import torch

from probe.models.tiny import build_tiny_llama
from probe.recover.lora import METHOD as LORA
from probe.recover.prefix import METHOD as PREFIX
from probe.recover.prefix import prefix_table
from probe.recover.registry import TRAINABLE
from probe.recover.soft_prompt import METHOD as PROMPT
from probe.recover.spec import METHODS, RecoverSpec
from probe.runtime.adapters import merged_copy, peft_prefix, prompt_embeddings
from probe.runtime.kv_prefix import KVPrefix, prefix_from_embeddings
from probe.runtime.spec import RECOVERY_VARIANTS
from probe.runtime.variant import RUNTIMES


def batch(tok) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok(["The capital of France is", "Bees make honey"], return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def spec(method: str, **kw) -> RecoverSpec:
    return RecoverSpec(model="tiny-llama", method=method, fast=True, n_tokens=5, **kw)


def perturb(t: torch.Tensor, seed: int = 1) -> None:
    """Move a parameter away from its initialisation (so the test sees trained-like values)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t.add_(0.3 * torch.randn(t.shape, generator=g))


def real_logits(full: torch.Tensor, n: int) -> torch.Tensor:
    return full[:, n:]


@pytest.mark.parametrize("method", [PROMPT, PREFIX])
def test_prefix_path_equals_peft_forward(method):
    model, tok = build_tiny_llama()
    peft_model = method.create(model, tok, spec(method.name))
    param = prompt_embeddings(peft_model) if method is PROMPT else prefix_table(peft_model)
    perturb(param)
    ids, mask = batch(tok)
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
        n = method.extra_kv_positions(peft_model)
        if theirs.shape[1] == ids.shape[1] + n:  # prompt tuning returns the virtual positions too
            theirs = real_logits(theirs, n)
        ours, _ = method.logits_fn(peft_model)(ids, mask)
        student = method.student(peft_model)(ids, mask)
    m = mask.bool()
    assert torch.allclose(ours[m], theirs[m], atol=1e-5)
    assert torch.allclose(student[m], theirs[m], atol=1e-5)
    # and the recovery changes the output (the test can fail)
    base = peft_model.get_base_model()
    with torch.no_grad():
        plain = base(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(plain[m], ours[m], atol=1e-3)


def test_soft_prompt_initialised_from_vocabulary_text():
    model, tok = build_tiny_llama()
    s = spec("prompt", init_text="ab")
    peft_model = PROMPT.create(model, tok, s)
    ids = tok("ab", add_special_tokens=False).input_ids
    emb = model.get_input_embeddings().weight
    expected = emb[torch.tensor((ids * 5)[:5])]
    assert torch.equal(prompt_embeddings(peft_model), expected)
    assert PROMPT.extra_parameters(peft_model) == 5 * model.config.hidden_size


def test_prefix_initialised_from_text_kv_and_layout_matches_peft():
    model, tok = build_tiny_llama()
    s = spec("prefix", init_text="hello world")
    ids = tok("hello world", add_special_tokens=False).input_ids
    ids = torch.tensor([(ids * 5)[:5]])
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        expected = KVPrefix([la.keys for la in cache.layers], [la.values for la in cache.layers])
        peft_model = PREFIX.create(model, tok, s)
        got = peft_prefix(peft_model)
    for a, b in zip(expected.keys + expected.values, got.keys + got.values, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    cfg = model.config
    assert PREFIX.extra_parameters(peft_model) == 5 * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (
        cfg.hidden_size // cfg.num_attention_heads)


def test_student_gradients_reach_only_adapter():
    model, tok = build_tiny_llama()
    for method in (PROMPT, PREFIX, LORA):
        model, tok = build_tiny_llama()
        peft_model = method.create(model, tok, spec(method.name))
        ids, mask = batch(tok)
        method.student(peft_model)(ids, mask).sum().backward()
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        assert trainable and all(p.grad is not None for p in trainable)
        frozen = [p for n, p in peft_model.named_parameters() if not p.requires_grad]
        assert all(p.grad is None for p in frozen)


def test_lora_unmerged_equals_merged():
    model, tok = build_tiny_llama()
    peft_model = LORA.create(model, tok, spec("lora", rank=4))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            perturb(p)
    ids, mask = batch(tok)
    merged = merged_copy(peft_model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        unmerged, _ = LORA.logits_fn(peft_model)(ids, mask)
        dense = merged(input_ids=ids, attention_mask=mask).logits
        plain = build_tiny_llama()[0](input_ids=ids, attention_mask=mask).logits
    m = mask.bool()
    assert torch.allclose(unmerged[m], dense[m], atol=1e-5)
    assert not torch.allclose(unmerged[m], plain[m], atol=1e-3)
    # the unmerged model still has its side branch
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    per_layer = 4 * (cfg.hidden_size + cfg.hidden_size) + 4 * (cfg.hidden_size + cfg.num_key_value_heads * hd)
    assert LORA.extra_parameters(peft_model) == cfg.num_hidden_layers * per_layer


def test_prompt_cache_continuation_matches_full_pass():
    """logits_fn honours the KV-cache contract of score_facts."""
    model, tok = build_tiny_llama()
    peft_model = PROMPT.create(model, tok, spec("prompt"))
    fn = PROMPT.logits_fn(peft_model)
    ids = tok(["The capital of France is Paris"], return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full, _ = fn(ids, mask)
        first, past = fn(ids[:, :4], mask[:, :4], use_cache=True)
        rest, _ = fn(ids[:, 4:], mask, past=past)
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=1e-5)
    assert prefix_from_embeddings  # imported API used by the soft prompt


def test_every_recovery_variant_has_one_runtime_and_one_trainer_built_on_it():
    assert tuple(RUNTIMES) == tuple(TRAINABLE) == RECOVERY_VARIANTS == METHODS
    for name, trainer in TRAINABLE.items():
        assert trainer.name == name and isinstance(trainer, type(RUNTIMES[name]))
