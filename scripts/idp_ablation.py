"""IDP router ablation on a compressed model: router option × pool size, bounds and equal-length baselines.

    PYTHONPATH=$PWD .venv/bin/python scripts/idp_ablation.py --model smollm2-135m --compression gptq3 \\
        --steps 15 --seq-len 32 --batch-size 4 --out benchmarks/results/idp_ablation.json

Everything is measured on held-out windows of the recovery text (never on eval facts), KL to the
original model, all methods with the same steps × batch × seq_len (equal compute per step, except
hard-EM, which also runs every prompt on every training window). Rows, in order (the file is
rewritten after each row, so a cut-short run keeps what it finished):

1. start: the held-out KL of the compressed model (no prompt) and of untrained prompts: a 32-token
   prompt from the instruction text vs from the end-of-text token, IDP pools from k-means vs eos.
2. IDP, router ∈ {fixed, bias, softmax, em} × m ∈ {4, 2, 8} (m = 4 first), each prompt 32/m
   tokens: held-out KL with the inference router, the oracle router and the pool's best single
   prompt (:mod:`probe.recover.idp_report`), usage entropy, largest share, router accuracy
   against the oracle (bootstrap interval over windows).
3. Equal-length single prompts: one of IDP's per-prompt length (32/m) and one of the pool's total
   length (32).

Prints a markdown table at the end (the README's "Recovery methods" section quotes it).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from probe.artifacts import write_json_atomic
from probe.config import ModelSpec
from probe.knowledge.scoring import hf_logits_fn
from probe.models.load import load_model
from probe.recover.data import build_data
from probe.recover.idp_report import routing_report
from probe.recover.registry import get_method
from probe.recover.spec import RecoverSpec
from probe.recover.train import held_out_loss, train
from probe.runtime.spec import variant_artifact


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--compression", default="gptq3")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n-texts", type=int, default=32)
    ap.add_argument("--text-tokens", type=int, default=96)
    ap.add_argument("--total-tokens", type=int, default=32, help="pool length m × n (and the long baseline)")
    ap.add_argument("--routers", default="bias,softmax,em,fixed")
    ap.add_argument("--pool-sizes", default="4,2,8")
    ap.add_argument("--idp-init", default=None, help="skip the start measurements and use this IDP init")
    ap.add_argument("--out", default="benchmarks/results/idp_ablation.json")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    model_spec = ModelSpec(args.model, dtype="float32")
    original = load_model(model_spec)
    student = load_model(replace(model_spec, name=str(variant_artifact(model_spec, args.compression).path)))
    student.name = original.name
    for m in (original.model, student.model):
        m.requires_grad_(False)
    base = RecoverSpec(model=args.model, compression=args.compression, method="prompt", steps=args.steps,
                       seq_len=args.seq_len, batch_size=args.batch_size, n_texts=args.n_texts,
                       text_tokens=args.text_tokens, eval_every=args.steps, patience=0)
    data = build_data(base, original.tokenizer, original)
    held = data.held_out_batches(args.batch_size)
    teacher_fn = hf_logits_fn(original.model)
    teacher = lambda ids, mask: teacher_fn(ids, mask)[0]  # noqa: E731
    plain = hf_logits_fn(student.model)
    out = {"budget": {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
                      "tokens_per_run": args.steps * args.batch_size * args.seq_len, "data": data.info},
           "start": {}, "rows": []}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json_atomic(path, out)

    def run(spec: RecoverSpec, label: dict) -> tuple:
        method = get_method(spec.method)
        method.prepare(original.model, data, spec)
        adapter = method.create(student.model, student.tokenizer, spec)
        t0 = time.perf_counter()
        result = train(method.student(adapter), [p for p in adapter.parameters() if p.requires_grad],
                       data.batches(spec.steps, spec.batch_size, spec.seed), teacher, spec, held_out=held,
                       state=method.state(adapter))
        row = {**label, "start": result.held_out_before, "held_out": result.held_out_after,
               "held_out_last": result.curves["heldout"]["kl"][-1], "best_step": result.best_step,
               "tokens": result.tokens_seen, "seconds": round(time.perf_counter() - t0, 1)}
        if spec.method == "idp":
            row.update(routing_report(adapter, teacher, held), options=vars(spec.idp_options()))
        out["rows"].append(row)
        save()
        print(json.dumps(row), flush=True)
        return adapter, method

    # 1. start: no prompt, prompt inits, IDP inits
    with torch.no_grad():
        out["start"]["compressed"] = held_out_loss(lambda i, m: plain(i, m)[0], teacher, held)
    if args.idp_init:
        out["start"]["skipped"] = f"--idp-init {args.idp_init}"
    with torch.no_grad():
        inits = () if args.idp_init else ("text", "eos")
        for init in inits:
            spec = replace(base, init_from=init, n_tokens=args.total_tokens)
            method = get_method("prompt")
            adapter = method.create(student.model, student.tokenizer, spec)
            out["start"][f"prompt{args.total_tokens}_{init}"] = held_out_loss(method.student(adapter), teacher, held)
        for init in () if args.idp_init else ("kmeans", "eos"):
            spec = replace(base, method="idp", idp_m=4, n_tokens=args.total_tokens // 4, idp_init=init,
                           idp_router="fixed")
            method = get_method("idp")
            method.prepare(original.model, data, spec)
            adapter = method.create(student.model, student.tokenizer, spec)
            out["start"][f"idp4_{init}"] = held_out_loss(method.student(adapter), teacher, held)
    idp_init = args.idp_init or ("eos" if out["start"]["idp4_eos"] <= out["start"]["idp4_kmeans"] else "kmeans")
    out["idp_init"] = idp_init
    save()
    print(json.dumps(out["start"]), "IDP init:", idp_init, flush=True)

    sizes = [int(m) for m in args.pool_sizes.split(",")]
    for m in sizes:
        n = max(1, args.total_tokens // m)
        for router in args.routers.split(","):
            spec = replace(base, method="idp", idp_m=m, n_tokens=n, idp_init=idp_init, idp_router=router)
            run(spec, {"method": "idp", "router": router, "m": m, "n": n})
        if m == sizes[0]:  # equal-length baselines
            for n_tok in (n, args.total_tokens):
                run(replace(base, n_tokens=n_tok), {"method": "prompt", "router": "-", "m": 1,
                                                                      "n": n_tok})
    print(table(out))


def table(out: dict) -> str:
    """The markdown ablation table."""
    lines = ["| method | router | m × n | held-out KL (router) | oracle | best single | usage entropy | "
             "max share | router acc. vs oracle [95% CI] | chance |", "|" + "---|" * 10]
    for r in out["rows"]:
        if r["method"] == "idp":
            lo, hi = r["router_accuracy_ci95"]
            entropy = r["usage_entropy"] + 0.0  # no "-0.00"
            lines.append(f"| idp | {r['router']} | {r['m']} × {r['n']} | {r['held_out']:.4f} | "
                         f"{r['held_out_oracle']:.4f} | {r['held_out_best_single']:.4f} | {entropy:.2f} | "
                         f"{r['max_share']:.2f} | {r['router_accuracy']:.2f} [{lo:.2f}, {hi:.2f}] | "
                         f"{r['chance']:.2f} |")
        else:
            lines.append(f"| prompt | - | 1 × {r['n']} | {r['held_out']:.4f} | - | - | - | - | - | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
