"""Training text for recovery: general corpus and/or train-split facts, as token windows.

* ``corpus``: the ORIGINAL model's self-generated text (:func:`probe.corpus.general_corpus`,
  shared with the compression stage's calibration cache) or ``--train-text PATH``.
* ``facts``: every TRAIN-split fact of the built-in probes rendered as ``prompt + " " + object +
  "."`` for each of its prompt templates. Eval-split facts are never rendered.
* ``both``: the two together.

Every text that contains an eval-split probe prompt verbatim is dropped and counted
(``n_removed`` in the manifest). Texts are joined with the EOS token and cut into full
``seq_len`` windows; a seeded shuffle assigns ``heldout_fraction`` of the windows (at least
one) to the held-out set used for the before/after loss.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from probe.artifacts import spec_hash
from probe.corpus import filter_probe_leaks, general_corpus, load_text
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.knowledge.schema import ProbeSet
from probe.recover.spec import RecoverSpec

Batch = tuple[torch.Tensor, torch.Tensor]  # (input_ids [B, T], attention_mask [B, T])


@dataclass
class TrainData:
    """Token windows for training and for the held-out loss, plus provenance for the manifest."""

    train: torch.Tensor  # [N, seq_len]
    held_out: torch.Tensor  # [H, seq_len]
    info: dict = field(default_factory=dict)

    def batches(self, steps: int, batch_size: int, seed: int) -> Iterator[Batch]:
        """``steps`` batches drawn by seeded epochs over shuffled training windows."""
        gen = torch.Generator().manual_seed(seed)
        order: list[int] = []
        for _ in range(steps):
            rows = []
            while len(rows) < batch_size:
                if not order:
                    order = torch.randperm(len(self.train), generator=gen).tolist()
                rows.append(order.pop())
            ids = self.train[rows]
            yield ids, torch.ones_like(ids)

    def held_out_batches(self, batch_size: int) -> list[Batch]:
        return [(w, torch.ones_like(w)) for w in self.held_out.split(batch_size)]


def fact_sentences(probes: ProbeSet) -> tuple[list[str], int]:
    """Train-split facts as sentences (one per prompt template), and how many facts were dropped.

    Eval-split facts are never rendered; a train fact whose sentence names an eval-split
    subject as a whole word (e.g. "Sydney is a city in the country of Australia." when
    "Australia" is an eval subject) is dropped too, so training never sees an eval subject.
    """
    subjects = sorted({f.subject for f in probes.split("eval").facts if f.subject}, key=len, reverse=True)
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, subjects)) + r")\b") if subjects else None
    sentences, dropped = [], 0
    for fact in probes.split("train").facts:
        rendered = [f"{p} {fact.object}." for p in fact.prompts]
        if pattern is not None and any(pattern.search(t) for t in rendered):
            dropped += 1
            continue
        sentences += rendered
    return sentences, dropped


def training_texts(spec: RecoverSpec, original=None) -> tuple[list[str], dict]:
    """The texts to train on (eval-probe leaks removed) and their provenance.

    ``original`` is the ORIGINAL model's LoadedModel, needed only for the self-generated corpus.
    """
    probes = load_probes("builtin")
    texts: list[str] = []
    source = []
    n_eval_subject = 0
    if spec.train_data in ("corpus", "both"):
        if spec.train_text:
            texts += load_text(spec.train_text)
            source.append(str(spec.train_text))
        else:
            if original is None:
                raise ProbeError("the self-generated corpus needs the original model")
            texts += general_corpus(original, spec.n_texts, spec.text_tokens, spec.seed)
            source.append(f"self-generated ({spec.n_texts}×{spec.text_tokens} tokens, seed {spec.seed})")
    if spec.train_data in ("facts", "both"):
        sentences, n_eval_subject = fact_sentences(probes)
        texts += sentences
        source.append(f"train-split facts of {probes.name}")
    kept, removed = filter_probe_leaks(texts, probes, split="eval")
    if not kept:
        raise ProbeError(f"no training text left after removing {removed} text(s) with eval-split probe prompts: "
                         "give more text with --train-text")
    return kept, {"source": " + ".join(source), "n_texts": len(kept), "n_removed": removed,
                  "n_facts_dropped_eval_subject": n_eval_subject,
                  "hash": spec_hash(kept, 16), "probe_hash": probes.content_hash()}


def to_windows(texts: Sequence[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Texts joined with EOS and cut into full ``[N, seq_len]`` windows."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    stream: list[int] = []
    for t in texts:
        stream += [*tokenizer(t, add_special_tokens=False).input_ids, sep]
    n = len(stream) // seq_len
    if n < 2:
        raise ProbeError(f"the training text has {len(stream)} tokens, fewer than two windows of {seq_len}: "
                         "give more text or lower --seq-len")
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def build_data(spec: RecoverSpec, tokenizer, original=None) -> TrainData:
    """Training and held-out windows for ``spec``."""
    texts, info = training_texts(spec, original)
    windows = to_windows(texts, tokenizer, spec.seq_len)
    perm = torch.randperm(len(windows), generator=torch.Generator().manual_seed(spec.seed))
    n_held = max(1, round(spec.heldout_fraction * len(windows)))
    held, train = windows[perm[:n_held]], windows[perm[n_held:]]
    return TrainData(train, held, {**info, "n_windows": len(train), "n_held_out": n_held,
                                   "tokens": int(windows.numel())})
