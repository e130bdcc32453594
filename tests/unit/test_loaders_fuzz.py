"""Property: whatever a probe file holds, loading it returns a ProbeSet or raises one ProbeError line.

Every loader (ROME known_1000 JSON, LAMA/ParaRel JSONL with their side files, PopQA TSV, generic
JSONL) is fed arbitrary bytes, arbitrary JSON and rows whose keys are the formats' own field
names with values of any JSON type, or plausible rows of each format with fields dropped or
replaced. Examples are bounded, derandomized (the same ones every run, no example database) and
the deadline is off, so the module runs in seconds and cannot flake. The crashes it found are
pinned as plain tests in test_loaders.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.knowledge.schema import ProbeSet

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELDS = (
    "known_id", "subject", "attribute", "template", "prediction", "prompt", "relation_id",  # ROME
    "sub_label", "obj_label", "predicate_id", "uuid", "label", "sub_uri", "obj_uri",  # LAMA
    "subj", "prop", "obj", "question", "possible_answers", "id", "prop_id", "s_pop", "o_pop",  # PopQA
    "answer", "choices", "relation", "split", "aliases",  # generic
    "pattern",  # ParaRel pattern files
)
NAMES = ("probes.jsonl", "known_1000.json", "popqa.tsv", "P36.jsonl", "facts.csv", "facts.txt")

texts = st.text(max_size=40) | st.sampled_from(
    ["", " ", "\n", "[X] is the capital of [Y] .", "[Y] [X]", "{}", "{subject}", "train", "eval", "P36",
     "Paris", '["a", "b"]', "[", "\t", ",", '"'])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
rows = st.dictionaries(st.sampled_from(FIELDS) | texts, json_values, max_size=8)
words = st.sampled_from(["Paris", "France", "Berlin", "Germany", "the", "is", " ", "{subject}", "{}", "[X]", "[Y]",
                         "\u2028", "\x85", "é", "\t", "1"])
phrase = st.lists(words, min_size=1, max_size=5).map(" ".join) | texts
numbers = st.integers() | st.floats() | st.sampled_from([float("inf"), float("-inf"), float("nan"), 10**30])
VALID = {  # one plausible row per format; the fuzz replaces or drops some of its fields
    "rome": {"known_id": st.integers(0, 3) | numbers, "subject": phrase, "attribute": phrase, "template": phrase,
             "prompt": phrase, "relation_id": st.sampled_from(["P30", "P1"])},
    "lama": {"sub_label": phrase, "obj_label": phrase, "predicate_id": st.sampled_from(["P36", "x"]),
             "uuid": st.sampled_from(["u1", "u2"]) | phrase, "template": phrase},
    "popqa": {"id": st.integers(0, 3) | phrase, "subj": phrase, "prop": phrase, "obj": phrase, "question": phrase,
              "possible_answers": st.lists(phrase, max_size=3), "s_pop": numbers | phrase, "o_pop": numbers,
              "prop_id": numbers},
    "generic": {"prompt": phrase, "answer": phrase, "relation": phrase, "subject": phrase,
                "split": st.sampled_from(["train", "eval"]) | phrase, "choices": st.lists(phrase, max_size=4),
                "aliases": st.lists(phrase, max_size=3), "id": st.sampled_from(["a", "b"]) | phrase},
}


def mutated(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """A row of ``fields`` with some of them dropped and some set to arbitrary JSON values."""
    @st.composite
    def build(draw: st.DrawFn) -> dict:
        base = draw(st.fixed_dictionaries(fields))
        keep = {k: v for k, v in base.items() if draw(st.integers(0, 7))}  # drops one field in eight
        return {**keep, **draw(st.dictionaries(st.sampled_from(sorted(base)), json_values, max_size=2))}
    return build()


def outcome(path: Path) -> ProbeSet | None:
    """Load ``path``; a ProbeError must be one line. Any other exception fails the test."""
    try:
        return load_probes(path)
    except ProbeError as e:
        assert "\n" not in str(e) and "\r" not in str(e), repr(str(e))
        return None


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jsonl(items: list) -> bytes:
    return "".join(json.dumps(i) + "\n" for i in items).encode()


def tsv(header: list[str], body: list[list]) -> bytes:
    cells = [header, *[["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in r] for r in body]]
    return "".join("\t".join(c.replace("\t", " ").replace("\n", " ") for c in line) + "\n" for line in cells).encode()


@FUZZ
@given(data=st.binary(max_size=300), name=st.sampled_from(NAMES))
def test_arbitrary_bytes(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), name, data))


@FUZZ
@given(text=st.text(max_size=300), name=st.sampled_from(NAMES))
def test_arbitrary_text(text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), name, text.encode("utf-8", "surrogatepass")))


@FUZZ
@given(value=json_values, as_lines=st.booleans())
def test_arbitrary_json(value: object, as_lines: bool) -> None:
    data = jsonl(value if isinstance(value, list) else [value]) if as_lines else json.dumps(value).encode()
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), "probes.jsonl" if as_lines else "probes.json", data))


@FUZZ
@given(items=st.lists(rows, min_size=1, max_size=5), as_list=st.booleans())
def test_rows_with_known_fields(items: list[dict], as_list: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), "known_1000.json" if as_list else "probes.jsonl",
                      json.dumps(items).encode() if as_list else jsonl(items)))


@pytest.mark.parametrize("kind", sorted(VALID))
@FUZZ
@given(data=st.data(), as_list=st.booleans())
def test_plausible_rows_of_each_format(kind: str, data: st.DataObject, as_list: bool) -> None:
    items = data.draw(st.lists(mutated(VALID[kind]), min_size=1, max_size=5))
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), "P36.json" if as_list else "P36.jsonl",
                      json.dumps(items).encode() if as_list else jsonl(items)))


@FUZZ
@given(items=st.lists(rows, min_size=1, max_size=4), relations=st.lists(rows, max_size=3),
       patterns=st.lists(rows, max_size=3), side_text=st.none() | st.text(max_size=60))
def test_lama_with_side_files(items: list[dict], relations: list[dict], patterns: list[dict],
                              side_text: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write(data, "relations.jsonl", side_text.encode("utf-8", "surrogatepass") if side_text is not None
              else jsonl(relations))
        write(data, "pattern_data/graphs_json/P36.jsonl", jsonl(patterns))
        outcome(write(data, "TREx/P36.jsonl", jsonl([{"sub_label": "x", "obj_label": "y", **r} for r in items])))


@FUZZ
@given(header=st.lists(st.sampled_from(FIELDS) | texts, min_size=1, max_size=8),
       body=st.lists(st.lists(json_values, max_size=9), max_size=4), popqa=st.booleans())
def test_tables(header: list[str], body: list[list], popqa: bool) -> None:
    if popqa:
        header = ["subj", "prop", "obj", "question", "possible_answers", *header]
    with tempfile.TemporaryDirectory() as tmp:
        outcome(write(Path(tmp), "popqa.tsv", tsv(header, body)))
