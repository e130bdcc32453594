"""Score a model on facts: first-token rank, answer log-probs, greedy match, multiple choice.

Tokenisation follows lm-eval: a continuation's tokens are those of ``prompt + " " + answer``
after the prompt's own tokens, so tokenizers that merge across the boundary are handled.
Greedy exact match uses teacher forcing (every answer token is the argmax given the ones
before it), which equals greedy decoding of the answer's length. Multiple-choice accuracy
compares summed log-probs of the object and its distractors; ``acc_norm`` divides by the
continuation's length in characters, as lm-eval does.

The model is reached through a :class:`LogitsFn`, so prompt-based variants (soft prompt,
prefix, IDP) plug in by returning logits aligned to the real tokens only.

Few-shot facts (:class:`~probe.knowledge.protocol.Prompted`) share their relation's
demonstration prefix: it is encoded once (token ids of the prefix text, then the query's own
ids), its key/value cache is computed once and expanded over every batch of facts using it.
``share_prefix=False`` runs prefix and query as one sequence instead (IDP, whose router must see
the whole input); both give the same scores up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from transformers import DynamicCache

from probe.errors import ProbeError
from probe.knowledge.protocol import ProbeFormat, Prompted, build_prompts
from probe.knowledge.schema import Fact
from probe.progress import track


class LogitsFn(Protocol):
    """Next-token logits ``[batch, new, vocab]`` for right-padded ids, aligned to real tokens.

    ``attention_mask`` covers the cached positions and the new ones. With ``use_cache`` the
    second return value is a cache that a later call may continue through ``past``.
    """

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: Any = None,
                 use_cache: bool = False) -> tuple[torch.Tensor, Any]: ...


def positions_from_mask(attention_mask: torch.Tensor, n_new: int) -> torch.Tensor:
    """Position ids of the last ``n_new`` columns: the count of real tokens before each one."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -n_new:]


def hf_logits_fn(model: torch.nn.Module) -> LogitsFn:
    """A LogitsFn over a plain HF causal LM."""

    def fn(input_ids: torch.Tensor, attention_mask: torch.Tensor, past: Any = None,
           use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        out = model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past,
                    position_ids=positions_from_mask(attention_mask, input_ids.shape[1]), use_cache=use_cache)
        return out.logits, (out.past_key_values if use_cache else None)

    return fn


@dataclass(frozen=True)
class FactScore:
    """Per-fact result. ``known`` is the first-token definition (rank 0); the protocol's definition, the one
    every stage uses, is :func:`probe.knowledge.status.is_known`. ``copies_demo``: the top token is the first
    token of one of the fact's demonstration answers (not its own). ``template_matches``: full-answer match
    under each template (filled only for the ``robust`` definition)."""

    fact_id: str
    relation: str
    split: str
    rank: int
    first_token_logprob: float
    answer_logprob: float
    exact_match: bool
    mc_correct: bool
    mc_norm_correct: bool
    prediction: str
    copies_demo: bool = False
    template_matches: tuple[bool, ...] = ()

    @property
    def known(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class _Item:
    """One fact's demonstration prefix (shared, maybe empty), query prompt and each continuation's token ids."""

    prefix: tuple[int, ...]
    prompt: tuple[int, ...]
    conts: tuple[tuple[int, ...], ...]
    demo_first: frozenset[int] = frozenset()


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``" " + continuation`` as it follows the context."""
    ctx = tokenizer(context, add_special_tokens=True).input_ids
    whole = tokenizer(context + " " + continuation, add_special_tokens=True).input_ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer(" " + continuation, add_special_tokens=False).input_ids


def _continuations(fact: Fact) -> list[str]:
    return [*fact.answers, *fact.distractors]


def encode_facts(facts: Sequence[Fact], tokenizer, template: int, max_positions: int,
                 prompted: Sequence[Prompted] | None = None) -> list[_Item]:
    """Every fact's prefix, prompt and continuations as token ids, checked against the context length.

    Without demonstrations the prompt is tokenised with the tokenizer's special tokens; with them the
    prefix carries the special tokens and the query follows with its own ids, as one text would.
    """
    prompted = prompted if prompted is not None else build_prompts(facts, (), 0, template)
    items = []
    prefixes: dict[str, tuple[int, ...]] = {}
    for fact, asked in zip(facts, prompted, strict=True):
        prompt = asked.query
        pairs = [encode_pair(tokenizer, prompt, c) for c in _continuations(fact)]
        prefix = ()
        if asked.prefix:
            if asked.prefix not in prefixes:
                prefixes[asked.prefix] = tuple(tokenizer(asked.prefix, add_special_tokens=True).input_ids)
            prefix = prefixes[asked.prefix]
        longest = len(prefix) + max(len(ctx) + len(ans) for ctx, ans in pairs)
        if longest > max_positions:
            raise ProbeError(f"fact {fact.id!r}: demonstrations, prompt and answer are {longest} tokens, "
                             f"longer than the model's context of {max_positions}: shorten the prompt or lower --shots")
        # lm-eval style splits can differ per continuation when tokens merge at the boundary;
        # the prompt is shared, so such continuations are re-split after the common prompt.
        ctx = pairs[0][0]
        conts = tuple(tuple(c[len(ctx):] + a) if c[: len(ctx)] == ctx else tuple(a) for c, a in pairs)
        if prefix:
            own = tokenizer(prompt, add_special_tokens=False).input_ids
            ctx = ctx[len(ctx) - len(own):] if ctx[len(ctx) - len(own):] == own else own
        demo_first = frozenset(encode_pair(tokenizer, prompt, a)[1][0] for a in asked.demo_answers)
        items.append(_Item(prefix, tuple(ctx), conts, demo_first))
    return items


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[len(rows), longest]`` and their attention mask (every stage pads this way)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _repeat_cache(cache: Any, b: int) -> DynamicCache:
    """A fresh cache holding ``cache``'s single row for each of ``b`` rows (views: no copy until appended to)."""
    return DynamicCache(ddp_cache_data=[(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1))
                                        for layer in cache.layers])


def _batches(items: list[_Item], batch_size: int, share_prefix: bool) -> list[list[int]]:
    """Batches of item indices, by length; with ``share_prefix`` each batch has one prefix."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, item in enumerate(items):
        groups.setdefault(item.prefix if share_prefix else (), []).append(k)
    out = []
    for members in groups.values():
        order = sorted(members, key=lambda k: len(items[k].prefix) + len(items[k].prompt))
        out += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return out


@torch.no_grad()
def _run(items: list[_Item], logits_fn: LogitsFn, pad_id: int, device: torch.device, batch_size: int,
         desc: str, share_prefix: bool = True) -> list[tuple[torch.Tensor, list[tuple[list[float], list[bool]]]]]:
    """Per fact: log-probs at the prompt end, and per continuation its token log-probs and argmax hits.

    Each prompt runs once; its cache is shared by all of that fact's continuations, and (``share_prefix``)
    each demonstration prefix runs once, its cache shared by every batch of facts behind it.
    """
    out: list = [None] * len(items)
    prefix_cache: dict[tuple[int, ...], Any] = {}
    for batch in track(_batches(items, batch_size, share_prefix), desc):
        prefix = items[batch[0]].prefix if share_prefix else ()
        b = len(batch)
        past = None
        if prefix:
            if prefix not in prefix_cache:
                p = torch.tensor([prefix], device=device)
                prefix_cache = {prefix: logits_fn(p, torch.ones_like(p), use_cache=True)[1]}
            past = _repeat_cache(prefix_cache[prefix], b)
        prompts = [items[k].prompt if share_prefix else items[k].prefix + items[k].prompt for k in batch]
        p_ids, p_mask = pad_right(prompts, pad_id)
        p_mask = torch.cat([torch.ones(b, len(prefix), dtype=torch.long), p_mask], dim=1)
        logits, past = logits_fn(p_ids.to(device), p_mask.to(device), past=past, use_cache=True)
        last = torch.tensor([len(r) - 1 for r in prompts])
        prompt_logp = torch.log_softmax(logits[torch.arange(b), last.to(logits.device)].float(), -1).cpu()
        rows = [(r, c) for r, k in enumerate(batch) for c in items[k].conts]
        owner = torch.tensor([r for r, _ in rows])
        past.batch_select_indices(owner.to(device))
        c_ids, c_mask = pad_right([c for _, c in rows], pad_id)
        mask = torch.cat([p_mask[owner], c_mask], dim=1)
        c_logp = torch.log_softmax(logits_fn(c_ids.to(device), mask.to(device), past=past)[0].float(), -1).cpu()
        results: dict[int, list] = {r: [] for r in range(b)}
        for i, (r, cont) in enumerate(rows):
            # token 0 is predicted at the prompt's end; token j>0 at continuation position j-1
            dists = torch.cat([prompt_logp[r: r + 1], c_logp[i, : len(cont) - 1]], dim=0)
            targets = torch.tensor(cont)
            results[r].append((dists.gather(1, targets[:, None])[:, 0].tolist(),
                               (dists.argmax(-1) == targets).tolist()))
        for r, k in enumerate(batch):
            out[k] = (prompt_logp[r], results[r])
    return out


def score_facts(facts: Sequence[Fact], tokenizer, logits_fn: LogitsFn, *, device: torch.device | str = "cpu",
                max_positions: int = 2048, template: int = 0, batch_size: int = 32,
                desc: str = "Scoring facts", prompted: Sequence[Prompted] | None = None,
                share_prefix: bool = True) -> list[FactScore]:
    """Score every fact (asked as ``prompted``, default zero-shot under ``template``); see the module docstring."""
    if not facts:
        raise ProbeError("no facts to score: check the probe file and the --split/--relations filters")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    items = encode_facts(facts, tokenizer, template, max_positions, prompted)
    res = _run(items, logits_fn, pad_id, torch.device(device), batch_size, desc, share_prefix)
    scores = []
    for fact, item, (prompt_logp, conts) in zip(facts, items, res, strict=True):
        n_ans = len(fact.answers)
        ranks = [int((prompt_logp > prompt_logp[item.conts[j][0]]).sum()) for j in range(n_ans)]
        best = min(range(n_ans), key=lambda j: ranks[j])
        choice_lp = [sum(conts[j][0]) for j in [0, *range(n_ans, len(conts))]]
        choices = [fact.object, *fact.distractors]
        norm = [lp / len(" " + c) for lp, c in zip(choice_lp, choices, strict=True)]
        scores.append(FactScore(
            fact_id=fact.id, relation=fact.relation, split=fact.split, rank=ranks[best],
            first_token_logprob=float(prompt_logp[item.conts[best][0]]),
            answer_logprob=max(float(sum(conts[j][0])) for j in range(n_ans)),
            exact_match=any(all(conts[j][1]) for j in range(n_ans)),
            mc_correct=bool(fact.distractors) and max(range(len(choice_lp)), key=choice_lp.__getitem__) == 0,
            mc_norm_correct=bool(fact.distractors) and max(range(len(norm)), key=norm.__getitem__) == 0,
            prediction=tokenizer.decode([int(prompt_logp.argmax())]),
            copies_demo=int(prompt_logp.argmax()) in item.demo_first - {c[0] for c in item.conts[:n_ans]},
        ))
    return scores


def score_with_format(facts: Sequence[Fact], pool: Sequence[Fact], tokenizer, logits_fn: LogitsFn,
                      fmt: ProbeFormat, *, share_prefix: bool = True, desc: str = "Scoring facts",
                      **kwargs: Any) -> list[FactScore]:
    """Score ``facts`` asked as ``fmt`` says (demonstrations from ``pool``'s train split); for the ``robust``
    definition also under every other template, filling ``template_matches``."""
    prompted = build_prompts(facts, pool, fmt.shots, fmt.template)
    scores = score_facts(facts, tokenizer, logits_fn, template=fmt.template, prompted=prompted,
                         share_prefix=share_prefix, desc=desc, **kwargs)
    if fmt.known != "robust":
        return scores
    matches = {s.fact_id: {fmt.template: s.exact_match} for s in scores}
    for t in range(max(len(f.prompts) for f in facts)):
        some = [f for f in facts if t < len(f.prompts)]
        if t == fmt.template or not some:
            continue
        again = score_facts(some, tokenizer, logits_fn, template=t, share_prefix=share_prefix,
                            prompted=build_prompts(some, pool, fmt.shots, t, warn=False),
                            desc=f"{desc} (template {t})", **kwargs)
        for s in again:
            matches[s.fact_id][t] = s.exact_match
    return [replace(s, template_matches=tuple(m for _, m in sorted(matches[s.fact_id].items()))) for s in scores]
