"""Compression stage: llmcompressor recipes and simple methods, baked to dense HF variants."""

from probe.compress.run import compress
from probe.compress.spec import PRESETS, CompressSpec, build_spec

__all__ = ["PRESETS", "CompressSpec", "build_spec", "compress"]
