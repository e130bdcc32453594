"""`probe run EXPERIMENT.toml` / `probe demo`: every stage of an experiment, cached, timed, in order.

Stages, ordered so that something worth looking at comes early: model → eval of the original
(knowledge per relation; with ``[compress] evaluate``, whose reports reuse it) → compress (each
method; its report is the first comparison) → capture original and compressed → per recovery
method: recover, capture → costs → analyze. A stage whose artifact is complete and was made with
the same settings is reused (the stage functions' own spec hashes decide); an interrupted capture
resumes. Before each stage a rule shows its number, what is left and an ETA from the durations
this experiment's last run recorded (the store's ``experiment_log``), else from defaults measured
on SmolLM2 on two CPU cores. The stage times are printed at the end.

Every stage's state is also written, atomically, to the store's ``experiment_status`` file
(``experiments/<name>.status.json``) whenever one starts or ends; the dashboard's Overview reads
it (:func:`status_document` gives its format).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rich.table import Table

from probe.analysis.run import analyze
from probe.artifacts import spec_hash, write_json_atomic
from probe.capture.run import capture, capture_artifact
from probe.compress import compress
from probe.compress.report import original_knowledge
from probe.costs import measure_costs
from probe.errors import ProbeError
from probe.experiment.spec import ExperimentSpec, check_inputs
from probe.models.load import load_model, preflight
from probe.models.registry import REGISTRY
from probe.progress import console
from probe.recover.run import recover
from probe.runtime.spec import model_key, recovery_artifact, variant_artifact
from probe.store import Artifact, ArtifactStore, CaptureArtifact

# seconds per stage kind when nothing was recorded yet (SmolLM2, 2 CPU cores)
DEFAULT_SECONDS = {"model": 30.0, "eval": 60.0, "compress": 300.0, "recover": 240.0, "capture": 120.0, "costs": 90.0,
                   "analyze": 240.0}


@dataclass(frozen=True)
class Stage:
    key: str
    kind: str
    label: str
    run: Callable[[], str]  # returns "built" or "reused"
    command: str = ""  # the `probe` command that builds the same artifact by hand


@dataclass(frozen=True)
class StageTime:
    key: str
    label: str
    outcome: str
    seconds: float


@dataclass(frozen=True)
class ExperimentResult:
    spec: ExperimentSpec
    stages: tuple[StageTime, ...]
    analysis: Path

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def timings_path(spec: ExperimentSpec) -> Path:
    return ArtifactStore.default().experiment_log(spec.name)


def _export_model_path(spec: ExperimentSpec) -> None:
    """Stages that take only a model name find ``[model] path`` through the registry's variable."""
    entry = REGISTRY.get(spec.model)
    if spec.model_spec.model_path and entry is not None and entry.env_var:
        os.environ[entry.env_var] = spec.model_spec.model_path


def _model_stage(spec: ExperimentSpec) -> str:
    preflight(spec.model_spec)
    load_model(replace(spec.model_spec, dtype="float32"))  # converts the embedded GGUF once; later loads are fast
    return "ready"


def _eval_stage(spec: ExperimentSpec) -> str:
    """The original's knowledge per relation on the eval split (the compress reports reuse it)."""
    loaded = load_model(replace(spec.model_spec, dtype="float32"))
    handle = ArtifactStore.default().eval(model_key(spec.model_spec), "original", None, "builtin:eval")
    before = handle.manifest()
    original_knowledge(loaded)
    return "reused" if before is not None and before == handle.manifest() else "built"


def _built_or_reused(artifact: Artifact, build: Callable[[], object]) -> str:
    """Run a stage function that reuses a finished artifact itself; say which it did."""
    before = artifact.manifest()
    build()
    return "reused" if before is not None and before == artifact.manifest() else "built"


def _compress_stage(spec: ExperimentSpec, method: str) -> str:
    cspec = spec.compress_spec(method)
    return _built_or_reused(variant_artifact(spec.model_spec, cspec.label),
                            lambda: compress(cspec, device=spec.model_spec.device, evaluate=spec.compress_eval,
                                             allow_pickle=spec.model_spec.allow_pickle, rebuild_changed=True))


def _recover_stage(spec: ExperimentSpec, method: str) -> str:
    rspec = spec.recover_spec(method)
    return _built_or_reused(recovery_artifact(spec.model_spec, spec.target or "", method),
                            lambda: recover(rspec, device=spec.model_spec.device, with_eval=spec.recover_eval,
                                            allow_pickle=spec.model_spec.allow_pickle, dtype=spec.model_spec.dtype,
                                            rebuild_changed=True))


def capture_spec(spec: ExperimentSpec, variant: str):
    """The capture of one variant this experiment makes."""
    return spec.capture_spec(variant)


def _capture_artifact(spec: ExperimentSpec, variant: str) -> CaptureArtifact:
    return capture_artifact(capture_spec(spec, variant))


def _sources(spec: ExperimentSpec, variant: str) -> list[Artifact]:
    """What a variant is made from: its compressed variant and, for a recovery, the recovery."""
    model, target = spec.model_spec, spec.target or ""
    made_from: list[Artifact] = [] if variant == "original" else [variant_artifact(model, target)]
    if variant not in ("original", "compressed"):
        made_from.append(recovery_artifact(model, target, variant))
    return made_from


def _capture_stage(spec: ExperimentSpec, variant: str) -> str:
    cspec = capture_spec(spec, variant)
    handle = _capture_artifact(spec, variant)
    status = handle.status()
    if status is not None and status.get("status") == "complete":
        if handle.is_fresh(spec_hash(cspec.content()), _sources(spec, variant)):
            return "reused"
        cspec = replace(cspec, force=True)
    capture(cspec)
    return "built" if status is None or cspec.force else "resumed"


def _costs_stage(spec: ExperimentSpec) -> str:
    """Latency and memory of every built variant; reused while no variant was rebuilt since."""
    cspec = spec.costs_spec()
    table = ArtifactStore.default().cost(model_key(spec.model_spec), spec.target or "")
    sources = list({a.path: a for v in spec.variants for a in _sources(spec, v)}.values())
    if table.is_fresh(spec_hash(cspec), sources):
        return "reused"
    measure_costs(cspec, allow_pickle=spec.model_spec.allow_pickle, dtype=spec.model_spec.dtype)
    return "built"


def _analyze_stage(spec: ExperimentSpec) -> str:
    captures = [_capture_artifact(spec, v) for v in spec.variants]
    aspec = spec.analyze_spec(tuple(c.name for c in captures))
    if ArtifactStore.default().analysis(aspec.folder_name).is_fresh(spec_hash(aspec), captures):
        return "reused"
    analyze(aspec, allow_pickle=spec.model_spec.allow_pickle, dtype=spec.model_spec.dtype)
    return "built"


def plan(spec: ExperimentSpec) -> list[Stage]:
    """The stages of ``spec`` in dependency order, the quickest useful views first."""
    model, target = spec.model, spec.target or ""
    stages = [Stage("model", "model", f"model {model}", lambda: _model_stage(spec), "probe models")]
    if spec.compress_eval:  # the compress reports' reference, shown minutes before the first compression ends
        stages.append(Stage("eval:original", "eval", "eval original", lambda: _eval_stage(spec),
                            f"probe eval --model {model}"))
    stages += [Stage(f"compress:{m}", "compress", f"compress {m}", lambda m=m: _compress_stage(spec, m),
                     f"probe compress --model {model} --method {m}") for m in spec.compressions]

    def capture_stage(v: str) -> Stage:
        comp = "" if v == "original" else f" --compression {target}"
        return Stage(f"capture:{v}", "capture", f"capture {v}", lambda: _capture_stage(spec, v),
                     f"probe capture --model {model} --variant {v}{comp} --split all")

    stages += [capture_stage(v) for v in ("original", "compressed") if v in spec.variants]
    for m in spec.recoveries:
        stages.append(Stage(f"recover:{m}", "recover", f"recover {m} on {target}", lambda m=m: _recover_stage(spec, m),
                            f"probe recover --model {model} --compression {target} --method {m}"))
        if m in spec.variants:
            stages.append(capture_stage(m))
    if spec.costs_spec() is not None:
        stages.append(Stage("costs", "costs", f"costs of {target} variants", lambda: _costs_stage(spec),
                            f"probe costs --model {model} --compression {target}"))
    stages.append(Stage("analyze", "analyze", f"analyze {target}", lambda: _analyze_stage(spec),
                        f"probe analyze --model {model} --compression {target}"))
    return stages


class StatusFile:
    """The experiment's stage states, rewritten atomically at every change (see :func:`status_document`)."""

    def __init__(self, spec: ExperimentSpec, stages: list[Stage], estimates: dict[str, float]) -> None:
        self.path = ArtifactStore.default().experiment_status(spec.name)
        self.doc = {"experiment": spec.name, "model": spec.model, "compression": spec.target, "pid": os.getpid(),
                    "state": "running", "started": time.time(), "updated": time.time(),
                    "stages": [{"key": s.key, "kind": s.kind, "label": s.label, "command": s.command,
                                "state": "pending", "outcome": None, "started": None, "elapsed": None,
                                "estimate": round(estimates[s.key], 1), "error": None} for s in stages]}
        self.write()

    def write(self) -> None:
        self.doc["updated"] = time.time()
        write_json_atomic(self.path, self.doc)

    def stage(self, i: int, **fields: object) -> None:
        self.doc["stages"][i].update(fields)
        self.write()

    def finish(self, state: str) -> None:
        self.doc["state"] = state
        self.write()


def status_document() -> str:
    """The status file's format (also the Overview's contract)."""
    return ("experiment, model, compression, pid, state (running | done | failed | interrupted), started and "
            "updated (Unix seconds), stages: [{key, kind, label, command, state (pending | running | done | failed), "
            "outcome (built | reused | resumed | ready), started (Unix seconds), elapsed (s, once ended), estimate "
            "(s: this experiment's last recorded build time, else a default), error}]")


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    """Run (or reuse) every stage, its input files checked first; record and return the stage times."""
    check_inputs(spec)
    _export_model_path(spec)
    stages = plan(spec)
    path = timings_path(spec)
    previous: dict[str, float] = {}
    if path.is_file():
        previous = {k: float(v) for k, v in json.loads(path.read_text()).get("built_seconds", {}).items()}
    done: list[StageTime] = []
    built = dict(previous)
    estimates = {s.key: previous.get(s.key, DEFAULT_SECONDS[s.kind]) for s in stages}
    status_file = StatusFile(spec, stages, estimates)
    start = time.perf_counter()
    for i, stage in enumerate(stages):
        eta = sum(estimates[s.key] for s in stages[i:])
        known = all(s.key in previous for s in stages[i:])
        console.rule(f"[bold]stage {i + 1}/{len(stages)}: {stage.label}[/]  elapsed {_fmt(time.perf_counter() - start)}"
                     f", left ≤ {_fmt(eta)} ({'recorded' if known else 'estimated'} build times; reused stages "
                     f"take seconds)")
        t0 = time.perf_counter()
        status_file.stage(i, state="running", started=time.time())
        try:
            outcome = stage.run()
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt)
            why = "interrupted (Ctrl-C)" if stopped else \
                "".join(traceback.format_exception_only(type(exc), exc)).strip()[-500:]
            status_file.stage(i, state="failed", elapsed=round(time.perf_counter() - t0, 1), error=why)
            status_file.finish("interrupted" if stopped else "failed")
            if isinstance(exc, ProbeError):
                raise ProbeError(f"stage {stage.label} failed: {exc}") from exc
            raise
        seconds = time.perf_counter() - t0
        status_file.stage(i, state="done", outcome=outcome, elapsed=round(seconds, 1))
        done.append(StageTime(stage.key, stage.label, outcome, seconds))
        if outcome != "reused":
            built[stage.key] = seconds
            write_json_atomic(path, {"experiment": spec.name, "built_seconds": built})
    status_file.finish("done")
    folder = ArtifactStore.default().analysis(spec.analyze_spec().folder_name).path
    return ExperimentResult(spec, tuple(done), folder)


def stage_table(result: ExperimentResult):
    """A rich table of stage times (the demo prints it at the end)."""
    table = Table(title=f"Experiment {result.spec.name}: stage times (total {_fmt(result.total_seconds)})")
    for col in ("stage", "outcome", "seconds"):
        table.add_column(col)
    for s in result.stages:
        table.add_row(s.label, s.outcome, f"{s.seconds:.1f}")
    return table
