"""The probe format: demonstrations, the shared demonstration cache, the known definitions and statuses."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.evaluation.run import EvalSpec, run_eval
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat, build_prompts
from probe.knowledge.schema import Fact
from probe.knowledge.scoring import encode_pair, hf_logits_fn, score_facts, score_with_format
from probe.knowledge.status import id_transitions, is_known, known_ids, transitions, variant_statuses
from probe.models.load import load_model
from probe.runtime.kv_prefix import prefix_from_embeddings, prefix_logits_fn
from probe.runtime.spec import VariantSpec
from probe.runtime.variant import LoadedVariant

TINY = ModelSpec("tiny-llama", dtype="float32")


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY)


@pytest.fixture(scope="module")
def builtin():
    return load_probes("builtin")


def _fact(i: int, obj: str, split: str = "train", rel: str = "city_country") -> Fact:
    return Fact(f"{rel}-{i}", rel, f"City{i}", obj, (f"City{i} is a city in", f"City{i} lies in"),
                distractors=("Spain",), split=split)


def test_demonstrations_come_from_train_of_the_same_relation_and_never_give_the_answer(builtin, capsys):
    facts = builtin.split("eval").facts
    by_id = {f.id: f for f in builtin.facts}
    prompted = build_prompts(facts, builtin.facts, 3)
    warned = capsys.readouterr().err
    prefixes: dict[str, set[str]] = {}
    for fact, p in zip(facts, prompted, strict=True):
        demos = [by_id[i] for i in p.demo_ids]
        assert len(demos) == 3 or (demos and repr(fact.relation) in warned)
        assert all(d.split == "train" and d.relation == fact.relation for d in demos)
        answers = [a.lower() for d in demos for a in d.answers]
        assert len({d.object.lower() for d in demos}) == len(demos)  # distinct answers
        assert not {a.lower() for a in fact.answers} & set(answers)
        assert fact.subject.lower() not in {d.subject.lower() for d in demos}
        assert p.text == p.prefix + fact.prompt and p.prefix.endswith(".\n") and p.prefix.count("\n") == len(demos)
        prefixes.setdefault(fact.relation, set()).add(p.prefix)
    assert max(len(v) for v in prefixes.values()) <= 2  # at most two cached prefixes per relation
    assert build_prompts(facts, builtin.facts, 3) == prompted  # deterministic


def test_repeated_objects_use_the_second_set_and_few_train_facts_warn(capsys):
    pool = [_fact(i, obj) for i, obj in enumerate(["France", "Italy", "Germany", "Spain", "Peru", "Chile"])]
    query = [_fact(10, "France", "eval"), _fact(11, "Japan", "eval")]
    prompted = build_prompts(query, [*pool, *query], 3)
    assert "France" not in prompted[0].demo_answers and len(prompted[0].demo_answers) == 3
    assert prompted[0].prefix != prompted[1].prefix  # France's set is the second one
    few = build_prompts(query, [*pool[:2], *query], 3)
    assert len(few[1].demo_ids) == 2
    assert "'city_country'" in capsys.readouterr().err


def test_shared_prefix_cache_equals_full_sequences(tiny, builtin):
    facts = [f for f in builtin.split("eval").facts if f.relation in ("capital", "chemical_symbol")][:12]
    fn = hf_logits_fn(tiny.model)
    prompted = build_prompts(facts, builtin.facts, 3)
    shared = score_facts(facts, tiny.tokenizer, fn, batch_size=5, prompted=prompted)
    full = score_facts(facts, tiny.tokenizer, fn, batch_size=5, prompted=prompted, share_prefix=False)
    for a, b in zip(shared, full, strict=True):
        assert a.rank == b.rank and a.exact_match == b.exact_match and a.mc_correct == b.mc_correct
        assert a.answer_logprob == pytest.approx(b.answer_logprob, abs=1e-4)
        assert a.first_token_logprob == pytest.approx(b.first_token_logprob, abs=1e-4)
    # and against one unpadded forward of the concatenated text
    for fact, p, s in zip(facts, prompted, shared, strict=True):
        ids = tiny.tokenizer(p.prefix).input_ids + tiny.tokenizer(p.query, add_special_tokens=False).input_ids
        best = -float("inf")
        for answer in fact.answers:
            ans = encode_pair(tiny.tokenizer, p.query, answer)[1]
            with torch.no_grad():
                lp = torch.log_softmax(tiny.model(torch.tensor([ids + ans])).logits[0].float(), -1)
            best = max(best, sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(ans)))
        assert s.answer_logprob == pytest.approx(best, abs=1e-4)


def test_prefix_variant_shares_the_demonstration_cache_correctly(tiny, builtin):
    gen = torch.Generator().manual_seed(0)
    prefix = prefix_from_embeddings(tiny.model, torch.randn(1, 3, 64, generator=gen) * 0.5)
    fn = prefix_logits_fn(tiny.model, prefix)
    facts = builtin.split("eval").facts[:8]
    prompted = build_prompts(facts, builtin.facts, 2)
    shared = score_facts(facts, tiny.tokenizer, fn, batch_size=3, prompted=prompted)
    full = score_facts(facts, tiny.tokenizer, fn, batch_size=3, prompted=prompted, share_prefix=False)
    for a, b in zip(shared, full, strict=True):
        assert a.answer_logprob == pytest.approx(b.answer_logprob, abs=1e-4) and a.rank == b.rank


def test_zero_shot_first_token_reproduces_the_old_scores(tiny, builtin):
    facts = builtin.split("eval").facts[:10]
    fn = hf_logits_fn(tiny.model)
    old = score_facts(facts, tiny.tokenizer, fn, batch_size=4)  # the zero-shot path as before
    new = score_with_format(facts, builtin.facts, tiny.tokenizer, fn, ProbeFormat(shots=0, known="first_token"),
                            batch_size=4)
    assert old == new
    for fact, s in zip(facts, new, strict=True):  # and the rank against a plain forward of the prompt
        ids = tiny.tokenizer(fact.prompt).input_ids
        with torch.no_grad():
            row = tiny.model(torch.tensor([ids])).logits[0, -1]
        firsts = [encode_pair(tiny.tokenizer, fact.prompt, a)[1][0] for a in fact.answers]
        assert is_known(s, "first_token") == (int(row.argmax()) in firsts)


def test_eval_states_its_protocol_and_known_definition(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("PROBE_ARTIFACTS", str(tmp_path))
    loaded = LoadedVariant(VariantSpec(TINY), tiny, hf_logits_fn(tiny.model), {"model": "x"})
    spec = EvalSpec(VariantSpec(TINY), relations=("capital",), format=ProbeFormat(shots=1, known="robust"))
    result = run_eval(spec, loaded=loaded, save=False)
    assert result["protocol"]["shots"] == 1 and result["known_definition"] == "robust"
    assert all(len(f["template_matches"]) == 3 for f in result["facts"])
    assert result["known_ids"] == known_ids(result["facts"], "robust")
    assert set(result["per_relation_detail"]["capital"]) >= {"known", "top1", "full_answer", "mc"}
    zero = run_eval(replace(spec, format=ProbeFormat(shots=0, known="first_token")), loaded=loaded, save=False)
    assert zero["known_ids"] == [f["fact_id"] for f in zero["facts"] if f["rank"] == 0]
    assert zero["known_rate"] == zero["top1_accuracy"]


def test_known_1000_file_draws_demonstrations_from_its_own_train_split(tmp_path, builtin):
    rows = [{"known_id": i, "subject": f.subject, "attribute": f.object, "relation_id": f.relation,
             "prompt": f.prompt, "template": f.prompt.replace(f.subject, "{}")}
            for i, f in enumerate(builtin.facts) if f.relation in ("capital", "chemical_symbol")]
    path = tmp_path / "known_small.json"
    path.write_text(json.dumps(rows))
    probes = load_probes(path)
    assert {f.split for f in probes.facts} == {"train", "eval"}
    ids = {f.id: f for f in probes.facts}
    for p in build_prompts(probes.split("eval").facts, probes.facts, 3):
        assert p.demo_ids and all(ids[i].split == "train" and ids[i].relation == p.fact.relation for i in p.demo_ids)


def test_status_transitions_are_one_definition():
    o, c, r = [1, 1, 1, 0, 0, 1], [0, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    t = transitions(o, c, r)
    assert t.counts() == {"lost": 2, "regained": 1, "still_lost": 1, "newly_broken": 1, "gained": 1}
    ids = [f"f{i}" for i in range(6)]
    sets = id_transitions(*[[i for i, k in zip(ids, v, strict=True) if k] for v in (o, c, r)])
    assert sets["lost"] == {"f0", "f1"} and sets["newly_broken"] == {"f2"} and sets["gained"] == {"f4"}
    labels = variant_statuses({"original": o, "compressed": c, "prompt": r}, recoveries=("prompt",))
    assert labels["compressed"][:2] == ["forgotten", "forgotten"]
    assert labels["prompt"] == ["recovered", "lost", "broken", "known", "known", "known"]


def test_known_definitions():
    s = {"fact_id": "a", "rank": 0, "exact_match": False, "template_matches": (True, False, True)}
    assert is_known(s, "first_token") and not is_known(s, "full_answer") and is_known(s, "robust")
    assert not is_known({**s, "template_matches": (True, False, False)}, "robust")
    with pytest.raises(ValueError):
        is_known({**s, "template_matches": ()}, "robust")
    with pytest.raises(ProbeError):
        ProbeFormat(known="top5")
    assert np.array_equal(transitions([1], [0]).lost, [True])
