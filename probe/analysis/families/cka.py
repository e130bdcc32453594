"""CKA family: debiased linear CKA of each variant's residuals with the original's, per layer; biased across layers.

The per-layer numbers the verdict and tables use are debiased (Song et al.'s unbiased HSIC): at
n ≈ d (608 facts × 576 dims) biased CKA of two independent Gaussians is about 0.49. Their
intervals come from half-samples of the subjects drawn without replacement (a subject's facts
stay together), the same half-samples for every variant and layer, so replicates difference
into ΔCKA intervals. The cross-layer heatmaps keep biased CKA, labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.captures import RunSet
from probe.analysis.cka import cka_matrix, linear_cka, subset_linear_cka
from probe.progress import track

ESTIMATOR = "debiased linear CKA (unbiased HSIC); 95% basic interval from half-samples of the subjects"
CROSS_ESTIMATOR = "biased linear CKA (for the cross-layer picture only: inflated when facts ≈ dimensions)"


@dataclass(frozen=True)
class CKAFamily:
    """Every variant but the original, over ``n`` eval facts (CKA is a statistic of the set, not per fact).

    ``point[v]``: ``[L]`` debiased linear CKA with the original at the same layer; ``biased[v]``: the
    same in the biased form; ``replicates[v]``: ``[L, n_rep]`` debiased CKA on half-samples of the
    subjects, every variant on the same half-samples; ``cross[v]``: ``[L, L]`` biased CKA of the
    variant's layer (rows) with the original's layer (columns).
    """

    point: dict[str, np.ndarray]
    replicates: dict[str, np.ndarray]
    cross: dict[str, np.ndarray]
    n: int
    biased: dict[str, np.ndarray]

    def interval(self, variant: str, li: int) -> tuple[float, float]:
        """The 95% interval of ``point[variant][li]``."""
        return bs.basic_interval(float(self.point[variant][li]), self.replicates[variant][li])


def cka_family(rs: RunSet, n_rep: int, seed: int) -> CKAFamily:
    ev = rs.eval_rows
    resid = {v: np.stack([rs.read(v, rs.hook("resid_post", layer), ev) for layer in rs.layers]) for v in rs.variants}
    ref = resid["original"]
    masks = bs.half_samples(bs.subject_labels(rs.probes, ev), n_rep, seed)
    point, biased, reps, cross = {}, {}, {}, {}
    for v in track(rs.others, "CKA"):
        layers = range(len(rs.layers))
        reps[v] = np.stack([subset_linear_cka(resid[v][li], ref[li], masks) for li in layers])
        point[v] = np.array([linear_cka(resid[v][li], ref[li], debiased=True) for li in layers])
        biased[v] = np.array([linear_cka(resid[v][li], ref[li]) for li in layers])
        cross[v] = cka_matrix(list(resid[v]), list(ref))
    return CKAFamily(point, reps, cross, len(ev), biased)
