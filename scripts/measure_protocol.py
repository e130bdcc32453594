"""Measure the probe format on a model: k ∈ {0, 1, 3, 5} shots on a probe split, every template.

Per k: first-token top-1, greedy full-answer match, robust known (full answer under ≥2 of the
relation's templates), the share of wrong top-1 predictions that copy a demonstration's
answer, the 2×2 agreement of full_answer vs robust, and scoring time of template 0 (eval cost
per fact against zero-shot). Intervals: 95% cluster bootstrap over subjects. Run once:

    PYTHONPATH=. python scripts/measure_protocol.py --model smollm2-135m --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from probe.analysis.bootstrap import ClusterBootstrap
from probe.config import ModelSpec
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import build_prompts
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.models.load import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probes", default="builtin")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--shots", default="0,1,3,5")
    ap.add_argument("--templates", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    loaded = load_model(ModelSpec(args.model, dtype="float32"))
    pool = load_probes(args.probes)
    facts = pool.split(args.split).facts
    fn = hf_logits_fn(loaded.model)
    boot = ClusterBootstrap(np.array([f.subject or f.id for f in facts]), n_boot=1000)
    table = {}
    for k in [int(x) for x in args.shots.split(",")]:
        per_template, seconds = [], None
        for t in range(args.templates):
            some = [f for f in facts if t < len(f.prompts)]
            if len(some) < len(facts):
                break
            t0 = time.perf_counter()
            asked = build_prompts(facts, pool.facts, k, t)
            scores = score_facts(facts, loaded.tokenizer, fn, template=t, prompted=asked, batch_size=32,
                                 desc=f"{k}-shot, template {t}")
            if t == 0:
                seconds = time.perf_counter() - t0
            per_template.append(scores)
        main_scores = per_template[0]
        top1 = np.array([s.rank == 0 for s in main_scores], float)
        full = np.array([s.exact_match for s in main_scores], float)
        matches = np.array([[s.exact_match for s in ts] for ts in per_template]).T
        robust = (matches.sum(1) >= min(2, matches.shape[1])).astype(float)
        wrong = top1 == 0
        copies = np.array([s.copies_demo for s in main_scores], float)
        fb, rb = full.astype(bool), robust.astype(bool)
        preds = [s.prediction for s in main_scores]
        table[k] = {
            "n": len(facts), "seconds_template0": round(seconds or 0, 2),
            "top1": boot.interval(top1).as_dict(), "full_answer": boot.interval(full).as_dict(),
            "robust": boot.interval(robust).as_dict(),
            "wrong_copies_demo": boot.interval(copies, wrong).as_dict() if k else None,
            "agreement_full_vs_robust": {"both": int((fb & rb).sum()), "full_only": int((fb & ~rb).sum()),
                                         "robust_only": int((~fb & rb).sum()), "neither": int((~fb & ~rb).sum())},
            "top_prediction_the_or_a": int(sum(p in (" the", " a") for p in preds)),
        }
        print(k, json.dumps(table[k]), flush=True)
        with open(args.out, "w") as fh:
            json.dump({"model": args.model, "probes": args.probes, "split": args.split, "by_shots": table}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
