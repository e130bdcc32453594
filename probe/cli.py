"""The `probe` command line: parses flags, builds specs, calls stages. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from probe.errors import ProbeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="When compression breaks a model's knowledge: forgotten, or only displaced?")
out = Console()

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name (see `probe models`) or HF folder.")]
ModelPathOpt = Annotated[str | None, typer.Option("--model-path", help="Local HF folder with the weights.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16.")]
DeviceMapOpt = Annotated[str | None, typer.Option("--device-map", help="auto: spread one model over GPUs.")]


def _model_spec(model: str, model_path: str | None, device: str, dtype: str, device_map: str | None):
    from probe.config import ModelSpec

    return ModelSpec(name=model, model_path=model_path, device=device, dtype=dtype, device_map=device_map)


@app.command("models")
def models_cmd() -> None:
    """List the models this toolkit knows and whether their weights are available here."""
    from probe.models.registry import REGISTRY, availability

    table = Table(title="Models")
    for col in ("name", "architecture", "source", "available here", "env variable"):
        table.add_column(col)
    for e in REGISTRY.values():
        table.add_row(e.name, e.architecture, e.source, availability(e), e.env_var or "")
    out.print(table)


@app.command("eval")
def eval_cmd(
    model: ModelOpt = "smollm2-135m",
    variant: Annotated[str, typer.Option(help="original, compressed, prompt, prefix, lora or idp.")] = "original",
    compression: Annotated[str | None, typer.Option(help="Compression preset, e.g. gptq3.")] = None,
    probes: Annotated[str, typer.Option(help="'builtin' or a probe file (known_1000, LAMA, PopQA, JSONL).")]
    = "builtin",
    split: Annotated[str, typer.Option(help="eval, train or all.")] = "eval",
    relations: Annotated[str | None, typer.Option(help="Comma-separated relation ids.")] = None,
    template: Annotated[int, typer.Option(help="Which paraphrase template to ask with.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    perplexity: Annotated[bool, typer.Option(help="Also measure held-out perplexity.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    model_path: ModelPathOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
) -> None:
    """Knowledge accuracy of a model variant on knowledge probes, per relation."""
    from probe.evaluation.run import EvalSpec, run_eval
    from probe.evaluation.table import eval_table
    from probe.runtime.spec import VariantSpec

    spec = EvalSpec(
        variant=VariantSpec(_model_spec(model, model_path, device, dtype, device_map), variant, compression),
        probes=probes, split=split, template=template, batch_size=batch_size, perplexity=perplexity,
        relations=tuple(r.strip() for r in relations.split(",") if r.strip()) if relations else (),
    )
    result = run_eval(spec)
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "facts"}) + "\n")
    else:
        out.print(eval_table(result))


# ---- probe compress ------------------------------------------------------------------------------
# Threads that spin-wait starve each other on small CPU machines (10x slower generation here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command("compress")
def compress_cmd(
    model: ModelOpt = "smollm2-135m",
    method: Annotated[str, typer.Option(help="Preset (gptq3, gptq4, gptq2, sparsegpt50, sparsegpt24, awq4, rtn3, "
                                             "mag50, sparse50+gptq4) or method (gptq, sparsegpt, awq, rtn, "
                                             "magnitude, sparsegpt+gptq …).")] = "gptq3",
    bits: Annotated[int | None, typer.Option(help="Quantization bits: 2, 3, 4 or 8.")] = None,
    group_size: Annotated[int | None, typer.Option("--group-size", help="Quantization group size.")] = None,
    symmetric: Annotated[bool | None, typer.Option("--symmetric/--asymmetric", help="Quantization grid.")] = None,
    sparsity: Annotated[float | None, typer.Option(help="Unstructured sparsity in (0, 1).")] = None,
    pattern: Annotated[str | None, typer.Option(help="N:M sparsity, e.g. 2:4.")] = None,
    calibration: Annotated[str | None, typer.Option(help="Calibration text (.txt or .jsonl); default: "
                                                         "self-generated.")] = None,
    n_calibration: Annotated[int | None, typer.Option("--n-calibration", help="Calibration texts (64).")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per calibration text (128).")] = None,
    from_path: Annotated[str | None, typer.Option("--from", help="Import a compressed-tensors folder.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild an existing variant.")] = False,
    device: DeviceOpt = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 (default), float16 or bfloat16.")] = "float32",
) -> None:
    """Compress a model (GPTQ, SparseGPT, AWQ, RTN, magnitude) into a dense variant with a report."""
    from probe.compress import build_spec, compress

    spec = build_spec(model, method, bits=bits, group_size=group_size, symmetric=symmetric, sparsity=sparsity,
                      pattern=pattern, calibration=calibration, n_calibration=n_calibration, seq_len=seq_len,
                      from_path=from_path)
    path = compress(spec, device=device, dtype=dtype, force=force)
    out.print(f"variant: {path} (use --variant compressed --compression {path.name})")


# ---- probe recover / probe costs -----------------------------------------------------------------
@app.command("recover")
def recover_cmd(
    model: ModelOpt = "smollm2-135m",
    compression: Annotated[str, typer.Option(help="Compressed variant to recover, e.g. gptq3.")] = "gptq3",
    method: Annotated[str, typer.Option(help="prompt, prefix, lora or idp.")] = "prompt",
    steps: Annotated[int | None, typer.Option(help="Training steps (default 60; --fast 4).")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (prompt/prefix 3e-3, lora 1e-3).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order and initialisation.")] = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Windows per step (8).")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per window (64).")] = None,
    n_tokens: Annotated[int | None, typer.Option("--n-tokens", help="Virtual tokens, prompt/prefix (32).")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha.")] = 16.0,
    targets: Annotated[str, typer.Option(help="LoRA target modules, comma-separated.")] = "q_proj,v_proj",
    objective: Annotated[str, typer.Option(help="kl (distil from the original) or lm.")] = "kl",
    train_data: Annotated[str, typer.Option("--train-data", help="corpus, facts (train split) or both.")]
    = "corpus",
    train_text: Annotated[str | None, typer.Option("--train-text", help="Corpus file (.txt/.jsonl); default: "
                                                                       "self-generated.")] = None,
    fast: Annotated[bool, typer.Option(help="Tiny preset for tests (a few steps).")] = False,
    idp_m: Annotated[int, typer.Option("--idp-m", help="IDP: prompts in the pool (each --n-tokens long).")] = 4,
    idp_layer: Annotated[int, typer.Option("--idp-layer", help="IDP: layer whose attention selects.")] = 0,
    idp_statistic: Annotated[str, typer.Option("--idp-statistic", help="IDP: mean or max attention mass.")] = "mean",
    idp_routing: Annotated[str, typer.Option("--idp-routing", help="IDP: attention or centroid.")] = "attention",
    idp_training: Annotated[str, typer.Option("--idp-training", help="IDP: joint routing or cluster.")] = "joint",
    idp_init: Annotated[str, typer.Option("--idp-init", help="IDP: kmeans or vocab initialisation.")] = "kmeans",
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the eval-split accuracy.")] = False,
    force: Annotated[bool, typer.Option(help="Retrain an existing recovery.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a recovery (soft prompt, prefix, LoRA) on a compressed variant; save adapter, curve, eval."""
    from probe.recover.run import recover
    from probe.recover.spec import RecoverSpec

    spec = RecoverSpec(model=model, compression=compression, method=method, steps=steps, lr=lr, seed=seed,
                       batch_size=batch_size, seq_len=seq_len, n_tokens=n_tokens, rank=rank, alpha=alpha,
                       targets=tuple(t.strip() for t in targets.split(",") if t.strip()), objective=objective,
                       train_data=train_data, train_text=train_text, fast=fast, idp_m=idp_m, idp_layer=idp_layer,
                       idp_statistic=idp_statistic, idp_routing=idp_routing, idp_training=idp_training,
                       idp_init=idp_init)
    path = recover(spec, device=device, force=force, with_eval=not no_eval)
    manifest = json.loads((path / "manifest.json").read_text())
    out.print(f"recovery: {path}")
    out.print(f"trainable parameters {manifest['trainable_parameters']:,}; held-out loss compressed "
              f"{manifest['held_out_compressed']:.4f} -> recovered {manifest['held_out_after']:.4f} "
              f"({manifest['train_seconds']:.0f} s training)")
    if manifest.get("eval"):
        ev = manifest["eval"]
        top = ev["top1"]
        out.print(f"eval top-1: original {top['original']:.3f}, compressed {top['compressed']:.3f}, recovered "
                  f"{top['recovered']:.3f}; facts regained {ev['n_regained']}/{ev['n_lost']} lost")


@app.command("costs")
def costs_cmd(
    model: ModelOpt = "smollm2-135m",
    compression: Annotated[str, typer.Option(help="Compressed variant, e.g. gptq3.")] = "gptq3",
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per variant (median reported).")] = 5,
    n_probes: Annotated[int, typer.Option("--n-probes", min=1, help="Eval probes in the forward batch.")] = 32,
    gen_tokens: Annotated[int, typer.Option("--gen-tokens", min=1, help="Greedy tokens generated.")] = 16,
    device: DeviceOpt = "cpu",
) -> None:
    """Extra parameters, KV positions, latency and memory of every built variant, side by side."""
    from probe.costs import CostSpec, cost_table, measure_costs

    result = measure_costs(CostSpec(model, compression, repeats=repeats, n_probes=n_probes, gen_tokens=gen_tokens,
                                    device=device))
    out.print(cost_table(result))
    out.print(f"saved: {result['path']}")


# ---- probe capture / probe runs ------------------------------------------------------------------
@app.command("capture")
def capture_cmd(
    model: ModelOpt = "smollm2-135m",
    variant: Annotated[str, typer.Option(help="original, compressed, prompt, prefix, idp or lora.")] = "original",
    compression: Annotated[str | None, typer.Option(help="Compression preset, e.g. gptq3.")] = None,
    probes: Annotated[str, typer.Option(help="'builtin' or a probe file.")] = "builtin",
    split: Annotated[str, typer.Option(help="eval, train or all.")] = "eval",
    layers: Annotated[str, typer.Option(help="Comma-separated layers, or all.")] = "all",
    hooks: Annotated[str, typer.Option(help="Any of resid_post,attn_out,mlp_out,pattern.")]
    = "resid_post,attn_out,mlp_out,pattern",
    positions: Annotated[str, typer.Option(help="Any of last,subject,all (real tokens).")] = "last,subject",
    dtype: Annotated[str, typer.Option(help="Stored dtype: float32 or float16.")] = "float32",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Probes per batch (= chunk).")] = 16,
    run: Annotated[str | None, typer.Option("--run", "--run-name", help="Run name (default <compression>-<variant>-"
                                                                       "<probes>-<split>; --run-name under torchrun, "
                                                                       "whose own flags clash with --run).")] = None,
    full_attention: Annotated[int, typer.Option("--full-attention", min=0, help="Probes with full T×T maps.")] = 64,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Next tokens kept per probe.")] = 10,
    max_gb: Annotated[float, typer.Option("--max-gb", help="Refuse a larger estimated store.")] = 2.0,
    force: Annotated[bool, typer.Option(help="Overwrite a finished (or other) capture of that name.")] = False,
    build: Annotated[bool, typer.Option(help="Build a missing variant first (probe compress / recover).")] = False,
    model_path: ModelPathOpt = None,
    device: DeviceOpt = "cpu",
    model_dtype: Annotated[str, typer.Option("--model-dtype", help="auto, float32, float16 or bfloat16.")] = "auto",
    device_map: DeviceMapOpt = None,
) -> None:
    """Record activations and attention of a variant on knowledge probes into a resumable store."""
    from probe.capture.run import capture
    from probe.capture.spec import HOOK_KINDS, POSITIONS, CaptureSpec, parse_layers, parse_list
    from probe.experiment.build import build_missing
    from probe.runtime.spec import VariantSpec

    spec = CaptureSpec(
        variant=VariantSpec(_model_spec(model, model_path, device, model_dtype, device_map), variant, compression),
        probes=probes, split=split, layers=parse_layers(layers), hooks=parse_list(hooks, HOOK_KINDS, "hook"),
        positions=parse_list(positions, POSITIONS, "position"), dtype=dtype, batch_size=batch_size, run=run,
        full_attention=full_attention, top_k=top_k, max_gb=max_gb, force=force, build=build,
    )
    capture(spec, build=build_missing)


@app.command("runs")
def runs_cmd() -> None:
    """List captures with their status, size and variant."""
    from probe.capture.store import list_runs

    table = Table(title="Captures")
    for col in ("model", "run", "variant", "compression", "status", "batches", "probes", "size"):
        table.add_column(col)
    for r in list_runs():
        table.add_row(r["model"], r["run"], r["variant"] or "", r["compression"] or "", r["status"] or "",
                      r["batches"], str(r["n_probes"]), f"{r['size_bytes'] / 1e6:.1f} MB")
    out.print(table)


# ---- probe analyze -------------------------------------------------------------------------------
@app.command("analyze")
def analyze_cmd(
    model: ModelOpt = "smollm2-135m",
    compression: Annotated[str, typer.Option(help="Compressed variant whose captures to analyse, e.g. gptq3.")]
    = "gptq3",
    runs: Annotated[str | None, typer.Option(help="Comma-separated capture runs (default: one complete capture "
                                                  "per variant of the original and --compression).")] = None,
    name: Annotated[str | None, typer.Option(help="Output folder name (default <model>-<compression>).")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples over facts.")] = 1000,
    n_boot_cka: Annotated[int, typer.Option("--n-boot-cka", help="Bootstrap resamples for CKA.")] = 200,
    seed: Annotated[int, typer.Option(help="Bootstrap and probe seed.")] = 0,
    min_facts: Annotated[int, typer.Option("--min-facts", help="Fewest facts a bootstrap interval needs.")] = 10,
    force: Annotated[bool, typer.Option(help="Overwrite an existing analysis of that name.")] = False,
    model_path: ModelPathOpt = None,
) -> None:
    """Divergence, CKA, logit lens and decodability vs the original; the displaced-vs-forgotten verdict."""
    from probe.analysis.run import analyze
    from probe.analysis.spec import AnalyzeSpec

    spec = AnalyzeSpec(model=model, compression=compression, name=name, model_path=model_path, n_boot=n_boot,
                       n_boot_cka=n_boot_cka, seed=seed, min_facts=min_facts, force=force,
                       runs=tuple(r.strip() for r in (runs or "").split(",") if r.strip()))
    result = analyze(spec)
    table = Table(title=f"Analysis {result.path.name} (95% bootstrap intervals over eval facts)")
    columns = ("variant", "top1", "regained_lost", "mean_cka", "best_decodability")
    for col in columns:
        table.add_column(col)
    for row in result.summary:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)
    out.print(result.verdict)
    out.print(f"saved: {result.path}")


# ---- probe dashboard -----------------------------------------------------------------------------
@app.command("dashboard")
def dashboard_cmd(
    artifacts: Annotated[str | None, typer.Option(help="Artifacts folder to browse (default $PROBE_ARTIFACTS or "
                                                       "./artifacts); nothing outside it is read.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local to this machine.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8050,
    debug: Annotated[bool, typer.Option(help="Dash debug mode (reloader, tracebacks in the page): local use only.")]
    = False,
) -> None:
    """Browse captures, analyses and verdicts in a read-only Dash app."""
    from dashboards.app import serve
    from probe.artifacts import artifacts_root

    serve(artifacts or artifacts_root(), host=host, port=port, debug=debug)


# ---- probe run / probe demo ----------------------------------------------------------------------
def _run_file(path: str, serve: bool, port: int | None) -> None:
    from probe.experiment.run import run_experiment, stage_table
    from probe.experiment.spec import load_experiment

    spec = load_experiment(path)
    result = run_experiment(spec)
    analysis = result.analysis / "verdict.md"
    if analysis.is_file():
        out.print(analysis.read_text())
    out.print(stage_table(result))
    if serve:
        from dashboards.app import serve as serve_app
        from probe.artifacts import artifacts_root

        port = port or spec.port
        out.print(f"dashboard: http://{spec.host}:{port}/ (Ctrl-C to stop)")
        serve_app(artifacts_root(), host=spec.host, port=port)


NoServeOpt = Annotated[bool, typer.Option("--no-serve", help="Stop after the analysis; do not start the dashboard.")]
PortOpt = Annotated[int | None, typer.Option(min=1, max=65535, help="Dashboard port (default: the file's).")]


@app.command("run")
def run_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment file (TOML), e.g. experiments/smollm2.toml.")],
    no_serve: NoServeOpt = False,
    port: PortOpt = None,
) -> None:
    """Run every stage of an experiment file (cached stages are reused), then serve the dashboard."""
    _run_file(experiment, not no_serve, port)


@app.command("demo")
def demo_cmd(no_serve: NoServeOpt = False, port: PortOpt = None) -> None:
    """The whole pipeline on the embedded SmolLM2 (experiments/smollm2.toml), then the dashboard."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "smollm2.toml"
    if not path.is_file():
        raise ProbeError(f"{path} is missing (probe is installed without its repository): run "
                         f"`probe run EXPERIMENT.toml` with your own experiment file")
    _run_file(str(path), not no_serve, port)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    """Entry point: one clear line and exit status 2 for any user error."""
    _quiet_libraries()
    try:
        app()
    except ProbeError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
