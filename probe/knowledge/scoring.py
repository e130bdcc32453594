"""Score a model on facts: first-token rank, answer log-probs, greedy match, multiple choice.

Tokenisation follows lm-eval: a continuation's tokens are those of ``prompt + " " + answer``
after the prompt's own tokens, so tokenizers that merge across the boundary are handled.
Greedy exact match uses teacher forcing (every answer token is the argmax given the ones
before it), which equals greedy decoding of the answer's length. Multiple-choice accuracy
compares summed log-probs of the object and its distractors; ``acc_norm`` divides by the
continuation's length in characters, as lm-eval does.

The model is reached through a :class:`LogitsFn`, so prompt-based variants (soft prompt,
prefix, IDP) plug in by returning logits aligned to the real tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from probe.errors import ProbeError
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
    """Per-fact result. ``known`` means an acceptable answer's first token is top-1."""

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

    @property
    def known(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class _Item:
    """One fact's prompt and the token ids of each continuation."""

    prompt: tuple[int, ...]
    conts: tuple[tuple[int, ...], ...]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``" " + continuation`` as it follows the context."""
    ctx = tokenizer(context, add_special_tokens=True).input_ids
    whole = tokenizer(context + " " + continuation, add_special_tokens=True).input_ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer(" " + continuation, add_special_tokens=False).input_ids


def _continuations(fact: Fact) -> list[str]:
    return [*fact.answers, *fact.distractors]


def encode_facts(facts: Sequence[Fact], tokenizer, template: int, max_positions: int) -> list[_Item]:
    """Every fact's prompt and continuations as token ids, checked against the context length."""
    items = []
    for fact in facts:
        prompt = fact.prompt_for(template)
        pairs = [encode_pair(tokenizer, prompt, c) for c in _continuations(fact)]
        longest = max(len(ctx) + len(ans) for ctx, ans in pairs)
        if longest > max_positions:
            raise ProbeError(f"fact {fact.id!r}: prompt and answer are {longest} tokens, "
                             f"longer than the model's context of {max_positions}: shorten the prompt")
        # lm-eval style splits can differ per continuation when tokens merge at the boundary;
        # the prompt is shared, so such continuations are re-split after the common prompt.
        ctx = pairs[0][0]
        conts = tuple(tuple(c[len(ctx):] + a) if c[: len(ctx)] == ctx else tuple(a) for c, a in pairs)
        items.append(_Item(tuple(ctx), conts))
    return items


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def _run(items: list[_Item], logits_fn: LogitsFn, pad_id: int, device: torch.device, batch_size: int,
         desc: str) -> list[tuple[torch.Tensor, list[tuple[list[float], list[bool]]]]]:
    """Per fact: log-probs at the prompt end, and per continuation its token log-probs and argmax hits.

    Each prompt runs once; its cache is shared by all of that fact's continuations.
    """
    order = sorted(range(len(items)), key=lambda k: len(items[k].prompt))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out: list = [None] * len(items)
    for batch in track(batches, desc):
        p_ids, p_mask = _pad([items[k].prompt for k in batch], pad_id)
        logits, past = logits_fn(p_ids.to(device), p_mask.to(device), use_cache=True)
        last = torch.tensor([len(items[k].prompt) - 1 for k in batch])
        prompt_logp = torch.log_softmax(logits[torch.arange(len(batch)), last.to(logits.device)].float(), -1).cpu()
        rows = [(r, c) for r, k in enumerate(batch) for c in items[k].conts]
        owner = torch.tensor([r for r, _ in rows])
        past.batch_select_indices(owner.to(device))
        c_ids, c_mask = _pad([c for _, c in rows], pad_id)
        mask = torch.cat([p_mask[owner], c_mask], dim=1)
        c_logp = torch.log_softmax(logits_fn(c_ids.to(device), mask.to(device), past=past)[0].float(), -1).cpu()
        results: dict[int, list] = {r: [] for r in range(len(batch))}
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
                desc: str = "Scoring facts") -> list[FactScore]:
    """Score every fact; see the module docstring for each metric's definition."""
    if not facts:
        raise ProbeError("no facts to score: check the probe file and the --split/--relations filters")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    items = encode_facts(facts, tokenizer, template, max_positions)
    res = _run(items, logits_fn, pad_id, torch.device(device), batch_size, desc)
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
        ))
    return scores
