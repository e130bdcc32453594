"""Headline numbers, summary rows, verdict JSON and candidate building on synthetic captures and family arrays."""

from __future__ import annotations

import json

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.candidates import Candidates, build, distractors
from probe.analysis.decodability import ProbeChoice, build_candidates
from probe.analysis.families.cka import CKAFamily
from probe.analysis.families.decodability import DecodabilityFamily
from probe.analysis.families.divergence import DivergenceFamily
from probe.analysis.families.lens import LensFamily
from probe.analysis.headline import headline
from probe.analysis.spec import AnalyzeSpec
from probe.analysis.writers import build_tables, clean, summary_rows, verdict_json
from probe.models.tiny import tiny_tokenizer
from tests.unit.synthetic_captures import runset

RNG = np.random.default_rng(5)
N, L, D = 20, 3, 4
VARIANTS = ("original", "compressed", "prompt")


def _setup(lost: int = 12, mlp: bool = True):
    """Original knows every fact, compression loses the first ``lost``, the prompt regains every other lost one."""
    top1 = {"original": np.ones(N, bool), "compressed": np.arange(N) >= lost,
            "prompt": (np.arange(N) >= lost) | (np.arange(N) % 2 == 0)}
    rs = runset({v: {"resid_post": RNG.normal(size=(N, L, D))} for v in VARIANTS}, L, top1=top1)
    ones = {v: np.ones((N, L), bool) for v in VARIANTS}
    dec = DecodabilityFamily(lens={v: np.zeros((N, L), bool) for v in VARIANTS}, own=ones,
                             transfer={v: ones[v] for v in VARIANTS[1:]}, held_out=True, note="(a note)",
                             choice={v: [ProbeChoice(0.1, 4 * li, 0.9) for li in range(L)] for v in VARIANTS})
    change = {"compressed": np.zeros((N, L)), "prompt": np.full((N, L), 0.25)}
    div = DivergenceFamily(cosine=change, relative_l2=change, outputs={"mlp_out": change} if mlp else {},
                           outputs_vs_compressed={"mlp_out": {"prompt": change["prompt"]}} if mlp else {})
    reps = {"compressed": np.full((L, 40), 0.5), "prompt": np.full((L, 40), 0.7)}
    cka = CKAFamily(point={"compressed": np.full(L, 0.5), "prompt": np.full(L, 0.7)}, replicates=reps,
                    cross={v: np.eye(L) for v in reps}, n=N, biased={v: np.full(L, 0.9) for v in reps})
    ids = [[i % 7, 7 + i % 5, 20] for i in range(N)]
    cands = Candidates([], build_candidates([r[0] for r in ids], [r[1:] for r in ids]), "the probe file p")
    spec = AnalyzeSpec("tiny-llama", "rtn3", min_facts=4, n_boot=200)
    return rs, spec, cands, dec, div, cka


def test_headline_counts_lost_facts_and_recovery_numbers_from_the_models_outputs():
    rs, spec, cands, dec, div, cka = _setup()
    head = headline(rs, spec, cands, dec, div, None, cka)
    v = head.verdict
    assert v.n_lost == 12 and head.lost[:12].all() and not head.lost[12:].any() and v.n_never == 0
    assert head.known["original"].mean == 1.0 and head.known["compressed"].mean == 8 / 20
    (prompt,) = v.recoveries
    assert prompt.regained.mean == 0.5 and prompt.regained.n == 12
    assert abs(prompt.delta_cka.mean - 0.2) < 1e-12 and abs(prompt.delta_cka.lo - 0.2) < 1e-12
    assert prompt.mlp_change.mean == 0.25
    assert prompt.prompt_mass.n == 0 and np.isnan(prompt.prompt_mass.mean)  # no attention captured: missing
    assert v.decodable.mean == 1.0 and v.output_lost.mean == 0.0 and v.decodability_note == "(a note)"
    assert v.lens_lost.mean == 0.0 and v.lens_lost.n == 12  # the lens at the chosen layer, next to the probe
    assert v.probe == ProbeChoice(0.1, 4 * v.layer, 0.9)  # the compressed probe's choice at that layer
    data = verdict_json(head, "text", "p")
    assert data["lens_lost"]["mean"] == 0.0 and data["probe"]["rank"] == 4 * v.layer
    (net,) = data["net_recovery"]  # every other lost fact regained, nothing the compressed model knew broken
    assert (net["regained"], net["newly_broken"], net["net"]) == (6, 0, 6) and net["mcnemar_p"] == 2 / 2 ** 6
    assert data["method_pairs"] == []  # one recovery: nothing to rank


def test_too_few_lost_facts_leave_the_decodable_share_missing_and_null_in_json():
    rs, spec, cands, dec, div, cka = _setup(lost=2, mlp=False)
    head = headline(rs, spec, cands, dec, div, None, cka)
    assert head.verdict.decodable is bs.EMPTY and head.verdict.recoveries[0].mlp_change.n == 0
    data = json.loads(json.dumps(clean(verdict_json(head, "text", "the probe file p"))))
    assert data["decodable_lost"]["mean"] is None and data["distractors"] == "the probe file p"


def test_summary_reports_output_top1_and_no_made_up_cka_for_the_original():
    rs, spec, cands, dec, div, cka = _setup()
    head = headline(rs, spec, cands, dec, div, None, cka)
    rows = {r["variant"]: r for r in summary_rows(head, cka, dec, rs.layers)}
    assert rows["original"]["top1"] == head.known["original"].fmt(pct=True) and rows["original"]["top1"][:4] == "100%"
    assert rows["compressed"]["top1"].startswith("40%")  # the model's output, not the lens (which is all wrong here)
    assert rows["original"]["mean_cka"] == "—" and rows["prompt"]["mean_cka"] == "0.700"
    assert rows["prompt"]["regained_lost"].startswith("50%") and rows["original"]["regained_lost"] == ""
    assert rows["original"]["best_decodability"] == "100% @ layer 2"
    assert rows["original"]["best_lens"] == "0% @ layer 2"


def test_tables_have_one_row_per_variant_metric_and_layer():
    rs, spec, cands, dec, div, cka = _setup()
    head = headline(rs, spec, cands, dec, div, None, cka)
    lens = LensFamily(rank={v: np.zeros((N, L)) for v in VARIANTS}, prob={v: np.ones((N, L)) for v in VARIANTS},
                      kl=div.cosine, js=div.cosine)
    t = build_tables(rs.layers, lens, div, None, cka, dec, head)
    assert "attention" not in t.rows and len(t.rows["cka"]) == 2 * L and len(t.rows["cross_cka"]) == 2 * L * L
    top1 = [r for r in t.rows["lens"] if r["metric"] == "answer_top1"]
    assert len(top1) == 3 * L and all(r["mean"] == 1.0 and r["head"] == -1 and r["n"] == N for r in top1)
    metrics = {(r["variant"], r["metric"]) for r in t.rows["divergence"]}
    assert ("prompt", "mlp_out_relative_l2_vs_compressed") in metrics
    assert ("compressed", "mlp_out_relative_l2_vs_compressed") not in metrics
    lost = [r for r in t.rows["decodability"] if r["facts"] == "lost"]
    assert {r["n"] for r in lost} == {12} and {r["probe"] for r in lost} == {"own", "lens"}
    own = [r for r in t.rows["decodability"] if r["probe"] == "own" and r["variant"] == "compressed"]
    assert [(r["probe_c"], r["probe_rank"]) for r in own[:L]] == [(0.1, 0), (0.1, 4), (0.1, 8)]
    assert all(r["probe_rank"] is None for r in t.rows["decodability"] if r["probe"] == "lens")
    assert {r["metric"] for r in t.rows["regimes"]} >= {"regained", "delta_cka", "prompt_mass"}


def test_distractors_come_from_the_probe_file_or_an_explicit_recorded_fallback(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"f{i}", "prompt": f"prompt {i}", "answer": f"obj{i}",
                                        "choices": ["Xa", "Xb"], "relation": "r", "split": "eval"}) + "\n"
                            for i in range(4)))
    relations = ["a", "a", "a", "b"]
    h = {"resid_post": RNG.normal(size=(4, L, D))}
    found, origin, fallback = distractors(runset({"original": h, "compressed": h}, L, relations=relations,
                                                 probe_file=str(path)))
    assert found == [["Xa", "Xb"]] * 4 and origin == f"the probe file {path}" and not fallback
    rs = runset({"original": h, "compressed": h}, L, relations=relations, probe_file=str(tmp_path / "gone.jsonl"),
                objects=["Ann", "Bob", "Cid", "Dan"])
    found, origin, fallback = distractors(rs)
    assert fallback and "could not be loaded" in origin and "gone.jsonl" in origin
    assert found == [["Bob", "Cid"], ["Ann", "Cid"], ["Ann", "Bob"], []]  # other objects of the same relation
    cands = build(rs, tiny_tokenizer(), seed=0)
    assert cands.distractors == origin and "probe file was not available" in cands.fallback
    assert len(cands.answers) == 4 and (cands.cands.mask.sum(1) == [3, 3, 3, 1]).all()
