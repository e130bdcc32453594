"""Training text for recovery: general corpus and/or train-split facts, as token windows.

* ``corpus``: the ORIGINAL model's self-generated *recovery* text (:func:`probe.corpus.general_corpus`
  with ``purpose="recovery"``: its own seed prompts and sampling seeds, so it shares no text with
  the compression stage's calibration corpus) or ``--train-text PATH``.
* ``facts``: every TRAIN-split fact of the built-in probes rendered as ``prompt + " " + object +
  "."`` for each of its prompt templates. Eval-split facts are never rendered.
* ``both``: the two together.

Every text that contains an eval-split probe prompt verbatim is dropped and counted
(``n_removed`` in the manifest). Texts are joined with the EOS token and cut into full
``seq_len`` windows. The held-out set (early stopping, learning-rate sweep, the reported loss) is
split off by *text*, before windowing: a seeded shuffle of the texts gives the held-out set whole
texts until it holds ``heldout_fraction`` of the tokens (at least one window), so no text
contributes to both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from probe.artifacts import spec_hash
from probe.corpus import RECOVERY_SEED_OFFSET, filter_probe_leaks, general_corpus, load_text
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
            seed = RECOVERY_SEED_OFFSET + spec.seed
            texts += general_corpus(original, spec.n_texts, spec.text_tokens, seed, purpose="recovery")
            source.append(f"self-generated recovery text ({spec.n_texts}×{spec.text_tokens} tokens, seed {seed})")
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


def token_stream(texts: Sequence[str], tokenizer) -> list[int]:
    """Texts tokenised and joined with EOS."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    stream: list[int] = []
    for t in texts:
        stream += [*tokenizer(t, add_special_tokens=False).input_ids, sep]
    return stream


def to_windows(texts: Sequence[str], tokenizer, seq_len: int, at_least: int = 2) -> torch.Tensor:
    """Texts joined with EOS and cut into full ``[N, seq_len]`` windows."""
    stream = token_stream(texts, tokenizer)
    n = len(stream) // seq_len
    if n < at_least:
        raise ProbeError(f"the training text has {len(stream)} tokens, too few for {at_least} window(s) of "
                         f"{seq_len}: give more text or lower --seq-len")
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def split_texts(texts: Sequence[str], tokenizer, seq_len: int, fraction: float,
                seed: int) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` whole texts: shuffled texts go to held-out until it has ``fraction`` of the
    tokens and at least one window."""
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) + 1 for t in texts]
    want = max(seq_len, fraction * sum(lengths))
    held: set[int] = set()
    n = 0
    for i in torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist():
        if n >= want or len(held) == len(texts) - 1:
            break
        held.add(i)
        n += lengths[i]
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def build_data(spec: RecoverSpec, tokenizer, original=None) -> TrainData:
    """Training and held-out windows for ``spec`` (held-out by whole text)."""
    texts, info = training_texts(spec, original)
    if len(texts) < 2:
        raise ProbeError("recovery needs at least two texts (one is held out): give a file with several "
                         "paragraphs or lines to --train-text")
    train_texts, held_texts = split_texts(texts, tokenizer, spec.seq_len, spec.heldout_fraction, spec.seed)
    train, held = to_windows(train_texts, tokenizer, spec.seq_len), to_windows(held_texts, tokenizer, spec.seq_len, 1)
    return TrainData(train, held, {**info, "n_windows": len(train), "n_held_out": len(held),
                                   "n_held_out_texts": len(held_texts), "tokens": int(train.numel() + held.numel())})
