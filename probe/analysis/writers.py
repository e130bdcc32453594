"""Writers: family arrays and headline numbers → long-format tables, the summary and verdict files.

Table rows keep the formats the dashboard reads: per-fact tables (``lens``, ``divergence``,
``attention``, ``decodability``) have one row per variant, metric, layer (and head, ``-1`` when
averaged) with ``mean``, ``lo``, ``hi`` (95% bootstrap) and ``n``; ``decodability`` rows of a trained
probe (``own``, ``transfer``) also carry its cross-validated ``probe_c`` and ``probe_rank`` (null for
the ``lens`` rows); ``cka`` one row per layer (debiased
CKA with its half-sample interval, the biased value beside it, the ``estimator`` named) and
``cross_cka`` one row per layer pair (biased CKA, labelled); ``regimes`` one row per recovery and
headline metric. Missing numbers are NaN in memory, ``null`` in JSON and ``—`` in the summary text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from probe.analysis import bootstrap as bs
from probe.analysis.baselines import matched_values
from probe.analysis.decodability import ProbeChoice
from probe.analysis.families.attention import AttentionFamily
from probe.analysis.families.cka import CROSS_ESTIMATOR, CKAFamily
from probe.analysis.families.cka import ESTIMATOR as CKA_ESTIMATOR
from probe.analysis.families.decodability import DecodabilityFamily
from probe.analysis.families.divergence import OUTPUT_KINDS, DivergenceFamily
from probe.analysis.families.lens import LensFamily
from probe.analysis.headline import Headline
from probe.artifacts import write_json_atomic

MISSING = "—"
REGIME_METRICS = ("regained", "delta_cka", "prompt_mass", "attn_shift", "attn_shift_no_sink", "mlp_change",
                  "attn_out_change")


class Tables:
    """Long-format rows of every table, their intervals from the analysis's one cluster bootstrap by subject."""

    def __init__(self, boot: bs.ClusterBootstrap) -> None:
        self.boot = boot
        self.rows: dict[str, list[dict]] = {}

    def add(self, table: str, values: np.ndarray, layers: tuple[int, ...], per_layer: list[dict] | None = None,
            rows: np.ndarray | None = None, **keys: object) -> None:
        """Per-fact values ``[n, L]`` or ``[n, L, H]`` over every eval fact (``rows``: the facts to average, a
        boolean mask) → one row per layer (and head) with its 95% cluster-bootstrap interval.

        ``per_layer[li]``, when given, adds its fields to layer ``li``'s rows.
        """
        values = np.asarray(values, np.float64)
        sel = values if rows is None else values[np.asarray(rows, bool)]
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(sel, 0) if len(sel) else np.full(values.shape[1:], np.nan)
        reps = self.boot.replicates(values, rows)
        lo, hi = np.nanquantile(reps, [(1 - bs.LEVEL) / 2, (1 + bs.LEVEL) / 2], axis=0) if len(sel) else (mean, mean)
        n = len(sel)
        for li, layer in enumerate(layers):
            heads = range(mean.shape[1]) if mean.ndim == 2 else [None]
            for h in heads:
                at = (li, h) if h is not None else (li,)
                extra = per_layer[li] if per_layer else {}
                self.rows.setdefault(table, []).append({**keys, **extra, "layer": layer,
                                                        "head": -1 if h is None else h,
                                                        "mean": float(mean[at]), "lo": float(lo[at]),
                                                        "hi": float(hi[at]), "n": n})

    def put(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)


NO_CHOICE = {"probe_c": None, "probe_rank": None}


def _choice(c: ProbeChoice) -> dict:
    """A probe's chosen C and rank as decodability-table fields (the lens has none)."""
    return {"probe_c": c.c, "probe_rank": c.rank}


def build_tables(layers: tuple[int, ...], lens: LensFamily, div: DivergenceFamily, att: AttentionFamily | None,
                 cka: CKAFamily, dec: DecodabilityFamily, head: Headline) -> Tables:
    """Every table of the analysis as long-format rows."""
    t = Tables(head.boot)
    for v in lens.rank:
        t.add("lens", lens.prob[v], layers, variant=v, metric="answer_prob")
        t.add("lens", lens.top1(v).astype(float), layers, variant=v, metric="answer_top1")
        t.add("lens", np.log1p(lens.rank[v]), layers, variant=v, metric="log1p_answer_rank")
    for v in lens.kl:
        for metric, values in (("lens_kl", lens.kl[v]), ("lens_js", lens.js[v]),
                               ("resid_cosine_distance", div.cosine[v]), ("resid_relative_l2", div.relative_l2[v])):
            t.add("divergence", values, layers, variant=v, metric=metric)
    for kind in OUTPUT_KINDS:
        for v, values in div.outputs.get(kind, {}).items():
            t.add("divergence", values, layers, variant=v, metric=f"{kind}_relative_l2")
            if v in div.outputs_vs_compressed[kind]:
                t.add("divergence", div.outputs_vs_compressed[kind][v], layers, variant=v,
                      metric=f"{kind}_relative_l2_vs_compressed")
    if att is not None:
        for v in att.entropy:
            t.add("attention", att.entropy[v], layers, variant=v, metric="attention_entropy")
            t.add("attention", att.prompt_mass[v], layers, variant=v, metric="prompt_mass")
            if v in att.js:
                t.add("attention", att.js[v], layers, variant=v, metric="attention_js")
                t.add("divergence", att.js[v].mean(2), layers, variant=v, metric="attention_js")
    for v, point in cka.point.items():
        for li, layer in enumerate(layers):
            lo, hi = cka.interval(v, li)
            t.put("cka", {"variant": v, "layer": layer, "mean": float(point[li]), "lo": lo, "hi": hi, "n": cka.n,
                          "biased": float(cka.biased[v][li]), "estimator": CKA_ESTIMATOR})
    for v, matrix in cka.cross.items():
        for i, li in enumerate(layers):
            for j, lj in enumerate(layers):
                t.put("cross_cka", {"variant": v, "layer": li, "original_layer": lj, "cka": float(matrix[i, j]),
                                    "estimator": CROSS_ESTIMATOR})
    choice = {"lens": {v: [NO_CHOICE] * len(layers) for v in dec.lens},
              "own": {v: [_choice(c) for c in dec.choice[v]] for v in dec.own},
              "transfer": {v: [_choice(c) for c in dec.choice["original"]] for v in dec.transfer}}
    for probe, family in (("lens", dec.lens), ("own", dec.own), ("transfer", dec.transfer)):
        for v, values in family.items():
            t.add("decodability", values.astype(float), layers, choice[probe][v], variant=v, probe=probe,
                  facts="eval")
    for v in dec.own:
        for facts, rows in (("lost", head.lost), ("never", head.never)):
            if rows.any():
                for probe, values in (("own", dec.own[v]), ("lens", dec.lens[v])):
                    t.add("decodability", values.astype(float), layers, choice[probe][v], rows=rows, variant=v,
                          probe=probe, facts=facts)
    for v, values in dec.shuffled.items():
        for facts, rows in (("eval", None), ("lost", head.lost)):
            if rows is None or rows.any():
                t.add("decodability", values, layers, choice["own"][v], rows=rows, variant=v, probe="shuffled",
                      facts=facts)
    if head.lost.any() and head.baselines.matched.any():
        t.add("decodability", matched_values(dec.own["compressed"], head.baselines.match), layers,
              choice["own"]["compressed"], rows=head.lost, variant="compressed", probe="own", facts="matched")
    for r in head.verdict.recoveries:
        for metric in REGIME_METRICS:
            t.put("regimes", {"variant": r.variant, "metric": metric, **getattr(r, metric).as_dict()})
    return t


def summary_rows(head: Headline, cka: CKAFamily, dec: DecodabilityFamily, layers: tuple[int, ...]) -> list[dict]:
    """One row per variant: output top-1 on eval facts, lost facts regained, mean CKA, best probe and lens layers.

    Text cells; ``—`` where a number does not exist (the original has no CKA with itself).
    """
    regained = {r.variant: r.regained for r in head.verdict.recoveries}
    rows = []
    for v, known in head.known.items():
        mean, layer = max(zip(dec.own[v].astype(float).mean(0).tolist(), layers, strict=True))
        lens_mean, lens_layer = max(zip(dec.lens[v].astype(float).mean(0).tolist(), layers, strict=True))
        rows.append({"variant": v, "top1": known.fmt(pct=True),
                     "regained_lost": regained[v].fmt(pct=True) if v in regained else "",
                     "mean_cka": f"{np.mean(cka.point[v]):.3f}" if v in cka.point else MISSING,
                     "best_decodability": f"{mean * 100:.0f}% @ layer {layer}",
                     "best_lens": f"{lens_mean * 100:.0f}% @ layer {lens_layer}"})
    return rows


def verdict_json(head: Headline, text: str, distractors: str) -> dict:
    """Every headline number with its interval; shares beside their measured baselines and the decision."""
    v = head.verdict
    return {"n_eval": v.n_eval, "n_lost": v.n_lost, "uniform_chance": v.uniform_chance, "layer": v.layer,
            "layer_chosen_on_facts": v.n_select,
            "known_original": v.known_original.as_dict(), "known_compressed": v.known_compressed.as_dict(),
            "decodable_lost": v.decodable.as_dict(), "lens_lost": v.lens_lost.as_dict(),
            "probe": None if v.probe is None else {"c": v.probe.c, "rank": v.probe.rank,
                                                   "cv_accuracy": v.probe.cv_accuracy},
            "decision": v.decision if v.n_lost >= v.min_facts else None,
            "baselines": {"floors": [f.as_dict() for f in v.floors], "floor_used": v.floor.what or None,
                          "ceiling": v.ceiling.as_dict() if v.ceiling.what else None,
                          "n_matched": v.n_matched, "median_margin_nats": v.margins},
            "normalised_decodable": v.normalised.as_dict(),
            "n_never": v.n_never,
            "output_ranks_answer_first_lost": v.output_lost.as_dict(),
            "net_recovery": [r.net.as_dict() for r in v.recoveries if r.net is not None],
            "method_pairs": [t.as_dict() for t in v.pairs],
            "decodability": v.decodability_note, "distractors": distractors, "verdict": text}


def clean(obj: object) -> object:
    """NaN/inf → None, so the JSON is valid for browsers (the dashboard) as well as Python."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def write_table(folder: Path, name: str, rows: list[dict]) -> None:
    """``name.json`` (NaN as null) and ``name.csv``."""
    write_json_atomic(folder / f"{name}.json", clean(rows))
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
