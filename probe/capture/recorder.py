"""Record hooked activations of one variant at chosen token positions, batch by batch.

Hand-written over TransformerBridge hooks (not ``run_with_cache``) so each hook reduces its
tensor to the requested positions the moment it fires: memory is bounded by the batch, never
by the layer count times the full sequence.

Coordinates. Every stored position is a *real-token* index ``0..n_tokens-1`` of the probe's
own tokens. Prompt-based variants (soft prompt, prefix, IDP) run as a KV prefix of ``n``
positions in front of the input; those keys occupy attention columns ``0..n-1`` and no query
rows, so real-token indices mean the same token in every variant. Attention rows are stored
over real keys only, renormalised to sum to 1, plus per head the mass that went to the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probe.capture.arrays import ArraySpec
from probe.errors import ProbeError
from probe.knowledge.schema import Fact
from probe.knowledge.scoring import encode_pair
from probe.models.bridge import HOOKS
from probe.runtime.variant import CaptureView

POINT_POSITIONS = ("last", "subject")  # one row per probe; "all" keeps every real token


@dataclass(frozen=True)
class ProbeInput:
    """One probe tokenised: ids, its last and subject token (-1: subject not found), answer first tokens."""

    ids: tuple[int, ...]
    last: int
    subject: int
    answer_first: tuple[int, ...]


def subject_position(tokenizer, prompt: str, subject: str, n_tokens: int) -> int:
    """Index of the subject's last token: the prompt up to the subject's end, tokenised alone."""
    if not subject:
        return -1
    at = prompt.find(subject)
    if at < 0:
        at = prompt.lower().find(subject.lower())
    if at < 0:
        return -1
    head = tokenizer(prompt[: at + len(subject)], add_special_tokens=True).input_ids
    return min(len(head), n_tokens) - 1


def encode_probes(facts: Sequence[Fact], tokenizer, max_positions: int, n_prefix: int) -> list[ProbeInput]:
    """Tokenise every probe as `probe eval` does (template 0); a probe beyond the context is an error."""
    out = []
    for fact in facts:
        ids = tokenizer(fact.prompt, add_special_tokens=True).input_ids
        if len(ids) + n_prefix > max_positions:
            raise ProbeError(f"probe {fact.id!r} is {len(ids)} tokens (+{n_prefix} prompt positions), longer than "
                             f"the model's context of {max_positions}: shorten or drop it")
        first = tuple(encode_pair(tokenizer, fact.prompt, a)[1][0] for a in fact.answers)
        out.append(ProbeInput(tuple(ids), len(ids) - 1, subject_position(tokenizer, fact.prompt, fact.subject,
                                                                          len(ids)), first))
    return out


@dataclass(frozen=True)
class Layout:
    """Which arrays a capture writes, with their shapes; also what the recorder computes."""

    layers: tuple[int, ...]
    hooks: tuple[str, ...]
    positions: tuple[str, ...]
    n_probes: int
    t_max: int
    d_model: int
    n_heads: int
    n_prefix: int
    n_full: int
    top_k: int
    dtype: str

    def hook_name(self, kind: str, layer: int) -> str:
        return HOOKS[kind].format(layer=layer)

    def arrays(self) -> dict[str, ArraySpec]:
        n, t, d, h, dt = self.n_probes, self.t_max, self.d_model, self.n_heads, self.dtype
        specs: dict[str, ArraySpec] = {
            "tokens": ArraySpec((n, t), "int32", -1),
            "n_tokens": ArraySpec((n,), "int32"),
            "logits/topk_ids": ArraySpec((n, self.top_k), "int32"),
            "logits/topk_logprobs": ArraySpec((n, self.top_k), "float32"),
            "logits/answer_rank": ArraySpec((n,), "int32", -1),
            "logits/answer_top1": ArraySpec((n,), "bool", False),
            "prompt/chosen": ArraySpec((n,), "int32", -1),
        }
        for pos in self.positions:
            if pos in POINT_POSITIONS:
                specs[f"position/{pos}"] = ArraySpec((n,), "int32", -1)
            for layer in self.layers:
                for kind in self.hooks:
                    name = f"{pos}/{self.hook_name(kind, layer)}"
                    if kind != "pattern":
                        specs[name] = ArraySpec((n, d) if pos in POINT_POSITIONS else (n, t, d), dt)
                    elif pos in POINT_POSITIONS:  # rows at "all" positions are the full maps below
                        specs[name] = ArraySpec((n, h, t), dt)
                        if self.n_prefix:
                            specs[name + ".prompt_mass"] = ArraySpec((n, h), dt)
        if "pattern" in self.hooks and self.n_full:
            for layer in self.layers:
                name = f"full/{self.hook_name('pattern', layer)}"
                specs[name] = ArraySpec((self.n_full, h, t, t), dt)
                if self.n_prefix:
                    specs[name + ".prompt_mass"] = ArraySpec((self.n_full, h, t), dt)
        return specs


def pad_batch(items: Sequence[ProbeInput], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, as `probe eval` runs them."""
    width = max(len(p.ids) for p in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, p in enumerate(items):
        ids[i, : len(p.ids)] = torch.tensor(p.ids)
        mask[i, : len(p.ids)] = 1
    return ids, mask


class Recorder:
    """Runs one batch through the bridge and returns every array's rows for that batch (numpy)."""

    def __init__(self, bridge, view: CaptureView, layout: Layout, pad_id: int) -> None:
        self.bridge, self.view, self.layout, self.pad_id = bridge, view, layout, pad_id
        self.np_dtype = np.dtype(layout.dtype)

    def _pos_index(self, items: Sequence[ProbeInput], pos: str) -> torch.Tensor:
        return torch.tensor([getattr(p, pos) for p in items], dtype=torch.long)

    @torch.no_grad()
    def record(self, items: Sequence[ProbeInput], n_full: int) -> dict[str, np.ndarray]:
        """Arrays for ``items``; the first ``n_full`` of them also get full attention maps."""
        lay = self.layout
        b = len(items)
        ids, mask = pad_batch(items, self.pad_id)
        t = ids.shape[1]
        rows = torch.arange(b)
        real = mask.bool()
        out: dict[str, np.ndarray] = {}

        def put(name: str, value: torch.Tensor, axes: tuple[int, ...] = ()) -> None:
            """Store ``value`` with the token ``axes`` zero-padded to t_max."""
            value = value.detach().float().cpu()
            pad: list[int] = []
            for axis in range(value.dim() - 1, min(axes, default=value.dim()) - 1, -1):
                pad += [0, lay.t_max - value.shape[axis] if axis in axes else 0]
            if pad:
                value = torch.nn.functional.pad(value, pad)
            out[name] = value.numpy().astype(self.np_dtype)

        point = {pos: self._pos_index(items, pos) for pos in lay.positions if pos in POINT_POSITIONS}
        found = {pos: idx >= 0 for pos, idx in point.items()}

        def vector_hook(kind: str, layer: int):
            name = lay.hook_name(kind, layer)

            def fn(act: torch.Tensor, hook) -> torch.Tensor:
                for pos in lay.positions:
                    if pos in POINT_POSITIONS:
                        v = act[rows, point[pos].clamp(min=0)].float()
                        put(f"{pos}/{name}", torch.where(found[pos][:, None], v, torch.nan))
                    else:
                        put(f"{pos}/{name}", act.float() * real[..., None], axes=(1,))
                return act

            return fn

        def pattern_hook(layer: int):
            name = lay.hook_name("pattern", layer)

            def fn(pat: torch.Tensor, hook) -> torch.Tensor:
                p = pat.float()  # [b, heads, q, n_prefix + t]
                keys = p[..., lay.n_prefix:]
                mass = p[..., : lay.n_prefix].sum(-1)
                if lay.n_prefix:
                    keys = keys / keys.sum(-1, keepdim=True)
                for pos in point:
                    q = point[pos].clamp(min=0)
                    ok = found[pos][:, None]
                    put(f"{pos}/{name}", torch.where(ok[..., None], keys[rows, :, q], torch.nan), axes=(2,))
                    if lay.n_prefix:
                        put(f"{pos}/{name}.prompt_mass", torch.where(ok, mass[rows, :, q], torch.nan))
                if n_full:
                    qk = real[:n_full, None, :, None] & real[:n_full, None, None, :]
                    put(f"full/{name}", keys[:n_full] * qk, axes=(2, 3))
                    if lay.n_prefix:
                        put(f"full/{name}.prompt_mass", mass[:n_full] * real[:n_full, None], axes=(2,))
                return pat

            return fn

        hooks = []
        for layer in lay.layers:
            for kind in lay.hooks:
                if kind == "pattern":
                    if point or n_full:
                        hooks.append((lay.hook_name(kind, layer), pattern_hook(layer)))
                else:
                    hooks.append((lay.hook_name(kind, layer), vector_hook(kind, layer)))

        kwargs: dict = {"attention_mask": mask}
        chosen = torch.full((b,), -1, dtype=torch.long)
        prefix = self.view.prefix
        if prefix is not None:
            chosen = (self.view.select(ids, mask) if self.view.select is not None
                      else torch.zeros(b, dtype=torch.long)).cpu()
            n = prefix.n_tokens
            full_mask = torch.cat([mask.new_ones(b, n), mask], dim=1)
            kwargs = {"attention_mask": full_mask, "position_ids": (full_mask.cumsum(-1) - 1)[:, n:],
                      "past_key_values": prefix.cache_for(chosen)}
        logits = self.bridge.run_with_hooks(ids, fwd_hooks=hooks, **kwargs)

        last = self._pos_index(items, "last")
        logp = torch.log_softmax(logits[rows, last].float(), -1).cpu()
        top = logp.topk(lay.top_k, dim=-1)
        ranks = torch.tensor([min(int((logp[i] > logp[i, a]).sum()) for a in p.answer_first)
                              for i, p in enumerate(items)], dtype=torch.int32)
        tokens = torch.full((b, lay.t_max), -1, dtype=torch.int32)
        tokens[:, :t] = torch.where(real, ids, -1).to(torch.int32)
        out.update({
            "tokens": tokens.numpy(),
            "n_tokens": mask.sum(-1).to(torch.int32).numpy(),
            "logits/topk_ids": top.indices.to(torch.int32).numpy(),
            "logits/topk_logprobs": top.values.numpy(),
            "logits/answer_rank": ranks.numpy(),
            "logits/answer_top1": (ranks == 0).numpy(),
            "prompt/chosen": chosen.to(torch.int32).numpy(),
        })
        for pos, idx in point.items():
            out[f"position/{pos}"] = idx.to(torch.int32).numpy()
        return out


def model_dims(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, d_model, heads) from an HF config."""
    cfg = model.config
    return int(cfg.num_hidden_layers), int(cfg.hidden_size), int(cfg.num_attention_heads)
