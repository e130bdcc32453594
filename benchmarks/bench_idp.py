"""Benchmark: IDP vs a single soft prompt of the same total size vs unmerged LoRA (one process).

All three run on the same model (the SmolLM2 ``gptq3`` variant when it is built, else the
original SmolLM2 — baked compressed weights are dense, so latency is the same) over the same
batch of eval-split probe prompts, interleaved, medians over repeats:

* ``idp``: m=4 prompts × n=8 tokens, layer-0 attention routing, precomputed prompt KV;
* ``prompt``: one 32-token soft prompt, precomputed KV (the same mechanism, no routing);
* ``prompt_peft``: the same 32-token prompt the way peft runs it (prepended embeddings, every call);
* ``lora``: peft LoRA r=8 on q_proj,v_proj, **unmerged** (merging into quantized/sparse weights
  would undo the compression; this is the deployment cost the paper compares against).

Measured: forward latency of the batch (prefill) and per-token latency of greedy generation
with a KV cache (16 new tokens), and extra parameters. LoRA is injected into the shared model, so
every other variant runs inside ``disable_adapter()`` (its LoRA branches skipped).

``--contexts 128,512,1024`` adds the case where the paper's latency claim could hold: **batch 1**,
one long input (that many random tokens), prefill and per-token generation with a KV cache, IDP
(routing + its 8-token prefix) against unmerged LoRA; ratios per context length. Prints ratios; saves JSON under
``benchmarks/results/idp.json``. Run: ``.venv/bin/python benchmarks/bench_idp.py [--repeats 7]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from probe.config import ModelSpec
from probe.knowledge.loaders import load_probes
from probe.knowledge.scoring import hf_logits_fn
from probe.models.load import load_model
from probe.runtime.idp_router import IDPRouter
from probe.runtime.kv_prefix import prefix_from_embeddings, prefix_logits_fn
from probe.runtime.spec import variant_artifact

RESULTS = Path(__file__).parent / "results" / "idp.json"


def greedy(fn, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> float:
    """Seconds per generated token after the prefill, with the KV cache (cache contract of LogitsFn)."""
    logits, past = fn(ids, mask, use_cache=True)
    last = mask.sum(1) - 1
    nxt = logits[torch.arange(len(ids)), last].argmax(-1, keepdim=True)
    # generate after the longest prompt; shorter rows attend through their own padding mask
    mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits, past = fn(nxt, mask, past=past, use_cache=True)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return (time.perf_counter() - start) / new_tokens


def without_lora(lora, fn):
    """``fn`` run with the shared model's LoRA branches switched off."""

    def run(*a, **kw):
        with lora.disable_adapter():
            return fn(*a, **kw)

    return run


def median_time(f: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--contexts", default="", help="batch-1 context lengths, e.g. 128,512,1024")
    args = ap.parse_args()
    torch.manual_seed(0)
    variant = variant_artifact(ModelSpec("smollm2-135m"), "gptq3")
    folder = variant.path
    source = "gptq3" if variant.manifest() is not None else "original"
    loaded = load_model(ModelSpec(str(folder)) if source == "gptq3" else ModelSpec("smollm2-135m"))
    model, tok = loaded.model, loaded.tokenizer
    for p in model.parameters():
        p.requires_grad_(False)
    d = model.config.hidden_size
    facts = load_probes("builtin").split("eval").facts[: args.batch]
    enc = tok([f.prompt for f in facts], return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    emb = model.get_input_embeddings()
    vocab = emb(torch.randint(0, model.config.vocab_size, (32,))).detach()

    with torch.no_grad():
        pool = vocab.view(4, 8, d)
        idp_prefix = prefix_from_embeddings(model, pool)
        single_prefix = prefix_from_embeddings(model, vocab[None])
    fns = {
        "idp": prefix_logits_fn(model, idp_prefix, IDPRouter(model, idp_prefix)),
        "prompt": prefix_logits_fn(model, single_prefix),
    }

    def prompt_peft(i, m, past=None, use_cache=False):
        if past is not None:
            return hf_logits_fn(model)(i, torch.cat([m.new_ones(len(m), 32), m], 1), past, use_cache)
        full = torch.cat([vocab.expand(len(i), -1, -1), emb(i)], 1)
        out = model(inputs_embeds=full, attention_mask=torch.cat([m.new_ones(len(m), 32), m], 1), use_cache=use_cache)
        return out.logits[:, 32:], out.past_key_values

    fns["prompt_peft"] = prompt_peft
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).eval()
    fns = {name: without_lora(lora, fn) for name, fn in fns.items()}
    fns["lora"] = hf_logits_fn(lora)
    params = {"idp": pool.numel(), "prompt": vocab.numel(), "prompt_peft": vocab.numel(),
              "lora": sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)}

    fwd: dict[str, list[float]] = {k: [] for k in fns}
    gen: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up
            greedy(fn, ids, mask, 2)
        for _ in range(args.repeats):
            for name, fn in fns.items():
                fwd[name].append(median_time(lambda fn=fn: fn(ids, mask), 1))
                gen[name].append(greedy(fn, ids, mask, args.new_tokens))
    res = {k: {"forward_s": statistics.median(fwd[k]), "per_token_s": statistics.median(gen[k]),
               "extra_params": params[k]} for k in fns}
    ratios = {
        "idp_vs_prompt_forward": res["idp"]["forward_s"] / res["prompt"]["forward_s"],
        "idp_vs_prompt_per_token": res["idp"]["per_token_s"] / res["prompt"]["per_token_s"],
        "idp_vs_prompt_peft_forward": res["idp"]["forward_s"] / res["prompt_peft"]["forward_s"],
        "idp_vs_lora_forward": res["idp"]["forward_s"] / res["lora"]["forward_s"],
        "idp_vs_lora_per_token": res["idp"]["per_token_s"] / res["lora"]["per_token_s"],
        "idp_over_lora_params": params["idp"] / params["lora"],
    }
    batch1 = {}
    for n_ctx in [int(c) for c in args.contexts.split(",") if c]:
        gen_ctx = torch.Generator().manual_seed(n_ctx)
        long_ids = torch.randint(100, model.config.vocab_size, (1, n_ctx), generator=gen_ctx)
        one = torch.ones_like(long_ids)
        row: dict[str, dict] = {}
        with torch.no_grad():
            for name in ("idp", "lora"):
                fn = fns[name]
                greedy(fn, long_ids, one, 2)  # warm-up
                prefill = [median_time(lambda fn=fn, x=long_ids, m=one: fn(x, m), 1) for _ in range(args.repeats)]
                row[name] = {"prefill_s": statistics.median(prefill),
                             "per_token_s": statistics.median(
                                 [greedy(fn, long_ids, one, args.new_tokens) for _ in range(args.repeats)])}
        row["idp_vs_lora_prefill"] = row["idp"]["prefill_s"] / row["lora"]["prefill_s"]
        row["idp_vs_lora_per_token"] = row["idp"]["per_token_s"] / row["lora"]["per_token_s"]
        batch1[n_ctx] = row
        print(f"batch 1, {n_ctx} tokens: IDP/LoRA prefill {row['idp_vs_lora_prefill']:.3f}, "
              f"per token {row['idp_vs_lora_per_token']:.3f}")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    print(f"model: smollm2-135m ({source}); batch {args.batch} probes; {args.repeats} repeats; {machine}")
    print(f"{'variant':<12}{'forward ms':>12}{'ms/token':>12}{'extra params':>14}")
    for k, v in res.items():
        print(f"{k:<12}{v['forward_s'] * 1e3:>12.1f}{v['per_token_s'] * 1e3:>12.2f}{v['extra_params']:>14,}")
    for k, v in ratios.items():
        print(f"{k:<30}{v:8.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"source": source, "machine": machine, "results": res, "ratios": ratios,
                                   "batch1": batch1, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
