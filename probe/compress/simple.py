"""Magnitude pruning, hand-written because llmcompressor has no one-shot magnitude pruner.

Per layer, unstructured: exactly ``round(sparsity · numel)`` smallest-|w| weights are zeroed
(ties broken by index, so the count is exact). N:M: in every M consecutive input weights of a
row, the M−N smallest are zeroed.
"""

from __future__ import annotations

import torch

from probe.compress.spec import parse_pattern


def magnitude_mask(weight: torch.Tensor, sparsity: float | None = None, pattern: str | None = None) -> torch.Tensor:
    """Boolean keep-mask for ``weight`` ([out, in])."""
    w = weight.detach().abs()
    if pattern:
        n, m = parse_pattern(pattern)
        groups = w.reshape(w.shape[0], -1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
        return keep.reshape(w.shape)
    k = round(float(sparsity or 0.0) * w.numel())
    keep = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    keep[torch.argsort(w.flatten(), stable=True)[:k]] = False
    return keep.reshape(w.shape)


@torch.no_grad()
def magnitude_prune(layers: dict[str, torch.nn.Linear], sparsity: float | None = None,
                    pattern: str | None = None) -> dict[str, torch.Tensor]:
    """Prune each layer in place; returns the keep-masks by layer name."""
    masks = {}
    for name, layer in layers.items():
        masks[name] = magnitude_mask(layer.weight, sparsity, pattern)
        layer.weight.mul_(masks[name])
    return masks
