"""The built-in probe set: size, data hygiene, distractors, split, and loader validation."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from importlib import resources

import pytest

from probe.errors import ProbeError
from probe.knowledge.builtin import load_builtin, parse_facts_tsv, parse_relations, render, slugify
from probe.knowledge.schema import ProbeSet

DATA = resources.files("probe.knowledge").joinpath("data")


@pytest.fixture(scope="module")
def probes() -> ProbeSet:
    return load_builtin()


@pytest.fixture(scope="module")
def relations_json() -> dict:
    return json.loads(DATA.joinpath("relations.json").read_text(encoding="utf-8"))


def _tsv_files() -> dict[str, str]:
    facts = DATA.joinpath("facts")
    return {p.name[: -len(".tsv")]: p.read_text(encoding="utf-8")
            for p in facts.iterdir() if p.name.endswith(".tsv")}


def _by_relation(probes: ProbeSet) -> dict[str, list]:
    out = defaultdict(list)
    for f in probes:
        out[f.relation].append(f)
    return out


# --- size and coverage ---------------------------------------------------------------------------

def test_at_least_1000_facts_over_15_relations(probes):
    assert len(probes) >= 1000
    assert len(probes.relation_ids) >= 15


def test_every_relation_has_enough_facts_and_distinct_objects(probes):
    for rel, facts in _by_relation(probes).items():
        assert len(facts) >= 30, rel
        assert len({f.object for f in facts}) >= 4, rel


def test_relations_json_and_tsv_files_match(relations_json):
    assert set(relations_json) == set(_tsv_files())


# --- templates -----------------------------------------------------------------------------------

def test_templates(relations_json):
    for rid, spec in relations_json.items():
        assert set(spec) == {"name", "templates"}, rid
        assert spec["name"].strip(), rid
        templates = spec["templates"]
        assert len(templates) >= 3, rid
        assert len(set(templates)) == len(templates), rid
        for t in templates:
            assert t.count("{subject}") == 1, (rid, t)
            assert t == t.strip(), (rid, t)
            assert not t.endswith("{subject}"), (rid, t)


def test_prompts_are_rendered_templates(probes):
    for f in probes:
        assert len(f.prompts) >= 3, f.id
        assert len(set(f.prompts)) == len(f.prompts), f.id
        for p in f.prompts:
            assert "{" not in p and "}" not in p, (f.id, p)
            assert p == p.strip(), (f.id, p)
            assert p[0].isupper() or p.startswith(f.subject), (f.id, p)
            assert f.subject.lower() in p.lower(), (f.id, p)


def test_prompts_follow_relation_templates(probes):
    for f in probes:
        rel = probes.relations[f.relation]
        assert f.prompts == tuple(render(t, f.subject) for t in rel.templates)


def test_render_capitalises_only_a_lower_case_first_word():
    assert render("{subject} was invented by", "the telephone") == "The telephone was invented by"
    assert render("{subject} was founded by", "eBay") == "eBay was founded by"
    assert render("The capital of {subject} is", "the United States") == "The capital of the United States is"


# --- raw data hygiene ----------------------------------------------------------------------------

def test_every_tsv_line_has_three_fields():
    for rid, text in _tsv_files().items():
        assert text.endswith("\n"), rid
        lines = text[:-1].split("\n")
        assert lines[0] == "subject\tobject\taliases", rid
        for n, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            assert len(fields) == 3, f"{rid}.tsv line {n}: {line!r}"
            assert fields[0] and fields[1], f"{rid}.tsv line {n}: {line!r}"
            assert all(x == x.strip() for x in fields), f"{rid}.tsv line {n}: {line!r}"
            assert "\r" not in line, f"{rid}.tsv line {n}"


def test_no_duplicate_subject_within_a_relation(probes):
    for rel, facts in _by_relation(probes).items():
        subjects = Counter(f.subject.strip().lower() for f in facts)
        dups = [s for s, c in subjects.items() if c > 1]
        assert not dups, (rel, dups)


def test_answers_are_short_and_clean(probes):
    for f in probes:
        for a in f.answers:
            assert a == a.strip() and a, (f.id, a)
            assert not re.search(r"[\t\n|]", a), (f.id, a)
            assert 1 <= len(a.split()) <= 4, (f.id, a)
            # an article would make the first answer token meaningless for the rank metric
            assert not a.lower().startswith(("the ", "a ", "an ")), (f.id, a)
        lowered = [a.lower() for a in f.answers]
        assert len(set(lowered)) == len(lowered), f.id


def test_fact_ids_are_unique_and_readable(probes):
    ids = [f.id for f in probes]
    assert len(set(ids)) == len(ids)
    for f in probes:
        assert f.id == f"{f.relation}:{slugify(f.subject)}"
        assert re.fullmatch(r"[a-z_]+:[a-z0-9]+(-[a-z0-9]+)*", f.id), f.id


# --- distractors ---------------------------------------------------------------------------------

def test_distractors_come_from_the_same_relation_and_are_wrong(probes):
    objects = {rel: {f.object for f in facts} for rel, facts in _by_relation(probes).items()}
    for f in probes:
        assert len(f.distractors) == 3, f.id
        assert len(set(f.distractors)) == 3, f.id
        answers = {a.lower() for a in f.answers}
        for d in f.distractors:
            assert d in objects[f.relation], (f.id, d)
            assert d.lower() not in answers, (f.id, d)


def test_distractor_count_is_a_parameter():
    assert all(len(f.distractors) == 1 for f in load_builtin(n_distractors=1))
    assert all(f.distractors == () for f in load_builtin(n_distractors=0))


# --- split ---------------------------------------------------------------------------------------

def test_split_is_deterministic(probes):
    load_builtin.cache_clear()
    again = load_builtin()
    assert again is not probes
    assert [f.to_dict() for f in again] == [f.to_dict() for f in probes]
    assert again.content_hash() == probes.content_hash()


def test_both_splits_in_every_relation_and_balanced(probes):
    for rel, facts in _by_relation(probes).items():
        assert {f.split for f in facts} == {"train", "eval"}, rel
    frac = sum(f.split == "eval" for f in probes) / len(probes)
    assert 0.4 <= frac <= 0.6, frac
    assert len(probes.split("eval")) + len(probes.split("train")) == len(probes)


def test_same_subject_same_split_across_relations(probes):
    splits = defaultdict(set)
    relations = defaultdict(set)
    for f in probes:
        key = f.subject.strip().lower()
        splits[key].add(f.split)
        relations[key].add(f.relation)
    shared = [s for s, rels in relations.items() if len(rels) > 1]
    assert len(shared) >= 50  # countries and companies recur, so the check has teeth
    for s in shared:
        assert len(splits[s]) == 1, s


def test_eval_fraction_extremes():
    assert {f.split for f in load_builtin(eval_fraction=0.0)} == {"train"}
    assert {f.split for f in load_builtin(eval_fraction=1.0)} == {"eval"}
    with pytest.raises(ProbeError):
        load_builtin(eval_fraction=1.5)


# --- loader validation ---------------------------------------------------------------------------

HEAD = "subject\tobject\taliases\n"


@pytest.mark.parametrize("body, line, field", [
    ("France\tParis\t\nSpain\tMadrid\n", 3, "3 tab-separated fields"),
    ("France\tParis\t\nSpain\tMadrid\t\textra\n", 3, "3 tab-separated fields"),
    ("France\t\t\n", 2, "'object'"),
    ("\tParis\t\n", 2, "'subject'"),
    ("France\tParis \t\n", 2, "'object'"),
    ("France\tParis\tParis\n", 2, "'aliases'"),
    ("France\tParis\tA||B\n", 2, "'aliases'"),
    ("France\tParis\t\n\nSpain\tMadrid\t\n", 3, "3 tab-separated fields"),
    ("France\tParis\t\nfrance\tLyon\t\n", 3, "'subject'"),
])
def test_malformed_line_names_file_line_and_field(body, line, field):
    with pytest.raises(ProbeError) as e:
        parse_facts_tsv(HEAD + body, "data/facts/capital.tsv")
    msg = str(e.value)
    assert "data/facts/capital.tsv" in msg
    assert f"line {line}" in msg
    assert field in msg


def test_bad_header_and_empty_file_are_errors():
    with pytest.raises(ProbeError, match="line 1"):
        parse_facts_tsv("subject,object,aliases\nFrance\tParis\t\n", "x.tsv")
    with pytest.raises(ProbeError, match="no facts"):
        parse_facts_tsv(HEAD, "x.tsv")


def test_good_tsv_parses():
    rows = parse_facts_tsv(HEAD + "the United States\tWashington\tWashington, D.C.|Washington DC\n", "x")
    assert rows[0].subject == "the United States"
    assert rows[0].aliases == ("Washington, D.C.", "Washington DC")
    assert rows[0].line == 2


@pytest.mark.parametrize("raw", [
    {},
    {"capital": {"name": "capital", "templates": []}},
    {"capital": {"name": "capital", "templates": ["The capital of X is"]}},
    {"capital": {"name": "capital", "templates": ["The capital of {subject} is "]}},
    {"capital": {"name": "", "templates": ["The capital of {subject} is"]}},
    {"Capital": {"name": "capital", "templates": ["The capital of {subject} is"]}},
    {"capital": {"templates": ["The capital of {subject} is"]}},
])
def test_bad_relations_json_is_an_error(raw):
    with pytest.raises(ProbeError, match=r"relations\.json"):
        parse_relations(raw, "relations.json")
