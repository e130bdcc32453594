"""Print the README's result tables (markdown) from an artifacts folder made by `probe demo`.

    .venv/bin/python scripts/results_tables.py --artifacts artifacts [--experiment smollm2-demo]

Compression (variant reports), recovery (recovery manifests), costs (`probe costs`), the analysis
summary and verdict, and the stage times `probe run` recorded: nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probe.store import ArtifactStore


def _read(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _md(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def compression(store: ArtifactStore, model: str) -> list[dict]:
    rows = []
    for variant in store.variants(model):
        folder = variant.path
        report = _read(folder / "report.json")
        if not isinstance(report, dict):
            continue
        k = report.get("knowledge") or {}
        if not rows and k:
            rows.append({"variant": "original", "eval top-1": f"{k['original_top1']:.1%}", "facts forgotten": "–",
                         "held-out ppl": f"{k['original_perplexity']:.2f}", "bits/weight": "32"})
        rows.append({"variant": folder.name, "eval top-1": f"{k['top1_accuracy']:.1%}" if k else "–",
                     "facts forgotten": k.get("facts_forgotten", "–"),
                     "held-out ppl": f"{k['perplexity']:.2f}" if k else "–",
                     "bits/weight": f"{report['effective_bits']:.2f}"})
    return rows


def recovery(store: ArtifactStore, model: str, compression_name: str) -> list[dict]:
    rows = []
    for handle in store.recoveries(model, compression_name):
        folder, m = handle.path, handle.manifest()
        if m is None:
            continue
        ev = m.get("eval") or {}
        rows.append({"method": folder.name, "extra params": f"{m['trainable_parameters']:,}",
                     "held-out KL (compressed → recovered)": f"{m['held_out_compressed']:.4f} → "
                                                             f"{m['held_out_after']:.4f}",
                     "eval top-1": f"{ev['top1']['recovered']:.1%}" if ev else "–",
                     "regained / newly broken (of lost)": f"{ev['n_regained']} / {ev['n_newly_broken']} "
                                                          f"(of {ev['n_lost']})" if ev else "–",
                     "train s": f"{m['train_seconds']:.0f}"})
    return rows


def costs(store: ArtifactStore, model: str, compression_name: str) -> list[dict]:
    c = store.cost(model, compression_name).read()
    if c is None:
        return []
    return [{"variant": r["variant"], "extra params": f"{r.get('extra_parameters', 0):,}",
             "forward ms": f"{r.get('forward_ms', float('nan')):.0f}",
             "gen ms/token": f"{r.get('gen_ms_per_token', float('nan')):.0f}",
             "memory MB": f"{r.get('memory_mb', float('nan')):.0f}"} for r in c["rows"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--experiment", default="smollm2-demo")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--compression", default="gptq3")
    args = parser.parse_args()
    store = ArtifactStore(args.artifacts)
    print("### Compression\n\n" + _md(compression(store, args.model)))
    print(f"### Recovery of {args.compression}\n\n" + _md(recovery(store, args.model, args.compression)))
    print(f"### Costs ({args.compression} variants)\n\n" + _md(costs(store, args.model, args.compression)))
    analysis = store.analysis(f"{args.model}-{args.compression}")
    summary = _read(analysis.file("summary.json"))
    print("### Analysis summary\n\n" + _md(summary if isinstance(summary, list) else []))
    verdict = analysis.file("verdict.md")
    print(verdict.read_text() if verdict.is_file() else "(no verdict)\n")
    times = _read(store.experiment_log(args.experiment))
    if isinstance(times, dict):
        built = times["built_seconds"]
        rows = [{"stage": k, "seconds": f"{v:.0f}"} for k, v in built.items()]
        rows.append({"stage": "total", "seconds": f"{sum(built.values()):.0f}"})
        print("### Stage build times\n\n" + _md(rows))


if __name__ == "__main__":
    main()
