"""`AnalyzeSpec`: which captures `probe analyze` compares and how, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError

VARIANT_ORDER = ("original", "compressed", "prompt", "prefix", "idp", "lora")


@dataclass(frozen=True)
class AnalyzeSpec:
    """One analysis of a model's variants under one compression.

    ``runs`` names capture folders under ``artifacts/captures/<model>/`` (default: every complete
    capture of the original and of ``compression``, one per variant). Decodability trains on the
    train-split facts of the captures (capture with ``--split all``); captures of the eval split
    alone fall back to ``folds``-fold cross-validation over eval facts, noted in the output.
    """

    model: str
    compression: str
    runs: tuple[str, ...] = ()
    name: str | None = None
    model_path: str | None = None
    n_boot: int = 1000
    n_boot_cka: int = 200
    seed: int = 0
    min_facts: int = 10
    folds: int = 5
    force: bool = False

    def __post_init__(self) -> None:
        if not self.compression.strip():
            raise ProbeError("--compression is required (e.g. gptq3): the analysis compares that compressed model "
                             "and its recoveries with the original")
        if self.n_boot < 100 or self.n_boot_cka < 20:
            raise ProbeError(f"--n-boot must be at least 100 (got {self.n_boot}) and --n-boot-cka at least 20 "
                             f"(got {self.n_boot_cka}) for a 95% interval")
        if self.min_facts < 2:
            raise ProbeError(f"--min-facts must be at least 2, got {self.min_facts}")
        if self.folds < 2:
            raise ProbeError(f"--folds must be at least 2, got {self.folds}")
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name.startswith(".")):
            raise ProbeError(f"bad --name {self.name!r}: give a plain folder name")

    @property
    def folder_name(self) -> str:
        from probe.config import ModelSpec
        from probe.runtime.spec import model_key

        return self.name or f"{model_key(ModelSpec(self.model))}-{self.compression}"
