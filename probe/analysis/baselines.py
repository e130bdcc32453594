"""Measured baselines for the decodable share of lost facts: a floor (chance) and a ceiling (known facts).

A share of lost facts "still decodable" means nothing alone: the probe picks the answer among a
few same-relation candidates, so it succeeds sometimes without any knowledge, and it fails
sometimes even where the model knows the fact. Both ends are measured on the same eval facts,
with the same probe at the same layer (re-chosen inside every resample):

* floors — the same probe trained on label-shuffled answers (its chance, lens biases included),
  and the probe on facts neither model knows (what "decodable" is without the knowledge);
* ceiling — facts the original knows with a similar margin (log-probability of its top-1 answer
  minus its runner-up's) that compression keeps: each lost fact is matched to its ``K`` nearest
  kept facts by margin, within its relation where the relation has enough kept facts.

:class:`Compared` holds a share, its baseline and their paired difference (one cluster bootstrap,
so a subject's resampling weight moves both), which is what the verdict's decision tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis.bootstrap import EMPTY, ClusterBootstrap, Interval, percentile
from probe.analysis.captures import RunSet

K_MATCH = 3  # kept facts matched to each lost fact


@dataclass(frozen=True)
class Compared:
    """A share against one baseline: both with intervals, and the paired difference ``share − baseline``."""

    what: str
    share: Interval
    baseline: Interval
    diff: Interval

    @property
    def above(self) -> bool:
        return self.diff.n > 0 and self.diff.lo > 0

    @property
    def below(self) -> bool:
        return self.diff.n > 0 and self.diff.hi < 0

    def as_dict(self) -> dict:
        return {"baseline": self.what, "share": self.share.as_dict(), "baseline_share": self.baseline.as_dict(),
                "difference": self.diff.as_dict(), "above": self.above, "below": self.below}


NO_COMPARISON = Compared("", EMPTY, EMPTY, EMPTY)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap replicates (``[n_boot]``) over ``n`` facts."""

    point: float
    reps: np.ndarray
    n: int

    @property
    def interval(self) -> Interval:
        if self.n == 0 or not np.isfinite(self.point):
            return EMPTY
        return Interval(self.point, *percentile(self.reps), self.n)

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.point - other.point, self.reps - other.reps, min(self.n, other.n))


def estimate_at(boot: ClusterBootstrap, values: np.ndarray, rows: np.ndarray, best: int,
                picked: np.ndarray) -> Estimate:
    """Mean of ``values`` ``[n, L]`` over ``rows`` at layer ``best``; in resample ``r`` at layer ``picked[r]``."""
    values = np.asarray(values, np.float64)
    rows = np.asarray(rows, bool)
    sel = values[rows, best]
    n = int(np.isfinite(sel).sum())
    if n == 0:
        return Estimate(float("nan"), np.full(len(picked), np.nan), 0)
    reps = boot.replicates(values, rows)[np.arange(len(picked)), picked]
    return Estimate(float(np.nanmean(sel)), reps, n)


def compare(what: str, share: Estimate, baseline: Estimate) -> Compared:
    if share.n == 0 or baseline.n == 0:
        return Compared(what, share.interval, baseline.interval, EMPTY)
    return Compared(what, share.interval, baseline.interval, (share - baseline).interval)


def normalised(share: Estimate, floor: Estimate, ceiling: Estimate) -> Interval:
    """``(share − floor) / (ceiling − floor)`` per resample: 0 = as at chance, 1 = as decodable as known facts."""
    if min(share.n, floor.n, ceiling.n) == 0 or ceiling.point <= floor.point:
        return EMPTY
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (share.reps - floor.reps) / (ceiling.reps - floor.reps)
    reps = np.where(ceiling.reps > floor.reps, reps, np.nan)
    return Interval((share.point - floor.point) / (ceiling.point - floor.point), *percentile(reps), share.n)


def original_margin(rs: RunSet) -> np.ndarray | None:
    """Per eval fact, the original's log-probability of its top-1 token minus its runner-up's (nats).

    For a fact the original knows, that is how firmly it knows it; None when the capture kept
    fewer than two top tokens.
    """
    run = rs.runs["original"]
    if "logits/topk_logprobs" not in run.manifest.get("shapes", {}):
        return None
    top = np.asarray(run["logits/topk_logprobs"][:], np.float64)[rs.eval_rows]
    return top[:, 0] - top[:, 1] if top.ndim == 2 and top.shape[1] >= 2 else None


def match_by_margin(margin: np.ndarray, relation: np.ndarray, lost: np.ndarray, kept: np.ndarray,
                    k: int = K_MATCH) -> np.ndarray:
    """``[n, k]`` indices of kept facts with the nearest margin to each lost fact (−1 rows elsewhere).

    Within the lost fact's relation when it has at least ``k`` kept facts, else among all kept facts.
    """
    out = np.full((len(margin), k), -1, np.int64)
    kept_idx = np.nonzero(kept)[0]
    if len(kept_idx) == 0:
        return out
    for i in np.nonzero(lost)[0]:
        pool = kept_idx[relation[kept_idx] == relation[i]]
        if len(pool) < k:
            pool = kept_idx
        near = pool[np.argsort(np.abs(margin[pool] - margin[i]), kind="stable")[:k]]
        out[i, : len(near)] = near
        out[i, len(near):] = near[-1]
    return out


def matched_values(values: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Per fact, the mean of ``values`` ``[n, L]`` over its matched facts (NaN for facts without a match)."""
    values = np.asarray(values, np.float64)
    out = np.full(values.shape, np.nan)
    has = match[:, 0] >= 0
    out[has] = values[match[has]].mean(1)
    return out
