"""`probe run EXPERIMENT.toml` / `probe demo`: every stage of an experiment, cached, timed, in order.

Stages: model → compress (each method) → recover (each method, on the target compression) →
capture (every variant) → costs → analyze → dashboard. A stage whose artifact is complete and
was made with the same settings is reused (the stage functions' own spec hashes decide); an
interrupted capture resumes. Before each stage a rule shows its number, what is left and an ETA
from the durations this experiment's last run recorded (``artifacts/experiments/<name>.json``),
else from defaults measured on SmolLM2 on two CPU cores. The stage times are printed at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from probe.artifacts import artifacts_root, read_manifest, spec_hash, write_json_atomic
from probe.errors import ProbeError
from probe.experiment.spec import ExperimentSpec, check_inputs
from probe.progress import console

# seconds per stage kind when nothing was recorded yet (SmolLM2, 2 CPU cores)
DEFAULT_SECONDS = {"model": 30.0, "compress": 300.0, "recover": 240.0, "capture": 120.0, "costs": 90.0,
                   "analyze": 240.0}


@dataclass(frozen=True)
class Stage:
    key: str
    kind: str
    label: str
    run: Callable[[], str]  # returns "built" or "reused"


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
    return artifacts_root() / "experiments" / f"{spec.name}.json"


def _export_model_path(spec: ExperimentSpec) -> None:
    """Stages that take only a model name find ``[model] path`` through the registry's variable."""
    from probe.models.registry import REGISTRY

    entry = REGISTRY.get(spec.model)
    if spec.model_spec.model_path and entry is not None and entry.env_var:
        os.environ[entry.env_var] = spec.model_spec.model_path


def _model_stage(spec: ExperimentSpec) -> str:
    from probe.models.load import load_model, preflight

    preflight(spec.model_spec)
    load_model(replace(spec.model_spec, dtype="float32"))  # converts the embedded GGUF once; later loads are fast
    return "ready"


def _built_or_reused(folder: Path, build: Callable[[], object]) -> str:
    """Run a stage function that reuses a finished artifact itself; say which it did."""
    before = read_manifest(folder)
    build()
    return "reused" if before is not None and before == read_manifest(folder) else "built"


def _compress_stage(spec: ExperimentSpec, method: str) -> str:
    from probe.compress import compress
    from probe.runtime.spec import variant_dir

    cspec = spec.compress_spec(method)
    return _built_or_reused(variant_dir(spec.model_spec, cspec.label),
                            lambda: compress(cspec, device=spec.model_spec.device, evaluate=spec.compress_eval,
                                             allow_pickle=spec.model_spec.allow_pickle, rebuild_changed=True))


def _recover_stage(spec: ExperimentSpec, method: str) -> str:
    from probe.recover.run import recover
    from probe.runtime.spec import recovery_dir

    rspec = spec.recover_spec(method)
    return _built_or_reused(recovery_dir(spec.model_spec, spec.target or "", method),
                            lambda: recover(rspec, device=spec.model_spec.device, with_eval=spec.recover_eval,
                                            rebuild_changed=True))


def capture_spec(spec: ExperimentSpec, variant: str):
    """The capture of one variant this experiment makes."""
    return spec.capture_spec(variant)


def _capture_folder(spec: ExperimentSpec, variant: str) -> Path:
    from probe.capture.run import capture_path

    return capture_path(capture_spec(spec, variant))


def _sources(spec: ExperimentSpec, variant: str) -> list[Path]:
    """The folders a variant is made from: its compressed variant and, for a recovery, the recovery."""
    from probe.runtime.spec import recovery_dir, variant_dir

    model, target = spec.model_spec, spec.target or ""
    folders = [] if variant == "original" else [variant_dir(model, target)]
    return folders + ([recovery_dir(model, target, variant)] if variant not in ("original", "compressed") else [])


def _newer(made: Path, sources: list[Path]) -> bool:
    """Whether the file ``made`` exists and is newer than every source folder's manifest (a missing one counts
    as newest): a rebuilt source makes what was made from it stale."""
    def mtime(file: Path, missing: float) -> float:
        return file.stat().st_mtime if file.is_file() else missing

    return all(mtime(made, 0.0) > mtime(folder / "manifest.json", float("inf")) for folder in sources)


def _capture_stage(spec: ExperimentSpec, variant: str) -> str:
    from probe.capture.run import capture, capture_path
    from probe.capture.store import read_status

    cspec = capture_spec(spec, variant)
    folder = capture_path(cspec)
    status = read_status(folder)
    if status is not None and status.get("status") == "complete":
        if status.get("spec_hash") == spec_hash(cspec.content()) and _newer(folder / "manifest.json",
                                                                             _sources(spec, variant)):
            return "reused"
        cspec = replace(cspec, force=True)
    capture(cspec)
    return "built" if status is None or cspec.force else "resumed"


def _costs_stage(spec: ExperimentSpec) -> str:
    """Latency and memory of every built variant; reused while no variant was rebuilt since."""
    import json

    from probe.costs import measure_costs
    from probe.runtime.spec import model_key

    cspec = spec.costs_spec()
    path = artifacts_root() / "costs" / model_key(spec.model_spec) / f"{spec.target}.json"
    sources = sorted({f for v in spec.variants for f in _sources(spec, v)})
    if path.is_file() and json.loads(path.read_text()).get("manifest", {}).get("spec_hash") == spec_hash(cspec) \
            and _newer(path, sources):
        return "reused"
    measure_costs(cspec)
    return "built"


def _analyze_stage(spec: ExperimentSpec) -> str:
    from probe.analysis.run import analysis_root, analyze

    aspec = spec.analyze_spec(tuple(_capture_folder(spec, v).name for v in spec.variants))
    folder = analysis_root() / aspec.folder_name
    existing = read_manifest(folder)
    if existing is not None and existing.get("spec_hash") == spec_hash(aspec) and _newer(
            folder / "manifest.json", [_capture_folder(spec, v) for v in spec.variants]):
        return "reused"
    analyze(aspec)
    return "built"


def plan(spec: ExperimentSpec) -> list[Stage]:
    """The stages of ``spec`` in dependency order."""
    stages = [Stage("model", "model", f"model {spec.model}", lambda: _model_stage(spec))]
    stages += [Stage(f"compress:{m}", "compress", f"compress {m}", lambda m=m: _compress_stage(spec, m))
               for m in spec.compressions]
    stages += [Stage(f"recover:{m}", "recover", f"recover {m} on {spec.target}", lambda m=m: _recover_stage(spec, m))
               for m in spec.recoveries]
    stages += [Stage(f"capture:{v}", "capture", f"capture {v}", lambda v=v: _capture_stage(spec, v))
               for v in spec.variants]
    if spec.costs_spec() is not None:
        stages.append(Stage("costs", "costs", f"costs of {spec.target} variants", lambda: _costs_stage(spec)))
    stages.append(Stage("analyze", "analyze", f"analyze {spec.target}", lambda: _analyze_stage(spec)))
    return stages


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_experiment(spec: ExperimentSpec) -> ExperimentResult:
    """Run (or reuse) every stage, its input files checked first; record and return the stage times."""
    from probe.analysis.run import analysis_root

    check_inputs(spec)
    _export_model_path(spec)
    stages = plan(spec)
    path = timings_path(spec)
    previous: dict[str, float] = {}
    if path.is_file():
        import json

        previous = {k: float(v) for k, v in json.loads(path.read_text()).get("built_seconds", {}).items()}
    done: list[StageTime] = []
    built = dict(previous)
    start = time.perf_counter()
    for i, stage in enumerate(stages):
        eta = sum(previous.get(s.key, DEFAULT_SECONDS[s.kind]) for s in stages[i:])
        known = all(s.key in previous for s in stages[i:])
        console.rule(f"[bold]stage {i + 1}/{len(stages)}: {stage.label}[/]  elapsed {_fmt(time.perf_counter() - start)}"
                     f", left ≤ {_fmt(eta)} ({'recorded' if known else 'estimated'} build times; reused stages "
                     f"take seconds)")
        t0 = time.perf_counter()
        try:
            outcome = stage.run()
        except ProbeError as exc:
            raise ProbeError(f"stage {stage.label} failed: {exc}") from exc
        seconds = time.perf_counter() - t0
        done.append(StageTime(stage.key, stage.label, outcome, seconds))
        if outcome != "reused":
            built[stage.key] = seconds
            write_json_atomic(path, {"experiment": spec.name, "built_seconds": built})
    folder = analysis_root() / spec.analyze_spec().folder_name
    return ExperimentResult(spec, tuple(done), folder)


def stage_table(result: ExperimentResult):
    """A rich table of stage times (the demo prints it at the end)."""
    from rich.table import Table

    table = Table(title=f"Experiment {result.spec.name}: stage times (total {_fmt(result.total_seconds)})")
    for col in ("stage", "outcome", "seconds"):
        table.add_column(col)
    for s in result.stages:
        table.add_row(s.label, s.outcome, f"{s.seconds:.1f}")
    return table
