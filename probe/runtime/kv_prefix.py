"""Prompt-based variants as a key/value prefix: one mechanism for soft prompts, prefixes and IDP.

A soft prompt of ``n`` embeddings that attends only to itself has the same keys and values for
every input, so they are computed once (positions ``0..n-1``) and reused: running an input
with that cache is exactly "run with the prompt prepended". Prefix tuning learns the keys and
values directly. IDP keeps ``m`` such prefixes and picks one per input. All three therefore
run through :func:`prefix_logits_fn`, which prepends the chosen prefix as a KV cache, places
the input at positions ``n..``, and returns logits for the real tokens only.

Written here rather than taken from peft because peft re-runs the prompt through the model on
every call and offers no per-input choice among several prompts; our tests check that this
path reproduces peft's own forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from probe.knowledge.scoring import LogitsFn

# chooses one prefix per row: (input_ids, attention_mask) -> LongTensor [batch]
Selector = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class KVPrefix:
    """Per-layer keys and values of ``m`` prefixes of ``n`` positions: ``[m, kv_heads, n, head_dim]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def n_prompts(self) -> int:
        return self.keys[0].shape[0]

    @property
    def n_tokens(self) -> int:
        return self.keys[0].shape[2]

    def cache_for(self, choice: torch.Tensor) -> DynamicCache:
        """A fresh cache holding prefix ``choice[b]`` for every row ``b``."""
        return DynamicCache(ddp_cache_data=[(k[choice], v[choice]) for k, v in zip(self.keys, self.values,
                                                                                   strict=True)])

    def numel(self) -> int:
        return sum(k.numel() + v.numel() for k, v in zip(self.keys, self.values, strict=True))


def prefix_from_embeddings(model: torch.nn.Module, embeds: torch.Tensor) -> KVPrefix:
    """Run each of ``m`` prompts ``[m, n, d]`` alone at positions ``0..n-1``; keep its cache.

    Gradients flow from the returned keys/values to ``embeds`` (used in training).
    """
    m, n, _ = embeds.shape
    pos = torch.arange(n, device=embeds.device).expand(m, n)
    out = model(inputs_embeds=embeds, position_ids=pos, use_cache=True)
    cache = out.past_key_values
    return KVPrefix([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])


def constant_selector(index: int = 0) -> Selector:
    def select(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), index, dtype=torch.long, device=input_ids.device)

    return select


def forward_with_prefix(model: torch.nn.Module, prefix: KVPrefix, choice: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor, past: Any = None, use_cache: bool = False,
                        inputs_embeds: torch.Tensor | None = None):
    """HF forward of right-padded real tokens behind prefix ``choice[b]`` (or a continued ``past``).

    ``attention_mask`` covers the real tokens only (cached real ones first when ``past`` is given).
    """
    b = attention_mask.shape[0]
    n = prefix.n_tokens
    full_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
    new = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
    positions = (full_mask.long().cumsum(-1) - 1)[:, -new:]
    cache = past if past is not None else prefix.cache_for(choice)
    return model(input_ids=None if inputs_embeds is not None else input_ids, inputs_embeds=inputs_embeds,
                 attention_mask=full_mask, position_ids=positions, past_key_values=cache, use_cache=True)


def prefix_logits_fn(model: torch.nn.Module, prefix: KVPrefix, select: Selector | None = None,
                     on_select: Callable[[torch.Tensor], None] | None = None) -> LogitsFn:
    """A LogitsFn running every input behind one prefix chosen by ``select`` (default: prefix 0).

    ``on_select`` receives each prefill's choices (IDP records which prompt each input chose).
    """
    select = select or constant_selector(0)

    def fn(input_ids: torch.Tensor, attention_mask: torch.Tensor, past: Any = None,
           use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        choice = None
        if past is None:
            choice = select(input_ids, attention_mask)
            if on_select is not None:
                on_select(choice)
        out = forward_with_prefix(model, prefix, choice, input_ids, attention_mask, past=past)
        return out.logits, (out.past_key_values if use_cache else None)

    return fn
