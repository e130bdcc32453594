"""Layers only point down: no import cycles, no upward imports, artifact readers start without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.import_graph import ROOT, build, check, cycles, heavy_at_startup, startup_imports, upward_edges


@pytest.fixture(scope="module")
def report():
    return check()


def test_no_import_cycles(report):
    assert report.cycles == [], "\n".join(" -> ".join(c) for c in report.cycles)


def test_no_import_points_up_a_layer(report):
    assert report.upward == [], "\n".join(f"{e.source} -> {e.target} (line {e.line})" for e in report.upward)


def test_inference_never_imports_training():
    graph = build()
    inference = ("probe.runtime", "probe.evaluation", "probe.capture", "probe.costs")
    offenders = [e for e in graph.edges if e.source.startswith(inference) and e.target.startswith("probe.recover")]
    assert offenders == []
    assert any(e.target.startswith("probe.runtime") for e in graph.edges if e.source.startswith("probe.recover"))


def test_artifact_readers_do_not_import_torch_at_startup(report):
    assert report.heavy == {}
    graph = build()
    assert "zarr" in startup_imports(graph, "probe.capture.store")
    assert "torch" in startup_imports(graph, "probe.capture.recorder")  # the check sees torch where it is


def test_importing_the_dashboard_and_store_loads_neither_torch_nor_transformers():
    code = ("import sys, dashboards.app, probe.capture.store, probe.runtime.spec; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    root = _package(tmp_path, {
        "probe/__init__.py": "",
        "probe/runtime/__init__.py": "",
        "probe/runtime/a.py": "from probe.recover import b\n",
        "probe/recover/__init__.py": "",
        "probe/recover/b.py": "def f():\n    from probe.runtime.a import x\n",
        "probe/capture/__init__.py": "",
        "probe/capture/store.py": "import probe.capture.arrays\n",
        "probe/capture/arrays.py": "import torch.nn\n",
        "dashboards/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import transformers\n",
    })
    graph = build(root)
    assert cycles(graph) == [["probe.recover.b", "probe.runtime.a", "probe.recover.b"]]
    assert [(e.source, e.target) for e in upward_edges(graph)] == [("probe.runtime.a", "probe.recover.b")]
    assert heavy_at_startup(graph) == {"probe.capture.store": ["torch"]}
    lazy = [e for e in graph.edges if e.lazy]
    assert [(e.source, e.target, e.line) for e in lazy] == [("probe.recover.b", "probe.runtime.a", 2)]
