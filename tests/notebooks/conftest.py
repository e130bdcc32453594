"""Tiny real artifacts for the notebook tests: tiny-llama, its mag50 variant, prompt/IDP recoveries, captures.

Everything is built once per session under a temp root, through the same functions the CLI
calls (`probe compress`, `probe recover`, `probe capture`, `probe eval`), on a 24-fact probe
file with two relations and both splits, so each notebook runs end to end in seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_capture_helpers import FACTS

MODEL = "tiny-llama"
COMPRESSION = "mag50"
VARIANTS = ("original", "compressed", "prompt", "idp")

CAPITALS = FACTS  # the capture tests' twelve capitals
LANGUAGES = [
    ("Brazil", "The official language of Brazil is", "Portuguese"),
    ("Germany", "In Germany people speak", "German"), ("Mexico", "The language of Mexico is", "Spanish"),
    ("Greece", "Most people in Greece speak", "Greek"), ("Poland", "The official language of Poland is", "Polish"),
    ("Turkey", "In Turkey people speak", "Turkish"), ("Sweden", "The language of Sweden is", "Swedish"),
    ("Russia", "Most people in Russia speak", "Russian"), ("Israel", "The official language of Israel is", "Hebrew"),
    ("Vietnam", "In Vietnam people speak", "Vietnamese"), ("Finland", "The language of Finland is", "Finnish"),
    ("Korea", "Most people in Korea speak", "Korean"),
]


def write_probes(folder: Path) -> Path:
    """24 facts, 2 relations; every third fact of a relation is train (8 train, 16 eval)."""
    rows = []
    for relation, facts in (("capital", CAPITALS), ("language", LANGUAGES)):
        for i, (subject, prompt, answer) in enumerate(facts):
            rows.append({"id": f"{relation}:{subject}", "subject": subject, "prompt": prompt, "answer": answer,
                         "relation": relation, "split": "train" if i % 3 == 0 else "eval"})
    path = folder / "notebook_facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_artifacts(root: Path, probes: Path) -> dict[str, float]:
    """The chain of artifacts the notebooks read; returns the seconds each step took."""
    from probe.capture.run import capture
    from probe.capture.spec import CaptureSpec
    from probe.compress import build_spec, compress
    from probe.config import ModelSpec
    from probe.evaluation.run import EvalSpec, run_eval
    from probe.recover.run import recover
    from probe.recover.spec import RecoverSpec
    from probe.runtime.spec import VariantSpec

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    # calibration sized like the recovery's fast corpus (8 texts x 24 tokens), so both share one cache file
    compress(build_spec(MODEL, COMPRESSION, n_calibration=8, seq_len=24), evaluate=False)
    seconds["compress"] = time.perf_counter() - t
    for method in ("prompt", "idp"):
        t = time.perf_counter()
        recover(RecoverSpec(model=MODEL, compression=COMPRESSION, method=method, fast=True), with_eval=False)
        seconds[f"recover {method}"] = time.perf_counter() - t
    model = ModelSpec(MODEL, dtype="float32")
    for variant in VARIANTS:
        t = time.perf_counter()
        vspec = VariantSpec(model, variant, None if variant == "original" else COMPRESSION)
        capture(CaptureSpec(variant=vspec, probes=str(probes), split="all", batch_size=8))
        seconds[f"capture {variant}"] = time.perf_counter() - t
    t = time.perf_counter()  # `probe eval --variant idp`: the saved eval with the prompt each fact chose
    run_eval(EvalSpec(VariantSpec(model, "idp", COMPRESSION), probes=str(probes), split="all"))
    seconds["eval idp"] = time.perf_counter() - t
    return seconds


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment the notebooks run in: tiny artifacts, and parameters sized for them."""
    folder = tmp_path_factory.mktemp("notebooks")
    root = folder / "artifacts"
    env = {"PROBE_ARTIFACTS": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PROBE_NOTEBOOK_MODEL": MODEL, "PROBE_NOTEBOOK_COMPRESSION": COMPRESSION,
           "PROBE_NOTEBOOK_MIN_FACTS": "4", "PROBE_NOTEBOOK_N_BOOT": "200", "PROBE_NOTEBOOK_N_BOOT_CKA": "20",
           "PROBE_NOTEBOOK_N_PROBES": "4", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        seconds = build_artifacts(root, write_probes(folder))
        print("notebook artifacts built:", {k: round(v, 1) for k, v in seconds.items()})
        yield env
    finally:
        mp.undo()
