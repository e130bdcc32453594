"""Which variant of which model, and the store handles of its built artifacts (no torch imports).

A variant is named by ``--variant`` and, except for the original, ``--compression PRESET``.
Compressed variants are plain HF folders, their recoveries adapters; where they live is
:mod:`probe.store`'s business (:func:`variant_artifact`, :func:`recovery_artifact`).
"""

from __future__ import annotations

from dataclasses import dataclass

from probe import store
from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.errors import ProbeError
from probe.progress import console
from probe.settings import setting
from probe.store import check_name

RECOVERY_VARIANTS = ("prompt", "prefix", "lora", "idp")  # trained by `probe recover --method`
VARIANTS = ("original", "compressed", *RECOVERY_VARIANTS)


@dataclass(frozen=True)
class VariantSpec:
    """Which variant of which model."""

    model: ModelSpec
    variant: str = setting("original", "Which variant of the model", choices=VARIANTS)
    compression: str | None = setting(None, "Compressed variant (preset) of every variant but the original",
                                      default_text=f"{DEFAULT_COMPRESSION} (the study's), none for the original")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ProbeError(f"unknown variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        if self.variant == "original":
            if self.compression is not None:
                raise ProbeError(f"--compression {self.compression} does not apply to --variant original (the "
                                 f"uncompressed model): drop it, or pass --variant compressed")
        else:
            if not self.compression:  # the study's compression, said out loud
                object.__setattr__(self, "compression", DEFAULT_COMPRESSION)
                console.print(f"compression: {DEFAULT_COMPRESSION} (default)")
            check_name(self.compression, "--compression")

    @property
    def label(self) -> str:
        return self.variant if self.variant == "original" else f"{self.compression}/{self.variant}"


def model_key(spec: ModelSpec) -> str:
    """Folder name of the base model (:func:`probe.store.model_key` of its name)."""
    return store.model_key(spec.name)


def variant_artifact(model: ModelSpec, compression: str) -> store.VariantArtifact:
    """The store handle of the compressed variant ``compression`` of ``model``."""
    return store.ArtifactStore.default().variant(model_key(model), compression)


def recovery_artifact(model: ModelSpec, compression: str, method: str) -> store.RecoveryArtifact:
    """The store handle of ``method`` trained on the compressed variant ``compression``."""
    return store.ArtifactStore.default().recovery(model_key(model), compression, method)


def compress_command(model: ModelSpec, compression: str) -> str:
    return f"`probe compress --model {model.name} --method {compression}`"


def recover_command(model: ModelSpec, compression: str, method: str) -> str:
    return f"`probe recover --model {model.name} --compression {compression} --method {method}`"


def read_recovery(spec: VariantSpec) -> dict:
    """The finished recovery's manifest, or an error naming the `probe recover` command to run."""
    manifest = recovery_artifact(spec.model, spec.compression or "", spec.variant).manifest()
    if manifest is None:
        raise ProbeError(f"recovery {spec.variant!r} of {spec.model.name}/{spec.compression} is not built: run "
                         f"{recover_command(spec.model, spec.compression or '', spec.variant)}")
    return manifest
