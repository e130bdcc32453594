"""Shared fixtures. Tests never touch the network and write artifacts under a temp root."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

# SmolLM2 is converted once per machine into this cache and reused by every session.
SHARED_ARTIFACTS = Path(os.environ.get("PROBE_TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))

# Per-test limit for tests/unit (tiny random models; the slowest, a tiny `probe run`, takes about two
# minutes on 2 busy cores). Other folders keep pyproject's `timeout` (900 s, SmolLM2 and notebooks).
UNIT_TIMEOUT_S = 600
UNIT_TESTS = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give unit tests the tighter timeout, unless the test sets its own or `--timeout` was given."""
    if not config.pluginmanager.hasplugin("timeout") or config.getoption("timeout", None) is not None:
        return
    for item in items:
        if item.path.is_relative_to(UNIT_TESTS) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    """A fresh, empty artifacts root for tests that write artifacts."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("PROBE_ARTIFACTS", str(root))
    return root


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The converted SmolLM2 HF folder, converted once into the shared artifacts cache."""
    from probe.models.load import smollm2_folder as convert

    mp = pytest.MonkeyPatch()
    mp.setenv("PROBE_ARTIFACTS", str(SHARED_ARTIFACTS))
    try:
        return convert()
    finally:
        mp.undo()


@pytest.fixture
def smollm2_artifacts(artifacts, smollm2_folder) -> Path:
    """A fresh artifacts root in which the converted SmolLM2 is already present."""
    (artifacts / "models").mkdir(parents=True)
    (artifacts / "models" / "smollm2-135m").symlink_to(smollm2_folder)
    return artifacts


@contextlib.contextmanager
def module_artifacts(tmp_path_factory, smollm2_folder: Path, name: str) -> Iterator[Path]:
    """A module-wide artifacts root with SmolLM2 and the shared corpus cache linked in."""
    root = tmp_path_factory.mktemp(name) / "artifacts"
    (root / "models").mkdir(parents=True)
    (root / "models" / "smollm2-135m").symlink_to(smollm2_folder)
    (SHARED_ARTIFACTS / "corpus").mkdir(parents=True, exist_ok=True)
    (root / "corpus").symlink_to(SHARED_ARTIFACTS / "corpus")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROBE_ARTIFACTS", str(root))
    try:
        yield root
    finally:
        mp.undo()


def load_smollm2(smollm2_folder: Path, **kwargs):
    from probe.config import ModelSpec
    from probe.models.load import load_model

    return load_model(ModelSpec(str(smollm2_folder), dtype="float32", **kwargs))
