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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformer_lens.model_bridge import TransformerBridge

from probe.models.bridge import hook_module

_ROWS = 256  # facts per unembedding block: [256, vocab] float32 logits at a time
VOCAB_CHUNK = 65536  # vocabulary columns per streamed block: every model here fits one (one unembedding pass)
STREAM_ROWS = 64  # facts per streamed block: [64, VOCAB_CHUNK] float32 = 16 MB per variant
TOP_K = 10  # top lens tokens stored per fact and layer
_TINY = torch.finfo(torch.float32).tiny  # where both probabilities underflow, their terms are 0 (not NaN)


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


@dataclass
class LayerStats:
    """One variant's lens statistics at one layer, per fact: what :func:`stream_layer` returns.

    ``rank``: best rank of an accepted answer (0 = top-1); ``logprob``: that answer's log-probability;
    ``top_ids``: the ``k`` most likely tokens; ``kl``/``js``: KL(reference ‖ variant) and Jensen–Shannon
    (nats), None for the reference itself.
    """

    rank: np.ndarray
    logprob: np.ndarray
    top_ids: np.ndarray
    kl: np.ndarray | None = None
    js: np.ndarray | None = None


class _Block:
    """One variant's running statistics over the vocabulary chunks of one block of facts."""

    def __init__(self, x: torch.Tensor, n_answers: int, k: int) -> None:
        b = len(x)
        self.x = x
        self.max = torch.full((b, 1), -math.inf)
        self.sum = torch.zeros(b, 1)
        self.answer = torch.full((b, n_answers), -math.inf)  # the answers' logits, as the chunks compute them
        self.top_v = torch.full((b, k), -math.inf)
        self.top_i = torch.zeros(b, k, dtype=torch.long)
        self.rank = torch.zeros(b, n_answers, dtype=torch.long)
        self.kl = torch.zeros(b, dtype=torch.float64)
        self.js = torch.zeros(b, dtype=torch.float64)
        self.lse = torch.zeros(b, 1)
        self.answer_lp = torch.zeros(b, n_answers)

    def first_pass(self, z: torch.Tensor, start: int, idx: torch.Tensor) -> None:
        """Online log-sum-exp, top-k and the answers' logits over one chunk ``z`` of columns ``start…``."""
        m = torch.maximum(self.max, z.max(1, keepdim=True).values)
        self.sum = self.sum * torch.exp(self.max - m) + torch.exp(z - m).sum(1, keepdim=True)
        self.max = m
        inside = (idx >= start) & (idx < start + z.shape[1])
        got = z.gather(1, (idx - start).clamp(0, z.shape[1] - 1))
        self.answer = torch.where(inside, got, self.answer)
        k = min(self.top_v.shape[1], z.shape[1])
        v, i = z.topk(k, dim=1)
        both_v, both_i = torch.cat([self.top_v, v], 1), torch.cat([self.top_i, i + start], 1)
        keep = both_v.topk(self.top_v.shape[1], dim=1).indices
        self.top_v, self.top_i = both_v.gather(1, keep), both_i.gather(1, keep)

    def finish_first(self) -> None:
        self.lse = self.max + torch.log(self.sum)
        self.answer_lp = self.answer - self.lse

    def second_pass(self, lp: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Ranks (log-probabilities above each answer's) and, against ``ref`` (log-probabilities and
        probabilities of the reference), the KL/JS sums; ``0·log 0 = 0`` where both probabilities vanish."""
        self.rank += (lp[:, None, :] > self.answer_lp[:, :, None]).sum(-1)
        if ref is None:
            return
        ref, p = ref
        q = lp.exp()
        self.kl += (p * (ref - lp)).sum(1, dtype=torch.float64)
        logm = torch.log((p + q).clamp_min(_TINY)) - math.log(2.0)
        f64 = torch.float64
        self.js += 0.5 * ((p * (ref - logm)).sum(1, dtype=f64) + (q * (lp - logm)).sum(1, dtype=f64))

    def result(self, is_ref: bool) -> LayerStats:
        best = self.rank.argmin(1, keepdim=True)
        kl = None if is_ref else self.kl.clamp(min=0.0).numpy()
        js = None if is_ref else self.js.clamp(0.0, math.log(2.0)).numpy()
        return LayerStats(self.rank.gather(1, best)[:, 0].numpy(),
                          self.answer_lp.gather(1, best)[:, 0].double().numpy(), self.top_i.numpy(), kl, js)


@torch.no_grad()
def stream_layer(lens: Lens, residuals: Mapping[str, np.ndarray], answers: Sequence[Sequence[int]], reference: str,
                 chunk: int = VOCAB_CHUNK, rows: int = STREAM_ROWS, k: int = TOP_K) -> dict[str, LayerStats]:
    """Lens statistics of every variant at one layer, streamed over ``rows`` facts × ``chunk`` vocabulary columns.

    ``residuals[v]``: ``[n, d]`` residuals of variant ``v`` (same facts); ``reference`` is the
    variant every other is compared with (the original). Float32 logits, float64 sums; memory
    is ``rows × chunk`` floats per variant (a few more with many answers), whatever the vocabulary.
    The log-sum-exp of each row is accumulated online over the chunks; log-probabilities, ranks
    and divergences then take a second pass, which reuses the logits when one chunk covers the
    vocabulary. Equal to :meth:`Lens.logprobs` + :func:`answer_rank_prob` + ``kl_logp``/``js_logp``
    up to float32 rounding (tested).
    """
    weight = lens.unembed.W_U.T.float()  # [vocab, d], as F.linear takes it
    vocab = weight.shape[0]
    b_u = getattr(lens.unembed, "b_U", None)
    bias = torch.zeros(vocab) if b_u is None else b_u.float()
    spans = [(s, min(s + chunk, vocab)) for s in range(0, vocab, chunk)]
    width = max(len(a) for a in answers)
    idx_all = torch.tensor([list(a) + [a[0]] * (width - len(a)) for a in answers], dtype=torch.long)
    names = [reference, *[v for v in residuals if v != reference]]
    n = len(answers)
    parts: dict[str, list[LayerStats]] = {v: [] for v in names}
    for r0 in range(0, n, rows):
        idx = idx_all[r0: r0 + rows]
        blocks = {v: _Block(lens.norm(torch.as_tensor(np.asarray(residuals[v][r0: r0 + rows], np.float32))).float(),
                            width, k) for v in names}
        kept: dict[str, torch.Tensor] = {}
        for s, e in spans:
            for v, blk in blocks.items():
                z = F.linear(blk.x, weight[s:e], bias[s:e])
                blk.first_pass(z, s, idx)
                if len(spans) == 1:
                    kept[v] = z
        for blk in blocks.values():
            blk.finish_first()
        for s, e in spans:
            ref = None
            for v in names:  # the reference first: the others compare with its log-probabilities
                blk = blocks[v]
                z = kept[v] if v in kept else F.linear(blk.x, weight[s:e], bias[s:e])
                lp = z - blk.lse
                blk.second_pass(lp, ref)
                if v == reference:
                    ref = (lp, lp.exp())
        for v, blk in blocks.items():
            parts[v].append(blk.result(v == reference))
    return {v: LayerStats(*(None if getattr(ps[0], f) is None else np.concatenate([getattr(p, f) for p in ps])
                            for f in ("rank", "logprob", "top_ids", "kl", "js"))) for v, ps in parts.items()}
