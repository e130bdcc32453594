"""Load a variant (a base model plus compression plus recovery) as one runnable model.

:func:`load_variant` gives a :class:`LoadedVariant`: the model, its logits function and, for a
recovery, the adapter with its :class:`~probe.runtime.adapters.RecoveryRuntime`;
:func:`capture_view` is what capture hooks. What names a variant and where it is stored is
:mod:`probe.runtime.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from probe.errors import ProbeError
from probe.knowledge.scoring import LogitsFn, hf_logits_fn
from probe.models.load import LoadedModel, load_model, preflight
from probe.runtime.adapters import LoraRuntime, PrefixTuningRuntime, RecoveryRuntime, SoftPromptRuntime
from probe.runtime.idp import IDPRuntime
from probe.runtime.kv_prefix import KVPrefix, Selector
from probe.runtime.spec import (
    RECOVERY_VARIANTS,
    VariantSpec,
    compress_command,
    model_key,
    read_recovery,
    recover_command,
    recovery_artifact,
    variant_artifact,
)

RUNTIMES: dict[str, RecoveryRuntime] = {r.name: r for r in (SoftPromptRuntime(), PrefixTuningRuntime(), LoraRuntime(),
                                                             IDPRuntime())}


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
    method: RecoveryRuntime | None = None

    def annotate(self, facts) -> dict:
        """Method-specific per-fact results to save with eval results (IDP: the chosen prompt)."""
        return self.method.annotate(self.adapter, facts, self.base.tokenizer) if self.method else {}


def capture_view(loaded: LoadedVariant) -> CaptureView:
    """The module capture should hook for ``loaded`` (LoRA: a merged dense copy) and its prefix."""
    if loaded.method is None:
        return CaptureView(loaded.base.model)
    return CaptureView(*loaded.method.hook_view(loaded.adapter))


def get_runtime(name: str) -> RecoveryRuntime:
    if name not in RUNTIMES:
        raise ProbeError(f"unknown recovery method {name!r}: use one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def preflight_variant(spec: VariantSpec) -> None:
    """Cheap checks (model weights, device, variant built) before any heavy work."""
    preflight(spec.model)
    if spec.variant != "original" and variant_artifact(spec.model, spec.compression or "").manifest() is None:
        raise ProbeError(f"compressed variant {spec.compression!r} of {spec.model.name} is not built: run "
                         f"{compress_command(spec.model, spec.compression or '')}")
    if spec.variant in RECOVERY_VARIANTS:
        read_recovery(spec)


def load_variant(spec: VariantSpec) -> LoadedVariant:
    """Load the variant's model; a variant that was never built is a clear error."""
    if spec.variant == "original":
        base = load_model(spec.model)
        return LoadedVariant(spec, base, hf_logits_fn(base.model), {"model": base.model_hash})
    variant = variant_artifact(spec.model, spec.compression or "")
    manifest = variant.manifest()
    if manifest is None:
        raise ProbeError(f"compressed variant {spec.compression!r} of {spec.model.name} is not built: run "
                         f"{compress_command(spec.model, spec.compression or '')}")
    variant.check_weights()
    base = load_model(replace(spec.model, name=str(variant.path), model_path=None))
    base.name = model_key(spec.model)
    parents = {"model": manifest.get("parents", {}).get("model", ""), "compressed": manifest["spec_hash"]}
    if spec.variant in RECOVERY_VARIANTS:
        return _load_recovery(spec, base, parents)
    return LoadedVariant(spec, base, hf_logits_fn(base.model), parents)


def _load_recovery(spec: VariantSpec, base: LoadedModel, parents: dict[str, str]) -> LoadedVariant:
    """The saved recovery adapter on the loaded compressed variant (its weights stay frozen)."""
    recovery = read_recovery(spec)
    artifact = recovery_artifact(spec.model, spec.compression or "", spec.variant)
    folder = artifact.path
    trained_on = recovery.get("parents", {}).get("compressed")
    if trained_on != parents["compressed"]:
        raise ProbeError(f"the {spec.variant} adapter in {folder} was trained on another base model (compressed "
                         f"{trained_on}, this one is {parents['compressed']}): rerun "
                         f"{recover_command(spec.model, spec.compression or '', spec.variant)[:-1]} --force`")
    method = get_runtime(spec.variant)
    artifact.check_weights()
    adapter = method.load(base.model, folder / "adapter")
    return LoadedVariant(spec, base, method.logits_fn(adapter), {**parents, "recovery": recovery["spec_hash"]},
                         adapter, method)
