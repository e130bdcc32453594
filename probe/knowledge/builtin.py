"""The built-in probe set: hand-checked facts shipped as package data.

``data/relations.json`` maps each relation id to ``{"name", "templates"}``; each template holds
``{subject}`` and is a prefix that the object continues after one space. ``data/facts/<id>.tsv``
holds that relation's facts: a ``subject\\tobject\\taliases`` header, then one fact per line with
aliases joined by ``|``. :func:`load_builtin` validates both and builds a :class:`ProbeSet` with
every template as a prompt, same-relation distractors and a deterministic split by subject.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from probe.errors import ProbeError
from probe.knowledge.schema import Fact, ProbeSet, Relation, pick_distractors, split_for

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DATA_PACKAGE = "probe.knowledge"
RELATIONS_FILE = "data/relations.json"
FACTS_DIR = "data/facts"
HEADER = ("subject", "object", "aliases")
ALIAS_SEP = "|"
TAB = "\t"


@dataclass(frozen=True)
class Row:
    """One parsed TSV line."""

    line: int
    subject: str
    object: str
    aliases: tuple[str, ...]


def slugify(text: str) -> str:
    """ASCII, lower-case, hyphen-separated form of ``text`` for readable fact ids."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def render(template: str, subject: str) -> str:
    """The template with the subject filled in; a sentence-initial all-lower-case word is capitalised."""
    text = template.replace("{subject}", subject)
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if first.islower() else text


def _check_field(value: str, where: str, field: str) -> str:
    if not value:
        raise ProbeError(f"{where}: field {field!r} is empty: give a value")
    if value != value.strip():
        raise ProbeError(f"{where}: field {field!r} has leading or trailing whitespace: {value!r}")
    return value


def parse_facts_tsv(text: str, source: str) -> list[Row]:
    """Parse one relation's TSV; any malformed line raises ProbeError naming file, line and field."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines or tuple(lines[0].split(TAB)) != HEADER:
        got = lines[0] if lines else ""
        raise ProbeError(f"{source} line 1: header is {got!r}: expected {TAB.join(HEADER)!r}")
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines[1:], start=2):
        where = f"{source} line {n}"
        fields = line.split(TAB)
        if len(fields) != len(HEADER):
            raise ProbeError(f"{where}: expected {len(HEADER)} tab-separated fields "
                             f"({', '.join(HEADER)}), found {len(fields)}: {line!r}")
        subject = _check_field(fields[0], where, "subject")
        obj = _check_field(fields[1], where, "object")
        aliases: tuple[str, ...] = ()
        if fields[2]:
            aliases = tuple(_check_field(a, where, "aliases") for a in fields[2].split(ALIAS_SEP))
            lowered = [a.lower() for a in aliases]
            if obj.lower() in lowered:
                raise ProbeError(f"{where}: field 'aliases' repeats the object {obj!r}: drop it")
            if len(set(lowered)) != len(lowered):
                raise ProbeError(f"{where}: field 'aliases' lists an alias twice: {fields[2]!r}")
        key = slugify(subject)
        if not key:
            raise ProbeError(f"{where}: field 'subject' {subject!r} has no letters or digits")
        if key in seen:
            raise ProbeError(f"{where}: field 'subject' {subject!r} duplicates the subject on line "
                             f"{seen[key]}: give each subject once")
        seen[key] = n
        rows.append(Row(n, subject, obj, aliases))
    if not rows:
        raise ProbeError(f"{source}: no facts after the header: add at least one line")
    return rows


def parse_relations(raw: object, source: str) -> dict[str, Relation]:
    """Validate the decoded ``relations.json`` and build its relations."""
    if not isinstance(raw, dict) or not raw:
        raise ProbeError(f"{source}: expected a non-empty object mapping relation id to its spec")
    relations: dict[str, Relation] = {}
    for rid, spec in raw.items():
        where = f"{source} relation {rid!r}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", rid):
            raise ProbeError(f"{where}: id must be lower-case letters, digits and underscores")
        if not isinstance(spec, dict) or set(spec) != {"name", "templates"}:
            raise ProbeError(f"{where}: expected exactly the keys 'name' and 'templates'")
        name, templates = spec["name"], spec["templates"]
        if not isinstance(name, str) or not name.strip():
            raise ProbeError(f"{where}: field 'name' must be a non-empty string")
        if not isinstance(templates, list) or not templates:
            raise ProbeError(f"{where}: field 'templates' must be a non-empty list of strings")
        for i, t in enumerate(templates):
            if not isinstance(t, str) or "{subject}" not in t:
                raise ProbeError(f"{where}: templates[{i}] must be a string containing '{{subject}}'")
            if t != t.strip():
                raise ProbeError(f"{where}: templates[{i}] {t!r} has leading or trailing whitespace: "
                                 "the answer follows after one space")
        if len(set(templates)) != len(templates):
            raise ProbeError(f"{where}: field 'templates' lists a template twice")
        relations[rid] = Relation(rid, name, tuple(templates))
    return relations


def _read(path: Traversable, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProbeError(f"{source} not found in the package data: every relation needs its file") from None
    except UnicodeDecodeError as e:
        raise ProbeError(f"{source} is not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _read_data() -> tuple[dict[str, Relation], dict[str, list[Row]]]:
    root = resources.files(DATA_PACKAGE)
    text = _read(root.joinpath(RELATIONS_FILE), RELATIONS_FILE)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{RELATIONS_FILE} line {e.lineno}: invalid JSON: {e.msg}") from None
    relations = parse_relations(raw, RELATIONS_FILE)
    facts_dir = root.joinpath(FACTS_DIR)
    on_disk = {p.name[:-4] for p in facts_dir.iterdir() if p.name.endswith(".tsv")}
    orphans = sorted(on_disk - set(relations))
    if orphans:
        raise ProbeError(f"{FACTS_DIR}/{orphans[0]}.tsv has no relation in {RELATIONS_FILE}: add it there")
    rows = {}
    for rid in sorted(relations):
        source = f"{FACTS_DIR}/{rid}.tsv"
        rows[rid] = parse_facts_tsv(_read(facts_dir.joinpath(f"{rid}.tsv"), source), source)
    return relations, rows


@lru_cache(maxsize=8)
def load_builtin(eval_fraction: float = 0.5, n_distractors: int = 3) -> ProbeSet:
    """The built-in probe set; ``eval_fraction`` of subjects go to the eval split."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ProbeError(f"eval fraction {eval_fraction} is outside [0, 1]: give e.g. 0.5")
    if n_distractors < 0:
        raise ProbeError(f"n_distractors is {n_distractors}: give 0 or more")
    relations, rows = _read_data()
    facts = []
    for rid, relation in sorted(relations.items()):
        objects = [r.object for r in rows[rid]]
        for row in rows[rid]:
            fid = f"{rid}:{slugify(row.subject)}"
            taken = {a.strip().lower() for a in row.aliases}
            pool = [o for o in objects if o.strip().lower() not in taken]
            facts.append(Fact(
                id=fid,
                relation=rid,
                subject=row.subject,
                object=row.object,
                prompts=tuple(render(t, row.subject) for t in relation.templates),
                aliases=row.aliases,
                distractors=pick_distractors(row.object, pool, n_distractors, key=fid),
                split=split_for(row.subject, eval_fraction),
            ))
    return ProbeSet("builtin", tuple(facts), relations)
