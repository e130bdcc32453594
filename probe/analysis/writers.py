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
REGIME_METRICS = ("regained", "delta_cka", "prompt_mass", "attn_shift", "mlp_change", "attn_out_change")


class Tables:
    """Long-format rows of every table, with the bootstrap settings that fill their intervals."""

    def __init__(self, n_boot: int, seed: int) -> None:
        self.n_boot, self.seed = n_boot, seed
        self.rows: dict[str, list[dict]] = {}

    def add(self, table: str, values: np.ndarray, layers: tuple[int, ...], per_layer: list[dict] | None = None,
            **keys: object) -> None:
        """Per-fact values ``[n, L]`` or ``[n, L, H]`` → one row per layer (and head) with its interval.

        ``per_layer[li]``, when given, adds its fields to layer ``li``'s rows.
        """
        mean, lo, hi = bs.bootstrap_mean(values, self.n_boot, self.seed)
        n = int(values.shape[0])
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
                 cka: CKAFamily, dec: DecodabilityFamily, head: Headline, n_boot: int, seed: int) -> Tables:
    """Every table of the analysis as long-format rows."""
    t = Tables(n_boot, seed)
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
                    t.add("decodability", values[rows].astype(float), layers, choice[probe][v], variant=v,
                          probe=probe, facts=facts)
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
    v = head.verdict
    return {"n_eval": v.n_eval, "n_lost": v.n_lost, "chance": v.chance, "layer": v.layer,
            "known_original": v.known_original.as_dict(), "known_compressed": v.known_compressed.as_dict(),
            "decodable_lost": v.decodable.as_dict(), "lens_lost": v.lens_lost.as_dict(),
            "probe": None if v.probe is None else {"c": v.probe.c, "rank": v.probe.rank,
                                                   "cv_accuracy": v.probe.cv_accuracy},
            "displaced": v.displaced.as_dict(),
            "n_never": v.n_never, "decodable_never": v.decodable_never.as_dict(),
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
