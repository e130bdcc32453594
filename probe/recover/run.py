"""`probe recover`: train one recovery method on a saved compressed variant and save it atomically.

Saved under ``artifacts/variants/<model>/<preset>/recover/<method>/``::

    adapter/            peft adapter (adapter_model.safetensors + adapter_config.json)
    manifest.json       spec (all hyper-parameters), parents, data provenance, parameter count,
                        time, held-out losses, eval summary
    losses.json         loss per step, held-out losses, "curves" (train and held-out KL by step),
                        "seeds" (held-out KL per seed, mean, interval)
    loss.png            the loss curve
    eval.json           eval-split top-1 of original / compressed / recovered and the facts
                        recovered (known to the original, lost by compression, regained)

Teacher (the ORIGINAL model) and student (the compressed variant under the adapter) are both
loaded in this process — the two models alive at once, the original only as the teacher (and for
its eval-split result); the base weights are frozen. Original/compressed eval results saved by
an earlier run with the same spec and parents are reused (they do not depend on the method).

Measured with the defaults on SmolLM2-135M ``gptq3`` (2 CPU cores shared with other jobs, load
average 3-9, so this process got 36-46% of the CPU; wall times are upper bounds):

=======  ==========  ==========  =========================  ====================================
method   parameters  train wall  held-out KL compressed →   eval top-1 (original 0.281,
                                 init → trained             compressed 0.084) / regained of 126
=======  ==========  ==========  =========================  ====================================
prompt       18,432       516 s  0.4385 → 0.8433 → 0.4034   0.100 / 26 (22 newly broken)
prefix      368,640       304 s  0.4385 → 0.8433 → 0.3212   0.115 / 25 (16 newly broken)
lora        460,800       661 s  0.4385 → 0.4385 → 0.2868   0.099 / 19 (13 newly broken)
=======  ==========  ==========  =========================  ====================================

Prompt and prefix start from the same text (hence the same initial loss, above the compressed
model's: the teacher sees no prompt); LoRA starts at the compressed model (B = 0).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from matplotlib.figure import Figure
from scipy import stats

from probe.artifacts import build_manifest, spec_hash, write_json_atomic
from probe.config import ModelSpec
from probe.corpus import load_text
from probe.errors import ProbeError
from probe.evaluation.run import EvalSpec, run_eval
from probe.knowledge.scoring import hf_logits_fn
from probe.knowledge.status import id_transitions
from probe.models.load import LoadedModel, load_model, preflight
from probe.progress import console, status
from probe.recover.data import build_data
from probe.recover.registry import get_method
from probe.recover.spec import RecoverSpec
from probe.recover.train import TrainResult, train
from probe.runtime.spec import VariantSpec, compress_command, recovery_artifact, variant_artifact
from probe.runtime.variant import LoadedVariant
from probe.store import RecoveryArtifact


def check_inputs(spec: RecoverSpec, model_spec: ModelSpec) -> dict:
    """Fail fast (before loading anything heavy); returns the compressed variant's manifest."""
    get_method(spec.method)
    preflight(model_spec)
    compressed = variant_artifact(model_spec, spec.compression).manifest()
    if compressed is None:
        raise ProbeError(f"compressed variant {spec.compression!r} of {spec.model} is not built: run "
                         f"{compress_command(model_spec, spec.compression)}")
    if spec.train_text and spec.train_data != "facts":
        load_text(spec.train_text)
    return compressed


def plot_losses(result: TrainResult, path: Path, title: str) -> None:
    fig = Figure(figsize=(6, 3.5))  # no pyplot: no GUI backend, no global figure state
    ax = fig.subplots()
    ax.plot(range(1, len(result.losses) + 1), result.losses, label="train (batch)")
    held = result.curves.get("heldout", {})
    if held.get("step"):
        ax.plot(held["step"], held["kl"], "o-", color="green", label="held-out KL")
    ax.axhline(result.held_out_after, color="green", ls="--", label=f"held-out, kept (step {result.best_step})")
    if result.held_out_baseline is not None:
        ax.axhline(result.held_out_baseline, color="red", ls=":", label="held-out, compressed")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def eval_variant(variant: LoadedVariant, reuse: bool = False) -> dict:
    """Eval-split result of ``variant``; with ``reuse``, a saved result of the same spec and parents."""
    return run_eval(EvalSpec(variant=variant.spec), loaded=variant, reuse=reuse)


def summarise_eval(results: dict[str, dict]) -> dict:
    """Eval-split top-1 of original / compressed / recovered and the facts the recovery brought back."""
    known = {name: set(r["known_ids"]) for name, r in results.items()}
    moves = id_transitions(known["original"], known["compressed"], known["recovered"])
    lost, regained = moves["lost"], moves["regained"]
    return {
        "protocol": results["recovered"].get("protocol"),
        "known": {name: r.get("known_rate") for name, r in results.items()},
        "n_facts": results["original"]["n_facts"],
        "top1": {name: r["top1_accuracy"] for name, r in results.items()},
        "per_relation": {name: r["per_relation"] for name, r in results.items()},
        "n_lost": len(lost), "n_regained": len(regained),
        "n_newly_broken": len(moves["newly_broken"]),
        "regained_ids": sorted(regained),
    }


def recover(spec: RecoverSpec, device: str = "cpu", force: bool = False, with_eval: bool = True,
            rebuild_changed: bool = False, allow_pickle: bool = False, dtype: str = "auto") -> Path:
    """Train ``spec.method`` on the compressed variant, save it atomically; returns the folder.

    A finished recovery made with other settings is an error, or retrained with ``rebuild_changed``.
    Teacher and student weights load in ``dtype`` (``auto``: float16 on CUDA, float32 on CPU); the
    objective's log-softmax and KL run in float32 (:mod:`probe.recover.objective`).
    """
    model_spec = ModelSpec(spec.model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    compressed_manifest = check_inputs(spec, model_spec)
    artifact = recovery_artifact(model_spec, spec.compression, spec.method)
    with artifact.lock():  # from the reuse check to the rename: a second `probe recover` of it is refused at once
        return _recover_locked(spec, model_spec, compressed_manifest, artifact, force, with_eval, rebuild_changed)


def _recover_locked(spec: RecoverSpec, model_spec: ModelSpec, compressed_manifest: dict, artifact: RecoveryArtifact,
                    force: bool, with_eval: bool, rebuild_changed: bool) -> Path:
    final = artifact.path
    content = spec_hash(spec.content())
    if not force and artifact.is_fresh(content, [variant_artifact(model_spec, spec.compression)]):
        console.print(f"Reusing the finished recovery {final} (pass --force to retrain)")
        return final
    existing = None if force else artifact.manifest()  # --force overwrites even a damaged recovery
    if existing is not None:
        if existing.get("spec_hash") != content and not rebuild_changed:
            raise ProbeError(f"recovery {final} exists with other settings: pass --force to retrain it")
        why = "settings" if existing.get("spec_hash") != content else "compressed variant"
        console.print(f"The {why} of {final} changed: retraining it")
    start = time.perf_counter()
    method = get_method(spec.method)
    with status(f"Loading {spec.model} (teacher) and {spec.compression} (student)"):
        original = load_model(model_spec)
        variant = variant_artifact(model_spec, spec.compression)
        variant.check_weights()
        student_base = load_model(replace(model_spec, name=str(variant.path)))
    student_base.name = original.name
    for model in (original.model, student_base.model):
        model.requires_grad_(False)
    data = build_data(spec, original.tokenizer, original)
    parents = {"model": original.model_hash, "compressed": compressed_manifest["spec_hash"]}
    # evaluated before the adapter is attached (LoRA modifies the compressed model's modules in place)
    results = {name: eval_variant(v, reuse=True) for name, v in _eval_variants(model_spec, spec, original, student_base,
                                                                   parents).items()} if with_eval else None
    teacher = hf_logits_fn(original.model)
    plain = hf_logits_fn(student_base.model)
    lr_trials = sweep_lr(method, spec, original, student_base, data, teacher) if spec.lr_sweep else {}
    train_spec = replace(spec, lr=min(lr_trials, key=lr_trials.get)) if lr_trials else spec
    runs: dict[int, TrainResult] = {}
    # further seeds first, each adapter discarded (LoRA edits the base model in place); spec.seed's is kept
    for seed in [*range(spec.seed + 1, spec.seed + spec.seeds), spec.seed]:
        peft_model, runs[seed] = train_once(method, replace(train_spec, seed=seed), original, student_base, data,
                                            teacher, plain if seed == spec.seed else None)
        if seed != spec.seed:
            method.discard(peft_model)
    result = runs[spec.seed]
    seeds = seed_summary([runs[s] for s in sorted(runs)])
    report = method.report(peft_model, lambda ids, mask: teacher(ids, mask)[0], data.held_out_batches(spec.batch_size))
    print_summary(spec, result, seeds, lr_trials)
    peft_model.eval()
    n_params = method.extra_parameters(peft_model)
    summary = None
    if results is not None:
        recovered = LoadedVariant(VariantSpec(model_spec, spec.method, spec.compression), student_base,
                                  method.logits_fn(peft_model), {**parents, "recovery": spec_hash(spec.content())},
                                  peft_model, method)
        summary = summarise_eval({**results, "recovered": eval_variant(recovered)})
    losses = {**asdict(result), "objective": spec.objective, "seeds": seeds, "report": report}
    with artifact.writer(overwrite=True) as tmp:
        method.save(peft_model, tmp / "adapter")
        write_json_atomic(tmp / "losses.json", losses)
        plot_losses(result, tmp / "loss.png", f"{spec.method} on {spec.model}/{spec.compression}")
        if summary is not None:
            write_json_atomic(tmp / "eval.json", summary)
        manifest = build_manifest(
            "recovery", spec.content(), parents, data=data.info, trainable_parameters=n_params,
            extra_kv_positions=method.extra_kv_positions(peft_model), train_seconds=round(result.seconds, 2),
            total_seconds=round(time.perf_counter() - start, 2), held_out_compressed=result.held_out_baseline,
            held_out_before=result.held_out_before, held_out_after=result.held_out_after,
            tokens_seen=result.tokens_seen, best_step=result.best_step, stopped_step=result.stopped_step,
            lr=train_spec.lr, lr_sweep={"held_out": {f"{lr:g}": v for lr, v in lr_trials.items()},
                                        "steps": spec.sweep_steps} if lr_trials else None,
            seeds=seeds, report=report,
            eval=None if summary is None else {k: v for k, v in summary.items() if k not in ("regained_ids",
                                                                                          "per_relation")})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return final


def train_once(method, spec: RecoverSpec, original: LoadedModel, student_base: LoadedModel, data, teacher,
               plain=None):
    """A fresh adapter of ``spec.method`` trained with ``spec``; ``plain`` (the compressed model's logits)
    adds the compressed model's held-out loss to the result."""
    method.prepare(original.model, data, spec)
    adapter = method.create(student_base.model, student_base.tokenizer, spec)
    baseline = None if plain is None else (lambda ids, mask: _without_adapter(adapter, plain, ids, mask))
    result = train(method.student(adapter), [p for p in adapter.parameters() if p.requires_grad],
                   data.batches(spec.steps, spec.batch_size, spec.seed), lambda ids, mask: teacher(ids, mask)[0],
                   spec, held_out=data.held_out_batches(spec.batch_size), baseline=baseline,
                   state=method.state(adapter))
    return adapter, result


def sweep_lr(method, spec: RecoverSpec, original: LoadedModel, student_base: LoadedModel, data,
             teacher) -> dict[float, float]:
    """Best held-out KL of each learning rate of ``spec.lr_sweep`` after ``spec.sweep_steps`` steps (equal compute;
    held-out windows only, never eval facts)."""
    trials = {}
    for lr in spec.lr_sweep:
        trial = replace(spec, lr=lr, steps=spec.sweep_steps, eval_every=min(spec.eval_every, spec.sweep_steps),
                        patience=0, seeds=1)
        adapter, result = train_once(method, trial, original, student_base, data, teacher)
        method.discard(adapter)
        trials[lr] = result.held_out_after
        console.print(f"lr sweep: {lr:g} → held-out KL {result.held_out_after:.4f}", highlight=False)
    return trials


def seed_summary(runs: list[TrainResult]) -> dict:
    """Held-out KL per seed, its mean and a 95% t-interval over seeds (None with one seed)."""
    values = [r.held_out_after for r in runs]
    mean = sum(values) / len(values)
    interval = None
    if len(values) > 1:
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        half = float(stats.t.ppf(0.975, len(values) - 1)) * sd / len(values) ** 0.5
        interval = [mean - half, mean + half]
    return {"n": len(values), "held_out_after": values, "mean": mean, "interval95": interval,
            "tokens_seen": [r.tokens_seen for r in runs], "stopped_step": [r.stopped_step for r in runs]}


def print_summary(spec: RecoverSpec, result: TrainResult, seeds: dict, lr_trials: dict) -> None:
    """What `probe recover` prints at the end: tokens, time, held-out KL, where training stopped."""
    base = "" if result.held_out_baseline is None else f" (compressed {result.held_out_baseline:.4f})"
    console.print(f"{spec.method}: {result.tokens_seen:,} tokens seen in {result.seconds:.0f} s; held-out KL "
                  f"{result.held_out_before:.4f} → {result.held_out_after:.4f}{base}, best at step "
                  f"{result.best_step}, stopped at step {result.stopped_step} of {spec.steps}; lr {result.lr:g}"
                  + (f" (sweep of {len(lr_trials)})" if lr_trials else ""), highlight=False)
    if seeds["n"] > 1:
        lo, hi = seeds["interval95"]
        console.print(f"{seeds['n']} seeds: held-out KL mean {seeds['mean']:.4f} (95% interval {lo:.4f}–{hi:.4f})",
                      highlight=False)


def _without_adapter(peft_model, plain, ids, mask):
    """The compressed model's own logits (prompt/prefix add nothing to it; LoRA is switched off)."""
    if hasattr(peft_model, "disable_adapter") and not peft_model.active_peft_config.is_prompt_learning:
        with peft_model.disable_adapter():
            return plain(ids, mask)[0]
    return plain(ids, mask)[0]


def _eval_variants(model_spec: ModelSpec, spec: RecoverSpec, original: LoadedModel, compressed: LoadedModel,
                   parents: dict[str, str]) -> dict[str, LoadedVariant]:
    """Original and compressed as LoadedVariants over the models already in memory."""
    return {
        "original": LoadedVariant(VariantSpec(model_spec), original, hf_logits_fn(original.model),
                                  {"model": parents["model"]}),
        "compressed": LoadedVariant(VariantSpec(model_spec, "compressed", spec.compression), compressed,
                                    hf_logits_fn(compressed.model), parents),
    }
