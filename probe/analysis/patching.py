"""Activation patching between the original and the compressed model: where is a lost fact lost?

For each layer ``ℓ`` the original's residual stream leaving block ``ℓ`` (``blocks.ℓ.hook_resid_post``)
is written into the compressed model's run at chosen positions, and the fact counts as *restored*
when the answer's first token becomes the compressed model's top-1 (any accepted answer, as
capture counts it) and, more strictly, when the whole answer is its greedy choice under teacher
forcing. The reverse writes the compressed model's residual into the original's run: the fact
counts as *broken* when the original no longer answers it. Positions:

* ``last`` — the prompt's last token (where the answer is read out);
* ``subject`` — every token of the subject in the prompt (its last occurrence, so a few-shot
  prompt's demonstrations are left alone); facts whose subject is not found are left out;
* ``all`` — every input position (prompt and teacher-forced answer); at the last layer this hands
  over the whole output and must restore every fact: a sanity check run at the last layer only.

Prompts and answers are tokenised by :func:`probe.knowledge.scoring.encode_facts`, the scorer's own
encoding, so patching follows any change of prompt format there. Models come one at a time from
``load`` (original, then compressed, then the original again); only the residuals of the facts
being patched, at the positions patched, are kept in memory between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformer_lens.model_bridge import TransformerBridge

from probe.knowledge.protocol import Prompted
from probe.knowledge.schema import Fact
from probe.knowledge.scoring import encode_facts, pad_right
from probe.models.hooks import HOOKS
from probe.progress import track

MODES = ("last", "subject")  # patched at every layer; "all" only at the last (the sanity check)
SANITY = "all"

BridgeLoader = Callable[[str], TransformerBridge]  # "original" | "compressed" → a hooked model


@dataclass(frozen=True)
class PatchItem:
    """One fact as token ids: the prompt and first answer teacher-forced, where the patch may go."""

    ids: tuple[int, ...]  # prompt + answer tokens but the last
    n_prompt: int
    answer: tuple[int, ...]  # the first accepted answer's tokens (teacher forcing, full-answer check)
    firsts: tuple[int, ...]  # every accepted answer's first token (top-1 check)
    subject: tuple[int, ...]  # positions of the subject's tokens in the prompt (empty: not found)

    def positions(self, mode: str) -> tuple[int, ...]:
        if mode == "last":
            return (self.n_prompt - 1,)
        if mode == "subject":
            return self.subject
        return tuple(range(len(self.ids)))


def subject_span(tokenizer, prompt: str, subject: str, n_prompt: int) -> tuple[int, ...]:
    """Token positions of ``subject``'s last occurrence in ``prompt`` (empty when absent)."""
    if not subject:
        return ()
    at = prompt.rfind(subject)
    if at < 0:
        at = prompt.lower().rfind(subject.lower())
    if at < 0:
        return ()
    start = len(tokenizer(prompt[:at].rstrip(), add_special_tokens=True).input_ids)  # " Paris" merges its space
    end = min(len(tokenizer(prompt[: at + len(subject)], add_special_tokens=True).input_ids), n_prompt)
    return tuple(range(min(start, end - 1), end)) if end > 0 else ()


def patch_items(facts: Sequence[Fact], tokenizer, max_positions: int, template: int = 0,
                prompted: Sequence[Prompted] | None = None) -> list[PatchItem]:
    """The scorer's encoding of each fact (:func:`encode_facts`) as ``prompted`` asks it (demonstrations,
    then the query; zero-shot when not given), with the subject's positions in the query."""
    out = []
    for fact, item in zip(facts, encode_facts(facts, tokenizer, template, max_positions, prompted), strict=True):
        n_ans = len(fact.answers)
        answer = item.conts[0]
        prompt = list(item.prefix) + list(item.prompt)
        out.append(PatchItem(tuple(prompt + list(answer[:-1])), len(prompt), tuple(answer),
                             tuple(dict.fromkeys(c[0] for c in item.conts[:n_ans])),
                             tuple(len(item.prefix) + i for i in subject_span(
                                 tokenizer, fact.prompt_for(template), fact.subject, len(item.prompt)))))
    return out


@dataclass
class Residuals:
    """Per layer and mode, each fact's residual rows at that mode's positions (CPU float32)."""

    rows: dict[tuple[int, str], list[torch.Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """Per fact: is the answer's first token top-1, and is the whole answer greedy under teacher forcing?"""

    top1: np.ndarray
    full: np.ndarray


def _judge(logits: torch.Tensor, items: Sequence[PatchItem]) -> tuple[list[bool], list[bool]]:
    top1, full = [], []
    for i, p in enumerate(items):
        pred = logits[i, p.n_prompt - 1: p.n_prompt - 1 + len(p.answer)].argmax(-1).tolist()
        top1.append(pred[0] in p.firsts)
        full.append(pred == list(p.answer))
    return top1, full


class Patcher:
    """Runs one hooked model over the items in batches: plain, recording residuals, or patched."""

    def __init__(self, bridge: TransformerBridge, items: Sequence[PatchItem], pad_id: int, batch_size: int) -> None:
        self.bridge, self.items, self.pad_id = bridge, list(items), pad_id
        self.batches = [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]

    @torch.no_grad()
    def _run(self, batch: list[int], hooks: list) -> torch.Tensor:
        ids, mask = pad_right([self.items[k].ids for k in batch], self.pad_id)
        device = next(self.bridge.parameters()).device
        return self.bridge.run_with_hooks(ids.to(device), fwd_hooks=hooks,
                                          attention_mask=mask.to(device)).float().cpu()

    def record(self, layers: Sequence[int], last_layer: int) -> tuple[Outcome, Residuals]:
        """The unpatched outcome, and residuals at every layer (``MODES``) and at the last layer (``all``)."""
        res = Residuals()
        top1, full = [], []
        wanted = [(la, m) for la in layers for m in MODES] + [(last_layer, SANITY)]
        for batch in self.batches:
            items = [self.items[k] for k in batch]
            hooks = [(HOOKS["resid_post"].format(layer=la), _keeper(res, [m for w, m in wanted if w == la], items, la))
                     for la in sorted({la for la, _ in wanted})]
            t, f = _judge(self._run(batch, hooks), items)
            top1 += t
            full += f
        return Outcome(np.array(top1, bool), np.array(full, bool)), res

    def patched(self, source: Residuals, layer: int, mode: str) -> Outcome:
        """Outcome with ``source``'s residual written at ``layer`` and ``mode``'s positions."""
        top1, full = [], []
        for batch in self.batches:
            items = [self.items[k] for k in batch]
            hook = _writer(source.rows[(layer, mode)], batch, items, mode)
            t, f = _judge(self._run(batch, [(HOOKS["resid_post"].format(layer=layer), hook)]), items)
            top1 += t
            full += f
        return Outcome(np.array(top1, bool), np.array(full, bool))


def _keeper(res: Residuals, modes: list[str], items: list[PatchItem], layer: int):
    """A hook that keeps each item's residual rows at each mode's positions."""

    def fn(act: torch.Tensor, hook) -> torch.Tensor:
        for mode in modes:
            for i, p in enumerate(items):
                res.rows.setdefault((layer, mode), []).append(act[i, list(p.positions(mode))].detach().float().cpu())
        return act

    return fn


def _writer(rows: list[torch.Tensor], batch: list[int], items: list[PatchItem], mode: str):
    """A hook that writes the kept rows of the batch's items at their mode's positions."""

    def fn(act: torch.Tensor, hook) -> torch.Tensor:
        act = act.clone()
        for i, k in enumerate(batch):
            pos = list(items[i].positions(mode))
            if pos:
                act[i, pos] = rows[k].to(act.device, act.dtype)
        return act

    return fn


@dataclass(frozen=True)
class PatchResult:
    """Per patched fact and layer ``[n, L]``, for each mode: restored (compressed ← original) and broken
    (original ← compressed), on the first token and the full answer; the unpatched outcomes; cost.

    ``has_subject`` marks facts whose subject was found (the ``subject`` mode's facts).
    """

    layers: tuple[int, ...]
    restored: dict[str, np.ndarray]
    restored_full: dict[str, np.ndarray]
    broken: dict[str, np.ndarray]
    broken_full: dict[str, np.ndarray]
    unpatched_compressed: Outcome
    unpatched_original: Outcome
    sanity_restored: np.ndarray  # compressed ← original at every position of the last layer (first token top-1)
    sanity_broken: np.ndarray  # original ← compressed at every position of the last layer (first token no longer)
    has_subject: np.ndarray
    seconds: float
    runs: int  # patched forward passes over every fact (layers × modes × directions)
    sanity_restored_full: np.ndarray | None = None  # the same checks, counting the whole answer
    sanity_broken_full: np.ndarray | None = None

    @property
    def seconds_per_fact_layer(self) -> float:
        n = len(self.has_subject) * len(self.layers)
        return self.seconds / n if n else float("nan")


def patch_facts(items: Sequence[PatchItem], load: BridgeLoader, layers: Sequence[int], pad_id: int,
                batch_size: int) -> PatchResult:
    """Both directions at every layer of ``layers`` and every mode, plus the last layer's all-position check.

    ``load`` is called three times (original, compressed, original): one model in memory at a time.
    """
    t0 = time.perf_counter()
    orig = Patcher(load("original"), items, pad_id, batch_size)
    last = int(orig.bridge.cfg.n_layers) - 1
    plain_orig, orig_res = orig.record(layers, last)
    del orig
    comp = Patcher(load("compressed"), items, pad_id, batch_size)
    plain_comp, comp_res = comp.record(layers, last)
    restored: dict[str, list[Outcome]] = {m: [] for m in MODES}
    work = [(la, m) for la in layers for m in MODES]
    for la, m in track(work, "Patching original → compressed"):
        restored[m].append(comp.patched(orig_res, la, m))
    sanity_comp = comp.patched(orig_res, last, SANITY)
    del comp, orig_res
    orig = Patcher(load("original"), items, pad_id, batch_size)
    broken: dict[str, list[Outcome]] = {m: [] for m in MODES}
    for la, m in track(work, "Patching compressed → original"):
        broken[m].append(orig.patched(comp_res, la, m))
    sanity_orig = orig.patched(comp_res, last, SANITY)
    del orig

    def stack(d: dict[str, list[Outcome]], attr: str, flip: bool) -> dict[str, np.ndarray]:
        return {m: np.stack([~getattr(o, attr) if flip else getattr(o, attr) for o in outs], 1)
                for m, outs in d.items()}

    return PatchResult(tuple(layers), stack(restored, "top1", False), stack(restored, "full", False),
                       stack(broken, "top1", True), stack(broken, "full", True), plain_comp, plain_orig,
                       sanity_comp.top1, ~sanity_orig.top1, np.array([bool(p.subject) for p in items]),
                       time.perf_counter() - t0, 2 * len(work) + 2, sanity_comp.full, ~sanity_orig.full)
