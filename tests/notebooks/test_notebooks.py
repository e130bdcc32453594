"""Every notebook in notebooks/ runs top to bottom on tiny real artifacts, and its .ipynb matches its .py."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbclient
import pytest
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
NAMES = ("01_quickstart", "02_displaced_vs_forgotten", "03_idp")


def cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in jupytext.read(path).cells]


def execute(name: str) -> None:
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_the_paired_py_without_outputs(name):
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert ipynb.is_file(), f"run `jupytext --to ipynb {py}`"
    assert cells(ipynb) == cells(py), f"{ipynb.name} is out of date: run `jupytext --sync {py}`"
    nb = jupytext.read(ipynb)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    first = nb.cells[1] if nb.cells[0].cell_type == "markdown" else nb.cells[0]
    assert "parameters" in first.metadata.get("tags", []) and "PROBE_NOTEBOOK_MODEL" in first.source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_tiny_artifacts(notebook_env, name):
    execute(name)  # raises CellExecutionError, with the cell and traceback, on any failing cell


def test_missing_artifacts_say_to_run_make_demo(notebook_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_ARTIFACTS", str(tmp_path / "empty"))
    nb = jupytext.read(NOTEBOOKS / "03_idp.py")
    with pytest.raises(CellExecutionError, match="run `make demo` first"):
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    assert "run `make demo` first" in outputs_text(nb)
