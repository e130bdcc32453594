"""The fact schema shared by every loader, the scorer and later stages.

A :class:`Fact` is one (subject, relation, object) triple with the prompts that ask for it.
The answer continues the prompt after a single space: ``"The capital of France is"`` →
``" Paris"``. ``split`` is ``"train"`` or ``"eval"``: recovery may train only on the train
split, and every reported accuracy uses the eval split.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from probe.errors import ProbeError

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Relation:
    """A relation with its paraphrase templates; each template contains ``{subject}``."""

    id: str
    name: str
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.templates:
            raise ProbeError(f"relation {self.id!r} has no templates: give at least one")
        for t in self.templates:
            if "{subject}" not in t:
                raise ProbeError(f"template {t!r} of relation {self.id!r} lacks '{{subject}}'")


@dataclass(frozen=True)
class Fact:
    """One fact and how to ask for it.

    ``prompts[0]`` is the primary prompt; the others are paraphrases. ``choices`` are
    multiple-choice distractors (never containing the object). ``subject`` may be empty for
    formats that give only a prompt and an answer.
    """

    id: str
    relation: str
    subject: str
    object: str
    prompts: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ()
    split: str = "eval"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.object.strip():
            raise ProbeError(f"fact {self.id!r} has an empty answer")
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise ProbeError(f"fact {self.id!r} has no prompt")
        if self.split not in SPLITS:
            raise ProbeError(f"fact {self.id!r} has split {self.split!r}: use one of {SPLITS}")

    @property
    def prompt(self) -> str:
        return self.prompts[0]

    def prompt_for(self, template: int) -> str:
        """The prompt of paraphrase template ``template``; one this fact lacks is an error, not a fallback."""
        if not 0 <= template < len(self.prompts):
            last = len(self.prompts) - 1
            valid = "only template 0" if last == 0 else f"templates 0 to {last}"
            raise ProbeError(f"--template {template} is out of range for relation {self.relation!r}, which has "
                             f"{valid}: give --template {0 if last == 0 else f'0..{last}'}")
        return self.prompts[template]

    @property
    def answers(self) -> tuple[str, ...]:
        """The object and its aliases, each an acceptable answer."""
        return (self.object, *[a for a in self.aliases if a != self.object])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProbeSet:
    """A named, ordered collection of facts with content hash for provenance."""

    name: str
    facts: tuple[Fact, ...]
    relations: dict[str, Relation] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.facts:
            raise ProbeError(f"probe set {self.name!r} is empty: give a file with at least one fact")
        ids = [f.id for f in self.facts]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ProbeError(f"probe set {self.name!r} has duplicate fact id {dup!r}")

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self):
        return iter(self.facts)

    @property
    def relation_ids(self) -> list[str]:
        return sorted({f.relation for f in self.facts})

    def split(self, split: str | None) -> ProbeSet:
        """Only the facts of one split (``None`` or ``"all"`` keeps all)."""
        if split in (None, "all"):
            return self
        if split not in SPLITS:
            raise ProbeError(f"unknown split {split!r}: use one of {(*SPLITS, 'all')}")
        return ProbeSet(f"{self.name}:{split}", tuple(f for f in self.facts if f.split == split),
                        self.relations)

    def select_relations(self, relations: Sequence[str]) -> ProbeSet:
        """Only the facts of the named relations; an unknown name is an error."""
        _refuse_unknown(relations, self.relation_ids)
        keep = set(relations)
        return ProbeSet(self.name, tuple(f for f in self.facts if f.relation in keep), self.relations)

    def content_hash(self) -> str:
        """Hash of the facts' content, so artifacts can refuse to mix probe sets."""
        blob = json.dumps([f.to_dict() for f in self.facts], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_relation_list(text: str | None, known: Iterable[str] | None = None) -> tuple[str, ...]:
    """``--relations`` text ("capital, currency") as ids in order; ``None`` (flag not given) is ``()``, all.

    Given text that names no relation (``""``, ``","``) is an error, not "all relations"; with
    ``known``, an unknown id is an error naming the closest known one.
    """
    if text is None:
        return ()
    ids = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not ids:
        raise ProbeError(f"--relations {text!r} names no relation: give comma-separated relation ids, "
                         f"e.g. capital,currency, or leave the flag out to keep every relation")
    if known is not None:
        _refuse_unknown(ids, known)
    return ids


def _refuse_unknown(relations: Iterable[str], known: Iterable[str]) -> None:
    choices = sorted(set(known))
    for r in relations:
        if r not in choices:
            close = difflib.get_close_matches(r, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ProbeError(f"unknown relation {r!r}: {hint}choose from {', '.join(choices)}")


def split_for(subject: str, eval_fraction: float = 0.5, salt: str = "probe-split-v1") -> str:
    """Deterministic split by subject: the same subject always lands in the same split."""
    digest = hashlib.sha256(f"{salt}:{subject.strip().lower()}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if u < eval_fraction else "train"


def pick_distractors(obj: str, pool: Iterable[str], k: int, key: str) -> tuple[str, ...]:
    """``k`` deterministic distractors from ``pool`` (same relation), never equal to ``obj``."""
    candidates = sorted({p for p in pool if p.strip().lower() != obj.strip().lower()})
    ranked = sorted(candidates, key=lambda c: hashlib.sha256(f"{key}|{c}".encode()).hexdigest())
    return tuple(ranked[:k])
