"""Training a soft prompt (peft ``PromptTuning``), run as a precomputed KV prefix.

The ``n_tokens`` virtual tokens are initialised from word embeddings (:func:`init_ids`): by
default ``spec.init_text`` (its tokens repeated to length, as peft's TEXT init does), or the
end-of-text token repeated (``init_from="eos"``). Both start above the compressed model's held-out
KL, the end-of-text token the most (SmolLM2 gptq3, 32-token windows: no prompt 0.578, text 1.048,
end-of-text 1.981; README, "Recovery methods").
Training and inference run the prompt through :mod:`probe.runtime.kv_prefix` (the
prompt alone at positions ``0..n-1``, then the input behind it): the same logits as peft's own
forward (tested to 1e-5), but the prompt's keys/values are computed once per step instead of
once per row, and once per model at inference (:class:`~probe.runtime.adapters.SoftPromptRuntime`).
"""

from __future__ import annotations

import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

from probe.recover.method import PrefixTraining
from probe.recover.spec import RecoverSpec
from probe.runtime.adapters import SoftPromptRuntime, prompt_embeddings


def init_token_ids(tokenizer, text: str, n: int) -> list[int]:
    """``n`` token ids of ``text``, repeated (or cut) to length."""
    ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.eos_token_id or 0]
    return (ids * (n // len(ids) + 1))[:n]


def init_ids(tokenizer, spec: RecoverSpec) -> list[int]:
    """The ``spec.n_tokens`` token ids a prompt or prefix starts from (``spec.init_from``)."""
    if spec.init_from == "eos":
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id or 0
        return [eos] * spec.n_tokens
    return init_token_ids(tokenizer, spec.init_text, spec.n_tokens)


class SoftPrompt(SoftPromptRuntime, PrefixTraining):
    def create(self, model, tokenizer, spec: RecoverSpec):
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.n_tokens,
                                 prompt_tuning_init=PromptTuningInit.RANDOM)
        peft_model = get_peft_model(model, cfg)
        ids = torch.tensor(init_ids(tokenizer, spec), device=model.device)
        with torch.no_grad():
            prompt_embeddings(peft_model).copy_(model.get_input_embeddings().weight[ids])
        return peft_model


METHOD = SoftPrompt()
