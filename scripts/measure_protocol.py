"""Measure the probe format on a model: k ∈ {0, 1, 3, 5} shots on a probe split, every template.

Per k: first-token top-1, greedy full-answer match, the share of wrong top-1 predictions that
copy a demonstration's answer and scoring time of template 0 (eval cost against zero-shot); for
``--robust-shots`` also robust known (full answer under ≥2 of the relation's templates) and the
2×2 agreement of full_answer vs robust. Intervals: 95% cluster bootstrap over subjects. Run once:

    PYTHONPATH=. python scripts/measure_protocol.py --model smollm2-135m --out results.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from probe.analysis.bootstrap import ClusterBootstrap
from probe.config import ModelSpec
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import build_prompts
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.models.load import load_model


def summary(k: int, per_template: list, seconds: float | None, boot: ClusterBootstrap) -> dict:
    """The table row of ``k`` shots from its template-0 scores (and other templates' full-answer matches)."""
    main_scores = per_template[0]
    top1 = np.array([s.rank == 0 for s in main_scores], float)
    full = np.array([s.exact_match for s in main_scores], float)
    row = {"n": len(main_scores), "seconds_template0": round(seconds or 0, 2),
           "top1": boot.interval(top1).as_dict(), "full_answer": boot.interval(full).as_dict(),
           "wrong_copies_demo": boot.interval(np.array([s.copies_demo for s in main_scores], float),
                                              top1 == 0).as_dict() if k else None,
           "top_prediction_the_or_a": int(sum(s.prediction in (" the", " a") for s in main_scores))}
    if len(per_template) > 1:
        matches = np.array([[s.exact_match for s in ts] for ts in per_template]).T
        robust = matches.sum(1) >= min(2, matches.shape[1])
        fb = full.astype(bool)
        row["templates"] = len(per_template)
        row["robust"] = boot.interval(robust.astype(float)).as_dict()
        row["agreement_full_vs_robust"] = {"both": int((fb & robust).sum()), "full_only": int((fb & ~robust).sum()),
                                           "robust_only": int((~fb & robust).sum()),
                                           "neither": int((~fb & ~robust).sum())}
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probes", default="builtin")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--shots", default="0,3,1,5", help="template 0 for each, in this order")
    ap.add_argument("--robust-shots", default="3,0", help="then every template for these")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    loaded = load_model(ModelSpec(args.model, dtype="float32"))
    pool = load_probes(args.probes)
    # distractors only feed multiple choice, which this table does not report: leaving them out halves the cost
    facts = [replace(f, distractors=()) for f in pool.split(args.split).facts]
    fn = hf_logits_fn(loaded.model)
    boot = ClusterBootstrap(np.array([f.subject or f.id for f in facts]), n_boot=1000)
    n_templates = min(len(f.prompts) for f in facts)
    scored: dict[int, list] = {}
    seconds: dict[int, float] = {}
    table: dict[int, dict] = {}
    plan = [(int(k), 0) for k in args.shots.split(",")]
    plan += [(int(k), t) for k in args.robust_shots.split(",") if k.strip() for t in range(1, n_templates)]
    for k, t in plan:
        t0 = time.perf_counter()
        scores = score_facts(facts, loaded.tokenizer, fn, template=t, prompted=build_prompts(facts, pool.facts, k, t),
                             batch_size=32, desc=f"{k}-shot, template {t}")
        if t == 0:
            seconds[k] = time.perf_counter() - t0
        scored.setdefault(k, []).append(scores)
        table[k] = summary(k, scored[k], seconds.get(k), boot)
        print(k, t, json.dumps(table[k]), flush=True)
        with open(args.out, "w") as fh:
            json.dump({"model": args.model, "probes": args.probes, "split": args.split, "by_shots": table,
                       "note": "distractors left out (multiple choice not measured); seconds on 2 shared CPU cores "
                               "under load: upper bounds"}, fh, indent=1)


if __name__ == "__main__":
    main()
