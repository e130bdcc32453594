"""Record hooked activations of one variant at chosen token positions, batch by batch.

Hand-written over TransformerBridge hooks (not ``run_with_cache``) so each hook reduces its
tensor to the requested positions the moment it fires: memory is bounded by the batch, never
by the layer count times the full sequence.

Coordinates. Every stored position is a *real-token* index ``0..n_tokens-1`` of the probe's
own tokens. Prompt-based variants (soft prompt, prefix, IDP) run as a KV prefix of ``n``
positions in front of the input; those keys occupy attention columns ``0..n-1`` and no query
rows, so real-token indices mean the same token in every variant. Attention rows are stored
over real keys only, renormalised to sum to 1, plus per head the mass that went to the prefix.

Demonstrations (few-shot probe format) are real tokens: a probe's stored tokens are its
demonstration prefix then its query, ``query_start`` marks where the query begins (0 zero-shot),
and ``last``/``subject`` are the query's own tokens in those coordinates. The hooked run sees only
the query: the demonstrations enter as a key/value cache computed once per relation (and
prompt choice) and reused, so demonstration rows are not recorded (zero in ``all``/``full``
arrays) while their key columns stay in every attention row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from probe.capture.arrays import ArraySpec
from probe.errors import ProbeError
from probe.knowledge.protocol import Prompted
from probe.knowledge.schema import Fact
from probe.knowledge.scoring import encode_pair, pad_right
from probe.models.bridge import HOOKS
from probe.runtime.variant import CaptureView

POINT_POSITIONS = ("last", "subject")  # one row per probe; "all" keeps every real token


@dataclass(frozen=True)
class ProbeInput:
    """One probe tokenised: query ids, its last and subject token (-1: subject not found) in query coordinates,
    answer first tokens, and the demonstration prefix's ids (empty zero-shot)."""

    ids: tuple[int, ...]
    last: int
    subject: int
    answer_first: tuple[int, ...]
    prefix: tuple[int, ...] = ()

    @property
    def query_start(self) -> int:
        return len(self.prefix)

    @property
    def n_stored(self) -> int:
        """Stored tokens: demonstrations and query."""
        return len(self.prefix) + len(self.ids)


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


def encode_probes(facts: Sequence[Fact], tokenizer, max_positions: int, n_prefix: int,
                  prompted: Sequence[Prompted] | None = None) -> list[ProbeInput]:
    """Tokenise every probe as `probe eval` does (``prompted``: as the probe format asks, default zero-shot
    template 0); a probe beyond the context is an error."""
    out = []
    prefixes: dict[str, tuple[int, ...]] = {}
    for i, fact in enumerate(facts):
        asked = prompted[i] if prompted is not None else None
        query, demos = (asked.query, asked.prefix) if asked is not None else (fact.prompt, "")
        ids = tokenizer(query, add_special_tokens=True).input_ids
        prefix: tuple[int, ...] = ()
        shift = 0  # special tokens the query loses behind a prefix
        if demos:
            prefix = prefixes.setdefault(demos, tuple(tokenizer(demos, add_special_tokens=True).input_ids))
            own = tokenizer(query, add_special_tokens=False).input_ids
            shift, ids = len(ids) - len(own), own
        if len(prefix) + len(ids) + n_prefix > max_positions:
            raise ProbeError(f"probe {fact.id!r} is {len(prefix) + len(ids)} tokens (+{n_prefix} prompt positions), "
                             f"longer than the model's context of {max_positions}: shorten it or lower --shots")
        first = tuple(encode_pair(tokenizer, query, a)[1][0] for a in fact.answers)
        subject = subject_position(tokenizer, query, fact.subject, len(ids) + shift)
        out.append(ProbeInput(tuple(ids), len(ids) - 1, subject - shift if subject >= shift else -1, first, prefix))
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
    return pad_right([p.ids for p in items], pad_id)


class Recorder:
    """Runs one batch through the bridge and returns every array's rows for that batch (numpy)."""

    def __init__(self, bridge, view: CaptureView, layout: Layout, pad_id: int) -> None:
        self.bridge, self.view, self.layout, self.pad_id = bridge, view, layout, pad_id
        self.np_dtype = np.dtype(layout.dtype)
        self._demo_cache: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _choose(self, items: Sequence[ProbeInput]) -> torch.Tensor:
        """Each probe's prompt (prompt variants; IDP routes on demonstrations and query together)."""
        b = len(items)
        if self.view.prefix is None:
            return torch.full((b,), -1, dtype=torch.long)
        if self.view.select is None:
            return torch.zeros(b, dtype=torch.long)
        whole = [ProbeInput(p.prefix + p.ids, 0, 0, ()) for p in items]
        ids, mask = pad_batch(whole, self.pad_id)
        return self.view.select(ids, mask).cpu()

    @torch.no_grad()
    def _past(self, prefix: tuple[int, ...], chosen: torch.Tensor) -> DynamicCache | None:
        """The cache in front of the query: the chosen prompt's keys (prompt variants), then the demonstrations,
        computed once per (demonstrations, prompt) and shared by every batch."""
        soft = self.view.prefix
        if not prefix:
            return soft.cache_for(chosen) if soft is not None else None
        rows = []
        for c in chosen.tolist():
            key = (prefix, c)
            if key not in self._demo_cache:
                model = self.view.model
                device = next(model.parameters()).device
                n = soft.n_tokens if soft is not None else 0
                cache = soft.cache_for(torch.tensor([c])) if soft is not None else None
                out = model(input_ids=torch.tensor([prefix], device=device),
                            attention_mask=torch.ones(1, n + len(prefix), dtype=torch.long, device=device),
                            position_ids=torch.arange(n, n + len(prefix), device=device)[None],
                            past_key_values=cache, use_cache=True)
                self._demo_cache[key] = ([la.keys for la in out.past_key_values.layers],
                                         [la.values for la in out.past_key_values.layers])
            rows.append(self._demo_cache[key])
        if len({c for c in chosen.tolist()}) == 1:  # one row's cache, viewed for every row
            k, v = rows[0]
            data = [(kk.expand(len(rows), -1, -1, -1), vv.expand(len(rows), -1, -1, -1))
                    for kk, vv in zip(k, v, strict=True)]
        else:
            data = [(torch.cat([r[0][la] for r in rows]), torch.cat([r[1][la] for r in rows]))
                    for la in range(len(rows[0][0]))]
        return DynamicCache(ddp_cache_data=data)

    @torch.no_grad()
    def record(self, items: Sequence[ProbeInput], n_full: int) -> dict[str, np.ndarray]:
        """Arrays for ``items`` (runs once per demonstration prefix among them, results in ``items`` order);
        the first ``n_full`` also get full attention maps."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(items):
            groups.setdefault(p.prefix, []).append(i)
        if len(groups) == 1:
            return self._record(items, n_full)
        parts, order = [], []
        for members in groups.values():
            parts.append(self._record([items[i] for i in members], 0, [i < n_full for i in members]))
            order += members
        inverse = np.argsort(order)
        names = dict.fromkeys(name for part in parts for name in part)
        return {name: _merge_full(parts, groups, name, n_full) if name.startswith("full/")
                else np.concatenate([p[name] for p in parts])[inverse] for name in names}

    def _pos_index(self, items: Sequence[ProbeInput], pos: str) -> torch.Tensor:
        return torch.tensor([getattr(p, pos) for p in items], dtype=torch.long)

    @torch.no_grad()
    def _record(self, items: Sequence[ProbeInput], n_full: int, full_rows: list[bool] | None = None
                ) -> dict[str, np.ndarray]:
        """Arrays for ``items``, which share one demonstration prefix of ``d`` tokens (stored coordinates are
        ``d`` + query index); the first ``n_full`` (or the ``full_rows``) also get full attention maps."""
        lay = self.layout
        b = len(items)
        d = items[0].query_start
        ids, mask = pad_batch(items, self.pad_id)
        t = ids.shape[1]
        rows = torch.arange(b)
        real = mask.bool()
        full_idx = (torch.tensor([i for i, f in enumerate(full_rows) if f], dtype=torch.long) if full_rows is not None
                    else torch.arange(n_full))
        n_full = len(full_idx)
        out: dict[str, np.ndarray] = {}

        def put(name: str, value: torch.Tensor, axes: tuple[int, ...] = (), shift: tuple[int, ...] = ()) -> None:
            """Store ``value`` with the token ``axes`` zero-padded to t_max; the query-row ``shift`` axes move
            right past the demonstrations."""
            value = value.detach().float().cpu()
            pad: list[int] = []
            for axis in range(value.dim() - 1, min(axes, default=value.dim()) - 1, -1):
                left = d if axis in shift else 0
                pad += [left, lay.t_max - value.shape[axis] - left] if axis in axes else [0, 0]
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
                        put(f"{pos}/{name}", act.float() * real[..., None], axes=(1,), shift=(1,))
                return act

            return fn

        def pattern_hook(layer: int):
            name = lay.hook_name("pattern", layer)

            def fn(pat: torch.Tensor, hook) -> torch.Tensor:
                p = pat.float()  # [b, heads, q, n_prefix + d + t]: prompt, demonstration and query keys
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
                    keyed = torch.cat([real.new_ones(b, d), real], dim=1)[full_idx]
                    qk = real[full_idx, None, :, None] & keyed[:, None, None, :]
                    put(f"full/{name}", keys[full_idx] * qk, axes=(2, 3), shift=(2,))
                    if lay.n_prefix:
                        put(f"full/{name}.prompt_mass", mass[full_idx] * real[full_idx, None], axes=(2,), shift=(2,))
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
        chosen = self._choose(items)
        past = self._past(items[0].prefix, chosen)
        if past is not None:
            n = lay.n_prefix + d
            full_mask = torch.cat([mask.new_ones(b, n), mask], dim=1)
            kwargs = {"attention_mask": full_mask, "position_ids": (full_mask.cumsum(-1) - 1)[:, n:],
                      "past_key_values": past}
        logits = self.bridge.run_with_hooks(ids, fwd_hooks=hooks, **kwargs)

        last = self._pos_index(items, "last")
        logp = torch.log_softmax(logits[rows, last].float(), -1).cpu()
        top = logp.topk(lay.top_k, dim=-1)
        ranks = torch.tensor([min(int((logp[i] > logp[i, a]).sum()) for a in p.answer_first)
                              for i, p in enumerate(items)], dtype=torch.int32)
        tokens = torch.full((b, lay.t_max), -1, dtype=torch.int32)
        tokens[:, :d] = torch.tensor(items[0].prefix, dtype=torch.int32)
        tokens[:, d:d + t] = torch.where(real, ids, -1).to(torch.int32)
        out.update({
            "tokens": tokens.numpy(),
            "n_tokens": (mask.sum(-1) + d).to(torch.int32).numpy(),
            "logits/topk_ids": top.indices.to(torch.int32).numpy(),
            "logits/topk_logprobs": top.values.numpy(),
            "logits/answer_rank": ranks.numpy(),
            "logits/answer_top1": (ranks == 0).numpy(),
            "prompt/chosen": chosen.to(torch.int32).numpy(),
        })
        for pos, idx in point.items():
            out[f"position/{pos}"] = torch.where(idx >= 0, idx + d, -1).to(torch.int32).numpy()
        return out


def _merge_full(parts: list[dict[str, np.ndarray]], groups: dict, name: str, n_full: int) -> np.ndarray:
    """The full maps of the first ``n_full`` probes, gathered from the groups that hold them, in probe order."""
    rows = []
    for part, members in zip(parts, groups.values(), strict=True):
        if name in part:
            rows += [(i, part[name][j]) for j, i in enumerate(i for i in members if i < n_full)]
    return np.stack([r for _, r in sorted(rows, key=lambda x: x[0])])


def model_dims(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, d_model, heads) from an HF config."""
    cfg = model.config
    return int(cfg.num_hidden_layers), int(cfg.hidden_size), int(cfg.num_attention_heads)
