"""Typed specs for each stage, validated on construction (a bad spec never reaches a stage)."""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError
from probe.settings import setting

DTYPES = ("auto", "float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DEVICE_MAPS = ("auto", "balanced", "sequential")
DEFAULT_COMPRESSION = "gptq3"  # the compressed variant commands work on unless told


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how.

    ``name`` is a registry name or a local HF folder path. ``attn_implementation`` is
    ``"eager"`` by default because attention maps are only returned by eager attention.
    """

    name: str = setting("smollm2-135m", "Registry name (see `probe models`) or HF folder", name="model",
                        aliases=("-m",))
    model_path: str | None = setting(None, "Local HF folder with the weights", default_text="the registry's")
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    dtype: str = setting("auto", "Weights dtype when loading the model", choices=DTYPES)
    device_map: str | None = setting(None, "Spread one model over GPUs", choices=DEVICE_MAPS,
                                     default_text="one device")
    attn_implementation: str = setting("eager", "Attention kernel (eager returns attention maps)",
                                       choices=ATTN_IMPLEMENTATIONS)
    allow_pickle: bool = setting(False, "Also load pickle weights (.bin, .pt) from a model folder; pickle can run "
                                        "code, so only for files you trust (safetensors only otherwise)")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ProbeError(f"unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ProbeError(f"unknown attention implementation {self.attn_implementation!r}: "
                             f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        if self.device_map not in (None, *DEVICE_MAPS):
            raise ProbeError(f"unknown --device-map {self.device_map!r}: use auto, balanced or sequential")
