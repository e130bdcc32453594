"""Typed specs for each stage, validated on construction (a bad spec never reaches a stage)."""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError

DTYPES = ("auto", "float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how.

    ``name`` is a registry name or a local HF folder path. ``attn_implementation`` is
    ``"eager"`` by default because attention maps are only returned by eager attention.
    """

    name: str = "smollm2-135m"
    model_path: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str = "eager"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ProbeError(f"unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ProbeError(f"unknown attention implementation {self.attn_implementation!r}: "
                             f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        if self.device_map not in (None, "auto", "balanced", "sequential"):
            raise ProbeError(f"unknown --device-map {self.device_map!r}: use auto, balanced or sequential")
