"""Cluster bootstrap by subject, and the decodability layer re-chosen inside each resample."""

from __future__ import annotations

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.headline import best_layers, share_at


def test_duplicated_clusters_widen_the_interval_which_still_contains_the_estimate():
    """50 subjects, each with 4 facts that agree: 50 independent facts' worth of evidence, not 200."""
    rng = np.random.default_rng(0)
    per_subject = rng.random(50) < 0.6
    values = np.repeat(per_subject, 4).astype(float)
    groups = np.repeat(np.arange(50), 4)
    naive = bs.interval(values, 2000, seed=1)
    cluster = bs.ClusterBootstrap(groups, 2000, seed=1).interval(values)
    assert cluster.mean == naive.mean == values.mean() and cluster.n == 200
    assert cluster.lo <= cluster.mean <= cluster.hi
    assert (cluster.hi - cluster.lo) > 1.6 * (naive.hi - naive.lo)  # √4 = 2 in theory
    single = bs.ClusterBootstrap(np.arange(200), 2000, seed=1).interval(values)  # one fact per cluster
    assert abs((single.hi - single.lo) - (naive.hi - naive.lo)) < 0.2 * (naive.hi - naive.lo)


def test_cluster_bootstrap_subsets_nan_and_determinism():
    groups = np.repeat(np.arange(30), 2)
    boot = bs.ClusterBootstrap(groups, 500, seed=3)
    np.testing.assert_array_equal(boot.weights, bs.ClusterBootstrap(groups, 500, seed=3).weights)
    assert (boot.weights.sum(1) == 60).all()  # 30 clusters drawn, two facts each
    np.testing.assert_array_equal(boot.weights[:, 0::2], boot.weights[:, 1::2])  # a subject's facts move together
    values = np.arange(60, dtype=float)
    values[5] = np.nan
    rows = np.arange(60) < 20
    iv = boot.interval(values, rows)
    assert iv.n == 19 and iv.mean == np.nanmean(values[:20]) and iv.lo < iv.mean < iv.hi
    assert boot.replicates(np.ones((60, 3, 2))).shape == (500, 3, 2)
    assert boot.interval(np.full(60, np.nan)) is bs.EMPTY


def test_subject_labels_fall_back_to_one_cluster_per_fact():
    probes = [{"subject": "Paris"}, {"subject": "Paris"}, {"id": "x"}, {"subject": ""}]
    labels = bs.subject_labels(probes, np.arange(4))
    assert labels[0] == labels[1] and len(set(labels)) == 3


def test_the_layer_is_chosen_again_inside_each_resample():
    """Two layers equally good on the facts used to choose; on the lost facts one is 90%, the other 30%."""
    rng = np.random.default_rng(4)
    n_select, n_lost = 200, 100
    select = np.r_[np.ones(n_select, bool), np.zeros(n_lost, bool)]
    lost = ~select
    correct = np.zeros((n_select + n_lost, 2), bool)
    correct[:n_select] = rng.random((n_select, 2)) < 0.6
    correct[n_select:, 0] = np.arange(n_lost) % 10 < 9
    correct[n_select:, 1] = np.arange(n_lost) % 10 < 3
    boot = bs.ClusterBootstrap(np.arange(n_select + n_lost), 1000, seed=5)
    best = int(correct[select].mean(0).argmax())
    picked = best_layers(boot, correct, select)
    assert 0.1 < picked.mean() < 0.9  # both layers win some resamples
    chosen = share_at(boot, correct, lost, best, picked)
    fixed = share_at(boot, correct, lost, best, np.full(len(picked), best))
    assert chosen.mean == fixed.mean == correct[lost, best].mean()
    assert fixed.hi - fixed.lo < 0.25 and chosen.lo < 0.4 and chosen.hi > 0.85  # the choice's uncertainty shows
