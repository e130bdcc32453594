"""Corpus: text loading, probe-leak detection, deterministic self-generated text."""

from __future__ import annotations

import json

import pytest

from probe.config import ModelSpec
from probe.corpus import (
    SEED_PROMPTS,
    filter_probe_leaks,
    find_probe_leaks,
    general_corpus,
    load_text,
    refuse_probe_leaks,
)
from probe.errors import ProbeError
from probe.knowledge.schema import Fact, ProbeSet
from probe.models.load import load_model

PROBES = ProbeSet("t", (
    Fact("a", "capital", "France", "Paris", ("The capital of France is",), split="eval"),
    Fact("b", "capital", "Spain", "Madrid", ("The capital of Spain is",), split="train"),
))


def test_load_text_paragraphs_lines_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("one\nstill one\n\n  two  \n\n\n")
    assert load_text(tmp_path / "p.txt") == ["one\nstill one", "two"]
    (tmp_path / "l.txt").write_text("a\nb\n\nc")
    assert load_text(tmp_path / "l.txt") == ["a\nb", "c"]
    (tmp_path / "n.txt").write_text("a\nb\nc\n")
    assert load_text(tmp_path / "n.txt") == ["a", "b", "c"]
    (tmp_path / "j.jsonl").write_text(json.dumps({"text": "x y"}) + "\n\n" + json.dumps({"text": "z"}) + "\n")
    assert load_text(tmp_path / "j.jsonl") == ["x y", "z"]


@pytest.mark.parametrize(("name", "content", "match"), [
    ("missing.txt", None, "does not exist"),
    ("empty.txt", "  \n\n", "contains no text"),
    ("bin.txt", b"\x00\x01\x02", "binary"),
    ("latin.txt", b"caf\xe9", "not UTF-8"),
    ("bad.jsonl", "{not json}\n", "line 1 is not JSON"),
    ("notext.jsonl", '{"body": "x"}\n', "no string field 'text'"),
])
def test_load_text_errors_are_one_line(tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ProbeError, match=match) as err:
        load_text(path)
    assert "\n" not in str(err.value)


def test_leaks_are_case_and_whitespace_insensitive_and_eval_only():
    texts = ["Nothing here.", "As we know,  the CAPITAL of\nfrance is Paris.", "The capital of Spain is Madrid."]
    assert list(find_probe_leaks(texts, PROBES)) == [1]
    kept, removed = filter_probe_leaks(texts, PROBES)
    assert kept == [texts[0], texts[2]] and removed == 1
    with pytest.raises(ProbeError, match="eval-split probe prompts"):
        refuse_probe_leaks(texts, PROBES, "calib.txt")
    refuse_probe_leaks([texts[0], texts[2]], PROBES, "calib.txt")


def test_general_corpus_is_deterministic_and_cached(artifacts):
    loaded = load_model(ModelSpec("tiny-llama"))
    a = general_corpus(loaded, n_samples=3, max_new_tokens=6, seed=1)
    files = list((artifacts / "corpus" / "tiny-llama").glob("*.jsonl"))
    assert len(a) == 3 and len(files) == 1
    assert all(t.startswith(p) and len(t) > len(p) for t, p in zip(a, SEED_PROMPTS, strict=False))
    files[0].unlink()
    assert general_corpus(loaded, n_samples=3, max_new_tokens=6, seed=1) == a  # regenerated identically
    assert general_corpus(loaded, n_samples=3, max_new_tokens=6, seed=2) != a


def test_seed_prompts_do_not_ask_builtin_probes():
    from probe.knowledge.loaders import load_probes

    assert not find_probe_leaks(list(SEED_PROMPTS), load_probes("builtin"), split="all")
    assert 32 <= len(SEED_PROMPTS) <= 64
