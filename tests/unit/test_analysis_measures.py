"""Analysis building blocks on synthetic data: divergences, bootstrap, decodability, verdict text."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax

from probe.analysis import bootstrap as bs
from probe.analysis.baselines import NO_COMPARISON, compare, estimate_at
from probe.analysis.decodability import (
    ProbeData,
    build_candidates,
    cross_val_correct,
    fit_probe,
    held_out_correct,
    select_probe,
)
from probe.analysis.divergence import (
    check_finite,
    cosine_distance,
    entropy,
    js_logp,
    js_prob,
    kl_logp,
    kl_prob,
    relative_l2,
)
from probe.analysis.paired import net_recoveries, pairwise
from probe.analysis.verdict import RecoveryNumbers, VerdictInputs, decide, verdict_text
from probe.errors import ProbeError

RNG = np.random.default_rng(7)


def test_js_matches_scipy_squared_in_nats_for_logits_and_attention_rows():
    logits_p, logits_q = RNG.normal(size=(6, 50)) * 3, RNG.normal(size=(6, 50)) * 3
    lp, lq = log_softmax(logits_p, -1), log_softmax(logits_q, -1)
    ref = jensenshannon(np.exp(lp), np.exp(lq), axis=-1, base=np.e) ** 2
    np.testing.assert_allclose(js_logp(lp, lq), ref, rtol=1e-9, atol=1e-12)
    p, q = np.exp(lp), np.exp(lq)
    p[:, :10] = 0  # padded keys / zero-probability entries
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(js_prob(p, q), jensenshannon(p, q, axis=-1, base=np.e) ** 2, rtol=1e-9, atol=1e-12)
    sym_kl = 0.5 * (kl_prob(p, q) + kl_prob(q, p))
    assert not np.allclose(js_prob(p, q), sym_kl)  # the mixture form, not a symmetrised KL


def test_kl_is_nonnegative_and_zero_only_for_equal_distributions():
    lp = log_softmax(RNG.normal(size=(100, 20)), -1)
    lq = log_softmax(RNG.normal(size=(100, 20)), -1)
    assert (kl_logp(lp, lq) > 0).all() and (js_logp(lp, lq) > 0).all()
    np.testing.assert_allclose(kl_logp(lp, lp), 0, atol=1e-12)
    np.testing.assert_allclose(js_logp(lp, lp), 0, atol=1e-12)
    np.testing.assert_allclose(kl_prob(np.exp(lp), np.exp(lq)), kl_logp(lp, lq), rtol=1e-9)


def test_residual_distances_and_entropy():
    a = RNG.normal(size=(5, 16))
    np.testing.assert_allclose(cosine_distance(a, a), 0, atol=1e-12)
    np.testing.assert_allclose(cosine_distance(a, 3 * a), 0, atol=1e-12)
    np.testing.assert_allclose(cosine_distance(a, -a), 2, atol=1e-12)
    np.testing.assert_allclose(relative_l2(a, a), 0, atol=1e-12)
    np.testing.assert_allclose(relative_l2(2 * a, a), 1, atol=1e-12)
    np.testing.assert_allclose(entropy(np.full((2, 8), 1 / 8)), np.log(8))
    np.testing.assert_allclose(entropy(np.eye(4)), 0, atol=1e-12)


def test_nan_is_refused_naming_the_array():
    x = np.ones((4, 3))
    x[2, 1] = np.inf
    with pytest.raises(ProbeError, match=r"NaN/inf in run X, array last/blocks.7.hook_resid_post .*probes \[2\]"):
        check_finite(x, "run X, array last/blocks.7.hook_resid_post")


def test_bootstrap_interval_covers_the_true_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        iv = bs.interval(rng.normal(1.0, 2.0, size=60), n_boot=400, seed=i)
        covered += iv.lo <= 1.0 <= iv.hi
    assert 0.88 <= covered / 200 <= 0.99, covered
    x = rng.normal(size=(40, 3, 2))
    first, again, other = (bs.bootstrap_mean(x, 300, s) for s in (5, 5, 6))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    np.testing.assert_allclose(first[0], x.mean(0))
    assert (first[1] <= first[0]).all() and (first[0] <= first[2]).all()


def test_too_few_facts_says_how_many_are_needed():
    with pytest.raises(ProbeError, match=r"has 3, at least 10 are needed"):
        bs.check_enough(3, 10, "the eval split")


def _synthetic_probe_data(n: int, k: int = 4, d: int = 8, signal: float = 5.0, seed: int = 0) -> ProbeData:
    rng = np.random.default_rng(seed)
    cands = build_candidates(list(range(n)), [[n + j for j in range(k - 1)]] * n, seed)
    feats = rng.normal(size=(n, k, d)).astype(np.float32)
    feats[np.arange(n), cands.answer, 0] += signal
    return ProbeData(feats, cands)


def test_decodability_is_near_one_on_separable_data_and_chance_on_shuffled_labels():
    train, test = _synthetic_probe_data(200, seed=1), _synthetic_probe_data(400, seed=2)
    assert np.isclose(test.cands.chance, 0.25).all()
    assert held_out_correct(train, {"t": test}).correct["t"].mean() > 0.95
    assert cross_val_correct(test, {"t": test}).correct["t"].mean() > 0.95
    rng = np.random.default_rng(3)

    def shuffled(data: ProbeData) -> ProbeData:  # labels no longer belong to the features
        return ProbeData(data.feats, type(data.cands)(data.cands.ids, rng.permutation(data.cands.answer)))

    acc = held_out_correct(shuffled(train), {"t": shuffled(test)}).correct["t"].mean()
    assert 0.1 < acc < 0.4, acc


def test_decodability_keeps_a_lens_signal_spread_over_many_dimensions():
    """Few facts, many dimensions, the answer raised a little in every one: the plain lens (sum of φ)
    finds it, and so must the probe, which sees the lens score rather than 200 free weights."""
    rng = np.random.default_rng(4)

    def data(n: int, seed: int) -> ProbeData:
        cands = build_candidates(list(range(n)), [[n + j for j in range(3)]] * n, seed)
        feats = rng.normal(size=(n, 4, 200)).astype(np.float32)
        feats[np.arange(n), cands.answer] += 0.12
        return ProbeData(feats, cands)

    train, test = data(60, 5), data(400, 6)
    lens = (test.feats.sum(2).argmax(1) == test.cands.answer).mean()
    probe = held_out_correct(train, {"t": test}).correct["t"].mean()
    assert lens > 0.7, lens
    assert probe >= lens - 0.05, (probe, lens)


def _spread(n: int, seed: int, d: int = 48, n_dirs: int = 12, signal: float = 6.0) -> ProbeData:
    """Each fact's answer raised along one of ``n_dirs`` orthogonal directions (+ on one feature, − on
    another): the signal spans ``n_dirs`` principal components and sums to zero, so the lens misses it."""
    rng = np.random.default_rng(seed)
    cands = build_candidates(list(range(n)), [[n + j for j in range(3)]] * n, seed)
    feats = rng.normal(size=(n, 4, d)).astype(np.float32)
    j = rng.integers(0, n_dirs, n)
    feats[np.arange(n), cands.answer, 2 * j] += signal
    feats[np.arange(n), cands.answer, 2 * j + 1] -= signal
    return ProbeData(feats, cands)


def test_probe_beats_the_lens_when_the_answer_is_spread_over_many_principal_components():
    """Fails when the seed lands in ``rank`` (seed 0 → one component: 45% here, the lens 26%)."""
    train, test = _spread(300, 1), _spread(400, 2)
    lens = (test.feats.sum(2).argmax(1) == test.cands.answer).mean()
    scores = held_out_correct(train, {"t": test}, seed=0)
    probe = scores.correct["t"].mean()
    assert lens < 0.4, lens
    assert probe > 0.75 and probe > lens + 0.3, (probe, lens)
    assert scores.choice.rank >= 12, scores.choice  # chosen inside the training facts, enough components
    assert scores.choice.c in (0.01, 0.1, 1.0, 10.0) and 0.6 < scores.choice.cv_accuracy <= 1
    assert fit_probe(train, c=0.1, rank=1).pca.n_components == 1  # keyword arguments reach their parameters
    assert cross_val_correct(test, {"t": test}, 3, seed=0).choice.rank >= 12


def test_probe_choice_never_sees_the_facts_it_is_scored_on():
    """The choice depends on the training facts only: changing the eval facts leaves it unchanged."""
    train = _spread(200, 3)
    a = held_out_correct(train, {"t": _spread(100, 4)}, seed=0)
    b = held_out_correct(train, {"t": _synthetic_probe_data(100, d=48, seed=5)}, seed=0)
    assert a.choice == b.choice == select_probe(train, seed=0)
    groups = np.arange(200) // 4  # subjects of four facts: inner folds keep them together
    assert select_probe(train, groups=groups, seed=0).rank >= 12
    few = select_probe(_spread(5, 6), seed=0)
    assert few.rank == 0 and np.isnan(few.cv_accuracy)  # too few facts to choose: the lens score alone


def _inputs(flags: np.ndarray, recoveries: tuple[RecoveryNumbers, ...] = (), floor: float = 0.4,
            ceiling: float | None = 0.95, n_never: int = 300) -> VerdictInputs:
    """Lost facts decodable as ``flags``; never-known facts at ``floor``; matched kept facts at ``ceiling``."""
    n_lost = len(flags)
    n = n_lost + n_never
    lost = np.arange(n) < n_lost
    never = ~lost
    values = np.r_[flags, np.arange(n_never) % 100 < floor * 100].astype(float)[:, None]
    boot = bs.ClusterBootstrap(np.arange(n), 1000, seed=0)
    picked = np.zeros(1000, int)
    share = estimate_at(boot, values, lost, 0, picked)
    floor_cmp = compare("probe on never-known facts", share, estimate_at(boot, values, never, 0, picked))
    ceil = NO_COMPARISON
    if ceiling is not None:
        hits = np.random.default_rng(1).permutation(n_lost) < round(ceiling * n_lost)
        matched = np.r_[hits, np.full(n_never, np.nan)].astype(float)[:, None]
        ceil = compare("probe on margin-matched kept facts", share, estimate_at(boot, matched, lost, 0, picked))
    return VerdictInputs(model="m", compression="c", n_eval=n, known_original=bs.interval(np.ones(n)),
                         known_compressed=bs.interval(np.zeros(n)), n_lost=n_lost, decodable=share.interval,
                         uniform_chance=0.25, layer=4, min_facts=10, recoveries=recoveries, n_never=n_never,
                         floors=(floor_cmp,), floor=floor_cmp, ceiling=ceil, n_matched=n_lost)


def test_verdict_follows_the_numbers():
    displaced = _inputs(np.arange(100) % 10 != 0)  # 90% decodable; floor 40%, ceiling 95%
    assert displaced.decision == "displaced" and "displaced rather than forgotten" in verdict_text(displaced)
    assert "the same probe picks it for 40%" in verdict_text(displaced) and "+50 [" in verdict_text(displaced)
    partly = _inputs(np.arange(200) % 20 < 13)  # 65%: above the floor, below the ceiling
    assert partly.decision == "partly displaced" and "partly displaced" in verdict_text(partly)
    forgotten = _inputs(np.arange(200) % 50 < 21)  # 42%: at the floor, far below the ceiling
    assert forgotten.decision == "forgotten" and "is forgotten as far as" in verdict_text(forgotten)
    unsure = _inputs(np.arange(20) % 10 < 6, ceiling=0.8, n_never=20)  # 60% of 20 vs 40% and 80% of 20
    assert unsure.decision == "undecided" and "do not decide" in verdict_text(unsure)
    no_ceiling = _inputs(np.arange(100) % 10 != 0, ceiling=None)
    assert no_ceiling.decision == "displaced"
    few = _inputs(np.ones(4, bool))
    assert "fewer than the 10" in verdict_text(few) and "displaced rather" not in verdict_text(few)


def test_decision_needs_separation_from_a_measured_floor():
    """Both ends are measured: no floor is undecided, however high the share."""
    assert decide(NO_COMPARISON, NO_COMPARISON) == "undecided"
    v = _inputs(np.ones(100, bool))
    assert decide(v.floor, NO_COMPARISON) == "displaced" and decide(NO_COMPARISON, v.ceiling) == "undecided"


def test_verdict_counts_recoveries_both_ways_and_ranks_only_where_mcnemar_separates():
    flags = np.arange(100) % 10 != 0
    top1 = {"original": np.ones(300, bool), "compressed": np.arange(300) >= 100,
            "idp": (np.arange(300) < 16) | (np.arange(300) >= 118),  # regains 16, breaks 18
            "lora": np.arange(300) < 260}  # regains 100, breaks 40
    nets = net_recoveries(top1, ("idp", "lora"))
    recs = tuple(RecoveryNumbers(n.variant, regained=bs.interval(np.ones(10)), net=n) for n in nets)
    text = verdict_text(replace(_inputs(flags, recs), pairs=pairwise(top1, ("idp", "lora"))))
    assert f"idp regains 100% [100, 100] of them: regained 16, newly broken 18, net −2 (exact McNemar p = " \
           f"{nets[0].p:.2g} against the compressed model)" in text
    assert ("lora answers more eval facts than idp (102 vs 40 facts only one of them gets, Holm-corrected "
            "p < 0.001)") in text
    even = {**top1, "lora": top1["idp"][::-1].copy()}
    text = verdict_text(replace(_inputs(flags, recs), pairs=pairwise(even, ("idp", "lora"))))
    assert "No two methods are separated" in text and "answers more" not in text


def test_verdict_states_its_controls_and_the_two_regimes():
    flags = np.arange(100) % 10 != 0  # 90% of lost facts decodable
    base = replace(_inputs(flags), output_lost=bs.interval(np.arange(100) % 10 < 8))
    text = verdict_text(base)
    assert "on the 300 facts neither model knows the same probe picks it for 40%" in text
    assert "matched to the lost ones by the original's margin" in text
    assert "ranks the answer first among the candidates for 80%" in text and "demotes the answer" in text
    hidden = verdict_text(replace(base, output_lost=bs.interval(np.arange(100) % 10 < 3)))
    assert "demotes" not in hidden and "no longer ranks first" in hidden

    def rec(name: str, mass: float, shift: float, mlp: float, dcka: float, rest: float) -> RecoveryNumbers:
        const = lambda x: bs.interval(np.full(50, x) + np.linspace(-0.005, 0.005, 50))  # noqa: E731
        return RecoveryNumbers(name, regained=bs.interval(np.arange(100) % 10 < 3), delta_cka=const(dcka),
                               prompt_mass=const(mass), attn_shift=const(shift), mlp_change=const(mlp),
                               attn_shift_no_sink=const(rest))

    two = verdict_text(replace(base, recoveries=(rec("prompt", 0.69, 0.27, 0.57, -0.09, 0.2),
                                                 rec("lora", 0.0, 0.005, 0.30, 0.005, 0.004))))
    assert "Two regimes: prompt puts 69% of attention on its prompt" in two and "intervals apart" in two
    assert "and lora by 0.005 nats" in two and "None pulls the residual stream back" in two
    assert "No untrained-prefix control was captured" in two
    sink = verdict_text(replace(base, recoveries=(rec("prompt", 0.69, 0.27, 0.57, -0.09, 0.004),
                                                  rec("lora", 0.0, 0.005, 0.30, 0.005, 0.004))))
    assert "Two regimes" not in sink and "do not show two regimes of recovery beyond the first-token" in sink
    one = verdict_text(replace(base, recoveries=(rec("lora", 0.0, 0.005, 0.30, 0.1, 0.004),)))
    assert "Two regimes" not in one and "lora pulls the residual stream back toward the original" in one
