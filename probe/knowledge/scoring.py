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
from typing import Protocol

import torch

from probe.errors import ProbeError
from probe.knowledge.schema import Fact
from probe.progress import track


class LogitsFn(Protocol):
    """Next-token logits ``[batch, seq, vocab]`` for right-padded ids and their mask."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


def hf_logits_fn(model: torch.nn.Module) -> LogitsFn:
    """A LogitsFn over a plain HF causal LM."""

    def fn(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

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
class _Seq:
    fact: int
    cont: int  # index into the fact's continuation list
    ids: tuple[int, ...]
    n_ctx: int


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``" " + continuation`` as it follows the context."""
    ctx = tokenizer(context, add_special_tokens=True).input_ids
    whole = tokenizer(context + " " + continuation, add_special_tokens=True).input_ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer(" " + continuation, add_special_tokens=False).input_ids


def _continuations(fact: Fact) -> list[str]:
    return [*fact.answers, *fact.distractors]


def build_sequences(facts: Sequence[Fact], tokenizer, template: int, max_positions: int) -> list[_Seq]:
    """Every (fact, continuation) pair as token ids, checked against the context length."""
    seqs = []
    for i, fact in enumerate(facts):
        prompt = fact.prompts[min(template, len(fact.prompts) - 1)]
        for j, cont in enumerate(_continuations(fact)):
            ctx, ans = encode_pair(tokenizer, prompt, cont)
            if len(ctx) + len(ans) > max_positions:
                raise ProbeError(f"fact {fact.id!r}: prompt and answer are {len(ctx) + len(ans)} tokens, "
                                 f"longer than the model's context of {max_positions}: shorten the prompt")
            seqs.append(_Seq(i, j, tuple(ctx + ans), len(ctx)))
    return seqs


@torch.no_grad()
def _run(seqs: list[_Seq], logits_fn: LogitsFn, pad_id: int, device: torch.device, batch_size: int,
         desc: str) -> dict[tuple[int, int], tuple[list[float], list[bool], torch.Tensor]]:
    """Per sequence: answer token log-probs, whether each is the argmax, logits at the prompt end."""
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k].ids))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out = {}
    for batch in track(batches, desc):
        width = max(len(seqs[k].ids) for k in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, k in enumerate(batch):
            ids[r, : len(seqs[k].ids)] = torch.tensor(seqs[k].ids)
            mask[r, : len(seqs[k].ids)] = 1
        logp = torch.log_softmax(logits_fn(ids.to(device), mask.to(device)).float(), dim=-1).cpu()
        for r, k in enumerate(batch):
            s = seqs[k]
            targets = torch.tensor(s.ids[s.n_ctx:])
            rows = logp[r, s.n_ctx - 1: len(s.ids) - 1]
            tok_lp = rows.gather(1, targets[:, None])[:, 0]
            out[(s.fact, s.cont)] = (tok_lp.tolist(), (rows.argmax(-1) == targets).tolist(),
                                     logp[r, s.n_ctx - 1])
    return out


def score_facts(facts: Sequence[Fact], tokenizer, logits_fn: LogitsFn, *, device: torch.device | str = "cpu",
                max_positions: int = 2048, template: int = 0, batch_size: int = 32,
                desc: str = "Scoring facts") -> list[FactScore]:
    """Score every fact; see the module docstring for each metric's definition."""
    if not facts:
        raise ProbeError("no facts to score: check the probe file and the --split/--relations filters")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = build_sequences(facts, tokenizer, template, max_positions)
    res = _run(seqs, logits_fn, pad_id, torch.device(device), batch_size, desc)
    first_ids = {(s.fact, s.cont): s.ids[s.n_ctx] for s in seqs}
    scores = []
    for i, fact in enumerate(facts):
        n_ans = len(fact.answers)
        prompt_logp = res[(i, 0)][2]
        ranks = [int((prompt_logp > prompt_logp[first_ids[(i, j)]]).sum()) for j in range(n_ans)]
        best = min(range(n_ans), key=lambda j: ranks[j])
        choice_lp = [sum(res[(i, j)][0]) for j in [0, *range(n_ans, n_ans + len(fact.distractors))]]
        choices = [fact.object, *fact.distractors]
        norm = [lp / len(" " + c) for lp, c in zip(choice_lp, choices, strict=True)]
        scores.append(FactScore(
            fact_id=fact.id, relation=fact.relation, split=fact.split, rank=ranks[best],
            first_token_logprob=float(prompt_logp[first_ids[(i, best)]]),
            answer_logprob=max(float(sum(res[(i, j)][0])) for j in range(n_ans)),
            exact_match=any(all(res[(i, j)][1]) for j in range(n_ans)),
            mc_correct=bool(fact.distractors) and max(range(len(choice_lp)), key=choice_lp.__getitem__) == 0,
            mc_norm_correct=bool(fact.distractors) and max(range(len(norm)), key=norm.__getitem__) == 0,
            prediction=tokenizer.decode([int(prompt_logp.argmax())]),
        ))
    return scores
