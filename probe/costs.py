"""`probe costs`: deployment cost of every built variant of one compressed model, side by side.

Per variant: extra parameters (what the recovery adds), extra KV positions (prompt/prefix
length), forward latency on a batch of eval-split probe prompts, generation latency per token
with a KV cache (greedy, after a prefill that is not counted), and memory. One variant is held
at a time (load, warm up, time, free), so the stage needs the memory of one model, not of all six (LLaMA-7B: ~13 GB in
bfloat16 instead of ~160 GB in float32); medians over repeats are reported. Variants are timed
one after another, so a machine-load drift between them is not cancelled out as round-robin
timing would; repeat the stage on a quiet machine when the differences are small.

The weights' dtype follows ``--dtype`` (``auto``: float16 on CUDA, float32 on CPU).

LoRA is timed UNMERGED (peft side branch): merging into quantized/sparse weights would undo
the compression, so the side branch is the deployment cost the paper compares.

Memory: on CUDA the peak allocated during the variant's timed calls; on CPU (no allocator
statistics) the weights resident for the variant (dense weights + adapter) plus the KV cache
at the end of generation — the part that differs between variants.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.table import Table

from probe.artifacts import build_manifest
from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat, build_prompts
from probe.knowledge.scoring import LogitsFn
from probe.progress import track
from probe.runtime.spec import RECOVERY_VARIANTS, VariantSpec, compress_command, model_key
from probe.runtime.variant import LoadedVariant, load_variant
from probe.settings import like, setting
from probe.store import ArtifactStore


@dataclass(frozen=True)
class CostSpec:
    model: str = like(ModelSpec, "name")
    compression: str = setting(DEFAULT_COMPRESSION, "Compressed variant, e.g. gptq3")
    repeats: int = setting(5, "Timed repeats per variant (median reported)", unit="repeats", min=1)
    n_probes: int = setting(32, "Eval probes in the forward batch", unit="probes", min=1)
    gen_tokens: int = setting(16, "Greedy tokens generated", unit="tokens", min=1)
    format: ProbeFormat = field(default_factory=ProbeFormat)
    device: str = like(ModelSpec, "device")

    def __post_init__(self) -> None:
        if min(self.repeats, self.n_probes, self.gen_tokens) < 1:
            raise ProbeError("--repeats, --n-probes and --gen-tokens must be at least 1")


def built_variants(model: ModelSpec, compression: str) -> list[str]:
    """original, compressed and every recovery of ``compression`` that has been built."""
    store = ArtifactStore.default()
    if store.variant(model_key(model), compression).manifest() is None:
        raise ProbeError(f"compressed variant {compression!r} of {model.name} is not built: run "
                         f"{compress_command(model, compression)}")
    return ["original", "compressed", *[m for m in RECOVERY_VARIANTS
                                        if store.recovery(model_key(model), compression, m).manifest() is not None]]


def probe_batch(tokenizer, n: int, device: torch.device, fmt: ProbeFormat | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` eval-split probes as the probe format asks them (demonstrations and query), right-padded."""
    fmt = fmt or ProbeFormat(shots=0)
    pool = load_probes("builtin")
    facts = pool.split("eval").facts[:n]
    prompts = [a.text for a in build_prompts(facts, pool.facts, fmt.shots, fmt.template)]
    rows = [tokenizer(p).input_ids for p in prompts]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_seconds(fn: LogitsFn, ids: torch.Tensor, mask: torch.Tensor) -> float:
    _sync(ids.device)
    start = time.perf_counter()
    fn(ids, mask)
    _sync(ids.device)
    return time.perf_counter() - start


@torch.no_grad()
def generate_greedy(fn: LogitsFn, ids: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, float, Any]:
    """Greedy tokens ``[B, n]`` after a prefill, the decode seconds per token, and the final cache."""
    logits, past = fn(ids, mask, use_cache=True)
    last = mask.sum(1) - 1
    token = logits[torch.arange(len(ids)), last].argmax(-1, keepdim=True)
    out = [token]
    _sync(ids.device)
    start = time.perf_counter()
    for _ in range(n - 1):
        mask = torch.cat([mask, mask.new_ones(len(ids), 1)], dim=1)
        logits, past = fn(token, mask, past=past, use_cache=True)
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(token)
    _sync(ids.device)
    return torch.cat(out, 1), (time.perf_counter() - start) / max(n - 1, 1), past


def cache_bytes(past: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in getattr(past, "layers", []) for t in (layer.keys,
                                                                                              layer.values))


def recovery_info(spec: VariantSpec) -> dict:
    if spec.variant not in RECOVERY_VARIANTS:
        return {"extra_parameters": 0, "extra_kv_positions": 0}
    manifest = ArtifactStore.default().recovery(model_key(spec.model), spec.compression or "",
                                                spec.variant).manifest() or {}
    return {"extra_parameters": int(manifest.get("trainable_parameters", 0)),
            "extra_kv_positions": int(manifest.get("extra_kv_positions", 0))}


def weight_bytes(loaded: LoadedVariant, extra_parameters: int) -> int:
    """Dense weights (LoRA's side branch excluded, then added back as extra parameters) plus adapter."""
    params = {id(p): p for n, p in loaded.base.model.named_parameters() if "lora_" not in n}
    dense = sum(p.numel() * p.element_size() for p in params.values())
    return dense + extra_parameters * next(iter(params.values())).element_size()


def measure_costs(spec: CostSpec, allow_pickle: bool = False, dtype: str = "auto") -> dict:
    """Time every built variant, one loaded at a time; save and return the table as a dict."""
    model = ModelSpec(spec.model, device=spec.device, dtype=dtype, allow_pickle=allow_pickle)
    names = built_variants(model, spec.compression)
    rows, tokens = [], {}
    batch: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0, 0), torch.empty(0, 0))
    device = torch.device("cpu")
    for n in track(names, f"Timing {len(names)} variants, one at a time"):
        v = load_variant(VariantSpec(model, n, None if n == "original" else spec.compression))
        device = v.base.device
        if not batch[0].numel():
            batch = probe_batch(v.base.tokenizer, spec.n_probes, device, spec.format)
        row, tokens[n] = time_variant(v, *batch, spec)
        rows.append(row)
        del v  # freed before the next variant loads
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = ArtifactStore.default().cost(model_key(model), spec.compression)
    result = {"model": model_key(model), "compression": spec.compression, "device": str(device),
              "dtype": dtype, "batch": list(batch[0].shape), "threads": torch.get_num_threads(), "rows": rows,
              "greedy_tokens": tokens, "manifest": build_manifest("costs", spec)}
    path = table.write(result)
    return {**result, "path": str(path)}


def time_variant(v: LoadedVariant, ids: torch.Tensor, mask: torch.Tensor, spec: CostSpec) -> tuple[dict, list]:
    """One variant's row (medians over ``spec.repeats``, after an untimed warm-up) and its greedy tokens."""
    device = ids.device
    info = recovery_info(v.spec)
    forward_seconds(v.logits_fn, ids, mask)  # warm-up, untimed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd, gen, out, past = [], [], None, None
    for _ in range(spec.repeats):
        fwd.append(forward_seconds(v.logits_fn, ids, mask))
        out, per_token, past = generate_greedy(v.logits_fn, ids, mask, spec.gen_tokens)
        gen.append(per_token)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else weight_bytes(v, info["extra_parameters"]) + cache_bytes(past))
    row = {"variant": v.spec.variant, **info,
           "forward_ms": 1e3 * statistics.median(fwd), "gen_ms_per_token": 1e3 * statistics.median(gen),
           "memory_mb": peak / 2**20, "forward_ms_all": [1e3 * x for x in fwd], "gen_ms_all": [1e3 * x for x in gen]}
    return row, out.tolist() if out is not None else []


def cost_table(result: dict) -> Table:
    table = Table(title=f"Costs: {result['model']} / {result['compression']} ({result['device']}, "
                        f"batch {result['batch'][0]}×{result['batch'][1]}, medians)")
    for col in ("variant", "extra params", "extra KV pos", "forward ms", "gen ms/token", "memory MB"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in result["rows"]:
        table.add_row(r["variant"], f"{r['extra_parameters']:,}", str(r["extra_kv_positions"]),
                      f"{r['forward_ms']:.1f}", f"{r['gen_ms_per_token']:.1f}", f"{r['memory_mb']:.1f}")
    return table
