"""Headline numbers: the family arrays reduced to the verdict's numbers, each with its bootstrap interval.

A lost fact is one the original outputs top-1 and the compressed model does not (the models' own
outputs, recorded at capture); "never" facts neither outputs. The decodability layer is chosen on
the facts that are not lost, so the displaced share on lost facts is not selected for. Every
fact-level share's interval comes from one cluster bootstrap by subject (facts of a subject are
resampled together), and the decodability layer is chosen again inside each resample, so the
interval carries the uncertainty of that choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
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
    """The verdict's inputs, each variant's output top-1 share, and the eval facts lost and never known."""

    verdict: VerdictInputs
    known: dict[str, bs.Interval]
    lost: np.ndarray
    never: np.ndarray


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
        mlp_change=iv(None if change["mlp_out"] is None else change["mlp_out"].mean(1)),
        attn_out_change=iv(None if change["attn_out"] is None else change["attn_out"].mean(1)), net=net)


def best_layers(boot: bs.ClusterBootstrap, correct: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Per resample, the layer where ``correct`` ``[n, L]`` is highest on the facts ``select``."""
    return np.nan_to_num(boot.replicates(correct.astype(np.float64), select), nan=-1.0).argmax(1)


def share_at(boot: bs.ClusterBootstrap, correct: np.ndarray, rows: np.ndarray, best: int,
             picked: np.ndarray) -> bs.Interval:
    """Share of ``rows`` correct at layer ``best``; in resample ``r`` at layer ``picked[r]`` (chosen inside it)."""
    if not rows.any():
        return bs.EMPTY
    values = correct.astype(np.float64)
    reps = boot.replicates(values, rows)[np.arange(len(picked)), picked]
    return bs.Interval(float(values[rows, best].mean()), *bs.percentile(reps), int(rows.sum()))


def headline(rs: RunSet, spec: AnalyzeSpec, cands: Candidates, dec: DecodabilityFamily, div: DivergenceFamily,
             att: AttentionFamily | None, cka: CKAFamily) -> Headline:
    ev = rs.eval_rows
    boot = bs.ClusterBootstrap(bs.subject_labels(rs.probes, ev), spec.n_boot, spec.seed)
    top1 = {v: rs.output_top1(v) for v in rs.variants}
    lost = transitions(top1["original"], top1["compressed"]).lost
    never = ~top1["original"] & ~top1["compressed"]
    comp = dec.own["compressed"]
    select = ~lost if (~lost).any() else np.ones_like(lost)
    best = int(comp[select].mean(0).argmax())
    picked = best_layers(boot, comp, select)
    chance = cands.cands.chance[ev]
    n_lost = int(lost.sum())
    enough = n_lost >= spec.min_facts
    note = " ".join(n for n in (dec.note, cands.fallback) if n)
    inputs = VerdictInputs(
        model=spec.model, compression=spec.compression, n_eval=len(ev),
        known_original=boot.interval(top1["original"]), known_compressed=boot.interval(top1["compressed"]),
        n_lost=n_lost, decodable=share_at(boot, comp, lost, best, picked) if enough else bs.EMPTY,
        chance=float(chance[lost].mean()) if n_lost else float(chance.mean()), layer=rs.layers[best],
        min_facts=spec.min_facts, decodability_note=note,
        recoveries=tuple(recovery_numbers(v, lost, top1[v], cka, div, att, boot, net)
                         for v, net in zip(rs.recoveries, net_recoveries(top1, rs.recoveries), strict=True)),
        pairs=pairwise(top1, rs.recoveries),
        n_never=int(never.sum()),
        decodable_never=(share_at(boot, comp, never, best, picked)
                         if enough and never.sum() >= spec.min_facts else bs.EMPTY),
        output_lost=boot.interval(dec.lens["compressed"][:, -1], lost) if enough else bs.EMPTY,
        lens_lost=share_at(boot, dec.lens["compressed"], lost, best, picked) if enough else bs.EMPTY,
        probe=dec.choice["compressed"][best])
    return Headline(inputs, {v: boot.interval(t) for v, t in top1.items()}, lost, never)
