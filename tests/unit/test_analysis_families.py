"""Each metric family on synthetic captures whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from probe.analysis.decodability import C_GRID, RANK_GRID, build_candidates
from probe.analysis.families.attention import attention_family
from probe.analysis.families.cka import cka_family
from probe.analysis.families.decodability import decodability_family
from probe.analysis.families.divergence import divergence_family
from probe.analysis.families.lens import lens_family
from probe.errors import ProbeError
from tests.unit.synthetic_captures import lens, runset

RNG = np.random.default_rng(3)
N, L, D, H, K = 24, 3, 8, 2, 5


def _resid(scale: float = 1.0) -> np.ndarray:
    return RNG.normal(size=(N, L, D)) * scale


# ---- divergence ----------------------------------------------------------------------------------
def test_divergence_is_zero_for_a_copy_and_measures_a_scaled_residual():
    h, mlp = _resid(), _resid()
    rs = runset({"original": {"resid_post": h, "mlp_out": mlp},
                 "compressed": {"resid_post": 2 * h, "mlp_out": mlp},
                 "prompt": {"resid_post": h, "mlp_out": 3 * mlp}}, L)
    div = divergence_family(rs)
    assert set(div.cosine) == {"compressed", "prompt"} and div.cosine["compressed"].shape == (N, L)
    np.testing.assert_allclose(div.relative_l2["compressed"], 1.0)  # ‖2h − h‖ / ‖h‖
    np.testing.assert_allclose(div.cosine["compressed"], 0.0, atol=1e-12)  # same direction
    np.testing.assert_allclose(div.relative_l2["prompt"], 0.0)
    assert set(div.outputs) == {"mlp_out"}  # attn_out was not captured: absent, not zero
    np.testing.assert_allclose(div.outputs["mlp_out"]["prompt"], 2.0)
    assert set(div.outputs_vs_compressed["mlp_out"]) == {"prompt"}  # recoveries only
    np.testing.assert_allclose(div.outputs_vs_compressed["mlp_out"]["prompt"], 2.0)


# ---- attention -----------------------------------------------------------------------------------
def _patterns(sharp: float) -> np.ndarray:
    logits = RNG.normal(size=(N, L, H, K)) * sharp
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


def test_attention_family_entropy_js_and_prompt_mass():
    p = _patterns(1.0)
    uniform = np.full_like(p, 1 / K)
    mass = RNG.uniform(size=(N, L, H))
    rs = runset({"original": {"resid_post": _resid(), "pattern": p},
                 "compressed": {"resid_post": _resid(), "pattern": p},
                 "prompt": {"resid_post": _resid(), "pattern": uniform, "prompt_mass": mass}}, L)
    att = attention_family(rs)
    assert att.entropy["prompt"].shape == (N, L, H)
    np.testing.assert_allclose(att.entropy["prompt"], np.log(K))
    np.testing.assert_allclose(att.js["compressed"], 0.0, atol=1e-12)
    assert (att.js["prompt"] > 0).all() and "original" not in att.js
    np.testing.assert_allclose(att.js_vs_compressed["prompt"], att.js["prompt"])
    np.testing.assert_array_equal(att.prompt_mass["prompt"], mass)
    np.testing.assert_array_equal(att.prompt_mass["original"], 0.0)  # no prompt positions: no mass


def test_attention_shift_without_the_first_key_ignores_mass_moved_to_or_from_the_sink():
    """A recovery that only moves attention onto the first key shifts attention, but not over the other keys."""
    p = _patterns(1.0)
    sink = p.copy()
    sink[..., 0] += 1.0
    sink /= sink.sum(-1, keepdims=True)  # more mass on key 0, the rest in the same proportions
    rs = runset({"original": {"resid_post": _resid(), "pattern": p},
                 "compressed": {"resid_post": _resid(), "pattern": p},
                 "prompt": {"resid_post": _resid(), "pattern": sink}}, L)
    att = attention_family(rs)
    assert (att.js_vs_compressed["prompt"] > 1e-4).all() and att.js_vs_compressed["prompt"].mean() > 0.05
    np.testing.assert_allclose(att.js_vs_compressed_no_sink["prompt"], 0.0, atol=1e-12)


def test_attention_family_is_absent_without_patterns():
    rs = runset({"original": {"resid_post": _resid()}, "compressed": {"resid_post": _resid()}}, L)
    assert attention_family(rs) is None


# ---- CKA -----------------------------------------------------------------------------------------
def test_cka_family_is_one_for_a_rotation_and_pairs_replicates_across_variants():
    h = _resid()
    q, _ = np.linalg.qr(RNG.normal(size=(D, D)))
    rs = runset({"original": {"resid_post": h}, "compressed": {"resid_post": h @ q},
                 "prompt": {"resid_post": h + _resid(2.0)}}, L)
    cka = cka_family(rs, n_rep=30, seed=0)
    assert cka.n == N and set(cka.point) == {"compressed", "prompt"}
    np.testing.assert_allclose(cka.point["compressed"], 1.0, atol=1e-9)  # linear CKA ignores rotations
    np.testing.assert_allclose(cka.biased["compressed"], 1.0, atol=1e-9)
    assert (cka.biased["prompt"] > cka.point["prompt"]).all()  # biased CKA is inflated at n ≈ d
    np.testing.assert_allclose(cka.replicates["compressed"], 1.0, atol=1e-9)
    assert cka.replicates["prompt"].shape == (L, 30) and (cka.point["prompt"] < 0.9).all()
    for li in range(L):
        lo, hi = cka.interval("prompt", li)
        assert lo < cka.point["prompt"][li] < hi
    np.testing.assert_allclose(np.diag(cka.cross["compressed"]), 1.0, atol=1e-9)
    assert cka.cross["prompt"].shape == (L, L)


# ---- logit lens ----------------------------------------------------------------------------------
def test_lens_family_ranks_the_answer_the_lens_reads_and_diverges_only_when_residuals_differ():
    lz = lens(D, 30)
    h = _resid()
    answers = [[int(lz.logits(h[i:i + 1, -1]).argmax())] for i in range(N)]  # the lens's own top-1 at the top
    rs = runset({"original": {"resid_post": h}, "compressed": {"resid_post": h},
                 "prompt": {"resid_post": _resid()}}, L)
    fam = lens_family(rs, lz, answers)
    assert fam.rank["original"].shape == (N, L) and fam.top1("original")[:, -1].all()
    assert ((fam.prob["original"] > 0) & (fam.prob["original"] <= 1)).all()
    np.testing.assert_allclose(fam.kl["compressed"], 0.0, atol=1e-6)
    assert (fam.js["prompt"] > 0).all() and "original" not in fam.kl
    assert fam.top1("prompt")[:, -1].mean() < 0.5  # unrelated residuals rarely rank the answer first


# ---- decodability --------------------------------------------------------------------------------
def _decodable(splits: list[str], signal: float = 20.0):
    """Residuals that point at each fact's answer row of the unembedding (``signal`` times), plus noise."""
    n = len(splits)
    lz = lens(D, 40, seed=1)
    ids = np.array([RNG.choice(40, 4, replace=False) for _ in range(n)])
    cands = build_candidates(ids[:, 0].tolist(), ids[:, 1:].tolist(), seed=0)
    u = lz.unembedding_rows(ids[:, 0])
    h = np.repeat((signal * u + RNG.normal(size=(n, D)))[:, None, :], L, 1)
    rs = runset({"original": {"resid_post": h}, "compressed": {"resid_post": RNG.normal(size=(n, L, D))}}, L,
                splits=splits)
    return rs, lz, cands


def test_decodability_family_finds_answers_written_into_the_residual_and_not_in_noise():
    rs, lz, cands = _decodable(["train" if i % 2 else "eval" for i in range(80)])
    dec = decodability_family(rs, lz, cands, min_facts=4, folds=3, seed=0)
    assert dec.held_out and "train-split" in dec.note
    assert dec.own["original"].shape == (40, L) and dec.own["original"].dtype == bool
    assert dec.lens["original"].mean() > 0.9 and dec.own["original"].mean() > 0.8
    assert dec.lens["compressed"].mean() < 0.6 and set(dec.transfer) == {"compressed"}


def test_decodability_family_cross_validates_when_there_are_no_train_facts():
    rs, lz, cands = _decodable(["eval"] * 60)
    dec = decodability_family(rs, lz, cands, min_facts=4, folds=3, seed=0)
    assert not dec.held_out and "3-fold cross-validated" in dec.note
    assert dec.own["original"].shape == (60, L) and dec.own["original"].mean() > 0.8


@pytest.mark.parametrize("family", [divergence_family, attention_family])
def test_nan_in_a_capture_is_refused(family):
    h = _resid()
    bad = h.copy()
    bad[2, 1, 0] = np.nan
    rs = runset({"original": {"resid_post": h, "pattern": _patterns(1.0)},
                 "compressed": {"resid_post": bad, "pattern": _patterns(1.0) * np.nan}}, L)
    with pytest.raises(ProbeError, match="NaN/inf in compressed capture"):
        family(rs)


def test_decodability_family_records_each_probes_choice_per_variant_and_layer():
    rs, lz, cands = _decodable(["train" if i % 2 else "eval" for i in range(80)])
    dec = decodability_family(rs, lz, cands, min_facts=4, folds=3, seed=0)
    assert set(dec.choice) == {"original", "compressed"} and all(len(c) == L for c in dec.choice.values())
    assert all(c.c in C_GRID and c.rank in (*RANK_GRID, D) and c.rank <= D for cs in dec.choice.values() for c in cs)
