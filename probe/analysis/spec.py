"""`AnalyzeSpec`: which captures `probe analyze` compares and how, validated on construction."""

from __future__ import annotations

from dataclasses import MISSING, dataclass

from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.errors import ProbeError
from probe.settings import like, setting
from probe.store import check_name, model_key

VARIANT_ORDER = ("original", "compressed", "prompt", "prefix", "idp", "lora")


@dataclass(frozen=True)
class AnalyzeSpec:
    """One analysis of a model's variants under one compression.

    ``runs`` names capture folders under ``artifacts/captures/<model>/`` (default: every complete
    capture of the original and of ``compression``, one per variant). Decodability trains on the
    train-split facts of the captures (capture with ``--split all``); captures of the eval split
    alone fall back to ``folds``-fold cross-validation over eval facts, noted in the output.
    """

    model: str = like(ModelSpec, "name", MISSING)
    compression: str = setting(MISSING, "Compressed variant whose captures to analyse, e.g. gptq3",
                               cli_default=DEFAULT_COMPRESSION)
    runs: tuple[str, ...] = setting((), "Comma-separated capture runs",
                                    default_text="one complete capture per variant of the original and "
                                                 "--compression")
    name: str | None = setting(None, "Output folder name", default_text="<model>-<compression>")
    model_path: str | None = like(ModelSpec, "model_path")
    n_boot: int = setting(1000, "Bootstrap resamples over facts", unit="resamples")
    n_boot_cka: int = setting(200, "Half-samples of the subjects (without replacement) for CKA intervals",
                              unit="resamples")
    seed: int = setting(0, "Bootstrap and probe seed")
    min_facts: int = setting(10, "Fewest facts a bootstrap interval needs", unit="facts")
    folds: int = setting(5, "Cross-validation folds when no train-split facts were captured")
    shuffles: int = setting(3, "Probes per layer trained on label-shuffled answers (the decodability probe's "
                               "measured chance)", unit="probes")
    patching: bool = setting(False, "Activation patching of the lost facts between the original and the compressed "
                                    "model, every captured layer (loads both models, one at a time; about 1.7 s per "
                                    "fact and layer on 2 busy CPU cores for SmolLM2)",
                             flag="--patching/--no-patching")
    patch_facts: int = setting(200, "Most lost facts to patch (a seeded random subset beyond)", unit="facts")
    patch_batch: int = setting(16, "Facts per patched forward pass", unit="facts", min=1)
    force: bool = setting(False, "Overwrite an existing analysis of that name")

    def __post_init__(self) -> None:
        if not self.compression.strip():
            raise ProbeError("--compression is required (e.g. gptq3): the analysis compares that compressed model "
                             "and its recoveries with the original")
        if self.n_boot < 100 or self.n_boot_cka < 20:
            raise ProbeError(f"--n-boot must be at least 100 (got {self.n_boot}) and --n-boot-cka at least 20 "
                             f"(got {self.n_boot_cka}) for a 95% interval")
        if self.min_facts < 2:
            raise ProbeError(f"--min-facts must be at least 2, got {self.min_facts}")
        if self.patch_facts < 1:
            raise ProbeError(f"--patch-facts must be at least 1, got {self.patch_facts} (turn patching off with "
                             f"--no-patching)")
        if self.shuffles < 1:
            raise ProbeError(f"--shuffles must be at least 1 (the verdict's chance is measured), got {self.shuffles}")
        if self.folds < 2:
            raise ProbeError(f"--folds must be at least 2, got {self.folds}")
        if self.name is not None:
            check_name(self.name, "--name")
        check_name(self.compression, "--compression")
        for run in self.runs:
            check_name(run, "--runs entry")

    @property
    def folder_name(self) -> str:
        return self.name or f"{model_key(self.model)}-{self.compression}"
