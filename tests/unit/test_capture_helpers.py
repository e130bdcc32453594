"""Shared builders for the capture tests (tiny random Llama, a small probe file); holds no tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from probe.capture.spec import CaptureSpec
from probe.config import ModelSpec
from probe.runtime.spec import VariantSpec

FACTS = [
    ("France", "The capital of France is", "Paris"), ("Japan", "The capital of Japan is", "Tokyo"),
    ("Peru", "The capital city of Peru is called", "Lima"), ("Kenya", "Kenya has its capital in", "Nairobi"),
    ("Spain", "Everyone knows the capital of Spain is", "Madrid"), ("Italy", "Italy's capital is", "Rome"),
    ("Chile", "In Chile the capital is", "Santiago"), ("Egypt", "The capital of Egypt is", "Cairo"),
    ("Norway", "Norway is governed from", "Oslo"), ("Cuba", "The capital of Cuba is", "Havana"),
    ("Iran", "The Iranian capital, Iran's seat, is", "Tehran"), ("Mali", "Mali's capital is", "Bamako"),
]


def probe_file(folder: Path, n: int = len(FACTS), long_prompt: bool = False) -> Path:
    """A generic-JSONL probe file of ``n`` capital facts, all in the eval split."""
    path = folder / "capitals.jsonl"
    rows = [{"id": f"cap:{s}", "subject": s, "prompt": p, "answer": a, "relation": "capital", "split": "eval"}
            for s, p, a in FACTS[:n]]
    if long_prompt:
        rows[0]["prompt"] = "Once upon a time " * 40 + rows[0]["prompt"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_capture_cfg(probes: Path | str, **overrides) -> CaptureSpec:
    """A CaptureSpec on tiny-llama (fp32) with test-sized defaults; ``variant`` kwargs override."""
    vkw = {k: overrides.pop(k) for k in ("variant", "compression") if k in overrides}
    variant = VariantSpec(ModelSpec("tiny-llama", dtype="float32"), **vkw)
    kw = {"probes": str(probes), "batch_size": 4, "positions": ("last", "subject", "all"), "full_attention": 5}
    return CaptureSpec(variant=variant, **{**kw, **overrides})


def float_arrays(run) -> dict[str, np.ndarray]:
    return {n: run[n][:] for n in run.names()}


def assert_same_arrays(a, b, skip: tuple[str, ...] = ()) -> None:
    names = [n for n in a.names() if n not in skip]
    assert names == [n for n in b.names() if n not in skip]
    for name in names:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
