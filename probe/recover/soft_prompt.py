"""Soft prompt tuning (peft ``PromptTuning``), evaluated as a precomputed KV prefix.

The ``n_tokens`` virtual tokens are initialised from the word embeddings of ``spec.init_text``
(its tokens repeated to length), as peft's TEXT init does, so training starts from a real
prompt. Training and inference run the prompt through :mod:`probe.recover.kv_prefix` (the
prompt alone at positions ``0..n-1``, then the input behind it): the same logits as peft's own
forward (tested to 1e-5), but the prompt's keys/values are computed once per step instead of
once per row, and once per model at inference.
"""

from __future__ import annotations

import torch

from probe.recover.kv_prefix import (
    KVPrefix,
    constant_selector,
    forward_with_prefix,
    prefix_from_embeddings,
    prefix_logits_fn,
)
from probe.recover.spec import RecoverSpec, RecoveryMethod


def init_token_ids(tokenizer, text: str, n: int) -> list[int]:
    """``n`` token ids of ``text``, repeated (or cut) to length."""
    ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.eos_token_id or 0]
    return (ids * (n // len(ids) + 1))[:n]


def prompt_embeddings(peft_model) -> torch.Tensor:
    """The learned prompt ``[n, d]`` (a trainable parameter while training)."""
    return peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight


def prompt_prefix(peft_model) -> KVPrefix:
    base = peft_model.get_base_model()
    return prefix_from_embeddings(base, prompt_embeddings(peft_model)[None].to(base.dtype))


def student_through_prefix(base, make_prefix):
    """Differentiable logits of the real tokens behind a prefix rebuilt by ``make_prefix()`` per call."""
    select = constant_selector(0)

    def student(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        prefix = make_prefix()
        return forward_with_prefix(base, prefix, select(input_ids, attention_mask), input_ids, attention_mask).logits

    return student


class PrefixMethod(RecoveryMethod):
    """A method whose adapter runs as one KV prefix (soft prompt, prefix tuning)."""

    def make_prefix(self, adapter) -> KVPrefix:
        raise NotImplementedError

    def student(self, peft_model):
        return student_through_prefix(peft_model.get_base_model(), lambda: self.make_prefix(peft_model))

    def logits_fn(self, peft_model):
        with torch.no_grad():
            prefix = self.make_prefix(peft_model)
        return prefix_logits_fn(peft_model.get_base_model(), prefix)

    def hook_view(self, adapter) -> tuple:
        with torch.no_grad():
            return adapter.get_base_model(), self.make_prefix(adapter), None

    def extra_kv_positions(self, peft_model) -> int:
        with torch.no_grad():
            return self.make_prefix(peft_model).n_tokens


class SoftPrompt(PrefixMethod):
    name = "prompt"

    def create(self, model, tokenizer, spec: RecoverSpec):
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.n_tokens,
                                 prompt_tuning_init=PromptTuningInit.RANDOM)
        peft_model = get_peft_model(model, cfg)
        ids = torch.tensor(init_token_ids(tokenizer, spec.init_text, spec.n_tokens), device=model.device)
        with torch.no_grad():
            prompt_embeddings(peft_model).copy_(model.get_input_embeddings().weight[ids])
        return peft_model

    def make_prefix(self, adapter) -> KVPrefix:
        return prompt_prefix(adapter)


METHOD = SoftPrompt()
