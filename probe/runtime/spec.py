"""Which variant of which model, and where a built variant or recovery is stored (no torch imports).

A variant is named by ``--variant`` and, except for the original, ``--compression PRESET``.
Compressed variants live under ``artifacts/variants/<model>/<preset>/`` as plain HF folders, their
recoveries under ``…/<preset>/recover/<method>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probe.artifacts import artifacts_root, read_manifest
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.settings import setting
from probe.store import check_name

RECOVERY_VARIANTS = ("prompt", "prefix", "lora", "idp")  # trained by `probe recover --method`
VARIANTS = ("original", "compressed", *RECOVERY_VARIANTS)


@dataclass(frozen=True)
class VariantSpec:
    """Which variant of which model."""

    model: ModelSpec
    variant: str = setting("original", "Which variant of the model", choices=VARIANTS)
    compression: str | None = setting(None, "Compressed variant (preset), e.g. gptq3; needed by every variant "
                                            "but the original", default_text="none (the original)")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ProbeError(f"unknown variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        if self.variant == "original":
            if self.compression is not None:
                raise ProbeError(f"--compression {self.compression} does not apply to --variant original (the "
                                 f"uncompressed model): drop it, or pass --variant compressed")
        elif not self.compression:
            raise ProbeError(f"variant {self.variant!r} needs --compression PRESET (e.g. gptq3)")
        else:
            check_name(self.compression, "--compression")

    @property
    def label(self) -> str:
        return self.variant if self.variant == "original" else f"{self.compression}/{self.variant}"


def model_key(spec: ModelSpec) -> str:
    """Folder-safe name of the base model (registry name or the folder's name)."""
    return spec.name if "/" not in spec.name else Path(spec.name).name


def variant_dir(model: ModelSpec, compression: str) -> Path:
    return artifacts_root() / "variants" / model_key(model) / compression


def recovery_dir(model: ModelSpec, compression: str, method: str) -> Path:
    """Where `probe recover` saves ``method`` trained on the compressed variant ``compression``."""
    return variant_dir(model, compression) / "recover" / method


def compress_command(model: ModelSpec, compression: str) -> str:
    return f"`probe compress --model {model.name} --method {compression}`"


def recover_command(model: ModelSpec, compression: str, method: str) -> str:
    return f"`probe recover --model {model.name} --compression {compression} --method {method}`"


def read_recovery(spec: VariantSpec) -> dict:
    """The finished recovery's manifest, or an error naming the `probe recover` command to run."""
    manifest = read_manifest(recovery_dir(spec.model, spec.compression or "", spec.variant))
    if manifest is None:
        raise ProbeError(f"recovery {spec.variant!r} of {spec.model.name}/{spec.compression} is not built: run "
                         f"{recover_command(spec.model, spec.compression or '', spec.variant)}")
    return manifest
