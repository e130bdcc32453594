"""CKA family: linear CKA of each variant's residuals with the original's, per layer and across layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.captures import RunSet
from probe.analysis.cka import cka_matrix, linear_cka
from probe.progress import track


@dataclass(frozen=True)
class CKAFamily:
    """Every variant but the original, over ``n`` eval facts (CKA is a statistic of the set, not per fact).

    ``point[v]``: ``[L]`` linear CKA with the original at the same layer; ``replicates[v]``:
    ``[L, n_boot]`` its bootstrap replicates, every variant on the same resamples (so replicates
    difference into ΔCKA intervals); ``cross[v]``: ``[L, L]`` CKA of the variant's layer (rows)
    with the original's layer (columns).
    """

    point: dict[str, np.ndarray]
    replicates: dict[str, np.ndarray]
    cross: dict[str, np.ndarray]
    n: int


def cka_family(rs: RunSet, n_boot: int, seed: int) -> CKAFamily:
    ev = rs.eval_rows
    resid = {v: np.stack([rs.read(v, rs.hook("resid_post", layer), ev) for layer in rs.layers]) for v in rs.variants}
    ref = resid["original"]
    idx = bs.resample(len(ev), n_boot, seed)
    point, reps, cross = {}, {}, {}
    for v in track(rs.others, "CKA"):
        reps[v] = np.stack([bs.bootstrap_cka(resid[v][li], ref[li], idx) for li in range(len(rs.layers))])
        point[v] = np.array([linear_cka(resid[v][li], ref[li]) for li in range(len(rs.layers))])
        cross[v] = cka_matrix(list(resid[v]), list(ref))
    return CKAFamily(point, reps, cross, len(ev))
