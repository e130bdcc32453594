"""Training LoRA (peft) on the compressed variant's dense weights; it stays UNMERGED.

Deployment cost is measured with the unmerged side branch (see
:class:`~probe.runtime.adapters.LoraRuntime`). Compressed variants here are already baked to
plain dense weights (no quantization wrappers), so the merged copy capture hooks never
re-quantizes the LoRA change away.
"""

from __future__ import annotations

from peft import LoraConfig, get_peft_model

from probe.errors import ProbeError
from probe.knowledge.scoring import hf_logits_fn
from probe.recover.method import RecoveryMethod
from probe.recover.spec import RecoverSpec
from probe.recover.train import LogitsOf
from probe.runtime.adapters import LoraRuntime


class Lora(LoraRuntime, RecoveryMethod):
    def create(self, model, tokenizer, spec: RecoverSpec):
        cfg = LoraConfig(task_type="CAUSAL_LM", r=spec.rank, lora_alpha=spec.alpha,
                         target_modules=list(spec.targets), lora_dropout=0.0)
        try:
            return get_peft_model(model, cfg)
        except ValueError as exc:
            raise ProbeError(f"--targets {','.join(spec.targets)} matched no module of this model: "
                             f"{str(exc).splitlines()[0][:160]}") from None

    def discard(self, adapter) -> None:
        adapter.unload()

    def student(self, adapter) -> LogitsOf:
        fn = hf_logits_fn(adapter)
        return lambda input_ids, attention_mask: fn(input_ids, attention_mask)[0]


METHOD = Lora()
