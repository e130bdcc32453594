"""Variants: a base model plus compression plus recovery, loaded as one runnable model.

A variant is named by ``--variant`` and, except for the original, ``--compression PRESET``.
Compressed variants live under ``artifacts/variants/<model>/<preset>/`` as plain HF folders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from probe.artifacts import artifacts_root, read_manifest
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.knowledge.scoring import LogitsFn, hf_logits_fn
from probe.models.load import LoadedModel, load_model, preflight
from probe.recover.kv_prefix import KVPrefix, Selector
from probe.settings import setting

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
        if self.variant != "original" and not self.compression:
            raise ProbeError(f"variant {self.variant!r} needs --compression PRESET (e.g. gptq3)")

    @property
    def label(self) -> str:
        return self.variant if self.variant == "original" else f"{self.compression}/{self.variant}"


@dataclass
class CaptureView:
    """What capture hooks: the module to bridge, and for prompt variants the KV prefix and selector."""

    model: torch.nn.Module
    prefix: KVPrefix | None = None
    select: Selector | None = None


@dataclass
class LoadedVariant:
    """A runnable variant. ``adapter`` and ``method`` are set for recovery variants."""

    spec: VariantSpec
    base: LoadedModel
    logits_fn: LogitsFn
    parents: dict[str, str]
    adapter: Any = None
    method: Any = None

    def annotate(self, facts) -> dict:
        """Method-specific per-fact results to save with eval results (IDP: the chosen prompt)."""
        return self.method.annotate(self.adapter, facts, self.base.tokenizer) if self.method else {}


def capture_view(loaded: LoadedVariant) -> CaptureView:
    """The module capture should hook for ``loaded`` (LoRA: a merged dense copy) and its prefix."""
    if loaded.method is None:
        return CaptureView(loaded.base.model)
    return CaptureView(*loaded.method.hook_view(loaded.adapter))


def model_key(spec: ModelSpec) -> str:
    """Folder-safe name of the base model (registry name or the folder's name)."""
    return spec.name if "/" not in spec.name else Path(spec.name).name


def variant_dir(model: ModelSpec, compression: str) -> Path:
    return artifacts_root() / "variants" / model_key(model) / compression


def recovery_dir(model: ModelSpec, compression: str, method: str) -> Path:
    """Where `probe recover` saves ``method`` trained on the compressed variant ``compression``."""
    return variant_dir(model, compression) / "recover" / method


def recover_command(model: ModelSpec, compression: str, method: str) -> str:
    return f"`probe recover --model {model.name} --compression {compression} --method {method}`"


def read_recovery(spec: VariantSpec) -> dict:
    """The finished recovery's manifest, or an error naming the `probe recover` command to run."""
    manifest = read_manifest(recovery_dir(spec.model, spec.compression or "", spec.variant))
    if manifest is None:
        raise ProbeError(f"recovery {spec.variant!r} of {spec.model.name}/{spec.compression} is not built: run "
                         f"{recover_command(spec.model, spec.compression or '', spec.variant)}")
    return manifest


def preflight_variant(spec: VariantSpec) -> None:
    """Cheap checks (model weights, device, variant built) before any heavy work."""
    preflight(spec.model)
    if spec.variant != "original" and read_manifest(variant_dir(spec.model, spec.compression or "")) is None:
        raise ProbeError(f"compressed variant {spec.compression!r} of {spec.model.name} is not built: run "
                         f"`probe compress --model {spec.model.name} --method {spec.compression}`")
    if spec.variant in RECOVERY_VARIANTS:
        read_recovery(spec)


def load_variant(spec: VariantSpec) -> LoadedVariant:
    """Load the variant's model; a variant that was never built is a clear error."""
    if spec.variant == "original":
        base = load_model(spec.model)
        return LoadedVariant(spec, base, hf_logits_fn(base.model), {"model": base.model_hash})
    folder = variant_dir(spec.model, spec.compression or "")
    manifest = read_manifest(folder)
    if manifest is None:
        raise ProbeError(f"compressed variant {spec.compression!r} of {spec.model.name} is not built: run "
                         f"`probe compress --model {spec.model.name} --method {spec.compression}`")
    base = load_model(replace(spec.model, name=str(folder), model_path=None))
    base.name = model_key(spec.model)
    parents = {"model": manifest.get("parents", {}).get("model", ""), "compressed": manifest["spec_hash"]}
    if spec.variant in RECOVERY_VARIANTS:
        return _load_recovery(spec, base, parents)
    return LoadedVariant(spec, base, hf_logits_fn(base.model), parents)


def _load_recovery(spec: VariantSpec, base: LoadedModel, parents: dict[str, str]) -> LoadedVariant:
    """The saved recovery adapter on the loaded compressed variant (its weights stay frozen)."""
    from probe.recover.spec import get_method

    recovery = read_recovery(spec)
    folder = recovery_dir(spec.model, spec.compression or "", spec.variant)
    trained_on = recovery.get("parents", {}).get("compressed")
    if trained_on != parents["compressed"]:
        raise ProbeError(f"the {spec.variant} adapter in {folder} was trained on another base model (compressed "
                         f"{trained_on}, this one is {parents['compressed']}): rerun "
                         f"{recover_command(spec.model, spec.compression or '', spec.variant)[:-1]} --force`")
    method = get_method(spec.variant)
    peft_model = method.load(base.model, folder / "adapter")
    return LoadedVariant(spec, base, method.logits_fn(peft_model), {**parents, "recovery": recovery["spec_hash"]},
                         peft_model, method)
