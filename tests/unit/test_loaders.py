"""Tests for probe.knowledge.loaders: format detection, field mapping, splits, distractors, errors.

Fixture rows are copied from the public files (ROME ``known_1000.json``; ParaRel
``data/trex_lms_vocab/P36.jsonl``, ``P279.jsonl`` and ``pattern_data/graphs_json/P279.jsonl``; LAMA
``relations.jsonl`` templates; the PopQA README row) unless a comment says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.knowledge.loaders import N_DISTRACTORS, lama_template_to_prompt, load_probes
from probe.knowledge.schema import ProbeSet, split_for

# ---------------------------------------------------------------------------------------------------
# fixtures

KNOWN_1000 = [
    {"known_id": 0, "subject": "Vinson Massif", "attribute": "Antarctica",
     "template": "{} is located in the continent",
     "prediction": " of Antarctica. It is the largest of the three",
     "prompt": "Vinson Massif is located in the continent of", "relation_id": "P30"},
    {"known_id": 1, "subject": "Beats Music", "attribute": "Apple", "template": "{} is owned by",
     "prediction": " Apple, which is also the owner of Beats Electronics",
     "prompt": "Beats Music is owned by", "relation_id": "P127"},
    {"known_id": 2, "subject": "Audible.com", "attribute": "Amazon", "template": "{} is owned by",
     "prediction": " Amazon.com, Inc. or its affiliates.", "prompt": "Audible.com is owned by",
     "relation_id": "P127"},
]

# LAMA data/relations.jsonl lines (label, template, type as in the release; descriptions shortened).
LAMA_RELATIONS = [
    {"relation": "P36", "template": "The capital of [X] is [Y] .", "label": "capital",
     "description": "primary city of a country, state or other type of administrative territorial entity",
     "type": "1-1"},
    {"relation": "P1376", "template": "[X] is the capital of [Y] .", "label": "capital of",
     "description": "country, state, department, canton or other administrative division", "type": "1-1"},
    {"relation": "P136", "template": "[X] plays [Y] music .", "label": "genre",
     "description": "creative work's genre or an artist's field of work (P101)", "type": "N-1"},
]

# (sub_label, obj_label, uuid) from ParaRel data/trex_lms_vocab/P36.jsonl (LAMA T-REx facts).
P36_ROWS = [
    ("Cook County", "Chicago", "4168a6fb-d710-4678-93f9-9447927a0a35"),
    ("Nebraska", "Lincoln", "3bc51dee-0ae6-40ba-863f-5549382dd210"),
    ("Germany", "Berlin", "aa0c6755-5881-4892-8e12-e817868a3b62"),
    ("Australia", "Canberra", "63a3fe8d-5191-49af-a5c1-a91343baf2e6"),
    ("Kingdom of France", "Paris", "f1a67e10-9770-4621-95ed-68ab0e921f4e"),
    ("Second French Empire", "Paris", "2b9bae59-f465-4ec8-acb5-e80a7902f605"),
]

P279_ROWS = [
    {"sub_label": "lenticular galaxy", "obj_label": "galaxy", "uuid": "66d578d5-62a6-4fae-8160-9bfef162a6cc"},
    {"sub_label": "Champagne", "obj_label": "wine", "uuid": "e8816d5d-91a8-4d99-ab14-e661ee56adac"},
    {"sub_label": "hamate bone", "obj_label": "bone", "uuid": "8db4a615-8628-4202-bff7-e3ceba281f35"},
    {"sub_label": "rift lake", "obj_label": "lake", "uuid": "598bab8b-919b-403a-b7b6-2a3badbf3f85"},
]
P279_PATTERNS = [
    {"pattern": "[X] is a subclass of [Y].", "lemma": "subclass", "extended_lemma": "is-subclass",
     "tense": "present"},
    {"pattern": "[X], which is a subclass of [Y].", "lemma": "subclass", "extended_lemma": "is-subclass",
     "tense": "present"},
    {"pattern": "[X],  a subclass of [Y].", "lemma": "subclass", "extended_lemma": "is-subclass",
     "tense": "present"},
    {"pattern": "[X],  a type of [Y].", "lemma": "subclass", "extended_lemma": "is-subclass",
     "tense": "present"},
]

POPQA_HEADER = ("id\tsubj\tprop\tobj\tsubj_id\tprop_id\tobj_id\ts_aliases\to_aliases\ts_uri\to_uri\t"
                "s_wiki_title\to_wiki_title\ts_pop\to_pop\tquestion\tpossible_answers")
POPQA_RANKIN = ('4222362\tGeorge Rankin\toccupation\tpolitician\t1850297\t22\t2834605\t'
                '"[""George James Rankin""]"\t'
                '"[""political leader"",""political figure"",""polit."",""pol""]"\t'
                'http://www.wikidata.org/entity/Q5543720\thttp://www.wikidata.org/entity/Q82955\t'
                'George Rankin\tPolitician\t142\t25692\tWhat is George Rankin\'s occupation?\t'
                '"[""politician"", ""political leader"", ""political figure"", ""polit."", ""pol""]"')


def popqa_row(rid: int, subj: str, prop: str, obj: str, question: str, answers: list[str]) -> str:
    """A row in the PopQA TSV layout (ids, URIs and popularity here are illustrative)."""
    quoted = '"' + json.dumps(answers).replace('"', '""') + '"'
    return "\t".join([str(rid), subj, prop, obj, "1", "22", "2", '"[]"', '"[]"', "http://x/Q1",
                      "http://x/Q2", subj, obj, "10", "20", question, quoted])


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lama_trex_row(sub: str, obj: str, uuid: str, predicate: str = "P36") -> dict:
    return {"uuid": uuid, "obj_uri": "Q1", "obj_label": obj, "sub_uri": "Q2", "sub_label": sub,
            "predicate_id": predicate,
            "evidences": [{"sub_surface": sub, "obj_surface": obj,
                           "masked_sentence": f"{sub} has its seat in [MASK]."}]}


def error_of(path: Path | str, **kwargs: float) -> str:
    with pytest.raises(ProbeError) as info:
        load_probes(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def by_id(probes: ProbeSet) -> dict:
    return {f.id: f for f in probes}


# ---------------------------------------------------------------------------------------------------
# ROME known_1000


def test_rome_known_fields_and_name(tmp_path: Path) -> None:
    probes = load_probes(write_json(tmp_path / "known_1000.json", KNOWN_1000))
    assert probes.name == "known_1000"
    assert [f.id for f in probes] == ["known-0", "known-1", "known-2"]
    vinson = by_id(probes)["known-0"]
    assert vinson.relation == "P30"
    assert vinson.subject == "Vinson Massif"
    assert vinson.object == "Antarctica"
    # the file's prompt, not the template (the template lacks the final "of")
    assert vinson.prompts == ("Vinson Massif is located in the continent of",)
    assert vinson.meta["prediction"] == " of Antarctica. It is the largest of the three"
    assert vinson.split == split_for("Vinson Massif", 0.5)
    assert probes.relation_ids == ["P127", "P30"]
    assert probes.relations["P127"].templates == ("{subject} is owned by",)
    assert probes.relations["P30"].templates == ("{subject} is located in the continent of",)


def test_rome_distractors_come_from_the_same_relation(tmp_path: Path) -> None:
    facts = by_id(load_probes(write_json(tmp_path / "known_1000.json", KNOWN_1000)))
    assert facts["known-1"].distractors == ("Amazon",)
    assert facts["known-2"].distractors == ("Apple",)
    assert facts["known-0"].distractors == ()  # the only P30 object


def test_rome_detected_from_content_not_extension(tmp_path: Path) -> None:
    probes = load_probes(write_json(tmp_path / "facts.txt", KNOWN_1000))
    assert probes.name == "facts"
    assert len(probes) == 3


def test_rome_prompt_built_from_template_when_absent(tmp_path: Path) -> None:
    rows = [dict(KNOWN_1000[1])]
    del rows[0]["prompt"]
    fact = next(iter(load_probes(write_json(tmp_path / "k.json", rows))))
    assert fact.prompt == "Beats Music is owned by"


def test_rome_split_is_by_subject_for_every_fraction(tmp_path: Path) -> None:
    path = write_json(tmp_path / "known_1000.json", KNOWN_1000)
    for tenth in range(11):
        for fact in load_probes(path, eval_fraction=tenth / 10):
            assert fact.split == split_for(fact.subject, tenth / 10)


def test_rome_missing_field_names_element_and_field(tmp_path: Path) -> None:
    rows = [dict(r) for r in KNOWN_1000]
    del rows[2]["attribute"]
    message = error_of(write_json(tmp_path / "known_1000.json", rows))
    assert "known_1000.json" in message
    assert "element 2" in message
    assert "'attribute'" in message


def test_rome_duplicate_known_id(tmp_path: Path) -> None:
    rows = [dict(r) for r in KNOWN_1000]
    rows[2]["known_id"] = 1
    message = error_of(write_json(tmp_path / "known_1000.json", rows))
    assert "element 2" in message and "'known_id'" in message and "element 1" in message


def test_json_list_element_that_is_not_an_object(tmp_path: Path) -> None:
    message = error_of(write_json(tmp_path / "known_1000.json", [KNOWN_1000[0], ["Vinson Massif"]]))
    assert "known_1000.json element 1" in message


# ---------------------------------------------------------------------------------------------------
# LAMA T-REx and ParaRel


@pytest.mark.parametrize(("template", "prompt"), [
    ("The capital of [X] is [Y] .", "The capital of {subject} is"),
    ("[X] is the capital of [Y] .", "{subject} is the capital of"),
    ("[X],  a type of [Y].", "{subject}, a type of"),
    ("[X] is a subclass of [Y]", "{subject} is a subclass of"),
    ("[X] plays [Y] music .", None),
    ("[X] is [Y] citizen .", None),
    ("[Y] participated in the [X] .", None),
    ("[X] (born [Y]).", None),
    ("[X] [Y] .", None),
])
def test_lama_template_to_prompt(template: str, prompt: str | None) -> None:
    assert lama_template_to_prompt(template) == prompt


def lama_tree(tmp_path: Path, rows: list[dict], relation: str = "P36") -> Path:
    """LAMA's layout: data/relations.jsonl and data/TREx/<relation>.jsonl."""
    write_jsonl(tmp_path / "data" / "relations.jsonl", LAMA_RELATIONS)
    return write_jsonl(tmp_path / "data" / "TREx" / f"{relation}.jsonl", rows)


def test_lama_trex_with_relations_file_in_parent_folder(tmp_path: Path) -> None:
    path = lama_tree(tmp_path, [lama_trex_row(*r) for r in P36_ROWS])
    probes = load_probes(path)
    assert probes.name == "P36"
    facts = by_id(probes)
    germany = facts["aa0c6755-5881-4892-8e12-e817868a3b62"]
    assert (germany.relation, germany.subject, germany.object) == ("P36", "Germany", "Berlin")
    assert germany.prompts == ("The capital of Germany is",)
    assert germany.split == split_for("Germany", 0.5)
    assert probes.relations["P36"].name == "capital"
    assert probes.relations["P36"].templates == ("The capital of {subject} is",)


def test_lama_row_predicate_id_wins_over_file_name(tmp_path: Path) -> None:
    rows = [lama_trex_row(*P36_ROWS[2]), lama_trex_row("Berlin", "Germany", "u-1376", predicate="P1376")]
    facts = by_id(load_probes(lama_tree(tmp_path, rows)))
    assert facts["u-1376"].relation == "P1376"
    assert facts["u-1376"].prompts == ("Berlin is the capital of",)
    assert facts["u-1376"].distractors == ()  # no other P1376 object; P36 objects are not used


def test_lama_distractors_are_other_objects_of_the_relation(tmp_path: Path) -> None:
    probes = load_probes(lama_tree(tmp_path, [lama_trex_row(*r) for r in P36_ROWS]))
    objects = {o for _, o, _ in P36_ROWS}
    for fact in probes:
        assert len(fact.distractors) == N_DISTRACTORS
        assert fact.object not in fact.distractors
        assert set(fact.distractors) <= objects
        assert len(set(fact.distractors)) == len(fact.distractors)
    # "Paris" is the answer of two rows; neither of them may get it as a distractor
    for fact in probes:
        if fact.object == "Paris":
            assert "Paris" not in fact.distractors


def test_lama_template_in_row_is_enough(tmp_path: Path) -> None:
    # the row as flattened by the Hugging Face "lama" trex config (example from its dataset card)
    row = {"description": "the item ... applies to the value", "label": "applies to jurisdiction",
           "masked_sentence": "It is known as a principality as it is a monarchy headed by two "
                              "Co-Princes - the Spanish/Roman Catholic Bishop of Urgell and the "
                              "President of [MASK].",
           "obj_label": "France", "obj_surface": "France", "obj_uri": "Q142", "predicate_id": "P1001",
           "sub_label": "president of the French Republic", "sub_surface": "President",
           "sub_uri": "Q191954", "template": "[X] is a legal term in [Y] .",
           "template_negated": "[X] is not a legal term in [Y] .", "type": "N-M",
           "uuid": "3fe3d4da-9df9-45ba-8109-784ce5fba38a"}
    probes = load_probes(write_jsonl(tmp_path / "trex.jsonl", [row]))
    fact = next(iter(probes))
    assert fact.relation == "P1001"
    assert fact.prompt == "president of the French Republic is a legal term in"
    assert fact.id == "3fe3d4da-9df9-45ba-8109-784ce5fba38a"
    assert probes.relations["P1001"].name == "applies to jurisdiction"


def test_pararel_layout_relation_from_file_name_and_pattern_paraphrases(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write_jsonl(data / "trex_lms_vocab" / "P279.jsonl", P279_ROWS)
    # the four real P279 patterns, plus one (made up) that puts [Y] first: it must be skipped
    write_jsonl(data / "pattern_data" / "graphs_json" / "P279.jsonl",
                [*P279_PATTERNS, {"pattern": "[Y] has a subclass called [X]."}])
    probes = load_probes(path)
    facts = {f.subject: f for f in probes}
    galaxy = facts["lenticular galaxy"]
    assert galaxy.relation == "P279"
    assert galaxy.id == "66d578d5-62a6-4fae-8160-9bfef162a6cc"
    assert galaxy.prompts == ("lenticular galaxy is a subclass of",
                              "lenticular galaxy, which is a subclass of",
                              "lenticular galaxy, a subclass of",
                              "lenticular galaxy, a type of")
    assert galaxy.object == "galaxy"
    assert set(galaxy.distractors) == {"wine", "bone", "lake"}
    assert len(probes.relations["P279"].templates) == 4


def test_lama_middle_object_template_is_rejected(tmp_path: Path) -> None:
    # P136's LAMA template "[X] plays [Y] music ." cannot be a next-token prompt; ParaRel-style
    # (made-up) genre rows
    rows = [{"sub_label": "Miles Davis", "obj_label": "jazz", "uuid": "u1"},
            {"sub_label": "Johnny Cash", "obj_label": "country", "uuid": "u2"}]
    message = error_of(lama_tree(tmp_path, rows, relation="P136"))
    assert "P136.jsonl line 1" in message
    assert "'template'" in message
    assert "P136" in message and "[Y]" in message


def test_lama_usable_pattern_rescues_a_middle_object_template(tmp_path: Path) -> None:
    rows = [{"sub_label": "Miles Davis", "obj_label": "jazz", "uuid": "u1"}]
    path = lama_tree(tmp_path, rows, relation="P136")
    write_jsonl(tmp_path / "data" / "pattern_data" / "graphs_json" / "P136.jsonl",
                [{"pattern": "[X] plays [Y] music."}, {"pattern": "The genre of [X] is [Y]."}])
    fact = next(iter(load_probes(path)))
    assert fact.prompts == ("The genre of Miles Davis is",)


def test_lama_without_any_template(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "P36.jsonl", [lama_trex_row(*P36_ROWS[0])])
    message = error_of(path)
    assert "P36.jsonl line 1" in message and "'template'" in message and "relations.jsonl" in message


def test_lama_without_relation_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "capitals.jsonl",
                       [{"sub_label": "Germany", "obj_label": "Berlin", "template": "[X] has [Y] ."}])
    message = error_of(path)
    assert "capitals.jsonl line 1" in message and "'predicate_id'" in message


def test_lama_missing_obj_label_names_line(tmp_path: Path) -> None:
    rows = [lama_trex_row(*r) for r in P36_ROWS[:3]]
    del rows[2]["obj_label"]
    message = error_of(lama_tree(tmp_path, rows))
    assert "P36.jsonl line 3" in message and "'obj_label'" in message


def test_relations_file_given_as_data_gets_a_hint(tmp_path: Path) -> None:
    message = error_of(write_jsonl(tmp_path / "relations.jsonl", LAMA_RELATIONS))
    assert "relations.jsonl" in message and "TREx/P36.jsonl" in message


def test_malformed_relations_file_is_named(tmp_path: Path) -> None:
    path = lama_tree(tmp_path, [lama_trex_row(*P36_ROWS[0])])
    (tmp_path / "data" / "relations.jsonl").write_text('{"relation": "P36"}\n{"template": "x"}\n')
    message = error_of(path)
    assert "relations.jsonl line 2" in message and "'relation'" in message


# ---------------------------------------------------------------------------------------------------
# PopQA


def popqa_file(tmp_path: Path, *rows: str, name: str = "popQA.tsv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([POPQA_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_popqa_tsv_fields(tmp_path: Path) -> None:
    path = popqa_file(
        tmp_path, POPQA_RANKIN,
        popqa_row(1, "John Mayne", "occupation", "journalist", "What is John Mayne's occupation?",
                  ["journalist"]),
        popqa_row(2, "Henry Feilden", "occupation", "politician", "What is Henry Feilden's occupation?",
                  ["politician"]),
        popqa_row(3, "Kathy Saltzman", "occupation", "politician",
                  "What is Kathy Saltzman's occupation?", ["politician", "political leader"]),
        popqa_row(4, "Red", "genre", "country music", "What genre is Red?", ["country music", "country"]),
    )
    probes = load_probes(path)
    assert probes.name == "popQA"
    rankin = by_id(probes)["popqa-4222362"]
    assert rankin.relation == "occupation"
    assert (rankin.subject, rankin.object) == ("George Rankin", "politician")
    assert rankin.prompt == "Q: What is George Rankin's occupation? A:"
    assert rankin.aliases == ("political leader", "political figure", "polit.", "pol")
    assert rankin.answers[0] == "politician"
    assert rankin.meta["s_pop"] == 142 and rankin.meta["o_pop"] == 25692
    assert rankin.split == split_for("George Rankin", 0.5)
    assert rankin.distractors == ("journalist",)  # other occupations only, never a genre
    assert probes.relations["occupation"].templates[0] == "Q: What is {subject}'s occupation? A:"
    assert probes.relations["genre"].templates == ("Q: What genre is {subject}? A:",)


def test_popqa_distractors_skip_aliases_of_the_answer(tmp_path: Path) -> None:
    path = popqa_file(
        tmp_path, POPQA_RANKIN,
        popqa_row(1, "A. Person", "occupation", "political figure", "What is A. Person's occupation?",
                  ["political figure"]),
        popqa_row(2, "John Mayne", "occupation", "journalist", "What is John Mayne's occupation?",
                  ["journalist"]),
    )
    rankin = by_id(load_probes(path))["popqa-4222362"]
    assert rankin.distractors == ("journalist",)


def test_popqa_detected_in_a_txt_file_and_as_csv(tmp_path: Path) -> None:
    assert len(load_probes(popqa_file(tmp_path, POPQA_RANKIN, name="questions.txt"))) == 1
    csv_path = tmp_path / "popqa.csv"
    csv_path.write_text("id,subj,prop,obj,question,possible_answers\n"
                        '7,George Rankin,occupation,politician,What is George Rankin\'s occupation?,'
                        '"[""politician""]"\n', encoding="utf-8")
    fact = next(iter(load_probes(csv_path)))
    assert fact.prompt == "Q: What is George Rankin's occupation? A:"


def test_popqa_bad_possible_answers(tmp_path: Path) -> None:
    bad = popqa_row(5, "John Mayne", "occupation", "journalist", "What is John Mayne's occupation?",
                    ["journalist"]).rsplit("\t", 1)[0] + "\tjournalist, reporter"
    message = error_of(popqa_file(tmp_path, POPQA_RANKIN, bad))
    assert "popQA.tsv line 3" in message and "'possible_answers'" in message


def test_popqa_short_row_names_missing_column(tmp_path: Path) -> None:
    short = "\t".join(POPQA_RANKIN.split("\t")[:15])
    message = error_of(popqa_file(tmp_path, short))
    assert "popQA.tsv line 2" in message and "'question'" in message


def test_popqa_header_only(tmp_path: Path) -> None:
    message = error_of(popqa_file(tmp_path))
    assert "popQA.tsv" in message and "no rows" in message


# ---------------------------------------------------------------------------------------------------
# generic JSONL


GENERIC = [
    {"id": "cap-fr", "prompt": "The capital of France is", "answer": "Paris", "relation": "capital",
     "subject": "France", "choices": ["Paris", "Lyon", "Marseille"], "split": "train"},
    {"id": "cap-de", "prompt": "The capital of Germany is", "answer": "Berlin", "relation": "capital",
     "subject": "Germany", "aliases": ["Berlin, Germany"]},
    {"id": "cap-it", "prompt": "The capital of Italy is", "answer": "Rome", "relation": "capital",
     "subject": "Italy"},
    {"prompt": "Water freezes at a temperature of", "answer": "0", "split": "eval"},
]


def test_generic_fields(tmp_path: Path) -> None:
    probes = load_probes(write_jsonl(tmp_path / "probes.jsonl", GENERIC))
    assert probes.name == "probes"
    facts = by_id(probes)
    france = facts["cap-fr"]
    assert (france.relation, france.subject, france.object) == ("capital", "France", "Paris")
    assert france.distractors == ("Lyon", "Marseille")  # the choices minus the answer
    assert france.split == "train"  # the row's own split wins
    germany = facts["cap-de"]
    assert germany.aliases == ("Berlin, Germany",)
    assert germany.split == split_for("Germany", 0.5)
    assert set(germany.distractors) == {"Paris", "Rome"}  # drawn from the relation
    water = next(f for f in probes if f.id.startswith("generic-"))
    assert water.relation == "generic" and water.subject == "" and water.split == "eval"
    assert probes.relations["capital"].templates == ("The capital of {subject} is",)


def test_generic_ids_are_stable_and_unique(tmp_path: Path) -> None:
    first = load_probes(write_jsonl(tmp_path / "a.jsonl", GENERIC))
    second = load_probes(write_jsonl(tmp_path / "b.jsonl", GENERIC))
    assert [f.id for f in first] == [f.id for f in second]
    assert first.content_hash() == second.content_hash()
    assert len({f.id for f in first}) == len(first)


def test_generic_split_follows_eval_fraction(tmp_path: Path) -> None:
    rows = [{"prompt": f"Fact number {i} is", "answer": str(i), "subject": f"s{i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    assert {f.split for f in load_probes(path, eval_fraction=0.0)} == {"train"}
    assert {f.split for f in load_probes(path, eval_fraction=1.0)} == {"eval"}
    half = load_probes(path, eval_fraction=0.5)
    assert [f.split for f in half] == [split_for(f"s{i}", 0.5) for i in range(20)]
    assert {f.split for f in half} == {"train", "eval"}


def test_distractors_in_a_large_relation_are_deterministic_and_varied(tmp_path: Path) -> None:
    rows = [{"prompt": f"Item {i} is filed under", "answer": f"label {i}", "relation": "filing"}
            for i in range(300)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    first, second = load_probes(path), load_probes(path)
    answers = {r["answer"] for r in rows}
    for a, b in zip(first, second, strict=True):
        assert a.distractors == b.distractors
        assert len(set(a.distractors)) == N_DISTRACTORS
        assert a.object not in a.distractors and set(a.distractors) <= answers
    assert len({f.distractors for f in first}) > 250
    assert len({d for f in first for d in f.distractors}) > 250  # the whole relation is used


def test_generic_json_list_is_accepted(tmp_path: Path) -> None:
    probes = load_probes(write_json(tmp_path / "probes.json", GENERIC))
    assert len(probes) == 4
    assert by_id(probes)["cap-fr"].meta["location"] == "element 0"


def test_generic_missing_answer_line_seven(tmp_path: Path) -> None:
    rows = [{"prompt": f"Fact {i} is", "answer": f"a{i}"} for i in range(5)]
    path = tmp_path / "probes.jsonl"
    lines = [json.dumps(r) for r in rows] + ["", json.dumps({"prompt": "Fact 9 is"})]  # line 6 blank
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = error_of(path)
    assert message.startswith("probes.jsonl line 7: missing field 'answer'")


@pytest.mark.parametrize(("row", "field"), [
    ({"prompt": "The capital of France is", "answer": "Paris", "split": "test"}, "'split'"),
    ({"prompt": "The capital of France is", "answer": "Paris", "choices": "Paris, Lyon"}, "'choices'"),
    ({"prompt": "The capital of France is", "answer": "Paris", "aliases": [["Paname"]]}, "'aliases'"),
    ({"prompt": "The capital of France is", "answer": ""}, "'answer'"),
    ({"prompt": "", "answer": "Paris"}, "'prompt'"),
    ({"prompt": ["The capital of France is"], "answer": "Paris"}, "'prompt'"),
])
def test_generic_bad_field(tmp_path: Path, row: dict, field: str) -> None:
    message = error_of(write_jsonl(tmp_path / "probes.jsonl", [GENERIC[2], row]))
    assert "probes.jsonl line 2" in message and field in message


def test_generic_duplicate_id(tmp_path: Path) -> None:
    message = error_of(write_jsonl(tmp_path / "probes.jsonl", [GENERIC[1], GENERIC[2], GENERIC[1]]))
    assert "probes.jsonl line 3" in message and "'cap-de'" in message and "line 1" in message


# ---------------------------------------------------------------------------------------------------
# file-level errors


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message and "not found" in message and "builtin" in message


def test_folder(tmp_path: Path) -> None:
    assert "folder" in error_of(tmp_path)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text(content, encoding="utf-8")
    message = error_of(path)
    assert "probes.jsonl" in message and "empty" in message


def test_empty_json_list(tmp_path: Path) -> None:
    message = error_of(write_json(tmp_path / "known_1000.json", []))
    assert "known_1000.json" in message and "empty" in message


def test_undetectable_format_lists_supported_ones(tmp_path: Path) -> None:
    message = error_of(write_jsonl(tmp_path / "stuff.jsonl", [{"question": "Why?", "reply": "Because"}]))
    assert "stuff.jsonl" in message and "cannot tell" in message
    for name in ("ROME", "LAMA", "ParaRel", "PopQA", "prompt and answer", "builtin"):
        assert name in message


def test_undetectable_table(tmp_path: Path) -> None:
    path = tmp_path / "table.tsv"
    path.write_text("prompt\tanswer\nThe capital of France is\tParis\n", encoding="utf-8")
    message = error_of(path)
    assert "table.tsv" in message and "cannot tell" in message


def test_invalid_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text(json.dumps(GENERIC[0]) + "\n" + json.dumps(GENERIC[1]) + "\n{\"prompt\": \"x\",\n",
                    encoding="utf-8")
    message = error_of(path)
    assert "probes.jsonl line 3" in message and "invalid JSON" in message


def test_invalid_json_list(tmp_path: Path) -> None:
    path = tmp_path / "known_1000.json"
    path.write_text(json.dumps(KNOWN_1000, indent=2)[:-3], encoding="utf-8")
    message = error_of(path)
    assert "known_1000.json line" in message and "invalid JSON" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9", "answer": "x"}\n')
    assert "UTF-8" in error_of(path)


def test_bad_eval_fraction(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "probes.jsonl", GENERIC)
    assert "eval fraction" in error_of(path, eval_fraction=1.5)


def test_builtin_dispatches_to_load_builtin() -> None:
    builtin = pytest.importorskip("probe.knowledge.builtin")
    assert load_probes("builtin").content_hash() == builtin.load_builtin().content_hash()


# ---------------------------------------------------------------------------------------------------
# text that is not a probe format; inputs that once crashed the loader


@pytest.mark.parametrize(("content", "found"), [
    ("prompt,answer\nThe capital of France is,Paris\n", "a comma-separated table with columns prompt, answer"),
    ("prompt\tanswer\nThe capital of France is\tParis\n", "a tab-separated table with columns prompt, answer"),
    ("sub_label,obj_label\nFrance,Paris\n", "a comma-separated table with columns sub_label, obj_label"),
])
def test_table_of_a_json_format_says_to_write_jsonl(tmp_path: Path, content: str, found: str) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text(content, encoding="utf-8")
    message = error_of(path)
    assert message.startswith("probes.jsonl: cannot tell the probe format: found " + found)
    assert "only PopQA is read as a table" in message and "JSONL" in message
    assert "missing field" not in message


@pytest.mark.parametrize(("content", "found"), [
    ("The capital of France is Paris\nThe capital of Spain is Madrid\n",
     "found plain text starting 'The capital of France is Paris'"),
    ("# probes\n" + json.dumps(GENERIC[0]) + "\n", "found plain text starting '# probes'"),
    ("subject,object\nFrance,Paris\n", "found a comma-separated table with columns subject, object"),
])
def test_text_in_no_format_says_what_was_expected_and_found(tmp_path: Path, content: str, found: str) -> None:
    path = tmp_path / "probes.csv"
    path.write_text(content, encoding="utf-8")
    message = error_of(path)
    assert "expected JSON, JSONL (one object per line) or a PopQA TSV" in message and found in message


def test_field_names_with_line_breaks_stay_on_one_line(tmp_path: Path) -> None:
    message = error_of(write_jsonl(tmp_path / "probes.jsonl", [{"a\nb": 1, "c\rd": 2}]))
    assert "fields: a\\nb, c\\rd" in message


def test_deeply_nested_json_is_invalid_json_not_a_crash(tmp_path: Path) -> None:
    for name, text in (("deep.json", "[" * 100_000), ("deep.jsonl", '{"a": ' + "[" * 100_000)):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert f"{name} line 1: invalid JSON (nested too deeply" in error_of(path)


def test_popqa_jsonl_with_infinite_popularity(tmp_path: Path) -> None:
    row = {"id": 1, "subj": "France", "prop": "capital", "obj": "Paris", "question": "What is the capital of France?",
           "possible_answers": ["Paris"], "s_pop": float("inf"), "o_pop": 3.0, "prop_id": "x"}
    fact = next(iter(load_probes(write_jsonl(tmp_path / "popqa.jsonl", [row]))))
    assert (fact.meta["s_pop"], fact.meta["o_pop"], fact.meta["prop_id"]) == (None, 3, None)


@pytest.mark.parametrize("separator", ["\u2028", "\x85"])  # str.splitlines breaks at both
def test_jsonl_lines_end_only_at_newline(tmp_path: Path, separator: str) -> None:
    rows = [{"prompt": f"The capital{separator}of France is", "answer": "Paris"}, GENERIC[1]]
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    probes = load_probes(path)
    assert probes.facts[0].prompt == f"The capital{separator}of France is"
    assert [f.meta["location"] for f in probes] == ["line 1", "line 2"]
