"""`ExperimentSpec`: one experiment file (TOML) → every stage's settings, validated on load.

An experiment file names a model, the compressions to build, which compressed variant gets the
recoveries, and how captures, costs, analysis and the dashboard run. Every table and key is
optional except ``[model] name``; unknown keys are refused (a typo must not silently fall back to
a default). ``experiments/smollm2.toml`` documents every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from probe.errors import ProbeError

# TOML table → {key: ExperimentSpec field}
_KEYS: dict[str, dict[str, str]] = {
    "": {"name": "name"},
    "model": {"name": "model", "path": "model_path", "device": "device"},
    "compress": {"methods": "compressions", "n_calibration": "n_calibration", "evaluate": "compress_eval"},
    "recover": {"compression": "target", "methods": "recoveries", "steps": "steps", "evaluate": "recover_eval"},
    "capture": {"probes": "probes", "split": "split", "dtype": "capture_dtype", "full_attention": "full_attention",
                "batch_size": "capture_batch_size"},
    "costs": {"repeats": "costs_repeats"},
    "analyze": {"n_boot": "n_boot", "n_boot_cka": "n_boot_cka", "min_facts": "min_facts"},
    "dashboard": {"host": "host", "port": "port"},
}


@dataclass(frozen=True)
class ExperimentSpec:
    """The whole pipeline for one model: compress → recover → capture → costs → analyze → dashboard."""

    name: str
    model: str
    model_path: str | None = None
    device: str = "cpu"
    compressions: tuple[str, ...] = ("gptq3",)
    n_calibration: int | None = None
    compress_eval: bool = True
    target: str | None = None
    recoveries: tuple[str, ...] = ("prompt", "prefix", "idp", "lora")
    steps: int | None = None
    recover_eval: bool = True
    probes: str = "builtin"
    split: str = "all"
    capture_dtype: str = "float16"
    full_attention: int = 64
    capture_batch_size: int = 16
    costs_repeats: int = 3
    n_boot: int = 1000
    n_boot_cka: int = 200
    min_facts: int = 10
    host: str = "127.0.0.1"
    port: int = 8050

    def __post_init__(self) -> None:
        from probe.recover.spec import METHODS

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
        if self.split not in ("all", "eval"):
            raise ProbeError(f"[capture] split = {self.split!r}: use 'all' (decodability trains on train-split "
                             f"facts) or 'eval'")
        if self.costs_repeats < 0:
            raise ProbeError(f"[costs] repeats = {self.costs_repeats}: use 0 to skip costs, or a positive count")

    @property
    def variants(self) -> tuple[str, ...]:
        """Everything captured and analysed: the original, the target compression, its recoveries."""
        return ("original", "compressed", *self.recoveries)


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Parse and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"experiment file {path} does not exist: give a TOML file like experiments/smollm2.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"experiment file {path} is not valid TOML ({exc}): fix the line it names") from exc
    values: dict[str, object] = {}
    where_of: dict[str, str] = {}
    for table, keys in _KEYS.items():
        section = data if table == "" else data.get(table, {})
        if not isinstance(section, dict):
            raise ProbeError(f"{path}: [{table}] must be a table")
        for key, value in section.items():
            if table == "" and key in _KEYS:
                continue
            if key not in keys:
                where = f"[{table}] {key}" if table else key
                raise ProbeError(f"{path}: unknown key {where}; known keys here: {sorted(keys)}")
            values[keys[key]] = tuple(value) if isinstance(value, list) else value
            where_of[keys[key]] = f"[{table}] {key}" if table else key
    if "model" not in values:
        raise ProbeError(f"{path}: [model] name is required (e.g. smollm2-135m)")
    values.setdefault("name", path.stem)
    types = {f.name: f.type for f in fields(ExperimentSpec)}
    for key, value in values.items():
        expected = types[key]
        wrong = {"bool": not isinstance(value, bool), "str": not isinstance(value, str)}.get(expected, False)
        if "int" in expected and "str" not in expected:
            wrong = not isinstance(value, int) or isinstance(value, bool)
        if wrong:
            raise ProbeError(f"{path}: {where_of.get(key, key)} = {value!r} has the wrong type (expected {expected})")
    return ExperimentSpec(**values)  # type: ignore[arg-type]
