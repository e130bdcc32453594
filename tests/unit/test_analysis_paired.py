"""Net recovery and exact McNemar tests on known contingency tables."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from probe.analysis.paired import holm, mcnemar_exact, net_recoveries, pairwise


def test_exact_mcnemar_matches_the_binomial_sum_by_hand():
    # 3 vs 11 discordant facts: p = 2·Σ_{k≤3} C(14, k) / 2¹⁴ = 2·470/16384
    assert mcnemar_exact(3, 11) == pytest.approx(2 * 470 / 16384, rel=1e-12)
    assert mcnemar_exact(11, 3) == mcnemar_exact(3, 11)
    by_hand = 2 * sum(comb(34, k) for k in range(17)) / 2 ** 34  # 16 vs 18: the IDP
    assert mcnemar_exact(16, 18) == pytest.approx(by_hand, rel=1e-12) and by_hand > 0.8
    assert mcnemar_exact(17, 17) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024, rel=1e-12)


def test_holm_adjustment_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def _flags(*counts: tuple[tuple[bool, ...], int]) -> dict[str, np.ndarray]:
    """Facts as rows of (original, compressed, idp, lora) correctness, each repeated ``count`` times."""
    rows = np.array([pattern for pattern, n in counts for _ in range(n)], bool)
    return dict(zip(("original", "compressed", "idp", "lora"), rows.T, strict=True))


def test_net_recovery_counts_both_ways_and_tests_the_discordant_facts():
    top1 = _flags(((True, False, True, True), 16),   # lost by compression, regained by both
                  ((True, True, False, True), 18),   # known by compressed, broken by idp
                  ((False, False, True, False), 2),  # unknown to both, idp gets them
                  ((True, True, True, True), 100), ((True, False, False, False), 30))
    idp, lora = net_recoveries(top1, ("idp", "lora"))
    assert (idp.regained, idp.gained, idp.broken, idp.net) == (16, 2, 18, 0)
    assert idp.p == pytest.approx(mcnemar_exact(18, 18)) == 1.0
    assert (lora.regained, lora.gained, lora.broken, lora.net) == (16, 0, 0, 16)
    assert lora.p == pytest.approx(2 / 2 ** 16, rel=1e-12) and lora.p_holm == pytest.approx(2 * lora.p)
    assert idp.as_dict()["newly_broken"] == 18 and idp.as_dict()["net"] == 0
    (pair,) = pairwise(top1, ("idp", "lora"))
    assert (pair.only_a, pair.only_b) == (2, 18) and pair.p == pytest.approx(mcnemar_exact(2, 18))
    assert pair.separated  # one pair: no correction, p ≈ 4e-4
