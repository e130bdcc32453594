"""Build a variant that is missing: the `probe compress` and `probe recover` runs it needs (`probe capture --build`).

Lives above the stages because it runs two of them; capture receives it as a callback.
"""

from __future__ import annotations

from probe.compress import build_spec, compress
from probe.recover.run import recover
from probe.recover.spec import RecoverSpec
from probe.runtime.spec import RECOVERY_VARIANTS, VariantSpec, recovery_artifact, variant_artifact


def build_missing(spec: VariantSpec) -> None:
    """Compress and/or recover whatever ``spec`` needs that is not built yet (the original needs nothing)."""
    if spec.variant == "original":
        return
    compression = spec.compression or ""
    if variant_artifact(spec.model, compression).manifest() is None:
        compress(build_spec(spec.model.name, compression), device=spec.model.device)
    recovery = recovery_artifact(spec.model, compression, spec.variant) if spec.variant in RECOVERY_VARIANTS else None
    if recovery is not None and recovery.manifest() is None:
        recover(RecoverSpec(model=spec.model.name, compression=compression, method=spec.variant),
                device=spec.model.device)
