"""Fact templates and the --relations list: out-of-range or empty input is an error, never a fallback."""

from __future__ import annotations

import pytest

from probe.errors import ProbeError
from probe.knowledge.builtin import load_builtin
from probe.knowledge.schema import Fact, parse_relation_list
from probe.knowledge.scoring import encode_facts

PARIS = Fact("f1", "capital", "France", "Paris", ("The capital of France is", "France's capital is",
                                                  "France has its capital in"))
ROME = Fact("k1", "P30", "Rome", "Europe", ("Rome is located in the continent of",))


def test_prompt_for_each_template():
    assert [PARIS.prompt_for(t) for t in range(3)] == list(PARIS.prompts)


@pytest.mark.parametrize(("fact", "template", "valid"), [
    (PARIS, 3, "templates 0 to 2: give --template 0..2"),
    (PARIS, 99, "templates 0 to 2"),
    (PARIS, -1, "templates 0 to 2"),
    (ROME, 1, "only template 0: give --template 0"),
])
def test_template_out_of_range_names_relation_and_range(fact, template, valid):
    with pytest.raises(ProbeError) as info:
        fact.prompt_for(template)
    message = str(info.value)
    assert f"--template {template} is out of range for relation {fact.relation!r}" in message
    assert valid in message


def test_scoring_refuses_a_template_the_relation_lacks():
    # the template is checked before any tokenisation, so no tokenizer is needed to see the refusal
    with pytest.raises(ProbeError, match=r"--template 99 .* relation 'capital'"):
        encode_facts([PARIS], tokenizer=None, template=99, max_positions=512)


def test_builtin_relations_have_templates_0_to_2():
    fact = next(iter(load_builtin()))
    assert fact.prompt_for(2) == fact.prompts[2]
    with pytest.raises(ProbeError, match=r"0\.\.2"):
        fact.prompt_for(3)


@pytest.mark.parametrize(("text", "ids"), [
    (None, ()),
    ("capital", ("capital",)),
    (" capital , currency,", ("capital", "currency")),
    ("capital,capital", ("capital",)),
])
def test_relation_list(text, ids):
    assert parse_relation_list(text) == ids


@pytest.mark.parametrize("text", ["", ",", " , ,", "  "])
def test_relation_list_that_names_nothing_is_an_error(text):
    with pytest.raises(ProbeError, match="names no relation") as info:
        parse_relation_list(text)
    assert "\n" not in str(info.value)


def test_unknown_relation_names_the_closest_one():
    known = load_builtin().relation_ids
    assert parse_relation_list("capital,currency", known) == ("capital", "currency")
    with pytest.raises(ProbeError, match=r"unknown relation 'captial': did you mean 'capital'\?"):
        parse_relation_list("captial", known)
    with pytest.raises(ProbeError, match=r"unknown relation 'capitol'.*choose from animal_class"):
        load_builtin().select_relations(["capitol"])
