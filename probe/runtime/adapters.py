"""The inference half of each recovery method: load a saved adapter, run it, show capture what to hook.

Training (:mod:`probe.recover`) subclasses these classes and adds ``prepare``, ``create``,
``student`` and ``save``; evaluation, capture and costs use only what is here. Saved adapters
are peft folders (``adapter_model.safetensors`` + ``adapter_config.json``), except IDP's
(:mod:`probe.runtime.idp`).

* soft prompt and prefix tuning run as one precomputed KV prefix
  (:func:`~probe.runtime.kv_prefix.prefix_logits_fn`): the same logits as peft's own forward,
  with the prompt's keys/values computed once per model instead of once per row;
* LoRA runs UNMERGED (peft side branch): merging into quantized or sparse weights would undo
  the compression. :func:`merged_copy` makes a separate dense model with the adapter folded in,
  for hooking and analysis only; it equals the unmerged model to 1e-5 (tested).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict

from probe.errors import ProbeError
from probe.knowledge.scoring import LogitsFn, hf_logits_fn
from probe.runtime.kv_prefix import KVPrefix, Selector, prefix_from_embeddings, prefix_logits_fn

HookView = tuple[torch.nn.Module, KVPrefix | None, Selector | None]


class RecoveryRuntime:
    """A recovery method at inference: ``logits_fn`` follows the KV-cache contract of
    :class:`~probe.knowledge.scoring.LogitsFn`; ``hook_view`` is what capture and analysis hook."""

    name: str = ""

    def load(self, model: torch.nn.Module, folder: str | Path):
        """The saved adapter on ``model`` (frozen); a mismatching base is a one-line error."""
        try:
            peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).eval()
            with torch.no_grad():  # prompt-learning configs load into any model: one token shows a misfit
                one = torch.zeros((1, 1), dtype=torch.long, device=model.device)
                self.logits_fn(peft_model)(one, torch.ones_like(one))
            return peft_model
        except (RuntimeError, ValueError, KeyError, IndexError) as exc:
            raise ProbeError(f"the {self.name} adapter in {folder} does not fit this model (trained on another "
                             f"base model?): {str(exc).splitlines()[0][:200]}") from None

    def logits_fn(self, adapter) -> LogitsFn:
        raise NotImplementedError

    def hook_view(self, adapter) -> HookView:
        """``(module to hook, KVPrefix or None, selector or None)`` for capture and analysis."""
        raise NotImplementedError

    def annotate(self, adapter, facts, tokenizer) -> dict:
        """Extra per-fact results saved with eval results (IDP: the prompt each fact chose)."""
        return {}

    def extra_kv_positions(self, adapter) -> int:
        return 0

    def extra_parameters(self, adapter) -> int:
        """Parameters the adapter adds (what is saved), whether trainable now or not."""
        return sum(t.numel() for t in get_peft_model_state_dict(adapter).values())


class PrefixRuntime(RecoveryRuntime):
    """A method whose adapter runs as one KV prefix (soft prompt, prefix tuning)."""

    def make_prefix(self, adapter) -> KVPrefix:
        raise NotImplementedError

    def logits_fn(self, adapter) -> LogitsFn:
        with torch.no_grad():
            prefix = self.make_prefix(adapter)
        return prefix_logits_fn(adapter.get_base_model(), prefix)

    def hook_view(self, adapter) -> HookView:
        with torch.no_grad():
            return adapter.get_base_model(), self.make_prefix(adapter), None

    def extra_kv_positions(self, adapter) -> int:
        with torch.no_grad():
            return self.make_prefix(adapter).n_tokens


def prompt_embeddings(peft_model) -> torch.Tensor:
    """The learned prompt ``[n, d]`` of a peft prompt-tuning model (a trainable parameter while training)."""
    return peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight


def prompt_prefix(peft_model) -> KVPrefix:
    """The soft prompt alone at positions ``0..n-1``, as a KV prefix (differentiable while training)."""
    base = peft_model.get_base_model()
    return prefix_from_embeddings(base, prompt_embeddings(peft_model)[None].to(base.dtype))


class SoftPromptRuntime(PrefixRuntime):
    """Soft prompt tuning (peft ``PromptTuning``) run as a precomputed KV prefix."""

    name = "prompt"

    def make_prefix(self, adapter) -> KVPrefix:
        return prompt_prefix(adapter)


def peft_prefix(peft_model) -> KVPrefix:
    """peft's own prefix cache (batch 1) as a KVPrefix with ``m = 1``; differentiable while training.

    Llama's cached keys are used as given: no rotation is applied to them, as in peft's forward.
    """
    cache = peft_model.get_prompt(batch_size=1)
    return KVPrefix([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])


class PrefixTuningRuntime(PrefixRuntime):
    """Prefix tuning (peft ``PrefixTuning``): learned keys/values at every layer, run behind the input."""

    name = "prefix"

    def make_prefix(self, adapter) -> KVPrefix:
        return peft_prefix(adapter)


def merged_copy(peft_model) -> torch.nn.Module:
    """A separate dense model with the LoRA update merged in; ``peft_model`` stays unmerged."""
    return copy.deepcopy(peft_model).merge_and_unload().eval()


class LoraRuntime(RecoveryRuntime):
    """LoRA, kept unmerged; capture hooks a merged dense copy."""

    name = "lora"

    def logits_fn(self, adapter) -> LogitsFn:
        return hf_logits_fn(adapter)

    def hook_view(self, adapter) -> HookView:
        return merged_copy(adapter), None, None
