"""Percentile bootstrap over facts, seeded, vectorised over everything but the fact axis.

Hand-written rather than ``scipy.stats.bootstrap``: every table here needs intervals for many
columns (layers × heads) from one shared set of resampled fact indices, so that numbers in one
table are resampled together and a seed reproduces them exactly; scipy resamples per call and
handles one statistic shape at a time. Linear CKA is resampled through the n×n Gram matrix
(built once per layer), which costs O(n²) per resample instead of O(n·d²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.errors import ProbeError

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap 95% interval over ``n`` facts (NaN when there are none)."""

    mean: float
    lo: float
    hi: float
    n: int

    def fmt(self, pct: bool = False, digits: int = 2) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        k = 100.0 if pct else 1.0
        unit = "%" if pct else ""
        d = 0 if pct else digits
        return f"{self.mean * k:.{d}f}{unit} [{self.lo * k:.{d}f}, {self.hi * k:.{d}f}]"

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}

    def scaled(self, offset: float, scale: float) -> Interval:
        """``(x - offset) / scale`` applied to the estimate and both ends (a monotone map for scale > 0)."""
        return Interval((self.mean - offset) / scale, (self.lo - offset) / scale, (self.hi - offset) / scale, self.n)


EMPTY = Interval(float("nan"), float("nan"), float("nan"), 0)


def subject_labels(probes: list[dict], rows: np.ndarray) -> np.ndarray:
    """One cluster label per fact of ``rows``: its subject, or its own id when the probe table has none."""
    return np.array([str(probes[i].get("subject") or f"\0fact {i}") for i in rows])


def check_enough(n: int, min_n: int, what: str) -> None:
    """Refuse a bootstrap over fewer than ``min_n`` facts, saying how many are needed."""
    if n < min_n:
        raise ProbeError(f"too few facts for a bootstrap interval: {what} has {n}, at least {min_n} are needed "
                         f"(capture more probes, or lower --min-facts)")


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` indices drawn with replacement; the same seed gives the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """Mean over axis 0 and its percentile interval, for every trailing column at once.

    ``values`` is ``[n_facts, ...]``; NaN entries (e.g. a subject not found) are left out of
    each mean. Returns ``(mean, lo, hi)`` with the trailing shape.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy(), nan.copy()
    mean = np.nanmean(values, axis=0) if np.isnan(values).any() else values.mean(0)
    flat = values.reshape(n, -1)
    idx = resample(n, n_boot, seed)
    boots = np.empty((n_boot, flat.shape[1]))
    step = max(1, (1 << 24) // max(1, n * flat.shape[1]))  # bound memory of the gathered block
    for s in range(0, n_boot, step):
        block = flat[idx[s: s + step]]
        boots[s: s + step] = np.nanmean(block, axis=1) if np.isnan(block).any() else block.mean(1)
    alpha = (1 - LEVEL) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha], axis=0)
    return mean, lo.reshape(values.shape[1:]), hi.reshape(values.shape[1:])


def interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Interval:
    """The bootstrap interval of the mean of a 1-D array of per-fact values."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    mean, lo, hi = bootstrap_mean(values[:, None], n_boot, seed)
    return Interval(float(mean[0]), float(lo[0]), float(hi[0]), int(np.isfinite(values).sum()))


def percentile(vals: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap replicates (NaN replicates ignored)."""
    alpha = (1 - LEVEL) / 2
    lo, hi = np.nanquantile(np.asarray(vals, np.float64), [alpha, 1 - alpha])
    return float(lo), float(hi)


class ClusterBootstrap:
    """A percentile bootstrap that resamples clusters (subjects) with replacement, keeping their facts together.

    Facts sharing a subject are not independent (a subject appears in several relations), so each
    resample draws as many clusters as there are, with replacement, and weights every fact by how
    often its cluster was drawn: ``weights`` ``[n_boot, n]``. A share over a subset of facts (the lost
    ones) is the weighted mean over that subset, so the subset's size varies across resamples as it
    would across samples. With one fact per cluster this is the ordinary bootstrap over facts.
    """

    def __init__(self, groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> None:
        labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
        draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
        counts = np.zeros((n_boot, len(labels)))
        np.add.at(counts, (np.repeat(np.arange(n_boot), len(labels)), draws.ravel()), 1.0)
        self.weights = counts[:, inverse]
        self.n = len(inverse)

    def replicates(self, values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Weighted means over facts (``rows``: a boolean subset) for every resample: ``[n, ...]`` → ``[n_boot, ...]``.

        NaN values are left out; a resample with no fact of the subset gives NaN.
        """
        values = np.asarray(values, np.float64)
        rows = np.ones(self.n, bool) if rows is None else np.asarray(rows, bool)
        v = values[rows].reshape(int(rows.sum()), -1)
        w = self.weights[:, rows]
        finite = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (w @ np.where(finite, v, 0.0)) / (w @ finite.astype(np.float64))
        return out.reshape((len(w), *values.shape[1:]))

    def interval(self, values: np.ndarray, rows: np.ndarray | None = None) -> Interval:
        """The mean of per-fact ``values`` (over ``rows``) with its cluster-bootstrap 95% interval."""
        values = np.asarray(values, np.float64).reshape(-1)
        sel = values if rows is None else values[np.asarray(rows, bool)]
        if not np.isfinite(sel).any():
            return EMPTY
        return Interval(float(np.nanmean(sel)), *percentile(self.replicates(values, rows)),
                        int(np.isfinite(sel).sum()))


def half_samples(groups: np.ndarray, n_rep: int, seed: int) -> np.ndarray:
    """``[n_rep, n]`` masks, each keeping the facts of a random half of the clusters, drawn without replacement.

    For CKA, which duplicates inflate (see :func:`probe.analysis.cka.subset_linear_cka`). A statistic
    of half the clusters, minus the full-data statistic, has the variance the full-data statistic has
    about its target (``σ²(1/m − 1/n) = σ²/n`` at ``m = n/2``: half-sampling, McCarthy 1969), so
    :func:`basic_interval` of the replicates needs no rescaling.
    """
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    half = max(1, len(labels) // 2)
    keep = np.zeros((n_rep, len(labels)), bool)
    for r in range(n_rep):
        keep[r, rng.choice(len(labels), half, replace=False)] = True
    return keep[:, inverse]


def basic_interval(point: float, replicates: np.ndarray) -> tuple[float, float]:
    """The 95% basic interval ``[2θ − q₉₇.₅, 2θ − q₂.₅]`` from replicates that mimic ``θ̂ − θ`` around ``θ̂``."""
    lo, hi = percentile(replicates)
    return 2 * point - hi, 2 * point - lo
