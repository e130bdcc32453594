"""Decodability family: can a linear probe still pick each eval fact's answer among its candidates?

Probes are trained on the train-split facts and scored on the eval-split facts; captures of the
eval split alone fall back to cross-validation over eval facts, said in :attr:`note`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probe.analysis.bootstrap import subject_labels
from probe.analysis.captures import RunSet
from probe.analysis.decodability import (
    CandidateSet,
    ProbeChoice,
    ProbeData,
    candidate_features,
    cross_val_correct,
    held_out_correct,
)
from probe.analysis.lens import Lens
from probe.progress import track


@dataclass(frozen=True)
class DecodabilityFamily:
    """Per eval fact and layer ``[n, L]`` (bool): is the answer the pick among the fact's candidates?

    ``lens[v]``: the plain logit lens restricted to the candidates (no training), every variant;
    ``own[v]``: a probe trained on that variant, every variant; ``transfer[v]``: the original's
    probe applied to variant ``v``, every variant but the original. ``choice[v][li]``: the (C, rank)
    of variant ``v``'s probe at layer ``li``, chosen by cross-validation inside its training facts
    (transfer probes are the original's).
    """

    lens: dict[str, np.ndarray]
    own: dict[str, np.ndarray]
    transfer: dict[str, np.ndarray]
    held_out: bool
    note: str
    choice: dict[str, list[ProbeChoice]]
    shuffled: dict[str, np.ndarray] = field(default_factory=dict)


SHUFFLED_VARIANTS = ("compressed",)  # whose probe gets label-shuffled twins (the verdict's chance)


def decodability_family(rs: RunSet, lens: Lens, cands: CandidateSet, min_facts: int, folds: int,
                        seed: int, shuffles: int = 0) -> DecodabilityFamily:
    """Lens, own and transfer decodability per eval fact and layer; ``shuffles`` label-shuffled probes.

    ``shuffled[v]`` (float ``[n, L]``, the compressed model's): per eval fact, the share of
    ``shuffles`` probes trained exactly as ``own`` (same training facts, same nested choice of C
    and rank) but on label-shuffled answers, that pick the true answer: the probe's measured chance.
    """
    held_out = len(rs.train_rows) >= min_facts
    note = ("(probes trained on train-split facts, scored on eval-split facts; C and rank chosen by "
            "cross-validation within the train-split facts)" if held_out else
            f"(only eval facts were captured, so probes are {folds}-fold cross-validated over them, C and rank "
            f"chosen within each fold's training part; capture with --split all for held-out training facts)")
    cvec = lens.unembedding_rows(np.maximum(cands.ids, 0))
    ev, tr = rs.eval_rows, rs.train_rows
    shape = (len(ev), len(rs.layers))
    out = {kind: {v: np.zeros(shape, bool) for v in rs.variants} for kind in ("lens", "own")}
    out["transfer"] = {v: np.zeros(shape, bool) for v in rs.others}
    choice: dict[str, list[ProbeChoice]] = {v: [] for v in rs.variants}
    shuffled = {v: np.zeros(shape) for v in SHUFFLED_VARIANTS if v in rs.variants and shuffles > 0}
    groups_tr, groups_ev = subject_labels(rs.probes, tr), subject_labels(rs.probes, ev)
    rows = np.arange(len(rs.probes))
    for li, layer in enumerate(track(rs.layers, "Decodability")):
        data = {v: ProbeData(candidate_features(lens.normed(rs.read(v, rs.hook("resid_post", layer), rows)), cvec),
                             cands) for v in rs.variants}
        ev_data = {v: d.subset(ev) for v, d in data.items()}
        for v, d in ev_data.items():
            out["lens"][v][:, li] = np.where(d.cands.mask, d.feats.sum(2), -np.inf).argmax(1) == d.cands.answer
        for v in rs.variants:
            targets = {f"own:{v}": ev_data[v]}
            if v == "original":
                targets |= {f"transfer:{w}": ev_data[w] for w in rs.others}
            got = (held_out_correct(data[v].subset(tr), targets, groups=groups_tr, seed=seed) if held_out
                   else cross_val_correct(ev_data[v], targets, folds, groups=groups_ev, seed=seed))
            choice[v].append(got.choice)
            for key, correct in got.correct.items():
                kind, w = key.split(":")
                out[kind][w][:, li] = correct
        for v in shuffled:
            for s in range(shuffles):
                fake = data[v].shuffled(seed + 1 + s)
                got = (held_out_correct(fake.subset(tr), {"t": ev_data[v]}, groups=groups_tr, seed=seed) if held_out
                       else cross_val_correct(fake.subset(ev), {"t": ev_data[v]}, folds, groups=groups_ev, seed=seed))
                shuffled[v][:, li] += got.correct["t"] / shuffles
    return DecodabilityFamily(out["lens"], out["own"], out["transfer"], held_out, note, choice, shuffled)
