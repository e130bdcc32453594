"""Load knowledge probes from public formats, detecting the format from the file's content.

``load_probes("builtin")`` is the built-in set; any other source is one file in one of:

* ROME ``known_1000.json``: a JSON list of ``{known_id, subject, attribute, template, prediction,
  prompt, relation_id}``; the prompt is ``prompt``, the answer ``attribute``.
* LAMA T-REx / ParaRel JSONL: ``{sub_label, obj_label[, predicate_id, uuid, template]}`` per line.
  ``[X] ... [Y] .`` templates come from the row, from LAMA's ``relations.jsonl`` beside the file or
  its folder, and from ParaRel's ``pattern_data/graphs_json/<relation>.jsonl``; only templates that
  end in ``[Y]`` make next-token prompts. Without ``predicate_id`` the relation is the file stem.
* PopQA TSV (``subj, prop, obj, question, possible_answers, ...``): prompt ``Q: <question> A:``,
  aliases the possible answers, relation ``prop``.
* Generic JSONL (or a JSON list) of ``{prompt, answer[, choices, relation, subject, split, id,
  aliases]}``.

The split is the row's own or :func:`split_for` on the subject (the prompt when there is none);
without ``choices``, distractors are other objects of the same relation (:func:`pick_distractors`
over at most ``DISTRACTOR_CANDIDATES`` of them per fact).
A malformed row raises a one-line :class:`ProbeError` naming the file, the line (1-based) or the
JSON list element (0-based), and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.errors import ProbeError
from probe.knowledge.builtin import load_builtin
from probe.knowledge.schema import SPLITS, Fact, ProbeSet, Relation, pick_distractors, split_for

N_DISTRACTORS = 3
DISTRACTOR_CANDIDATES = 64  # pick_distractors ranks at most this many objects per fact (speed)
GENERIC_RELATION = "generic"

SUPPORTED = (
    "ROME known_1000 JSON (subject, attribute, prompt, relation_id), "
    "LAMA/ParaRel JSONL (sub_label, obj_label), "
    "PopQA TSV (subj, prop, obj, question, possible_answers), "
    "JSONL with prompt and answer; or use 'builtin'"
)


@dataclass(frozen=True)
class _Record:
    loc: str  # "line 7" (JSONL, TSV) or "element 6" (JSON list)
    data: dict[str, Any]


@dataclass
class _Draft:
    """A fact before its distractors, which need every object of its relation."""

    loc: str
    id: str
    id_field: str
    relation: str
    subject: str
    object: str
    prompts: tuple[str, ...]
    aliases: tuple[str, ...]
    split: str
    meta: dict[str, Any]
    choices: tuple[str, ...] | None = None  # the row's own choices; None: draw from the relation


@dataclass
class _Relations:
    """Templates (``{subject}`` form, first-seen order) and names gathered while reading."""

    templates: dict[str, list[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def add(self, relation: str, template: str | None, name: str | None = None) -> None:
        if template and "{subject}" in template:
            known = self.templates.setdefault(relation, [])
            if template not in known:
                known.append(template)
        if name and relation not in self.names:
            self.names[relation] = name

    def build(self) -> dict[str, Relation]:
        return {r: Relation(r, self.names.get(r, r), tuple(ts)) for r, ts in self.templates.items()}


class _File:
    """The file being read; ``error`` makes its one-line messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def error(self, loc: str, message: str) -> ProbeError:
        return ProbeError(f"{self.name} {loc}: {message}")


def load_probes(source: str | Path, eval_fraction: float = 0.5) -> ProbeSet:
    """Load ``"builtin"`` (its own splits) or a probe file, its format detected from its content.

    ``eval_fraction`` is the share of subjects that :func:`split_for` puts in the eval split for
    rows that do not name their split.
    """
    if str(source) == "builtin":
        return load_builtin(eval_fraction)
    if not 0.0 <= eval_fraction <= 1.0:
        raise ProbeError(f"eval fraction {eval_fraction} is outside [0, 1]: give e.g. 0.5")
    path = Path(source)
    if not path.exists():
        raise ProbeError(f"probe file {str(path)!r} not found: give an existing file or 'builtin'")
    if path.is_dir():
        raise ProbeError(f"{str(path)!r} is a folder: give one probe file ({SUPPORTED})")
    f = _File(path)
    text = _read_text(path)
    if not text.strip():
        raise ProbeError(f"{f.name} is empty: give a file with at least one fact ({SUPPORTED})")
    records = _parse(f, text)
    kind = _detect(set(records[0].data))
    if kind is None:
        raise _undetectable(f, set(records[0].data))
    builders: dict[str, Callable[[_File, list[_Record], float, _Relations], list[_Draft]]] = {
        "rome": _rome, "lama": _lama, "popqa": _popqa, "generic": _generic,
    }
    relations = _Relations()
    drafts = builders[kind](f, records, eval_fraction, relations)
    return ProbeSet(path.stem, _finish(f, drafts), relations.build())


# ---------------------------------------------------------------------------------------------------
# reading and detection


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProbeError(f"{path.name} is not UTF-8 text (byte {e.start}): give a JSON, JSONL or "
                         f"TSV probe file") from None
    except OSError as e:
        raise ProbeError(f"cannot read {str(path)!r}: {e.strerror}") from None


def _parse(f: _File, text: str) -> list[_Record]:
    head = text.lstrip()[0]
    if head == "[":
        return _parse_json_list(f, text)
    if head == "{":
        return _parse_jsonl(f, text)
    first = text.lstrip().split("\n", 1)[0]
    return _parse_table(f, text, "\t" if "\t" in first else ",")


def _json(text: str) -> Any:
    """``json.loads``; nesting too deep for the parser is reported like any other invalid JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def _parse_json_list(f: _File, text: str) -> list[_Record]:
    try:
        data = _json(text)
    except json.JSONDecodeError as e:
        raise f.error(f"line {e.lineno}", f"invalid JSON ({e.msg} at column {e.colno}): "
                                          f"fix or re-download the file") from None
    if not data:
        raise ProbeError(f"{f.name} holds an empty JSON list: give at least one fact")
    records = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise f.error(f"element {i}", f"expected a JSON object, got {type(item).__name__}")
        records.append(_Record(f"element {i}", item))
    return records


def _parse_jsonl(f: _File, text: str) -> list[_Record]:
    # only "\n" ends a line: str.splitlines would also split at U+2028 or U+0085 inside a JSON string
    lines = text.split("\n")
    if len([ln for ln in lines if ln.strip()]) > 1 and lines[0].strip() == "{":
        raise ProbeError(f"{f.name} holds one JSON object over several lines: give a JSON list or "
                         f"JSONL (one object per line)")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = _json(line)
        except json.JSONDecodeError as e:
            raise f.error(f"line {n}", f"invalid JSON ({e.msg} at column {e.colno}): "
                                       f"each line must hold one JSON object") from None
        if not isinstance(item, dict):
            raise f.error(f"line {n}", f"expected a JSON object, got {type(item).__name__}")
        records.append(_Record(f"line {n}", item))
    return records


def _parse_table(f: _File, text: str, delimiter: str) -> list[_Record]:
    """A delimited table with a header row; only PopQA is read this way."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    records = []
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [h.strip() for h in row]
                if _detect(set(header)) != "popqa":
                    raise _not_a_probe_table(f, header, delimiter)
                continue
            if len(row) > len(header):
                raise f.error(f"line {start}", f"{len(row)} columns but the header has {len(header)}: "
                                               f"check the delimiters and quoting")
            cells: list[str | None] = [*row, *[None] * (len(header) - len(row))]  # short row: None
            records.append(_Record(f"line {start}", dict(zip(header, cells, strict=True))))
    except csv.Error as e:
        raise f.error(f"line {reader.line_num}", f"unreadable table row ({e})") from None
    if not records:
        raise ProbeError(f"{f.name} has a header but no rows: give at least one fact")
    return records


def _detect(keys: set[str]) -> str | None:
    if "known_id" in keys or "attribute" in keys:
        return "rome"
    if "sub_label" in keys or "obj_label" in keys:
        return "lama"
    if "possible_answers" in keys or ("question" in keys and ("subj" in keys or "prop" in keys)):
        return "popqa"
    if "prompt" in keys or "answer" in keys:
        return "generic"
    return None


def _not_a_probe_table(f: _File, header: list[str], delimiter: str) -> ProbeError:
    """Text that is neither JSON nor JSONL and whose first line is not a PopQA header."""
    expected = "expected JSON, JSONL (one object per line) or a PopQA TSV"
    if len(header) < 2:
        return ProbeError(f"{f.name}: cannot tell the probe format: {expected}, found plain text starting "
                          f"'{_clip(header[0], 40)}'; supported: {SUPPORTED}")
    kind = "comma" if delimiter == "," else "tab"
    columns = ", ".join(_clip(h, 30) for h in header[:8]) + (", ..." if len(header) > 8 else "")
    if _detect(set(header)) is not None:  # a format that is read from JSON/JSONL only
        return ProbeError(f"{f.name}: cannot tell the probe format: found a {kind}-separated table with "
                          f"columns {columns}, but only PopQA is read as a table: write each row as one "
                          f"JSON object per line (JSONL) with these fields")
    return ProbeError(f"{f.name}: cannot tell the probe format: {expected}, found a {kind}-separated table "
                      f"with columns {columns}; supported: {SUPPORTED}")


def _undetectable(f: _File, keys: set[str]) -> ProbeError:
    if {"relation", "template"} <= keys:
        hint = (" (it looks like LAMA's relations.jsonl, which holds only templates: give a data file "
                "such as TREx/P36.jsonl, with relations.jsonl beside it or its folder)")
    elif "pattern" in keys:
        hint = " (it looks like a ParaRel pattern file: give the data file, e.g. trex_lms_vocab/P36.jsonl)"
    elif "requested_rewrite" in keys:
        hint = " (CounterFact is not supported)"
    else:
        shown = ", ".join(_clip(k, 30) for k in sorted(keys)[:8])
        hint = f" (fields: {shown})" if shown else ""
    return ProbeError(f"{f.name}: cannot tell the probe format{hint}; supported: {SUPPORTED}")


def _clip(text: str, limit: int) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` characters."""
    shown = json.dumps(text, ensure_ascii=False)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# fields


def _text(f: _File, rec: _Record, name: str, *, required: bool = True, hint: str = "") -> str | None:
    value = rec.data.get(name)
    if value is None:
        if required:
            raise f.error(rec.loc, f"missing field {name!r}{hint}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise f.error(rec.loc, f"field {name!r} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        if required:
            raise f.error(rec.loc, f"field {name!r} is empty{hint}")
        return None
    return text


def _req(f: _File, rec: _Record, name: str, hint: str = "") -> str:
    value = _text(f, rec, name, required=True, hint=hint)
    assert value is not None
    return value


def _str_list(f: _File, rec: _Record, name: str, *, required: bool = False,
              json_text: bool = False) -> tuple[str, ...] | None:
    value = rec.data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise f.error(rec.loc, f"missing field {name!r}")
        return None
    if isinstance(value, str) and json_text:
        try:
            value = _json(value)
        except json.JSONDecodeError as e:
            raise f.error(rec.loc, f"field {name!r} is not a JSON list ({e.msg}): "
                                   f"write it like [\"Paris\", \"City of Light\"]") from None
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                              for v in value):
        raise f.error(rec.loc, f"field {name!r} must be a list of strings")
    return _unique(str(v).strip() for v in value if str(v).strip())


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:12]


def _subject_template(text: str, subject: str) -> str | None:
    """``text`` with its first mention of ``subject`` replaced by ``{subject}``."""
    return text.replace(subject, "{subject}", 1) if subject and subject in text else None


# ---------------------------------------------------------------------------------------------------
# formats


def _rome(f: _File, records: list[_Record], eval_fraction: float, rels: _Relations) -> list[_Draft]:
    drafts = []
    for rec in records:
        subject = _req(f, rec, "subject")
        obj = _req(f, rec, "attribute")
        relation = _req(f, rec, "relation_id")
        template = _text(f, rec, "template", required=False)
        prompt = _text(f, rec, "prompt", required=False)
        if prompt is None:
            if template is None or "{}" not in template:
                raise f.error(rec.loc, "missing field 'prompt' (and no 'template' with '{}' to build it)")
            prompt = template.replace("{}", subject)
        known_id = _text(f, rec, "known_id", required=False)
        fid = f"known-{known_id}" if known_id is not None else f"{relation}-{_digest(subject, prompt, obj)}"
        rels.add(relation, _subject_template(prompt, subject))
        meta = {"format": "rome_known", "known_id": rec.data.get("known_id"), "template": template,
                "prediction": rec.data.get("prediction")}
        drafts.append(_Draft(rec.loc, fid, "known_id", relation, subject, obj, (prompt,), (),
                             split_for(subject, eval_fraction), meta))
    return drafts


def lama_template_to_prompt(template: str) -> str | None:
    """``"[X] is the capital of [Y] ."`` → ``"{subject} is the capital of"``; None if [Y] is not last."""
    t = " ".join(template.split())
    if t.endswith("."):
        t = t[:-1].rstrip()
    if t.count("[X]") != 1 or t.count("[Y]") != 1 or not t.endswith("[Y]"):
        return None
    head = t[: -len("[Y]")].rstrip()
    return head.replace("[X]", "{subject}") if head != "[X]" else None


def _jsonl_rows(path: Path, required: str) -> list[dict[str, Any]]:
    """Rows of a side file (relations, patterns); each must carry a string ``required`` field."""
    f = _File(path)
    rows = []
    for rec in _parse_jsonl(f, _read_text(path)):
        if not isinstance(rec.data.get(required), str):
            raise f.error(rec.loc, f"missing field {required!r}")
        rows.append(rec.data)
    return rows


def _lama_relations(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Templates and labels from LAMA's ``relations.jsonl`` beside the file or in its parent folder."""
    for folder in (path.parent, path.parent.parent):
        rel_file = folder / "relations.jsonl"
        if rel_file.is_file() and rel_file.resolve() != path.resolve():
            templates, labels = {}, {}
            for row in _jsonl_rows(rel_file, "relation"):
                if isinstance(row.get("template"), str):
                    templates[row["relation"]] = row["template"]
                if isinstance(row.get("label"), str):
                    labels[row["relation"]] = row["label"]
            return templates, labels
    return {}, {}


def _pararel_patterns(path: Path, relation: str) -> list[str]:
    """ParaRel paraphrases: ``pattern_data/graphs_json/<relation>.jsonl`` near the data file."""
    for folder in (path.parent, path.parent.parent):
        for sub in ("pattern_data/graphs_json", "graphs_json"):
            pattern_file = folder / sub / f"{relation}.jsonl"
            if pattern_file.is_file():
                return [row["pattern"] for row in _jsonl_rows(pattern_file, "pattern")]
    return []


def _lama(f: _File, records: list[_Record], eval_fraction: float, rels: _Relations) -> list[_Draft]:
    lama_templates, lama_labels = _lama_relations(f.path)
    patterns: dict[str, list[str]] = {}
    stem_relation = f.path.stem if re.fullmatch(r"P\d+", f.path.stem) else None
    drafts = []
    for rec in records:
        subject = _req(f, rec, "sub_label")
        obj = _req(f, rec, "obj_label")
        relation = _text(f, rec, "predicate_id", required=False) or stem_relation
        if relation is None:
            raise f.error(rec.loc, "missing field 'predicate_id' (or name the file after the relation, "
                                   "e.g. P36.jsonl)")
        if relation not in patterns:
            patterns[relation] = _pararel_patterns(f.path, relation)
        row_template = _text(f, rec, "template", required=False)
        raw = [t for t in (row_template, lama_templates.get(relation)) if t] + patterns[relation]
        if not raw:
            raise f.error(rec.loc, f"no template for relation {relation!r}: add field 'template' like "
                                   f"'[X] is the capital of [Y] .', or put LAMA's relations.jsonl (or "
                                   f"ParaRel's pattern_data/graphs_json/{relation}.jsonl) near the file")
        usable = _unique(p for p in map(lama_template_to_prompt, raw) if p)
        if not usable:
            raise f.error(rec.loc, f"relation {relation!r} has no template that ends in [Y] (field "
                                   f"'template' is {raw[0]!r}): a next-token prompt must stop right "
                                   f"before the object; add such a template or drop {relation} rows")
        for t in usable:
            rels.add(relation, t)
        rels.add(relation, None, _text(f, rec, "label", required=False) or lama_labels.get(relation))
        uuid = _text(f, rec, "uuid", required=False)
        fid = uuid or f"{relation}-{_digest(subject, obj)}"
        prompts = _unique(t.replace("{subject}", subject) for t in usable)
        meta = {"format": "lama", "uuid": uuid, "sub_uri": rec.data.get("sub_uri"),
                "obj_uri": rec.data.get("obj_uri")}
        drafts.append(_Draft(rec.loc, fid, "uuid", relation, subject, obj, prompts, (),
                             split_for(subject, eval_fraction), meta))
    return drafts


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        return None


def _popqa(f: _File, records: list[_Record], eval_fraction: float, rels: _Relations) -> list[_Draft]:
    drafts = []
    for rec in records:
        subject = _req(f, rec, "subj")
        relation = _req(f, rec, "prop")
        obj = _req(f, rec, "obj")
        question = _req(f, rec, "question")
        answers = _str_list(f, rec, "possible_answers", required=True, json_text=True) or ()
        row_id = _text(f, rec, "id", required=False)
        fid = f"popqa-{row_id}" if row_id else f"{relation}-{_digest(subject, question, obj)}"
        template = _subject_template(question, subject)
        rels.add(relation, f"Q: {template} A:" if template else None, relation)
        meta = {"format": "popqa", "id": row_id, "prop_id": _int_or_none(rec.data.get("prop_id")),
                "s_pop": _int_or_none(rec.data.get("s_pop")), "o_pop": _int_or_none(rec.data.get("o_pop"))}
        drafts.append(_Draft(rec.loc, fid, "id", relation, subject, obj, (f"Q: {question} A:",),
                             tuple(a for a in answers if a != obj), split_for(subject, eval_fraction), meta))
    return drafts


def _generic(f: _File, records: list[_Record], eval_fraction: float, rels: _Relations) -> list[_Draft]:
    hint = " (each row needs 'prompt' and 'answer')"
    drafts = []
    for rec in records:
        prompt = _req(f, rec, "prompt", hint)
        answer = _req(f, rec, "answer", hint)
        relation = _text(f, rec, "relation", required=False) or GENERIC_RELATION
        subject = _text(f, rec, "subject", required=False) or ""
        split = _text(f, rec, "split", required=False)
        if split is not None and split not in SPLITS:
            raise f.error(rec.loc, f"field 'split' is {split!r}: use one of {', '.join(SPLITS)} or leave "
                                   f"it out")
        choices = _str_list(f, rec, "choices")
        aliases = _str_list(f, rec, "aliases") or ()
        row_id = _text(f, rec, "id", required=False)
        fid = row_id or f"{relation}-{_digest(subject, prompt, answer)}"
        rels.add(relation, _subject_template(prompt, subject))
        meta = {"format": "generic"}
        drafts.append(_Draft(rec.loc, fid, "id", relation, subject, answer, (prompt,),
                             tuple(a for a in aliases if a != answer),
                             split or split_for(subject or prompt, eval_fraction), meta, choices))
    return drafts


# ---------------------------------------------------------------------------------------------------
# assembly


def _candidates(pool: tuple[str, ...], key: str, limit: int) -> tuple[str, ...]:
    """All of ``pool``, or ``limit`` of it on a stride picked by hashing ``key`` (deterministic).

    Ranking a relation's every object for every fact is quadratic (PopQA has ~2000 objects per
    relation); a per-fact sample keeps loading linear and the choice still spans the whole relation.
    """
    n = len(pool)
    if n <= limit:
        return pool
    h = int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)
    start, stride = h % n, 1 + (h // n) % (n - 1)
    while math.gcd(stride, n) != 1:
        stride = stride % (n - 1) + 1
    return tuple(pool[(start + j * stride) % n] for j in range(limit))


def _finish(f: _File, drafts: list[_Draft]) -> tuple[Fact, ...]:
    first_at: dict[str, str] = {}
    pools: dict[str, list[str]] = {}
    for d in drafts:
        if d.id in first_at:
            raise f.error(d.loc, f"duplicate fact id {d.id!r} (first at {first_at[d.id]}): give each row "
                                 f"a unique {d.id_field!r}")
        first_at[d.id] = d.loc
        pools.setdefault(d.relation, []).append(d.object)
    unique_pools = {r: _unique(objs) for r, objs in pools.items()}
    facts = []
    for d in drafts:
        taken = {a.strip().lower() for a in (d.object, *d.aliases)}
        if d.choices is not None:
            distractors = tuple(c for c in d.choices if c.strip().lower() not in taken)
        else:
            candidates = _candidates(unique_pools[d.relation], d.id, DISTRACTOR_CANDIDATES)
            pool = [o for o in candidates if o.strip().lower() not in taken]
            distractors = pick_distractors(d.object, pool, N_DISTRACTORS, key=d.id)
        try:
            facts.append(Fact(d.id, d.relation, d.subject, d.object, d.prompts, d.aliases, distractors,
                              d.split, {**d.meta, "location": d.loc}))
        except ProbeError as e:
            raise f.error(d.loc, str(e)) from None
    return tuple(facts)
