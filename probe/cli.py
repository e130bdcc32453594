"""The `probe` command line: parses flags, builds specs, calls stages. No logic lives here.

A stage command's options are generated from its spec dataclasses' fields (:mod:`probe.settings`),
so a default or a help text exists once. Those commands are built only when they run or show
their help: building one imports its stage spec, and some of those import torch, which would
make `probe --help` take seconds.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.settings import Option, build, options, strip_optional
from probe.store import ArtifactStore

Values = dict[str, dict[str, Any]]  # option group → {public name: value}
_STAGES: dict[str, tuple[Callable[..., None], Callable[[], dict[str, list[Option]]]]] = {}
ORDER = ("models", "plan", "eval", "compress", "recover", "costs", "capture", "runs", "analyze", "dashboard", "run",
         "demo")


class _Group(TyperGroup):
    """Lists every command; builds a stage command's options only when it is invoked (or asked for help)."""

    def __init__(self, *args: Any, commands: dict[str, TyperCommand] | None = None, **kwargs: Any) -> None:
        commands = dict(commands or {})
        for name, (func, _) in _STAGES.items():
            commands[name] = TyperCommand(name, help=inspect.getdoc(func), callback=None)
        commands = {n: commands[n] for n in sorted(commands, key=lambda n: ORDER.index(n) if n in ORDER else 99)}
        super().__init__(*args, commands=commands, **kwargs)

    def resolve_command(self, ctx: typer.Context, args: list[str]):  # type: ignore[override]
        if args and args[0] in _STAGES and self.commands[args[0]].callback is None:
            self.commands[args[0]] = stage_command(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Group,
                  help="When compression breaks a model's knowledge: forgotten, or only displaced?")
out = Console()


def stage(name: str, settings: Callable[[], dict[str, list[Option]]]):
    """Register ``func(values, **flags)`` as command ``name`` with the options ``settings()`` returns.

    ``func``'s own parameters (after ``values``) are extra flags that are no stage setting (``--json``).
    """
    def register(func: Callable[..., None]) -> Callable[..., None]:
        _STAGES[name] = (func, settings)
        return func
    return register


def typer_parameter(option: Option) -> inspect.Parameter:
    """The typer option of one setting: its flags, help (with unit, choices, computed default), bounds."""
    base = strip_optional(option.type)
    text = option.item_type is not None or option.setting.parse is not None
    cli_type: Any = str if text else base
    default = option.cli_default
    if default is None:
        cli_type = cli_type | None
    elif text:
        default = option.text(default)
    s = option.setting
    info = typer.Option(*option.flags, help=option.describe, min=s.min, max=s.max,
                        show_default=default is not None and not s.default_text)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[cli_type, info],
                             default=default)


def stage_command(name: str) -> TyperCommand:
    """The click command of a registered stage command, options generated from its settings."""
    func, settings = _STAGES[name]
    groups = settings()
    extra = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in extra]
    params += [typer_parameter(o) for opts in groups.values() for o in opts]

    def callback(**kwargs: Any) -> None:
        values = {group: {o.name: o.from_text(kwargs.pop(o.name)) for o in opts} for group, opts in groups.items()}
        func(values, **kwargs)

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub.command(name, help=inspect.getdoc(func))(callback)
    return typer.main.get_command(sub)  # type: ignore[return-value]


def with_default(opts: list[Option], **defaults: Any) -> list[Option]:
    """``opts`` with some command-line defaults changed (the command's function has that default)."""
    return [replace(o, default=defaults[o.name]) if o.name in defaults else o for o in opts]


def _check_port(host: str, port: int) -> None:
    """Refuse a busy port with one line before the server prints its own two."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ProbeError(f"port {port} on {host} is in use: stop the other server or pass --port N") from None
            raise


@app.command("models")
def models_cmd() -> None:
    """List the models this toolkit knows and whether their weights are available here."""
    from probe.models.registry import REGISTRY, availability  # lazily, for start-up time

    table = Table(title="Models")
    for col in ("name", "architecture", "source", "available here", "env variable"):
        table.add_column(col)
    for e in REGISTRY.values():
        table.add_row(e.name, e.architecture, e.source, availability(e), e.env_var or "")
    out.print(table)


# Each stage command imports its stage inside (lazily, for start-up time: stages import torch).
def _model_settings() -> dict[str, list[Option]]:

    return {"model": options(ModelSpec)}


def _eval_settings() -> dict[str, list[Option]]:
    from probe.evaluation.run import EvalSpec  # lazily, for start-up time (imports torch)

    return {"spec": options(EvalSpec)}


@stage("eval", _eval_settings)
def eval_cmd(values: Values,
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False) -> None:
    """Knowledge accuracy of a model variant on knowledge probes, per relation."""
    from probe.evaluation.run import EvalSpec, run_eval, save_result  # lazily, for start-up time (imports torch)
    from probe.evaluation.table import eval_table  # lazily, for start-up time

    spec = build(EvalSpec, values["spec"])
    result = run_eval(spec, save=False)
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "facts"}) + "\n")
        sys.stdout.flush()
    else:
        out.print(eval_table(result))
    path = save_result(result, spec)  # after printing: a failed save (read-only folder) keeps the scores shown
    if not as_json:
        out.print(f"saved: {path}")


# ---- probe compress ------------------------------------------------------------------------------
# Threads that spin-wait starve each other on small CPU machines (10x slower generation here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMPRESS_DTYPE = "float32"  # compress() loads the model in float32 unless told (tests check its signature)


def _compress_settings() -> dict[str, list[Option]]:
    from probe.compress.spec import CompressSpec  # lazily, for start-up time (imports torch)

    return {"spec": options(CompressSpec),
            "load": with_default(options(ModelSpec, only=("device", "dtype", "allow_pickle")), dtype=COMPRESS_DTYPE)}


@stage("compress", _compress_settings)
def compress_cmd(values: Values,
                 force: Annotated[bool, typer.Option(help="Rebuild an existing variant.")] = False) -> None:
    """Compress a model (GPTQ, SparseGPT, AWQ, RTN, magnitude) into a dense variant with a report."""
    from probe.compress import build_spec, compress  # lazily, for start-up time (imports torch)

    settings = dict(values["spec"])
    spec = build_spec(settings.pop("model"), settings.pop("method"), **settings)
    path = compress(spec, **values["load"], force=force)
    out.print(f"variant: {path} (use --variant compressed --compression {path.name})")


# ---- probe recover / probe costs -----------------------------------------------------------------
def _recover_settings() -> dict[str, list[Option]]:
    from probe.recover.spec import RecoverSpec  # lazily, for start-up time

    return {"spec": options(RecoverSpec), "load": options(ModelSpec, only=("device", "dtype", "allow_pickle"))}


@stage("recover", _recover_settings)
def recover_cmd(values: Values,
                no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the eval-split accuracy.")] = False,
                force: Annotated[bool, typer.Option(help="Retrain an existing recovery.")] = False) -> None:
    """Train a recovery (soft prompt, prefix, LoRA, IDP) on a compressed variant; save adapter, curve, eval."""
    from probe.recover.run import recover  # lazily, for start-up time (imports torch)
    from probe.recover.spec import RecoverSpec  # lazily, for start-up time
    from probe.runtime.spec import recovery_artifact  # lazily, for start-up time

    rspec = build(RecoverSpec, values["spec"])
    path = recover(rspec, **values["load"], force=force, with_eval=not no_eval)
    manifest = recovery_artifact(ModelSpec(rspec.model), rspec.compression, rspec.method).manifest() or {}
    out.print(f"recovery: {path}")
    out.print(f"trainable parameters {manifest['trainable_parameters']:,}; held-out loss compressed "
              f"{manifest['held_out_compressed']:.4f} -> recovered {manifest['held_out_after']:.4f} "
              f"({manifest['train_seconds']:.0f} s training)")
    if manifest.get("eval"):
        ev = manifest["eval"]
        top = ev["top1"]
        out.print(f"eval top-1: original {top['original']:.3f}, compressed {top['compressed']:.3f}, recovered "
                  f"{top['recovered']:.3f}; facts regained {ev['n_regained']}/{ev['n_lost']} lost")


def _costs_settings() -> dict[str, list[Option]]:
    from probe.costs import CostSpec  # lazily, for start-up time (imports torch)

    return {"spec": options(CostSpec), "load": options(ModelSpec, only=("dtype", "allow_pickle"))}


@stage("costs", _costs_settings)
def costs_cmd(values: Values) -> None:
    """Extra parameters, KV positions, latency and memory of every built variant, side by side."""
    from probe.costs import CostSpec, cost_table, measure_costs  # lazily, for start-up time (imports torch)

    result = measure_costs(build(CostSpec, values["spec"]), **values["load"])
    out.print(cost_table(result))
    out.print(f"saved: {result['path']}")


# ---- probe capture / probe runs ------------------------------------------------------------------
def _capture_settings() -> dict[str, list[Option]]:
    from probe.capture.spec import CaptureSpec  # lazily, for start-up time (imports torch)

    return {"spec": options(CaptureSpec)}


@stage("capture", _capture_settings)
def capture_cmd(values: Values) -> None:
    """Record activations and attention of a variant on knowledge probes into a resumable store."""
    from probe.capture.run import capture  # lazily, for start-up time (imports torch)
    from probe.capture.spec import CaptureSpec  # lazily, for start-up time
    from probe.experiment.build import build_missing  # lazily: --build runs compress/recover first

    capture(build(CaptureSpec, values["spec"]), build=build_missing)


@app.command("runs")
def runs_cmd() -> None:
    """List captures with their status, size and variant."""
    from probe.capture.store import list_runs  # lazily, for start-up time

    table = Table(title="Captures")
    for col in ("model", "run", "variant", "compression", "status", "batches", "probes", "size"):
        table.add_column(col)
    for r in list_runs():
        table.add_row(r["model"], r["run"], r["variant"] or "", r["compression"] or "", r["status"] or "",
                      r["batches"], str(r["n_probes"]), f"{r['size_bytes'] / 1e6:.1f} MB")
    out.print(table)


# ---- probe analyze -------------------------------------------------------------------------------
def _analyze_settings() -> dict[str, list[Option]]:
    from probe.analysis.spec import AnalyzeSpec  # lazily, for start-up time

    return {"spec": options(AnalyzeSpec), "load": options(ModelSpec, only=("dtype", "allow_pickle"))}


@stage("analyze", _analyze_settings)
def analyze_cmd(values: Values) -> None:
    """Divergence, CKA, logit lens and decodability vs the original; the displaced-vs-forgotten verdict."""
    from probe.analysis.run import analyze  # lazily, for start-up time (imports torch)
    from probe.analysis.spec import AnalyzeSpec  # lazily, for start-up time

    result = analyze(build(AnalyzeSpec, values["spec"]), **values["load"])
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
def _dashboard_settings() -> dict[str, list[Option]]:
    from probe.experiment.dashboard import DashboardSpec  # lazily, for start-up time

    return {"spec": options(DashboardSpec)}


@stage("dashboard", _dashboard_settings)
def dashboard_cmd(values: Values) -> None:
    """Browse captures, analyses and verdicts in a read-only Dash app."""
    from dashboards.app import serve  # lazily, for start-up time (imports dash)
    from probe.experiment.dashboard import DashboardSpec  # lazily, for start-up time

    spec = build(DashboardSpec, values["spec"])
    _check_port(spec.host, spec.port)
    serve(spec.artifacts or ArtifactStore.default().root, host=spec.host, port=spec.port, debug=spec.debug)


# ---- probe plan ----------------------------------------------------------------------------------
def _plan_settings() -> dict[str, list[Option]]:
    from probe.plan.predict import PlanSpec  # lazily, for start-up time (imports torch)

    return {"spec": options(PlanSpec)}


@stage("plan", _plan_settings)
def plan_cmd(values: Values,
             experiment: Annotated[str, typer.Argument(help="Experiment file (TOML), e.g. experiments/llama7b.toml.")]
             ) -> None:
    """Predicted peak memory, disk and time of every stage of an experiment, before it runs."""
    from probe.experiment.spec import load_experiment  # lazily, for start-up time
    from probe.plan.predict import PlanSpec, plan_experiment, plan_lines, plan_table  # lazily (imports torch)

    result = plan_experiment(load_experiment(experiment), build(PlanSpec, values["spec"]))
    out.print(plan_table(result))
    for line in plan_lines(result):
        out.print(line, markup=False, highlight=False)


# ---- probe run / probe demo ----------------------------------------------------------------------
def _run_file(path: str, serve: bool, port: int | None) -> None:
    from probe.experiment.dashboard import LiveDashboard  # lazily, for start-up time
    from probe.experiment.spec import load_experiment  # lazily, for start-up time

    spec = load_experiment(path)
    port = port or spec.dashboard.port
    live = None
    if serve:  # the dashboard first, filling in beside the stages (probe/experiment/dashboard.py)
        _check_port(spec.dashboard.host, port)
        root = Path(spec.dashboard.artifacts or ArtifactStore.default().root)
        root.mkdir(parents=True, exist_ok=True)
        live = LiveDashboard(root, spec.dashboard.host, port).start()
        out.print(f"dashboard: {live.url} (its Overview shows every stage; pages fill in as they finish; Ctrl-C "
                  f"stops both)", highlight=False)
    try:
        from probe.experiment.run import run_experiment, stage_table  # lazily, after the URL (imports torch)

        result = run_experiment(spec)
        analysis = result.analysis / "verdict.md"
        if analysis.is_file():
            out.print(analysis.read_text())
        out.print(stage_table(result))
        if live is not None:
            out.print(f"dashboard: {live.url} (Ctrl-C to stop)", highlight=False)
            live.wait()
    finally:
        if live is not None:
            live.close()


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


# expected OS errors → what to do about them
_OS_FIXES = {
    errno.EACCES: "no permission: choose a writable folder (e.g. set PROBE_ARTIFACTS) or fix its permissions",
    errno.EPERM: "not permitted: choose a writable folder (e.g. set PROBE_ARTIFACTS) or fix its permissions",
    errno.EROFS: "the file system is read-only: set PROBE_ARTIFACTS to a writable folder",
    errno.ENOSPC: "the disk is full: free space or set PROBE_ARTIFACTS to a larger disk",
    errno.EDQUOT: "the disk quota is exceeded: free space or set PROBE_ARTIFACTS to another disk",
    errno.EADDRINUSE: "the address is in use: stop the other server or pass --port N",
}


def error_line(exc: BaseException) -> str | None:
    """The one line a user error prints, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, ProbeError):
        return str(exc)
    if isinstance(exc, typer.TyperException):  # typer's usage errors (bad value, unknown option)
        return exc.format_message()
    if isinstance(exc, OSError) and exc.errno in _OS_FIXES:
        where = exc.filename or ""
        if getattr(exc, "filename2", None):
            where += f" -> {exc.filename2}"
        return f"{where + ': ' if where else ''}{exc.strerror or exc}; {_OS_FIXES[exc.errno]}"
    return None


def main() -> None:
    """Entry point: one plain line ``error: ...`` on stderr and exit status 2 for any user error.

    Plain text, never rich markup: user text (a model named ``[/bold]``, ``[recover] stepz``) prints as is.
    """
    _quiet_libraries()
    try:
        code = typer.main.get_command(app).main(args=sys.argv[1:], prog_name="probe", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `probe`: its help, as typer prints it
            sys.stdout.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            sys.exit(2)
        line = error_line(exc)
        if line is None:
            raise
        sys.stderr.write(f"error: {' '.join(line.split())}\n")
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
