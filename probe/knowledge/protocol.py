"""The probe format: how a fact is asked (k demonstrations, template) and what "known" means.

Few-shot conventions follow lm-eval: demonstrations come from the *train* split of the same
task (relation), each is the demonstration's prompt, the target delimiter ``" "`` and its answer;
the query follows the last one. Where lm-eval separates demonstrations with ``"\\n\\n"`` and
samples them per document with a seeded RNG, we close each with ``".\\n"`` (the format the
issue measured, "<prompt> <answer>.\\n" × k) and draw them once per relation, so every fact of a
relation shares one demonstration prefix whose key/value cache is computed once.

A relation gets two shared demonstration sets with disjoint answers (objects repeat: many
``city_country`` facts answer " France"); each fact uses the first set that contains neither its
subject nor any of its answers, so a demonstration never gives the answer away. A fact both
sets conflict with (rare) gets its own set. Demonstrations are taken in a fixed hash order of
the relation's train facts with distinct answers and subjects; a relation with fewer than
``shots`` usable train facts gets fewer demonstrations and a warning naming it (LAMA-style
files without splits get the deterministic subject split of :func:`~probe.knowledge.schema.split_for`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from probe.errors import ProbeError
from probe.knowledge.schema import Fact
from probe.progress import console
from probe.settings import setting

KNOWN_DEFINITIONS = ("first_token", "full_answer", "robust")
ROBUST_MIN_TEMPLATES = 2  # "robustly known": full answer under at least this many templates
DEMO_SETS = 2  # shared demonstration sets per relation (disjoint answers)
PROTOCOL_NOTE = ("demonstrations: train split of the same relation, '<prompt> <answer>.\\n' each, shared per "
                 "relation (two sets with disjoint answers, never the fact's own subject or answer); "
                 "known: first_token = an answer's first token is top-1; full_answer = greedy continuation equals "
                 "an answer (all tokens, any alias); robust = full_answer under at least 2 of the relation's "
                 "templates")


@dataclass(frozen=True)
class ProbeFormat:
    """How facts are asked and scored; carried by every stage that scores or captures facts."""

    shots: int = setting(3, "Demonstrations of the same relation (train split) before each fact; 0: zero-shot",
                         unit="facts", min=0)
    template: int = setting(0, "Which paraphrase template to ask with")
    known: str = setting("full_answer", "When a fact counts as known: first_token (its first token is top-1), "
                         "full_answer (greedy continuation is an acceptable answer) or robust (full_answer under "
                         "at least 2 of the relation's templates)", choices=KNOWN_DEFINITIONS)

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ProbeError(f"--shots must be 0 or more, got {self.shots}")
        if self.template < 0:
            raise ProbeError(f"--template must be 0 or more, got {self.template}")
        if self.known not in KNOWN_DEFINITIONS:
            raise ProbeError(f"unknown --known {self.known!r}: use one of {', '.join(KNOWN_DEFINITIONS)}")

    def describe(self) -> dict:
        """The protocol as stated next to every result."""
        return {"shots": self.shots, "template": self.template, "known": self.known,
                "format": "'<prompt> <answer>.\\n' x shots, then the prompt", "note": PROTOCOL_NOTE}


@dataclass(frozen=True)
class Prompted:
    """A fact as asked: the demonstration prefix (shared by a relation's facts) and the query prompt."""

    fact: Fact
    prefix: str
    query: str
    demo_ids: tuple[str, ...]
    demo_answers: tuple[str, ...]

    @property
    def text(self) -> str:
        return self.prefix + self.query


def _norm(text: str) -> str:
    return text.strip().lower()


def _order(relation: str, facts: Iterable[Fact]) -> list[Fact]:
    return sorted(facts, key=lambda f: hashlib.sha256(f"demo|{relation}|{f.id}".encode()).hexdigest())


def _pick(pool: Sequence[Fact], k: int, banned_answers: set[str], banned_subjects: set[str]) -> list[Fact]:
    """Up to ``k`` facts of ``pool`` in order, with distinct answers and subjects, avoiding the banned ones."""
    chosen: list[Fact] = []
    answers, subjects = set(banned_answers), set(banned_subjects)
    for f in pool:
        mine = {_norm(a) for a in f.answers}
        if mine & answers or (f.subject and _norm(f.subject) in subjects):
            continue
        chosen.append(f)
        answers |= mine
        subjects.add(_norm(f.subject))
        if len(chosen) == k:
            break
    return chosen


def _fits(demos: Sequence[Fact], fact: Fact) -> bool:
    answers = {_norm(a) for d in demos for a in d.answers}
    subjects = {_norm(d.subject) for d in demos if d.subject}
    return (not {_norm(a) for a in fact.answers} & answers and (not fact.subject or _norm(fact.subject) not in subjects)
            and all(d.id != fact.id for d in demos))


def demo_prefix(demos: Sequence[Fact], template: int) -> str:
    """``"<prompt> <answer>.\\n"`` per demonstration (its prompt under ``template``, else its first)."""
    lines = []
    for d in demos:
        prompt = d.prompts[template] if template < len(d.prompts) else d.prompts[0]
        answer = d.object if d.object.rstrip().endswith(".") else d.object + "."
        lines.append(f"{prompt} {answer}\n")
    return "".join(lines)


def build_prompts(facts: Sequence[Fact], pool: Iterable[Fact], shots: int, template: int = 0,
                  warn: bool = True) -> list[Prompted]:
    """Each fact with its demonstrations from ``pool``'s train facts of the same relation.

    ``pool`` is the whole probe set (before any split filter), so eval facts draw from the train split.
    """
    if shots == 0:
        return [Prompted(f, "", f.prompt_for(template), (), ()) for f in facts]
    train: dict[str, list[Fact]] = defaultdict(list)
    for f in pool:
        if f.split == "train":
            train[f.relation].append(f)
    sets: dict[str, list[list[Fact]]] = {}
    for rel in sorted({f.relation for f in facts}):
        ordered = _order(rel, train.get(rel, ()))
        first = _pick(ordered, shots, set(), set())
        second = _pick(ordered, shots, {_norm(a) for d in first for a in d.answers}, set())
        sets[rel] = [first, second][:DEMO_SETS]
    short: dict[str, int] = {}
    out = []
    for fact in facts:
        demos = next((s for s in sets[fact.relation] if _fits(s, fact) and s), None)
        if demos is None:  # both shared sets give the answer away (or the subject): this fact's own set
            demos = _pick(_order(fact.relation, train.get(fact.relation, ())), shots,
                          {_norm(a) for a in fact.answers}, {_norm(fact.subject)} if fact.subject else set())
            demos = [d for d in demos if d.id != fact.id]
        if len(demos) < shots:
            short[fact.relation] = min(short.get(fact.relation, shots), len(demos))
        out.append(Prompted(fact, demo_prefix(demos, template), fact.prompt_for(template),
                            tuple(d.id for d in demos), tuple(d.object for d in demos)))
    if warn:
        for rel, n in sorted(short.items()):
            console.print(f"[yellow]warning:[/] relation {rel!r} has too few train facts for {shots} demonstrations "
                          f"with distinct answers: some of its facts get {n}")
    return out


def copies_demo(prediction: str, prompted: Prompted) -> bool:
    """Whether a (wrong) prediction repeats one of the fact's demonstration answers (first token or whole)."""
    p = _norm(prediction)
    return bool(p) and any(_norm(a) == p or _norm(a).startswith(p) for a in prompted.demo_answers)
