"""Training prefix tuning (peft ``PrefixTuning``, no reparametrisation): learned keys/values at every layer.

peft stores the prefix as one embedding ``[n, layers * 2 * kv_heads * head_dim]`` and turns it
into a cache in ``PeftModel.get_prompt``; :class:`~probe.runtime.adapters.PrefixTuningRuntime`
takes that cache as a KV prefix and runs inputs behind it at positions ``n..``, exactly as
peft's forward does (tested to 1e-5).

Initialisation: the keys/values the compressed model itself produces for the tokens of
:func:`~probe.recover.soft_prompt.init_ids` (``n_tokens`` end-of-text tokens, or ``spec.init_text``),
so training starts from a real text prefix rather than N(0, 1) noise,
which wrecks the model's output before the first step.
"""

from __future__ import annotations

import torch
from peft import PrefixTuningConfig, get_peft_model

from probe.recover.method import PrefixTraining
from probe.recover.soft_prompt import init_ids
from probe.recover.spec import RecoverSpec
from probe.runtime.adapters import PrefixTuningRuntime


def prefix_table(peft_model) -> torch.Tensor:
    """The learned table ``[n, layers * 2 * kv_heads * head_dim]``."""
    return peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight


class Prefix(PrefixTuningRuntime, PrefixTraining):
    def create(self, model, tokenizer, spec: RecoverSpec):
        peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.n_tokens))
        ids = torch.tensor([init_ids(tokenizer, spec)], device=model.device)
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).past_key_values
            n, layers = spec.n_tokens, len(cache.layers)
            kv_heads, head_dim = cache.layers[0].keys.shape[1], cache.layers[0].keys.shape[3]
            table = prefix_table(peft_model).view(n, layers, 2, kv_heads, head_dim)
            for i, layer in enumerate(cache.layers):
                table[:, i, 0] = layer.keys[0].transpose(0, 1)
                table[:, i, 1] = layer.values[0].transpose(0, 1)
        return peft_model


METHOD = Prefix()
