"""Logit lens: read any layer's residual stream through the ORIGINAL model's final norm and unembedding.

The final norm and unembedding are the hooked model's own components (the TransformerBridge's
``ln_final`` and ``unembed``), so the lens works for every architecture TransformerLens adapts
(Llama's RMSNorm, OPT's LayerNorm with bias, …) without knowing where HF keeps them.

Every variant is read with the original's final norm and unembedding. Compression here leaves
both untouched by default (the recipes quantize/prune only the decoder blocks' linear layers;
SmolLM2 ties the unembedding to the embeddings), and the recovery methods do not train them, so
one readout makes layers comparable across variants. At the last layer the lens therefore
reproduces each variant's own next-token distribution, which the tests check against the
captured answer ranks. Hand-written rather than tuned-lens/TransformerLens: it is two module
calls on stored activations, and neither library reads from our capture store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens.model_bridge import TransformerBridge

from probe.models.bridge import hook_module

_ROWS = 256  # facts per unembedding block: [256, vocab] float32 logits at a time


@dataclass
class Lens:
    """The original model's final norm and unembedding (bridge components, on CPU in float32)."""

    norm: torch.nn.Module
    unembed: torch.nn.Module

    @classmethod
    def from_bridge(cls, bridge: TransformerBridge) -> Lens:
        """The bridge's ``ln_final`` and ``unembed``, moved to CPU in float32."""
        return cls(bridge.ln_final.float().cpu(), bridge.unembed.float().cpu())

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> Lens:
        """From a plain HF causal LM: hooks it (in place, so pass a model you no longer run) and reads the bridge."""
        return cls.from_bridge(hook_module(model))

    @torch.no_grad()
    def normed(self, h: np.ndarray) -> np.ndarray:
        """The final norm applied to residuals ``[n, d]``."""
        return self.norm(torch.as_tensor(np.asarray(h, np.float32))).numpy()

    @torch.no_grad()
    def unembedding_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the unembedding matrix for token ids (any shape) → ``[..., d]``."""
        w_u = self.unembed.W_U  # [d, vocab]
        return w_u.T[torch.as_tensor(np.asarray(ids, np.int64))].numpy()

    @torch.no_grad()
    def logits(self, h: np.ndarray) -> torch.Tensor:
        """Logits ``[n, vocab]`` (float32) for residuals ``[n, d]``: enough for ranks, which softmax keeps."""
        return self.unembed(self.norm(torch.as_tensor(np.asarray(h, np.float32)))).float()

    @torch.no_grad()
    def logprobs(self, h: np.ndarray) -> torch.Tensor:
        """Log-probabilities ``[n, vocab]`` (float32) for residuals ``[n, d]``, unembedded in row blocks."""
        x = torch.as_tensor(np.asarray(h, np.float32))
        return torch.cat([torch.log_softmax(self.unembed(self.norm(x[s: s + _ROWS])).float(), -1)
                          for s in range(0, len(x), _ROWS)])


def answer_rank_prob(logp: torch.Tensor, answers: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best rank of any accepted answer's first token (0 = top-1) and that answer's probability.

    Rank counts tokens with strictly larger log-probability, exactly as capture records it. Rows are
    processed in blocks with every accepted answer at once (a row's answer list is padded with its
    first answer, which changes neither the best rank nor its probability). Ranks are the same for
    logits; the probability then is ``exp(logit)`` and meaningless.
    """
    width = max(len(a) for a in answers)
    idx = torch.tensor([list(a) + [a[0]] * (width - len(a)) for a in answers], dtype=torch.long)
    ranks = np.empty(len(answers), np.int64)
    probs = np.empty(len(answers), np.float64)
    for s in range(0, len(answers), _ROWS // 4):
        block, ids = logp[s: s + _ROWS // 4], idx[s: s + _ROWS // 4]
        lp = block.gather(1, ids)  # [b, A]
        r = (block[:, None, :] > lp[:, :, None]).sum(-1)  # [b, A]
        best = r.argmin(1, keepdim=True)
        ranks[s: s + len(block)] = r.gather(1, best)[:, 0].numpy()
        probs[s: s + len(block)] = lp.gather(1, best)[:, 0].double().exp().numpy()
    return ranks, probs
