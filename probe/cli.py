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
    variant: Annotated[str, typer.Option(help="original or compressed.")] = "original",
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
    from probe.variants import VariantSpec

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
