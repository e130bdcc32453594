"""LoRA (peft) on the compressed variant's dense weights, kept UNMERGED.

Deployment cost is measured with the unmerged side branch (merging into quantized or sparse
weights would undo the compression). :func:`merged_copy` makes a separate dense model with the
adapter folded in, for hooking and analysis only; it equals the unmerged model to 1e-5 (tested).
Compressed variants here are already baked to plain dense weights (no quantization wrappers),
so merging never re-quantizes the LoRA change away.
"""

from __future__ import annotations

import copy

import torch

from probe.knowledge.scoring import hf_logits_fn
from probe.recover.spec import RecoverSpec, RecoveryMethod


class Lora(RecoveryMethod):
    name = "lora"

    def create(self, model, tokenizer, spec: RecoverSpec):
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(task_type="CAUSAL_LM", r=spec.rank, lora_alpha=spec.alpha,
                         target_modules=list(spec.targets), lora_dropout=0.0)
        try:
            return get_peft_model(model, cfg)
        except ValueError as exc:
            from probe.errors import ProbeError

            raise ProbeError(f"--targets {','.join(spec.targets)} matched no module of this model: "
                             f"{str(exc).splitlines()[0][:160]}") from None

    def student(self, peft_model):
        fn = hf_logits_fn(peft_model)
        return lambda input_ids, attention_mask: fn(input_ids, attention_mask)[0]

    def logits_fn(self, peft_model):
        return hf_logits_fn(peft_model)

    def hook_view(self, adapter) -> tuple:
        return merged_copy(adapter), None, None


def merged_copy(peft_model) -> torch.nn.Module:
    """A separate dense model with the LoRA update merged in; ``peft_model`` stays unmerged."""
    return copy.deepcopy(peft_model).merge_and_unload().eval()


METHOD = Lora()
