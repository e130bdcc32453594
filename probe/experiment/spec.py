"""`ExperimentSpec`: one experiment file (TOML) → every stage's settings, validated on load.

An experiment file names a model, the compressions to build, which compressed variant gets the
recoveries, and how captures, costs, analysis and the dashboard run. Each table sets its stage's
settings by the command's flag names with underscores (``[recover] n_tokens`` is ``probe recover
--n-tokens``; :func:`table_keys` lists them all), except the settings the experiment gives each
stage itself (:data:`SET_BY_EXPERIMENT`). Every key is optional except ``[model] name``; unknown
keys are refused naming the closest valid one, and values are checked against the field types.
A setting the file leaves out takes the stage's default, or the experiment's own
(:data:`EXPERIMENT_DEFAULTS`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from probe.analysis.spec import AnalyzeSpec
from probe.capture.spec import CaptureSpec
from probe.compress.spec import CompressSpec, build_spec
from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.costs import CostSpec
from probe.errors import ProbeError
from probe.experiment.dashboard import DashboardSpec
from probe.knowledge.loaders import load_probes
from probe.recover.spec import METHODS, RecoverSpec
from probe.runtime.spec import VariantSpec
from probe.settings import Option, build, closest, options, setting
from probe.store import check_name

# table → the stage spec whose settings it holds
STAGES: dict[str, type] = {"model": ModelSpec, "compress": CompressSpec, "recover": RecoverSpec,
                           "capture": CaptureSpec, "costs": CostSpec, "analyze": AnalyzeSpec,
                           "dashboard": DashboardSpec}

# table → {setting: where its value comes from}: the experiment gives these to every stage itself
SET_BY_EXPERIMENT: dict[str, dict[str, str]] = {
    "compress": {"model": "[model]", "method": "[compress] methods"},
    "recover": {"model": "[model]", "compression": "[recover] compression", "method": "[recover] methods"},
    "capture": {**{o.name: "[model]" for o in options(CaptureSpec) if o.path[0] == "variant"
                   and o.path[1] == "model"},
                "variant": "each variant in turn", "compression": "[recover] compression",
                "run": "one capture folder per variant", "force": "redone when its settings change",
                "build": "the experiment builds every variant first"},
    "costs": {"model": "[model]", "compression": "[recover] compression", "device": "[model]"},
    "analyze": {"model": "[model]", "compression": "[recover] compression", "runs": "the experiment's captures",
                "model_path": "[model]", "force": "redone when its settings change"},
}

# the experiment's own defaults where they differ from a command's (what a whole study wants)
EXPERIMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "capture": {"split": "all",  # decodability trains on train-split facts
                "dtype": "float16"},  # half the disk; the analysis computes in float32
    "costs": {"repeats": 3},  # 0 skips the costs stage
}

# older key names still read: (table, key) → the setting's name
ALIASES: dict[tuple[str, str], str] = {("model", "name"): "model", ("model", "path"): "model_path"}


@dataclass(frozen=True)
class ExperimentSpec:
    """The whole pipeline for one model: compress → recover → capture → costs → analyze → dashboard.

    The ``compress``/``recover``/``capture``/``costs``/``analyze`` mappings hold the settings the file
    gives (by public name); each stage's spec is built from them with the stage's own defaults.
    """

    name: str = setting("experiment", "Experiment name (its stage times: artifacts/experiments/<name>.json)",
                        default_text="the file's name")
    model_spec: ModelSpec = field(default_factory=ModelSpec)
    compressions: tuple[str, ...] = setting((DEFAULT_COMPRESSION,), "Compressions (presets or methods) to "
                                            "build; the first is recovered and analysed unless [recover] "
                                            "compression says otherwise")
    compress_eval: bool = setting(True, "Perplexity and eval-split accuracy in each variant's report")
    target: str | None = setting(None, "Which compressed variant gets the recoveries, captures and analysis",
                                 default_text="the first of [compress] methods")
    recoveries: tuple[str, ...] = setting(METHODS, "Recovery methods to train on the target compression")
    recover_eval: bool = setting(True, "Eval-split accuracy of each recovery: facts regained / newly broken")
    compress: Mapping[str, Any] = field(default_factory=dict)
    recover: Mapping[str, Any] = field(default_factory=dict)
    capture: Mapping[str, Any] = field(default_factory=dict)
    costs: Mapping[str, Any] = field(default_factory=dict)
    analyze: Mapping[str, Any] = field(default_factory=dict)
    dashboard: DashboardSpec = field(default_factory=DashboardSpec)

    def __post_init__(self) -> None:
        check_name(self.name, "experiment name (the top-level `name`, else the file's name)")
        for table in ("compress", "recover", "capture", "costs", "analyze"):
            given = {**EXPERIMENT_DEFAULTS.get(table, {}), **getattr(self, table)}
            object.__setattr__(self, table, MappingProxyType(given))
        if not self.compressions:
            raise ProbeError("[compress] methods is empty: name at least one compression, e.g. [\"gptq3\"]")
        if self.target is None:
            object.__setattr__(self, "target", self.compressions[0])
        if self.target not in self.compressions:
            raise ProbeError(f"[recover] compression = {self.target!r} is not among [compress] methods "
                             f"{list(self.compressions)}: add it there")
        bad = [m for m in self.recoveries if m not in METHODS]
        if bad:
            raise ProbeError(f"[recover] methods has unknown {bad}: choose from {list(METHODS)}")
        if self.capture["split"] not in ("all", "eval"):
            raise ProbeError(f"[capture] split = {self.capture['split']!r}: use 'all' (decodability trains on "
                             f"train-split facts) or 'eval'")
        if self.costs["repeats"] < 0:
            raise ProbeError(f"[costs] repeats = {self.costs['repeats']}: use 0 to skip costs, or a positive count")

    @property
    def model(self) -> str:
        return self.model_spec.name

    @property
    def variants(self) -> tuple[str, ...]:
        """Everything captured and analysed: the original, the target compression, its recoveries."""
        return ("original", "compressed", *self.recoveries)

    # ---- each stage's spec, built from the file's settings over the stage's defaults ----
    def compress_spec(self, method: str) -> CompressSpec:
        return build_spec(self.model, method, **self.compress)

    def recover_spec(self, method: str) -> RecoverSpec:
        return build(RecoverSpec, {**self.recover, "model": self.model, "compression": self.target,
                                   "method": method})

    def capture_spec(self, variant: str) -> CaptureSpec:
        compression = None if variant == "original" else self.target
        return build(CaptureSpec, self.capture, variant=VariantSpec(self.model_spec, variant, compression))

    def costs_spec(self) -> CostSpec | None:
        """None when ``[costs] repeats = 0`` (no costs stage)."""
        if not self.costs["repeats"]:
            return None
        return build(CostSpec, {**self.costs, "model": self.model, "compression": self.target,
                                "device": self.model_spec.device})

    def analyze_spec(self, runs: tuple[str, ...] = ()) -> AnalyzeSpec:
        return build(AnalyzeSpec, {**self.analyze, "model": self.model, "compression": self.target, "runs": runs,
                                   "model_path": self.model_spec.model_path, "force": True})


# experiment-level keys: (table, key) → ExperimentSpec field
_OWN: dict[tuple[str, str], str] = {("", "name"): "name", ("compress", "methods"): "compressions",
                                    ("compress", "evaluate"): "compress_eval", ("recover", "methods"): "recoveries",
                                    ("recover", "compression"): "target", ("recover", "evaluate"): "recover_eval"}


def _own_options() -> dict[tuple[str, str], Option]:
    own = {o.name: o for o in options(ExperimentSpec, only=tuple(_OWN.values()))}
    return {where: own[name] for where, name in _OWN.items()}


def table_keys() -> dict[str, dict[str, Option]]:
    """Every key an experiment file accepts, by table (``""`` is the top level), aliases excluded."""
    keys: dict[str, dict[str, Option]] = {"": {}}
    for table, cls in STAGES.items():
        skip = tuple(SET_BY_EXPERIMENT.get(table, {}))
        keys[table] = {o.name: o for o in options(cls, skip=skip)}
    for (table, key), option in _own_options().items():
        keys[table][key] = option
    return keys


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Parse and validate an experiment file (every stage's spec is built once here, so a bad value fails now)."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"experiment file {path} does not exist: give a TOML file like experiments/smollm2.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"experiment file {path} is not valid TOML ({exc}): fix the line it names") from exc
    keys = table_keys()
    given: dict[str, dict[str, Any]] = {table: {} for table in keys}
    for table in keys:
        section = {k: v for k, v in data.items() if k not in keys} if table == "" else data.get(table, {})
        if not isinstance(section, dict):
            raise ProbeError(f"{path}: [{table}] must be a table")
        for key, value in section.items():
            name = ALIASES.get((table, key), key)
            where = f"[{table}] {key}" if table else f"[{key}]" if isinstance(value, dict) else key
            if name not in keys[table]:
                known = sorted(keys[table]) + [k for t, k in ALIASES if t == table] + (
                    [f"[{t}]" for t in keys if t] if not table else [])
                raise ProbeError(f"{path}: unknown key {where}; known keys here: {', '.join(sorted(known))}"
                                 f"{closest(where if not table else key, known)}")
            given[table][name] = keys[table][name].check(value, where)
    if "model" not in given["model"]:
        raise ProbeError(f"{path}: [model] name is required (e.g. smollm2-135m)")
    own = {name: given[table].pop(key) for (table, key), name in _OWN.items() if key in given[table]}
    own.setdefault("name", path.stem)
    try:
        spec = ExperimentSpec(model_spec=build(ModelSpec, given["model"]),
                              dashboard=build(DashboardSpec, given["dashboard"]),
                              **{t: given[t] for t in ("compress", "recover", "capture", "costs", "analyze")},
                              **own)
        _check_stages(spec)
    except ProbeError as exc:
        raise ProbeError(f"{path}: {exc}") from None
    return spec


def _check_stages(spec: ExperimentSpec) -> None:
    """Build every stage's spec once so that a bad setting fails on load, naming its table."""
    checks = [("compress", lambda: [spec.compress_spec(m) for m in spec.compressions]),
              ("recover", lambda: [spec.recover_spec(m) for m in spec.recoveries]),
              ("capture", lambda: [spec.capture_spec(v) for v in spec.variants]),
              ("costs", spec.costs_spec), ("analyze", spec.analyze_spec)]
    for table, check in checks:
        try:
            check()
        except ProbeError as exc:
            raise ProbeError(f"[{table}] {exc}") from None


def check_inputs(spec: ExperimentSpec) -> None:
    """Every file the stages will read exists (and the probe file parses): run before the first stage, so a typo
    fails now, not after hours of compression and recovery. Apart from :func:`load_experiment` so that an
    experiment file for another machine (``experiments/llama7b.toml``) still loads and plans anywhere.

    Relative paths are relative to the folder `probe run` runs in, as the stages read them.
    """
    here = f"relative paths start in {Path.cwd()}"
    folders = {"[model] path": spec.model_spec.model_path, "[compress] from_path": spec.compress.get("from_path")}
    for where, folder in folders.items():
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise ProbeError(f"{where} = {folder!r} is not a folder ({here}): give the folder that holds the model")
    files = {"[compress] calibration": (spec.compress.get("calibration"), "a .txt or .jsonl calibration text"),
             "[recover] train_text": (spec.recover.get("train_text"), "a .txt or .jsonl corpus file")}
    for where, (file, kind) in files.items():
        if file is not None and not Path(file).expanduser().is_file():
            raise ProbeError(f"{where} = {file!r} does not exist ({here}): give {kind}, or drop the key")
    probes = spec.capture.get("probes", "builtin")
    if probes != "builtin":
        try:
            load_probes(probes)  # a missing or malformed probe file fails now, not at the capture stage
        except ProbeError as exc:
            raise ProbeError(f"[capture] probes = {probes!r}: {exc} ({here})") from None


def documented_keys(text: str) -> set[tuple[str, str]]:
    """The (table, key) pairs an experiment file shows, commented out or not (for the drift test)."""
    found, table = set(), ""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if match := re.fullmatch(r"\[(\w+)\]", line):
            table = match[1]
        elif match := re.match(r"(\w+)\s*=", line):
            found.add((table, match[1]))
    return found
