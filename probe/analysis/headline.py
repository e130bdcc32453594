"""Headline numbers: the family arrays reduced to the verdict's numbers, each with its bootstrap interval.

A lost fact is one the original outputs top-1 and the compressed model does not (the models' own
outputs, recorded at capture); "never" facts neither outputs. The decodable share of lost facts is
set against measured baselines (:mod:`~probe.analysis.baselines`): label-shuffled probes and
never-known facts below, margin-matched kept facts above. The decodability layer is chosen on the
facts that are none of these, so no compared share is selected for. Every
fact-level share's interval comes from one cluster bootstrap by subject (facts of a subject are
resampled together), and the decodability layer is chosen again inside each resample, so the
interval carries the uncertainty of that choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.baselines import (
    NO_COMPARISON,
    Estimate,
    compare,
    estimate_at,
    match_by_margin,
    matched_values,
    normalised,
    original_margin,
)
from probe.analysis.candidates import Candidates
from probe.analysis.captures import RunSet
from probe.analysis.families.attention import AttentionFamily
from probe.analysis.families.cka import CKAFamily
from probe.analysis.families.decodability import DecodabilityFamily
from probe.analysis.families.divergence import DivergenceFamily
from probe.analysis.paired import NetRecovery, net_recoveries, pairwise
from probe.analysis.spec import AnalyzeSpec
from probe.analysis.verdict import RecoveryNumbers, VerdictInputs
from probe.knowledge.status import transitions


@dataclass(frozen=True)
class Headline:
    """The verdict's inputs, each variant's output top-1 share, the eval facts lost and never known, the
    cluster bootstrap every interval shares, and the baseline facts."""

    verdict: VerdictInputs
    known: dict[str, bs.Interval]
    lost: np.ndarray
    never: np.ndarray
    boot: bs.ClusterBootstrap
    baselines: Baselines


def _delta_cka(cka: CKAFamily, variant: str) -> bs.Interval:
    """Mean over layers of debiased CKA(variant) − CKA(compressed), with the interval of the paired half-samples."""
    point = float(cka.point[variant].mean() - cka.point["compressed"].mean())
    lo, hi = bs.basic_interval(point, (cka.replicates[variant] - cka.replicates["compressed"]).mean(0))
    return bs.Interval(point, lo, hi, cka.n)


def recovery_numbers(variant: str, lost: np.ndarray, top1: np.ndarray, cka: CKAFamily, div: DivergenceFamily,
                     att: AttentionFamily | None, boot: bs.ClusterBootstrap,
                     net: NetRecovery | None = None) -> RecoveryNumbers:
    """How a recovery does on the lost facts and how it acts: per-fact means over layers (and heads)."""

    def iv(values: np.ndarray | None) -> bs.Interval:
        return bs.EMPTY if values is None else boot.interval(values)

    change = {kind: div.outputs_vs_compressed.get(kind, {}).get(variant) for kind in ("mlp_out", "attn_out")}
    return RecoveryNumbers(
        variant, regained=boot.interval(top1, lost) if lost.any() else bs.EMPTY,
        delta_cka=_delta_cka(cka, variant),
        prompt_mass=iv(att.prompt_mass[variant].mean((1, 2)) if att else None),
        attn_shift=iv(att.js_vs_compressed[variant].mean((1, 2)) if att else None),
        attn_shift_no_sink=iv(att.js_vs_compressed_no_sink[variant].mean((1, 2))
                              if att and variant in att.js_vs_compressed_no_sink else None),
        mlp_change=iv(None if change["mlp_out"] is None else change["mlp_out"].mean(1)),
        attn_out_change=iv(None if change["attn_out"] is None else change["attn_out"].mean(1)), net=net)


def best_layers(boot: bs.ClusterBootstrap, correct: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Per resample, the layer where ``correct`` ``[n, L]`` is highest on the facts ``select``."""
    return np.nan_to_num(boot.replicates(correct.astype(np.float64), select), nan=-1.0).argmax(1)


def share_at(boot: bs.ClusterBootstrap, correct: np.ndarray, rows: np.ndarray, best: int,
             picked: np.ndarray) -> bs.Interval:
    """Share of ``rows`` correct at layer ``best``; in resample ``r`` at layer ``picked[r]`` (chosen inside it)."""
    if not np.asarray(rows, bool).any():
        return bs.EMPTY
    return estimate_at(boot, correct, rows, best, picked).interval


@dataclass(frozen=True)
class Baselines:
    """Which eval facts serve as floor and ceiling, and the layer-selection facts that exclude them."""

    kept: np.ndarray
    match: np.ndarray  # [n, K] matched kept facts per lost fact (−1 elsewhere)
    select: np.ndarray
    margin: np.ndarray | None

    @property
    def matched(self) -> np.ndarray:
        """Kept facts that serve as some lost fact's control."""
        out = np.zeros(len(self.kept), bool)
        out[self.match[self.match >= 0]] = True
        return out


def baseline_facts(rs: RunSet, top1: dict[str, np.ndarray], lost: np.ndarray, never: np.ndarray) -> Baselines:
    """Matched controls by the original's margin, and the facts the layer is chosen on.

    The layer is chosen on the first of these sets that holds at least as many facts as are lost:
    facts that are none of lost, never-known or matched (so no compared share is selected for);
    facts neither lost nor never known; facts not lost; every fact.
    """
    kept = top1["original"] & top1["compressed"]
    margin = original_margin(rs)
    relation = np.array([rs.probes[i]["relation"] for i in rs.eval_rows])
    match = (match_by_margin(margin, relation, lost, kept) if margin is not None
             else np.full((len(lost), 1), -1, np.int64))
    b = Baselines(kept, match, np.ones_like(lost), margin)
    need = max(1, int(lost.sum()))
    for select in (~(lost | never | b.matched), ~(lost | never), ~lost):
        if select.sum() >= need:
            return Baselines(kept, match, select, margin)
    return b


def headline(rs: RunSet, spec: AnalyzeSpec, cands: Candidates, dec: DecodabilityFamily, div: DivergenceFamily,
             att: AttentionFamily | None, cka: CKAFamily) -> Headline:
    ev = rs.eval_rows
    boot = bs.ClusterBootstrap(bs.subject_labels(rs.probes, ev), spec.n_boot, spec.seed)
    top1 = {v: rs.output_top1(v) for v in rs.variants}
    lost = transitions(top1["original"], top1["compressed"]).lost
    never = ~top1["original"] & ~top1["compressed"]
    comp = dec.own["compressed"].astype(np.float64)
    base = baseline_facts(rs, top1, lost, never)
    best = int(comp[base.select].mean(0).argmax())
    picked = best_layers(boot, comp, base.select)
    n_lost = int(lost.sum())
    enough = n_lost >= spec.min_facts
    note = " ".join(n for n in (dec.note, cands.fallback) if n)

    def at(values: np.ndarray, rows: np.ndarray) -> Estimate:
        return estimate_at(boot, values, rows, best, picked)

    share = at(comp, lost) if enough else at(comp, np.zeros_like(lost))
    shuffled = dec.shuffled.get("compressed")
    floor_sets = []  # (what, estimate) of every measured floor
    if shuffled is not None:
        floor_sets.append(("label-shuffled probe on the lost facts", at(shuffled, lost)))
    if never.sum() >= spec.min_facts:
        floor_sets.append(("probe on never-known facts", at(comp, never)))
    floors = [compare(what, share, est) for what, est in floor_sets]
    ceiling_est = at(matched_values(comp, base.match), lost)
    ceiling = (compare("probe on margin-matched kept facts", share, ceiling_est)
               if base.matched.sum() >= spec.min_facts and enough else NO_COMPARISON)
    usable = [(f, est) for f, (_, est) in zip(floors, floor_sets, strict=True) if f.diff.n > 0]
    floor, floor_est = max(usable, key=lambda fe: fe[0].baseline.mean, default=(NO_COMPARISON, None))
    norm = normalised(share, floor_est, ceiling_est) if floor_est is not None and ceiling.diff.n else bs.EMPTY
    margins = {}
    if base.margin is not None and n_lost:
        margins = {"lost": float(np.median(base.margin[lost])),
                   "matched": float(np.median(base.margin[base.match[lost].ravel()])) if base.matched.any()
                   else float("nan")}
    inputs = VerdictInputs(
        model=spec.model, compression=spec.compression, n_eval=len(ev),
        known_original=boot.interval(top1["original"]), known_compressed=boot.interval(top1["compressed"]),
        n_lost=n_lost, decodable=share.interval if enough else bs.EMPTY,
        uniform_chance=float(cands.cands.chance[ev][lost].mean()) if n_lost else float(cands.cands.chance[ev].mean()),
        layer=rs.layers[best], min_facts=spec.min_facts, decodability_note=note,
        recoveries=tuple(recovery_numbers(v, lost, top1[v], cka, div, att, boot, net)
                         for v, net in zip(rs.recoveries, net_recoveries(top1, rs.recoveries), strict=True)),
        pairs=pairwise(top1, rs.recoveries),
        n_never=int(never.sum()),
        output_lost=boot.interval(dec.lens["compressed"][:, -1], lost) if enough else bs.EMPTY,
        lens_lost=share_at(boot, dec.lens["compressed"], lost, best, picked) if enough else bs.EMPTY,
        probe=dec.choice["compressed"][best],
        floors=tuple(floors) if enough else (), floor=floor if enough else NO_COMPARISON, ceiling=ceiling,
        normalised=norm if enough else bs.EMPTY, n_matched=int(base.matched.sum()), margins=margins,
        n_select=int(base.select.sum()))
    return Headline(inputs, {v: boot.interval(t) for v, t in top1.items()}, lost, never, boot, base)
