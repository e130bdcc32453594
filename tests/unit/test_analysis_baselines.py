"""Measured baselines with planted truths: the verdict follows what was planted, not 1/k and one half.

Each case plants per-fact probe results on synthetic captures (600 eval facts: 200 lost, 200 kept,
200 never known) and checks the decision. The first two fail on the uniform-chance logic (the
decodable share corrected by 1/k and held against one half): it calls a lost share that only
matches the never-known facts "displaced", and a lost share as decodable as kept facts
"forgotten" when the probe is weak everywhere.
"""

from __future__ import annotations

import numpy as np

from probe.analysis.baselines import match_by_margin, matched_values
from probe.analysis.candidates import Candidates
from probe.analysis.decodability import ProbeChoice, build_candidates
from probe.analysis.families.cka import CKAFamily
from probe.analysis.families.decodability import DecodabilityFamily
from probe.analysis.families.divergence import DivergenceFamily
from probe.analysis.headline import headline
from probe.analysis.spec import AnalyzeSpec
from probe.analysis.verdict import verdict_text
from probe.analysis.writers import verdict_json
from tests.unit.synthetic_captures import runset

N, L, D = 600, 2, 3
LOST, KEPT, NEVER = np.arange(N) < 200, (np.arange(N) >= 200) & (np.arange(N) < 400), np.arange(N) >= 400
RNG = np.random.default_rng(11)


def _planted(share: float, rows: np.ndarray, seed: int) -> np.ndarray:
    """Exactly ``share`` of ``rows`` true, at random facts."""
    out = np.zeros(N, bool)
    idx = np.nonzero(rows)[0]
    out[np.random.default_rng(seed).permutation(idx)[: round(share * len(idx))]] = True
    return out


def _case(lost: float, kept: float, never: float, shuffled: float | None = None):
    """The compressed model's probe picks the answer for these shares of lost, kept and never-known facts,
    at layer 1 (layer 0: never); a label-shuffled probe, when given, for ``shuffled`` of every fact."""
    top1 = {"original": LOST | KEPT, "compressed": KEPT.copy()}
    margins = RNG.exponential(2.0, N)
    topk = {"original": np.stack([np.zeros(N), -margins], 1)}
    rs = runset({v: {"resid_post": RNG.normal(size=(N, L, D))} for v in top1}, L, top1=top1, topk_logprobs=topk,
                subjects=[f"s{i // 2}" for i in range(N)])  # subjects of two facts each
    hits = _planted(lost, LOST, 1) | _planted(kept, KEPT, 2) | _planted(never, NEVER, 3)
    own = np.stack([np.zeros(N, bool), hits], 1)
    dec = DecodabilityFamily(lens={v: own for v in top1}, own={v: own for v in top1}, transfer={"compressed": own},
                             held_out=True, note="", choice={v: [ProbeChoice(0.1, 4, 0.9)] * L for v in top1})
    if shuffled is not None:
        dec.shuffled["compressed"] = np.stack([np.zeros(N), _planted(shuffled, np.ones(N, bool), 4)], 1)
    zeros = {"compressed": np.zeros((N, L))}
    div = DivergenceFamily(zeros, zeros, {}, {})
    cka = CKAFamily({"compressed": np.ones(L)}, {"compressed": np.ones((L, 30))}, {"compressed": np.eye(L)}, N,
                    {"compressed": np.ones(L)})
    ids = [[i % 50, 50 + i % 7, 60 + i % 5, 70] for i in range(N)]
    cands = Candidates([], build_candidates([r[0] for r in ids], [r[1:] for r in ids]), "p")
    head = headline(rs, AnalyzeSpec("tiny-llama", "rtn3", n_boot=400, min_facts=10), cands, dec, div, None, cka)
    return head, verdict_text(head.verdict)


def test_a_share_that_only_matches_the_never_known_facts_is_not_called_displaced():
    """Planted: no knowledge survives; the probe picks 70% anyway (as on never-known facts); kept facts 100%.
    Uniform chance 25% → corrected 60% > one half → the old logic said "displaced"."""
    head, text = _case(lost=0.70, kept=1.0, never=0.70)
    assert "displaced rather than forgotten" not in text and "partly displaced" not in text
    assert "is forgotten as far as a linear probe can tell" in text
    floor = head.verdict.floor
    assert floor.what == "probe on never-known facts" and abs(floor.baseline.mean - 0.70) < 1e-9
    assert floor.diff.lo < 0 < floor.diff.hi and head.verdict.ceiling.below
    data = verdict_json(head, text, "p")
    assert data["decision"] == "forgotten" and data["baselines"]["floor_used"] == "probe on never-known facts"


def test_a_share_as_decodable_as_kept_facts_is_displaced_even_when_the_probe_is_weak():
    """Planted: lost facts as decodable as kept ones (55%), never-known at chance (25%).
    Corrected by 1/4: 40% < one half → the old logic said "forgotten"."""
    head, text = _case(lost=0.55, kept=0.55, never=0.25)
    assert "displaced rather than forgotten" in text and head.verdict.decision == "displaced"
    assert head.verdict.ceiling.diff.lo < 0 < head.verdict.ceiling.diff.hi
    assert 0.6 < head.verdict.normalised.mean < 1.4


def test_the_label_shuffled_probe_is_a_floor_and_the_higher_floor_decides():
    """Never-known facts at 25% but the shuffled probe at 50% (a lens bias): lost facts at 55% are only
    5 points above that floor, so the decision is not "displaced"."""
    head, text = _case(lost=0.55, kept=0.95, never=0.25, shuffled=0.50)
    v = head.verdict
    assert {f.what for f in v.floors} == {"label-shuffled probe on the lost facts", "probe on never-known facts"}
    assert v.floor.what == "label-shuffled probe on the lost facts" and v.decision in ("forgotten", "undecided")
    assert "trained on label-shuffled answers the same probe picks it for " in text


def test_partly_displaced_lies_between_measured_floor_and_ceiling():
    head, text = _case(lost=0.60, kept=0.95, never=0.25, shuffled=0.25)
    assert head.verdict.decision == "partly displaced" and "partly displaced" in text
    assert 0.3 < head.verdict.normalised.mean < 0.6 and head.verdict.normalised.lo < head.verdict.normalised.mean


def test_matching_prefers_the_relation_and_the_nearest_margin():
    margin = np.array([1.0, 5.0, 1.1, 0.9, 5.1, 3.0, 1.05])
    relation = np.array(["a", "b", "a", "a", "b", "a", "b"])
    lost = np.array([True, True, False, False, False, False, False])
    kept = ~lost
    match = match_by_margin(margin, relation, lost, kept, k=2)
    assert sorted(match[0]) == [2, 3]  # relation a, nearest margins
    assert sorted(match[1]) == [4, 6]  # relation b has exactly two kept facts
    assert (match[2:] == -1).all()
    values = np.arange(7, dtype=float)[:, None]
    np.testing.assert_allclose(matched_values(values, match)[:2, 0], [2.5, 5.0])
    assert np.isnan(matched_values(values, match)[2:]).all()
