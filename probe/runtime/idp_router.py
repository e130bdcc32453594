"""Inference-time Dynamic Prompting (IDP): a pool of soft prompts, one chosen per input (the router).

The paper (arXiv 2310.00867) says only that a pool of ``m`` prompts of ``n`` tokens is trained
and that, per input, the prompt receiving the highest mean attention is the one used. No
public code exists; every unknown is an explicit option here, recorded in the manifest:

* **Prefix computation.** Every prompt sits at positions ``0..n-1`` and attends only to itself,
  so its keys/values are input-independent: computed once (:class:`~probe.runtime.kv_prefix.KVPrefix`)
  and reused for every input.
* **Selection** (:func:`prompt_attention_mass`): at layer ``select_layer`` (default 0) the
  input's queries attend jointly over the keys of *all* prompts and the input's own causal
  keys; each prompt's attention mass is summed over its ``n`` keys, then reduced over heads
  and real input positions by ``statistic`` (``mean``, or ``max`` over positions of the
  head-mean). The prompt with the largest value wins. Layer 0 costs one small projection;
  a deeper layer costs a partial pass of the input alone through the layers below it.
* **Routing** ``attention`` (above) or ``centroid``: nearest k-means centroid of the input's
  mean hidden state at ``select_layer``.
* **Router** (:class:`IDPRouter`): the argmax of log score / temperature + a per-prompt bias, the
  same function in training and at inference; how it learns is ``IDPOptions.router``
  (:mod:`probe.runtime.idp_options`).
* **Forward**: the input then runs with only the winner's cache visible — by construction
  identical to running with that prompt prepended alone; generation keeps only that prompt
  in the KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from probe.errors import ProbeError
from probe.runtime.idp_options import ROUTINGS, STATISTICS
from probe.runtime.kv_prefix import KVPrefix


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner.layers[0], "self_attn") \
            or not hasattr(inner.layers[0].self_attn, "q_proj") or not hasattr(inner, "rotary_emb"):
        raise ProbeError(f"IDP selection needs a Llama-style decoder (q_proj/k_proj, rotary embeddings); "
                         f"{type(model).__name__} is not one: use --method prompt instead")
    return inner


@contextlib.contextmanager
def _truncated(decoder: torch.nn.Module, n_layers: int) -> Iterator[None]:
    """Temporarily keep only the first ``n_layers`` layers and skip the final norm."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[:n_layers])
    decoder.norm = torch.nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm


def input_positions(attention_mask: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Positions of right-padded real tokens placed behind an ``n_prefix``-token prompt."""
    return n_prefix + (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def residual_before(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                    n_prefix: int) -> torch.Tensor:
    """The input's residual stream entering ``layer`` when run alone (the partial pass)."""
    decoder = _decoder(model)
    if layer == 0:
        return decoder.embed_tokens(input_ids)
    pos = input_positions(attention_mask, n_prefix)
    with _truncated(decoder, layer):
        return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                       use_cache=False).last_hidden_state


def prompt_attention_mass(model: torch.nn.Module, prefix: KVPrefix, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Attention mass each prompt receives, ``[batch, heads, T, m]`` (see module docstring)."""
    decoder = _decoder(model)
    attn = decoder.layers[layer].self_attn
    n = prefix.n_tokens
    hidden = residual_before(model, input_ids, attention_mask, layer, n)
    normed = decoder.layers[layer].input_layernorm(hidden)
    b, t, _ = normed.shape
    hd = attn.head_dim
    q = attn.q_proj(normed).view(b, t, -1, hd).transpose(1, 2)
    k = attn.k_proj(normed).view(b, t, -1, hd).transpose(1, 2)
    cos, sin = decoder.rotary_emb(normed, input_positions(attention_mask, n))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    h = q.shape[1]
    groups = h // k.shape[1]
    k_self = repeat_kv(k, groups)  # [b, h, t, hd]
    k_prompts = repeat_kv(prefix.keys[layer], groups)  # [m, h, n, hd]
    scale = hd ** -0.5
    s_prompt = torch.einsum("bhtd,mhjd->bhtmj", q, k_prompts.to(q.dtype)) * scale  # [b, h, t, m, n]
    s_self = torch.einsum("bhtd,bhsd->bhts", q, k_self) * scale
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
    s_self = s_self.masked_fill(~allowed, torch.finfo(s_self.dtype).min)
    m = prefix.n_prompts
    joint = torch.cat([s_prompt.reshape(b, h, t, m * n), s_self], dim=-1).float().softmax(-1)
    return joint[..., : m * n].reshape(b, h, t, m, n).sum(-1)


def reduce_mass(mass: torch.Tensor, attention_mask: torch.Tensor, statistic: str = "mean") -> torch.Tensor:
    """``[batch, m]`` selection scores from per-head, per-position masses."""
    real = attention_mask.to(mass.dtype)[:, :, None]  # [b, t, 1]
    per_pos = mass.mean(1)  # mean over heads -> [b, t, m]
    if statistic == "mean":
        return (per_pos * real).sum(1) / real.sum(1).clamp(min=1)
    if statistic == "max":
        return per_pos.masked_fill(real == 0, -1.0).amax(1)
    raise ProbeError(f"unknown IDP statistic {statistic!r}: use one of {', '.join(STATISTICS)}")


def mean_hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                n_prefix: int) -> torch.Tensor:
    """Mean over real tokens of the residual entering ``layer`` (the centroid-routing feature)."""
    hidden = residual_before(model, input_ids, attention_mask, layer, n_prefix).float()
    real = attention_mask.to(hidden.dtype)[:, :, None]
    return (hidden * real).sum(1) / real.sum(1).clamp(min=1)


@dataclass
class IDPRouter:
    """Chooses one prompt per input: the argmax of :meth:`logits` (training and inference alike).

    ``logits`` = selection score / ``temperature`` + ``bias``, where the score is the log attention
    mass (``routing="attention"``) or minus the distance to each k-means centroid (``"centroid"``).
    The log keeps the argmax of the paper's rule; ``bias`` (per prompt) is the load-balancing
    offset of the ``bias`` router, zero otherwise.
    """

    model: torch.nn.Module
    prefix: KVPrefix
    layer: int = 0
    statistic: str = "mean"
    routing: str = "attention"
    centroids: torch.Tensor | None = None  # [m, d_model] for centroid routing
    temperature: float = 1.0
    bias: torch.Tensor | None = None  # [m]

    def __post_init__(self) -> None:
        n_layers = len(_decoder(self.model).layers)
        if not 0 <= self.layer < n_layers:
            raise ProbeError(f"IDP selection layer {self.layer} does not exist: use 0..{n_layers - 1}")
        if self.statistic not in STATISTICS:
            raise ProbeError(f"unknown IDP statistic {self.statistic!r}: use one of {', '.join(STATISTICS)}")
        if self.routing not in ROUTINGS:
            raise ProbeError(f"unknown IDP routing {self.routing!r}: use one of {', '.join(ROUTINGS)}")
        if self.routing == "centroid" and (self.centroids is None or len(self.centroids) != self.prefix.n_prompts):
            raise ProbeError("centroid routing needs one centroid per prompt: train with --idp-routing centroid")

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, m]`` router logits, differentiable in the prompts' keys, centroids and bias."""
        if self.routing == "centroid":
            feats = mean_hidden(self.model, input_ids, attention_mask, self.layer, self.prefix.n_tokens)
            score = -torch.cdist(feats, self.centroids.to(feats))
        else:
            mass = prompt_attention_mass(self.model, self.prefix, input_ids, attention_mask, self.layer)
            score = reduce_mass(mass, attention_mask, self.statistic).clamp(min=1e-12).log()
        score = score / self.temperature
        return score if self.bias is None else score + self.bias.to(score)

    @torch.no_grad()
    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, m]``: higher is better (the logits, without gradients)."""
        return self.logits(input_ids, attention_mask)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.scores(input_ids, attention_mask).argmax(-1)
