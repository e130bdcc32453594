"""The training half of a recovery method, on top of its inference half in :mod:`probe.runtime`.

``prepare`` looks at the original model and the data before ``create`` (IDP's k-means init);
``create`` wraps a frozen model in a fresh adapter; ``student`` is the differentiable
logits-of-real-tokens function the training loop calls; ``save`` writes what the runtime's
``load`` reads back (peft: ``adapter_model.safetensors`` + ``adapter_config.json``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from probe.recover.spec import RecoverSpec
from probe.recover.train import LogitsOf
from probe.runtime.adapters import RecoveryRuntime
from probe.runtime.kv_prefix import constant_selector, forward_with_prefix


class RecoveryMethod(RecoveryRuntime):
    """A recovery method that can be trained (and, through its runtime base class, run)."""

    def prepare(self, original: torch.nn.Module, data, spec: RecoverSpec) -> None:
        """Look at the original model and the training data before ``create`` (IDP's k-means init)."""

    def create(self, model: torch.nn.Module, tokenizer, spec: RecoverSpec):
        raise NotImplementedError

    def student(self, adapter) -> LogitsOf:
        raise NotImplementedError

    def save(self, adapter, folder: str | Path) -> None:
        adapter.save_pretrained(folder, safe_serialization=True)

    def state(self, adapter) -> list[torch.Tensor]:
        """Trained tensors that are not parameters (kept with them at the best step; IDP's router bias)."""
        return []

    def report(self, adapter, teacher, held_out) -> dict | None:
        """Method-specific held-out diagnostics for the manifest (IDP: its router against the oracle)."""
        return None

    def discard(self, adapter) -> None:
        """Detach ``adapter`` from its base model so a fresh one can be created (LoRA edits it in place)."""


def student_through_prefix(base: torch.nn.Module, make_prefix) -> LogitsOf:
    """Differentiable logits of the real tokens behind a prefix rebuilt by ``make_prefix()`` per call."""
    select = constant_selector(0)

    def student(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        prefix = make_prefix()
        return forward_with_prefix(base, prefix, select(input_ids, attention_mask), input_ids, attention_mask).logits

    return student


class PrefixTraining(RecoveryMethod):
    """Training of a method that runs as one KV prefix (its runtime class gives ``make_prefix``)."""

    def student(self, adapter) -> LogitsOf:
        return student_through_prefix(adapter.get_base_model(), lambda: self.make_prefix(adapter))
