"""Build a variant that is missing: the `probe compress` and `probe recover` runs it needs (`probe capture --build`).

Lives above the stages because it runs two of them; capture receives it as a callback.
"""

from __future__ import annotations

from probe.artifacts import read_manifest
from probe.compress import build_spec, compress
from probe.recover.run import recover
from probe.recover.spec import RecoverSpec
from probe.runtime.spec import RECOVERY_VARIANTS, VariantSpec, recovery_dir, variant_dir


def build_missing(spec: VariantSpec) -> None:
    """Compress and/or recover whatever ``spec`` needs that is not built yet (the original needs nothing)."""
    if spec.variant == "original":
        return
    compression = spec.compression or ""
    if read_manifest(variant_dir(spec.model, compression)) is None:
        compress(build_spec(spec.model.name, compression), device=spec.model.device)
    if spec.variant in RECOVERY_VARIANTS and read_manifest(recovery_dir(spec.model, compression,
                                                                        spec.variant)) is None:
        recover(RecoverSpec(model=spec.model.name, compression=compression, method=spec.variant),
                device=spec.model.device)
