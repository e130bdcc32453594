"""`probe plan EXPERIMENT.toml`: per stage, the predicted peak memory, disk and time, before anything runs.

Everything comes from the model's ``config.json`` (:mod:`probe.plan.shape`) and the experiment's
settings; nothing loads weights. Memory is the sum of what a stage holds at its peak:

* a process overhead (interpreter, torch, transformers, the stage's modules): 0.56 GB of RSS,
  measured here (``ru_maxrss`` after importing the stages, no model); on CUDA the context is not in
  ``max_memory_allocated`` and is left out of device memory;
* weights: parameters × the load dtype's bytes (``auto``: float16 on CUDA, float32 on CPU;
  compression loads in float32), once per model the stage holds (recover: teacher + student;
  capture of LoRA: the merged dense copy besides the base; costs: one variant at a time);
* activations of the stage's batch: float32 logits ``batch × tokens × vocabulary`` (a few copies:
  log-softmax, KL, gradient), eager attention ``batch × heads × tokens²``, and for training the
  saved activations of the backward pass (~34·hidden bytes per token and layer at 2-byte
  activations, Korthikanti et al. 2022) plus AdamW's three float32 copies of the trainable weights;
* compression: the original (kept for the report) and the copy that is compressed (float32; the plain
  model it is baked into shares its storage), GPTQ's Hessians (``in_features²`` float32 per linear of the
  layer being compressed; the report's errors are taken per layer, not kept) and the calibration
  activations of one layer.

Disk: weights saved per variant, the capture's arrays (the recorder's own layout, uncompressed,
an upper bound), adapters. Time: floating-point operations (2 per parameter per token forward,
6 with the backward) at a sustained rate — 48 GFLOP/s on CPU, measured here (a float32
``[600×576]·[576×49152]`` product on this machine's 2 cores), and an ASSUMED 100 TFLOP/s for a
CUDA GPU (no GPU was at hand to measure) — plus weights read at an assumed 1 GB/s: a rough
guide, not a promise.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table

from probe.capture.recorder import Layout
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.experiment.spec import ExperimentSpec
from probe.knowledge.loaders import load_probes
from probe.models.registry import REGISTRY
from probe.plan.shape import ModelShape, model_shape
from probe.settings import setting
from probe.store import ArtifactStore

GB = 1e9
PROCESS_BYTES = 0.56 * GB  # RSS of a stage process before any model: measured here (module docstring)
CPU_FLOPS = 48e9  # measured here: float32 GEMM on this machine's 2 cores
GPU_FLOPS = 100e12  # ASSUMED sustained half-precision rate of an 80 GB A100/H100-class GPU
READ_BYTES_PER_S = 1e9  # ASSUMED weights read rate
TOKENS_PER_PROBE = 24  # prompt tokens of a probe when no tokenizer is at hand (builtin, SmolLM2: 8–40)
ACT_BYTES_PER_TOKEN_LAYER = 34  # × hidden: saved activations for the backward pass at 2-byte activations
LOGIT_COPIES = {"infer": 2, "train": 6}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class PlanSpec:
    """Where the experiment will run."""

    memory_gb: float | None = setting(None, "Memory of the device the stages run on", unit="GB",
                                      default_text="80 on CUDA, this machine's RAM on CPU")
    host_memory_gb: float | None = setting(None, "Host RAM (the analysis runs on CPU)", unit="GB",
                                           default_text="this machine's")
    disk_gb: float | None = setting(None, "Free disk for the artifact store", unit="GB",
                                    default_text="free space under the store")


@dataclass
class StagePlan:
    key: str
    where: str  # "device" or "host"
    memory: float  # bytes at the peak
    disk: float  # bytes written
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)  # memory by part
    fix: str = ""  # what to change when it does not fit
    host: float = 0.0  # host RAM a device stage also needs (bytes), checked too
    refused: str = ""  # why the stage would stop whatever the memory, and what to change

    def fits(self, limit: float) -> bool:
        return self.memory <= limit


@dataclass
class Plan:
    experiment: str
    shape: ModelShape
    device: str
    dtype: str
    memory_limit: float
    host_limit: float
    disk_limit: float
    stages: list[StagePlan]

    def problems(self) -> list[str]:
        out = []
        for s in self.stages:
            if s.refused:
                out.append(f"{s.key}: {s.refused}")
            limit = self.memory_limit if s.where == "device" else self.host_limit
            if not s.fits(limit):
                out.append(f"{s.key} needs {s.memory / GB:.1f} GB of {s.where} memory, "
                           f"{limit / GB:.0f} GB available: {s.fix or 'use a larger device'}")
            if s.where == "device" and s.host > self.host_limit:
                out.append(f"{s.key} also needs {s.host / GB:.1f} GB of host RAM, {self.host_limit / GB:.0f} GB "
                           f"available: use a host with more RAM")
            if s.fix.startswith("capture"):
                out.append(f"{s.key}: {s.fix}")
        disk = sum(s.disk for s in self.stages)
        if disk > self.disk_limit:
            out.append(f"the artifacts need {disk / GB:.1f} GB of disk, {self.disk_limit / GB:.0f} GB free: "
                       f"set PROBE_ARTIFACTS to a larger disk, or capture fewer layers/hooks")
        return out


def _dtype(spec: ModelSpec, device: str) -> str:
    if spec.dtype != "auto":
        return spec.dtype
    return "float16" if device.startswith("cuda") else "float32"


def _mean_tokens(probes: str, shape: ModelShape) -> tuple[float, int]:
    """Mean and max prompt tokens of the probe set (characters / 4 without a tokenizer)."""
    try:
        facts = load_probes(probes).facts
    except ProbeError:
        return TOKENS_PER_PROBE, 2 * TOKENS_PER_PROBE
    lengths = [max(1, len(f.prompt) // 4 + 2) for f in facts] or [TOKENS_PER_PROBE]
    return sum(lengths) / len(lengths), max(lengths)


def _n_probes(probes: str, split: str) -> tuple[int, int]:
    """Probes captured and eval probes analysed."""
    try:
        p = load_probes(probes)
    except ProbeError:
        return 1232, 608
    n = len(p.facts) if split == "all" else len(p.split(split).facts)
    return n, len(p.split("eval").facts)


def _logits(batch: int, tokens: float, shape: ModelShape, kind: str) -> float:
    return LOGIT_COPIES[kind] * batch * tokens * shape.vocab * 4


def _attention(batch: int, tokens: float, shape: ModelShape, b: int) -> float:
    return 2 * batch * shape.heads * tokens * tokens * b  # scores and probabilities of one layer (eager)


def _load_seconds(weights: float) -> float:
    return weights / READ_BYTES_PER_S


def plan_experiment(exp: ExperimentSpec, spec: PlanSpec = PlanSpec()) -> Plan:
    """Predict every stage of ``exp`` on its ``[model] device``."""
    shape = model_shape(exp.model_spec)
    device = exp.model_spec.device
    cuda = device.startswith("cuda")
    dtype = _dtype(exp.model_spec, device)
    b = BYTES[dtype]
    p = shape.params
    rate = GPU_FLOPS if cuda else CPU_FLOPS
    where = "device" if cuda else "host"
    host = spec.host_memory_gb * GB if spec.host_memory_gb else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = spec.memory_gb * GB if spec.memory_gb else (80 * GB if cuda else host)
    root = ArtifactStore.default().root
    free_at = next((d for d in (root, *root.parents) if d.exists()), root)
    disk_limit = spec.disk_gb * GB if spec.disk_gb else shutil.disk_usage(free_at).free
    overhead = 0.0 if cuda else PROCESS_BYTES  # device memory excludes the process
    stages: list[StagePlan] = []
    weights = p * b
    disk_weights = p * BYTES.get(shape.checkpoint_dtype, 4)

    converted = REGISTRY.get(exp.model) is not None and REGISTRY[exp.model].source == "embedded"  # into the store
    stages.append(StagePlan("model", where, overhead + p * 4, disk_weights if converted else 0,
                            _load_seconds(p * 4), {"weights (float32)": p * 4}))
    for m in exp.compressions:
        c = exp.compress_spec(m)
        hessians = 4 * (6 * shape.hidden ** 2 + shape.intermediate ** 2)
        calib = 2 * c.n_calibration * c.seq_len * max(shape.hidden, shape.intermediate) * 4
        # the original (kept for the report) and the copy compressed in place, which the plain model shares
        parts = {"weights (float32)": p * 4, "compressed copy (float32)": p * 4, "GPTQ Hessians of a layer": hessians,
                 "calibration activations": calib}
        flops = 2 * p * c.n_calibration * c.seq_len + 2 * shape.layers * (4 * shape.hidden ** 3 + 3 * shape.hidden **
                                                                            2 * shape.intermediate)
        stages.append(StagePlan(f"compress:{m}", where, overhead + sum(parts.values()), p * 4, flops / rate +
                                _load_seconds(p * 4), parts, "compress with --device cuda and a smaller "
                                "n_calibration, or on a larger device", host=PROCESS_BYTES if cuda else 0.0))
    for m in exp.recoveries:
        r = exp.recover_spec(m)
        tokens = r.seq_len + (r.n_tokens if m in ("prompt", "prefix", "idp") else 0)
        trainable = (r.n_tokens * shape.hidden * (shape.layers * 2 if m == "prefix" else 1) if m != "lora"
                     else 2 * r.rank * shape.hidden * len(r.targets) * shape.layers)
        act = r.batch_size * tokens * shape.layers * (ACT_BYTES_PER_TOKEN_LAYER * shape.hidden * b / 2
                                                      + _attention(1, tokens, shape, b) / tokens)
        parts = {"teacher + student weights": 2 * weights, "saved activations": act,
                 "logits (float32)": _logits(r.batch_size, tokens, shape, "train"), "AdamW": 16 * trainable}
        flops = r.steps * r.batch_size * tokens * 8 * p + r.n_texts * r.text_tokens * 2 * p
        refused = ("IDP selects prompts with a Llama-style decoder (q_proj/k_proj, rotary embeddings); "
                   f"{shape.architecture} is not one: drop idp from [recover] methods"
                   if m == "idp" and shape.architecture.startswith("OPT") else "")
        stages.append(StagePlan(f"recover:{m}", where, overhead + sum(parts.values()), 4 * trainable,
                                flops / rate + _load_seconds(2 * weights), parts,
                                "lower [recover] batch_size or seq_len, or load in bfloat16 ([model] dtype)",
                                refused=refused))
    for v in exp.variants:
        cs = exp.capture_spec(v)
        n, _ = _n_probes(cs.probes, cs.split)
        mean_t, max_t = _mean_tokens(cs.probes, shape)
        extra = 0 if v in ("original", "compressed", "lora") else (exp.recover_spec(v).n_tokens if v in exp.recoveries
                                                                   else 0)
        t = mean_t + extra
        layout = Layout(tuple(range(shape.layers)), cs.hooks, cs.positions, n, max_t + extra, shape.hidden,
                        shape.heads, extra, min(cs.full_attention, n), cs.top_k, cs.dtype)
        store = sum(a.nbytes for a in layout.arrays().values())
        batch_out = store / max(1, n) * cs.batch_size
        parts = {"weights": weights * (2 if v == "lora" else 1), "logits (float32)": _logits(cs.batch_size, t, shape,
                                                                                              "infer"),
                 "attention of a layer": _attention(cs.batch_size, t, shape, b), "batch of recorded arrays": batch_out}
        fix = ""
        if store > cs.max_gb * GB:
            fix = (f"capture stores ~{store / GB:.1f} GB, above [capture] max_gb = {cs.max_gb:g}: set "
                   f"[capture] max_gb = {math.ceil(store / GB * 1.1)} (or fewer layers/hooks)")
        stages.append(StagePlan(f"capture:{v}", where, overhead + sum(parts.values()), store,
                                n * t * 2 * p / rate + _load_seconds(weights), parts, fix))
    cost = exp.costs_spec()
    if cost is not None:
        t = TOKENS_PER_PROBE + 32
        parts = {"weights of one variant": weights,  # LoRA is timed unmerged: no second copy
                 "logits (float32)": _logits(cost.n_probes, t, shape, "infer"),
                 "KV cache": 2 * shape.layers * cost.n_probes * (t + cost.gen_tokens) * shape.kv_heads *
                 shape.head_dim * b}
        flops = len(exp.variants) * (cost.repeats + 1) * cost.n_probes * (t + cost.gen_tokens) * 2 * p
        stages.append(StagePlan("costs", where, overhead + sum(parts.values()), 0,
                                flops / rate + len(exp.variants) * _load_seconds(weights), parts))
    a = exp.analyze_spec()
    _, n_eval = _n_probes(exp.capture_spec("original").probes, "eval")
    host_b = BYTES[exp.model_spec.dtype] if exp.model_spec.dtype != "auto" else 4  # the analysis loads on CPU
    parts = {"original's weights (CPU)": p * host_b, "residuals of a layer (float64)": 2 * n_eval * shape.hidden * 8 *
             len(exp.variants), "lens block": 64 * min(shape.vocab, 65536) * 4 * len(exp.variants) * 3}
    need = math.ceil((PROCESS_BYTES + sum(parts.values())) / GB)
    fix = ('set [model] dtype = "float16" (exact for a float16 checkpoint) to halve the original\'s weights in RAM'
           if host_b == 4 else f"run the analysis on a host with at least {need} GB of RAM")
    lens_flops = 2 * len(exp.variants) * shape.layers * n_eval * 2 * shape.hidden * shape.vocab
    stages.append(StagePlan("analyze", "host", PROCESS_BYTES + sum(parts.values()), 0,
                            lens_flops / CPU_FLOPS + a.n_boot_cka * len(exp.variants) * shape.layers * 0.01,
                            parts, fix))
    return Plan(exp.name, shape, device, dtype, limit, host, disk_limit, stages)


def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


def plan_table(plan: Plan) -> Table:
    sh = plan.shape
    table = Table(title=f"Plan: {plan.experiment} — {sh.architecture} {sh.params / 1e9:.2f} B parameters, "
                        f"{sh.layers} layers, hidden {sh.hidden}, {sh.heads} heads, vocabulary {sh.vocab:,} "
                        f"on {plan.device} ({plan.dtype}, {plan.memory_limit / GB:.0f} GB)")
    for col in ("stage", "peak memory", "of", "fits", "disk", "time", "largest part"):
        table.add_column(col, justify="left" if col in ("stage", "largest part", "of") else "right")
    for s in plan.stages:
        limit = plan.memory_limit if s.where == "device" else plan.host_limit
        big = max(s.parts.items(), key=lambda kv: kv[1]) if s.parts else ("", 0.0)
        table.add_row(s.key, f"{s.memory / GB:.2f} GB", s.where, "yes" if s.fits(limit) else "NO",
                      f"{s.disk / GB:.2f} GB", _fmt_time(s.seconds), f"{big[0]} {big[1] / GB:.2f} GB")
    return table


def plan_lines(plan: Plan) -> list[str]:
    """The verdict under the table: every stage fits, or what does not and the setting that fixes it."""
    problems = plan.problems()
    if not problems:
        return [f"every stage fits: the largest needs {max(s.memory for s in plan.stages) / GB:.1f} GB "
                f"(device {plan.memory_limit / GB:.0f} GB, host {plan.host_limit / GB:.0f} GB)"]
    return problems


PlanFn = Callable[[ExperimentSpec, PlanSpec], Plan]
