"""Fault injection (issue 19): hostile names, bad options, missing and malformed inputs, damaged artifacts,
a read-only artifacts folder, pickle weights.

Every refusal is run through the real command line (in-process, :func:`tests.cli_helpers.run_cli`) on a
fresh artifacts root nested three folders deep in the test's own folder, and asserts three things: exactly
one ``error:`` line on stderr, exit status 2, and not one file or folder created, changed or removed
anywhere under the test's folder (so nothing half-written in the root and nothing written outside it).

``docs/fault-injection.md`` is this module's table (:func:`fault_table`); regenerate it with
``PYTHONPATH=. python -m tests.unit.test_faults > docs/fault-injection.md`` (a test checks it is current).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from probe.artifacts import build_manifest
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.knowledge.builtin import load_builtin
from probe.models.load import load_model
from probe.models.tiny import build_tiny_llama
from probe.store import ArtifactStore
from tests.cli_helpers import CliResult, run_cli

ROOT = Path(__file__).parents[2]
TABLE = ROOT / "docs" / "fault-injection.md"
TINY = ("--model", "tiny-llama")


# ---- helpers -------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its kind, and for files their size and modification time (links not
    followed; a folder's own time changes when a lock file comes and goes inside it, which writes nothing)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(folder))] = (st.st_mode,) if path.is_dir() else (st.st_mode, st.st_size,
                                                                                 st.st_mtime_ns)
    return out


def one_error_line(res: CliResult, pattern: str, *, alone: bool = True) -> str:
    """The single ``error:`` line of a refused command (exit status 2), checked against ``pattern``.

    ``alone``: it is all of stderr; else progress lines printed before the failure may precede it.
    """
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.code == 2, (res.code, res.stderr[-2000:])
    assert lines and lines[-1].startswith("error: "), res.stderr[-2000:]
    assert [line for line in lines if line.startswith("error")] == lines[-1:], res.stderr[-2000:]
    assert len(lines) == 1 or not alone, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Usage" not in res.stderr
    assert re.search(pattern, lines[-1]), (pattern, lines[-1])
    return lines[-1]


def toml(tmp: Path, text: str, name: str = "exp.toml") -> str:
    path = tmp / name
    path.write_text("[model]\nname = 'tiny-llama'\n" + text)
    return str(path)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def model_folder(tmp: Path, weights: dict[str, bytes], config: bool = True) -> str:
    """A local model folder with the tiny Llama's config (unless ``config=False``) and the given files."""
    folder = tmp / "my-model"
    folder.mkdir()
    if config:
        build_tiny_llama()[0].config.to_json_file(folder / "config.json")
    for name, data in weights.items():
        write(folder / name, data)
    return str(folder)


def damaged_variant(root: Path, manifest: str = '{"status": "compl') -> None:
    write(root / "variants" / "tiny-llama" / "rtn3" / "manifest.json", manifest)


def built_variant(root: Path) -> None:
    """A finished variant folder as far as the manifest says (no weights: refusals happen before loading)."""
    write(root / "variants" / "tiny-llama" / "rtn3" / "manifest.json", json.dumps(build_manifest("variant", "x")))


# ---- the refused cases ---------------------------------------------------------------------------
CSV = "subject,relation,object\nFrance,capital,Paris\n"
Args = Callable[[Path, Path], list[str]]  # (the test's folder, the artifacts root) → command-line arguments


@dataclass(frozen=True)
class Fault:
    """One hostile input: its test id, what happened before issue 19's fixes, the command, the expected line."""

    id: str
    before: str
    args: Args
    expect: str  # regex the one error line must match

    @property
    def after(self) -> str:
        shown = self.expect.replace("(?i)", "").replace(".*", "…").replace("\\", "").replace("|", " or ")
        return f"one line `error: …{shown}…`, exit 2, nothing written"


def cli(*args: str) -> Args:
    return lambda tmp, root: list(args)


FAULTS: list[Fault] = [
    # -- names that become paths, options that do not apply
    Fault("compression-with-original", "accepted; wrote eval/…/gptq3-original/ for a variant never built",
          cli("eval", *TINY, "--compression", "gptq3"), r"--compression gptq3 does not apply to --variant original"),
    Fault("compression-traversal", "`../../..` wrote outside the artifacts root",
          cli("eval", *TINY, "--variant", "compressed", "--compression", "../../.."), r"refused --compression '\.\./"),
    Fault("compression-slash-in-capture", "a path with / went into the capture folder name",
          cli("capture", *TINY, "--variant", "prompt", "--compression", "a/b"), r"refused --compression 'a/b'"),
    Fault("analyze-name-unsafe", "accepted (only '/' and a leading '.' were refused)",
          cli("analyze", *TINY, "--compression", "rtn3", "--name", "x\\y*"), r"refused --name 'x\\\\y\*'"),
    Fault("recover-compression-traversal", "read variants/tiny-llama/../../x (outside the root), then \"not built\"",
          cli("recover", *TINY, "--compression", "../../x"), r"refused --compression '\.\./\.\./x'"),
    Fault("costs-compression-traversal", "one line (kept: the store refuses it)",
          cli("costs", *TINY, "--compression", "../x"), r"refused compression label '\.\./x'"),
    Fault("analyze-runs-traversal", "run names reached the capture folder unchecked",
          cli("analyze", *TINY, "--compression", "rtn3", "--runs", "../../x"), r"refused --runs entry '\.\./\.\./x'"),
    Fault("analyze-compression-traversal", "reached the analysis folder name unchecked",
          cli("analyze", *TINY, "--compression", "../x"), r"refused --compression '\.\./x'"),
    Fault("capture-run-traversal", "one line (kept)", cli("capture", *TINY, "--run", "../x"), r"bad --run '\.\./x'"),
    Fault("model-name-markup", "MarkupError traceback from the error printer",
          cli("eval", "--model", "[/bold]no-such-model"), r"\[/bold\]no-such-model"),
    # -- out-of-range and empty values
    Fault("template-out-of-range", "silently used template 2 and saved …-t99.json",
          cli("eval", *TINY, "--template", "99"), r"--template 99 is out of range"),
    Fault("relations-empty", "`--relations ,` ran every relation", cli("eval", *TINY, "--relations", ","),
          r"--relations"),
    Fault("relations-unknown", "one line (kept)", cli("eval", *TINY, "--relations", "capitol"), r"capitol"),
    Fault("batch-size-zero", "typer's usage box instead of an error line", cli("capture", *TINY, "--batch-size", "0"),
          r"--batch-size"),
    Fault("capture-layer-missing", "one line (kept)", cli("capture", *TINY, "--layers", "99"),
          r"layer 99 does not exist"),
    Fault("recover-steps-zero", "one line (kept)", cli("recover", *TINY, "--compression", "rtn3", "--steps", "0"),
          r"--steps must be"),
    Fault("compress-unknown-method", "one line (kept)", cli("compress", *TINY, "--method", "gptq9"),
          r"unknown method 'gptq9'"),
    Fault("compress-bits-without-quantizer", "one line (kept)",
          cli("compress", *TINY, "--method", "magnitude", "--sparsity", "0.5", "--bits", "4"),
          r"--bits does not apply"),
    Fault("device-missing", "one line (kept)", cli("eval", *TINY, "--device", "cuda:7"), r"cuda:7"),
    # -- probe files
    Fault("probes-missing", "one line (kept)", cli("eval", *TINY, "--probes", "no-such.jsonl"), r"not found"),
    Fault("probes-folder", "one line (kept)", lambda tmp, root: ["eval", *TINY, "--probes", str(tmp)], r"is a folder"),
    Fault("probes-empty", "one line (kept)",
          lambda tmp, root: ["eval", *TINY, "--probes", str(write(tmp / "f.jsonl", ""))], r"is empty"),
    Fault("probes-csv-as-jsonl", "a message about fields",
          lambda tmp, root: ["eval", *TINY, "--probes", str(write(tmp / "f.jsonl", CSV))],
          r"(?i)csv|table"),
    Fault("probes-binary", "one line (kept)",
          lambda tmp, root: ["eval", *TINY, "--probes", str(write(tmp / "f.jsonl", b"\xff\xfe\x00garbage\x81"))],
          r"f\.jsonl"),
    # -- models and weights
    Fault("model-unknown", "one line (kept)", cli("eval", "--model", "smollm3"), r"smollm3"),
    Fault("model-folder-without-config", "one line (kept)",
          lambda tmp, root: ["eval", "--model", model_folder(tmp, {"model.safetensors": b"x"}, config=False)],
          r"not an HF model folder"),
    Fault("model-pickle-only", ".bin checkpoints were unpickled (restricted with weights_only)",
          lambda tmp, root: ["eval", "--model", model_folder(tmp, {"pytorch_model.bin": b"\x80\x04pickle"})],
          r"has only pickle weights \(pytorch_model\.bin\): convert them to safetensors or pass --allow-pickle"),
    Fault("compress-pickle-only", "as above, through `probe compress`",
          lambda tmp, root: ["compress", "--model", model_folder(tmp, {"model.pt": b"\x80\x04pickle"}),
                             "--method", "rtn3"], r"has only pickle weights \(model\.pt\)"),
    # -- artifacts that are missing or damaged
    Fault("variant-not-built", "one line (kept)",
          cli("eval", *TINY, "--variant", "compressed", "--compression", "rtn3"),
          r"probe compress --model tiny-llama --method rtn3"),
    Fault("recovery-not-built", "one line (kept)",
          lambda tmp, root: (built_variant(root), ["eval", *TINY, "--variant", "lora", "--compression", "rtn3"])[1],
          r"probe recover --model tiny-llama --compression rtn3 --method lora"),
    Fault("variant-manifest-truncated", "JSONDecodeError traceback",
          lambda tmp, root: (damaged_variant(root),
                             ["eval", *TINY, "--variant", "compressed", "--compression", "rtn3"])[1],
          r"is damaged \(.*manifest\.json"),
    Fault("variant-manifest-not-an-object", "traceback",
          lambda tmp, root: (damaged_variant(root, "[1, 2]"),
                             ["eval", *TINY, "--variant", "compressed", "--compression", "rtn3"])[1],
          r"is damaged \(manifest\.json is not a JSON object"),
    # -- experiment files: everything checked before the first stage
    Fault("experiment-list-as-string", "`methods = \"mag50\"` failed at stage 2 as unknown method 'm'",
          lambda tmp, root: ["run", toml(tmp, "[compress]\nmethods = 'mag50'\n"), "--no-serve"],
          r"\[compress\] methods = 'mag50' has the wrong type"),
    Fault("experiment-unknown-key", "`[section]` vanished from the message (rich markup)",
          lambda tmp, root: ["run", toml(tmp, "[recover]\nstepz = 3\n"), "--no-serve"],
          r"unknown key \[recover\] stepz.*did you mean steps\?"),
    Fault("experiment-probes-missing", "noticed at the capture stage, ~30 min into a SmolLM2 run",
          lambda tmp, root: ["run", toml(tmp, "[capture]\nprobes = 'missing.jsonl'\n"), "--no-serve"],
          r"\[capture\] probes = 'missing\.jsonl': probe file 'missing\.jsonl' not found"),
    Fault("experiment-probes-malformed", "noticed at the capture stage",
          lambda tmp, root: ["run", toml(tmp, f"[capture]\nprobes = '{write(tmp / 'p.jsonl', CSV)}'\n"), "--no-serve"],
          r"\[capture\] probes = .*p\.jsonl"),
    Fault("experiment-train-text-missing", "noticed at the recover stage, after compression",
          lambda tmp, root: ["run", toml(tmp, "[recover]\ntrain_text = 'corpus.txt'\n"), "--no-serve"],
          r"\[recover\] train_text = 'corpus\.txt' does not exist"),
    Fault("experiment-calibration-missing", "noticed at the compress stage",
          lambda tmp, root: ["run", toml(tmp, "[compress]\ncalibration = 'calib.txt'\n"), "--no-serve"],
          r"\[compress\] calibration = 'calib\.txt' does not exist"),
    Fault("experiment-from-path-missing", "noticed at the compress stage",
          lambda tmp, root: ["run", toml(tmp, "[compress]\nfrom_path = 'ct-checkpoint'\n"), "--no-serve"],
          r"\[compress\] from_path = 'ct-checkpoint' is not a folder"),
    Fault("experiment-model-path-missing", "noticed at the model stage",
          lambda tmp, root: ["run", toml(tmp, "path = '/no/such/model'\n"), "--no-serve"],
          r"\[model\] path = '/no/such/model' is not a folder"),
    Fault("experiment-name-traversal", "the experiment's name went into a path unchecked",
          lambda tmp, root: ["run", str(write(tmp / "e.toml", "name = '../../x'\n[model]\nname = 'tiny-llama'\n")),
                             "--no-serve"], r"refused experiment name .*'\.\./\.\./x'"),
    Fault("experiment-file-name-unsafe", "the file's name went into a path unchecked",
          lambda tmp, root: ["run", toml(tmp, "", name="my [exp].toml"), "--no-serve"],
          r"refused experiment name .*'my \[exp\]'"),
    Fault("experiment-invalid-toml", "one line (kept)",
          lambda tmp, root: ["run", str(write(tmp / "e.toml", "[model\nname=")), "--no-serve"], r"not valid TOML"),
    Fault("experiment-target-not-built", "one line (kept)",
          lambda tmp, root: ["run", toml(tmp, "[compress]\nmethods = ['rtn3']\n[recover]\ncompression = 'gptq3'\n"),
                             "--no-serve"], r"\[recover\] compression = 'gptq3' is not among"),
    Fault("experiment-missing", "one line (kept)", cli("run", "no-such.toml", "--no-serve"), r"does not exist"),
]


@pytest.fixture
def nested_root(tmp_path, monkeypatch) -> Path:
    """An artifacts root three folders below the test's folder, so an escape upwards still lands inside it."""
    root = tmp_path / "a" / "b" / "artifacts"
    root.mkdir(parents=True)
    monkeypatch.setenv("PROBE_ARTIFACTS", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_refused_input_is_one_line_exit_2_and_writes_nothing(fault, tmp_path, nested_root):
    args = fault.args(tmp_path, nested_root)
    before = snapshot(tmp_path)
    one_error_line(run_cli(*args), fault.expect)
    assert snapshot(tmp_path) == before


def test_a_busy_dashboard_port_is_one_line_before_serving(tmp_path, nested_root):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        res = run_cli("dashboard", "--port", str(port))
    one_error_line(res, rf"port {port} on 127\.0\.0\.1 is in use")
    assert "running on" not in res.stdout.lower()


# ---- read-only artifacts folder ------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``folder`` read-only: ``chmod -w`` when that binds (not root), else a read-only file system shim.

    As root ``chmod`` changes nothing, so every call that writes (``mkdir``, ``open`` for writing, rename,
    unlink) under ``folder`` raises ``EROFS``, as a read-only mount would; reads pass through.
    """
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    inside = str(folder.resolve())

    def guard(path) -> None:
        if isinstance(path, int):
            return
        text = os.path.abspath(os.fsdecode(path))
        if text == inside or text.startswith(inside + os.sep):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), text)

    def wrap(func, writes: Callable[..., bool] = lambda *a, **k: True, n: int = 1):
        def guarded(*args, **kwargs):
            if writes(*args, **kwargs):
                for path in args[:n]:
                    guard(path)
            return func(*args, **kwargs)
        return guarded

    def opens_for_writing(file, mode="r", *args, **kwargs) -> bool:
        return any(c in mode for c in "wax+")

    for name in ("mkdir", "rmdir", "unlink", "remove"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name), n=2))
    monkeypatch.setattr(os, "open", wrap(os.open, lambda path, flags, *a, **k: bool(flags & _WRITE_FLAGS)))
    monkeypatch.setattr(io, "open", wrap(io.open, opens_for_writing))
    monkeypatch.setattr(builtins, "open", wrap(builtins.open, opens_for_writing))
    yield


def test_the_read_only_shim_refuses_writes_and_allows_reads(tmp_path, monkeypatch):
    write(tmp_path / "ro" / "kept.txt", "data")
    with read_only(tmp_path / "ro", monkeypatch):
        assert (tmp_path / "ro" / "kept.txt").read_text() == "data"
        for attempt in (lambda: (tmp_path / "ro" / "new").mkdir(), lambda: (tmp_path / "ro" / "f").write_text("x"),
                        lambda: (tmp_path / "ro" / "kept.txt").unlink()):
            with pytest.raises(PermissionError if os.geteuid() else OSError):
                attempt()
        (tmp_path / "elsewhere.txt").write_text("writable")


def test_eval_prints_its_result_before_a_failed_save(tmp_path, nested_root, monkeypatch):
    before = snapshot(tmp_path)
    with read_only(nested_root, monkeypatch):
        res = run_cli("eval", *TINY, "--relations", "capital", "--json")
    one_error_line(res, r"read-only|[Pp]ermission|not permitted")
    result = json.loads(res.stdout)  # scored and printed although the save failed
    assert result["n_facts"] > 0 and result["per_relation"].keys() == {"capital"}
    assert snapshot(tmp_path) == before


def test_capture_into_a_read_only_folder_is_one_line(tmp_path, nested_root, monkeypatch):
    before = snapshot(tmp_path)
    with read_only(nested_root, monkeypatch):
        res = run_cli("capture", *TINY, "--layers", "0", "--hooks", "resid_post", "--full-attention", "0")
    one_error_line(res, r"read-only|[Pp]ermission|not permitted", alone=False)  # after its plan line
    assert snapshot(tmp_path) == before


# ---- eval result names: every option that changes the result -------------------------------------
def test_eval_results_of_other_relations_or_another_file_of_the_same_name_never_replace_each_other(
        tmp_path, nested_root):
    facts = [f for f in load_builtin().split("eval").facts if f.relation in ("capital", "continent")][:6]
    rows = [{"prompt": f.prompt, "answer": f.object, "subject": f.subject, "relation": f.relation, "split": "eval"}
            for f in facts]
    for folder in ("one", "two"):
        write(tmp_path / folder / "facts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    runs = [("--probes", "builtin"), ("--probes", "builtin", "--relations", "capital"),
            ("--probes", "one/facts.jsonl"), ("--probes", "two/facts.jsonl"),
            ("--probes", "one/facts.jsonl", "--relations", "capital"), ("--probes", "builtin", "--perplexity")]
    results = []
    for extra in runs:
        res = run_cli("eval", *TINY, *extra, "--json")
        assert res.code == 0, res.stderr[-2000:]
        results.append(json.loads(res.stdout))
    files = sorted((nested_root / "eval" / "tiny-llama" / "original").glob("*.json"))
    assert len(files) == len(runs), [f.name for f in files]
    assert (nested_root / "eval" / "tiny-llama" / "original" / "builtin-eval-t0.json").is_file()  # default name kept
    saved = {json.loads(f.read_text())["n_facts"] for f in files}
    assert saved == {r["n_facts"] for r in results}
    again = run_cli("eval", *TINY, "--probes", "one/facts.jsonl", "--json")  # the same options: the same file
    assert again.code == 0 and len(list(files[0].parent.glob("*.json"))) == len(runs)


# ---- weights: safetensors only unless --allow-pickle ---------------------------------------------
@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    model, tok = build_tiny_llama()
    folder = tmp_path / "tiny-folder"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_a_folder_with_safetensors_never_reads_its_pickle_file(tiny_folder):
    write(tiny_folder / "pytorch_model.bin", b"not a pickle: loading it would fail")
    assert load_model(ModelSpec(str(tiny_folder))).model.config.num_hidden_layers > 0


def test_allow_pickle_loads_a_pickle_only_folder_that_is_refused_without_it(tiny_folder, tmp_path):

    torch.save(build_tiny_llama()[0].state_dict(), tiny_folder / "pytorch_model.bin")
    (tiny_folder / "model.safetensors").unlink()
    with pytest.raises(ProbeError, match="only pickle weights"):
        load_model(ModelSpec(str(tiny_folder)))
    assert load_model(ModelSpec(str(tiny_folder), allow_pickle=True)).model is not None
    assert run_cli("eval", "--model", str(tiny_folder), "--allow-pickle", "--relations", "capital",
                   env={"PROBE_ARTIFACTS": str(tmp_path / "artifacts")}).code == 0


# ---- damaged artifacts in listings ---------------------------------------------------------------
def test_a_symlink_out_of_the_root_is_not_listed_or_followed(tmp_path, nested_root):
    outside = tmp_path / "secret"
    write(outside / "manifest.json", '{"status": "complete", "spec_hash": "x"}')
    (nested_root / "analysis").mkdir()
    (nested_root / "analysis" / "escape").symlink_to(outside)
    warnings: list[str] = []
    store = ArtifactStore(nested_root, warn=warnings.append)
    assert store.analyses() == [] and any("outside the artifacts folder" in w for w in warnings)
    with pytest.raises(ProbeError, match="outside the artifacts folder"):
        store.analysis("escape").manifest()


# ---- the table in docs/fault-injection.md -------------------------------------------------------
# Cases tested by other functions of this module: test id → (before, after).
OTHER_CASES: dict[str, tuple[str, str]] = {
    "test_a_busy_dashboard_port_is_one_line_before_serving":
        ("printed 'running on …' then failed", "one line naming the port, exit 2, nothing served"),
    "test_eval_prints_its_result_before_a_failed_save":
        ("read-only folder: scored everything, then an OSError traceback without the result",
         "the result JSON on stdout, then one `error:` line, exit 2, folder unchanged"),
    "test_capture_into_a_read_only_folder_is_one_line":
        ("OSError traceback", "one `error:` line, exit 2, folder unchanged"),
    "test_eval_results_of_other_relations_or_another_file_of_the_same_name_never_replace_each_other":
        ("a 48-fact run overwrote the 608-fact result (name ignored --relations and the file's folder)",
         "one result file per (probe file path, relations, split, template); builtin-eval-t0.json keeps its name"),
    "test_a_folder_with_safetensors_never_reads_its_pickle_file":
        ("a .bin next to the safetensors could be chosen", "loads with use_safetensors: the .bin is never opened"),
    "test_allow_pickle_loads_a_pickle_only_folder_that_is_refused_without_it":
        (".bin unpickled silently", "refused without --allow-pickle, loaded with it"),
    "test_a_symlink_out_of_the_root_is_not_listed_or_followed":
        ("the dashboard followed symlinks out of the root", "not listed (a warning), reading it is refused"),
}

# Issue 19 cases this branch does not test: the capture store's own work (another branch), expected behaviour.
ELSEWHERE: list[tuple[str, str, str, str]] = [  # (case, test in another module, before, after)
    ("kill a capture, edit the probe file, rerun",
     "test_capture_store.py::test_kill_edit_rerun_restarts_and_equals_a_fresh_run_of_the_edited_file",
     "resumed by path: rows from two files, marked complete",
     "resume compares probe hash, token width and spec hash; a mismatch restarts with a message; the store "
     "equals a fresh run of the new file"),
    ("two captures with the same run name",
     "test_capture_store.py::test_a_second_capture_of_the_same_run_is_one_error_naming_the_first_ones_pid",
     "the loser crashed with a KeyError traceback", "the second is one line naming the first's PID (run lock)"),
    ("two recoveries of the same method",
     "test_recover_run.py::test_a_recovery_being_trained_elsewhere_is_refused_before_training",
     "both trained; the second failed or overwrote at save time", "the second is refused before it trains"),
    ("`probe runs` / `probe capture --force` with a truncated capture manifest",
     "test_capture_store.py::test_a_truncated_manifest_is_skipped_by_probe_runs_and_force_overwrites_it",
     "JSONDecodeError traceback; the run could not be overwritten",
     "the damaged run skipped with one warning; --force overwrites it"),
    ("a corrupt zarr chunk", "test_capture_store.py::test_a_corrupt_chunk_is_the_damaged_error_when_read",
     "traceback", "one line: the capture is damaged, rebuild it with its command"),
    ("`probe analyze` with a damaged capture of another run",
     "test_analysis_run.py::test_a_damaged_capture_of_another_run_is_skipped_with_a_warning", "traceback",
     "the damaged run skipped with a warning"),
    ("truncated model.safetensors in a variant",
     "test_store.py::test_a_truncated_weights_file_is_damaged_before_loading", "SafetensorError traceback",
     "one line: `… is damaged (model.safetensors is truncated …): rebuild it with probe compress … --force`"),
    ("`.NAME.tmp-PID` left by a killed capture",
     "test_capture_store.py::test_a_killed_runs_temporary_folder_is_removed_by_the_next_capture", "never removed",
     "removed on the next write of that artifact"),
]


def fault_table() -> str:
    """``docs/fault-injection.md``: every case with its test id, before and after."""
    def row(*cells: str) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |\n"

    text = ("# Fault injection (issue 19)\n\nGenerated from `tests/unit/test_faults.py` (`PYTHONPATH=. python -m "
            "tests.unit.test_faults > docs/fault-injection.md`). Every refused case asserts exactly one `error:` line, "
            "exit status 2 and an unchanged test folder (the artifacts root sits three folders below it, so nothing "
            "half-written inside the root and nothing written outside). As root, the read-only cases use a shim "
            "that makes every write under the root fail with EROFS (chmod does not bind root); otherwise "
            "`chmod -w`.\n\n"
            "| case | test id | before | after |\n|---|---|---|---|\n")
    for f in FAULTS:
        text += row(f.id, f"`test_a_refused_input_is_one_line_exit_2_and_writes_nothing[{f.id}]`", f.before, f.after)
    for name, (before, after) in OTHER_CASES.items():
        text += row(name.removeprefix("test_").replace("_", " "), f"`{name}`", before, after)
    text += ("\n## Cases tested in other modules\n\n"
             "| case | test | before | after |\n|---|---|---|---|\n")
    for case, test, before, after in ELSEWHERE:
        text += row(case, f"`tests/unit/{test}`", before, after)
    return text


def test_every_table_row_is_a_test_of_this_module():
    module = sys.modules[__name__]
    assert all(callable(getattr(module, name, None)) for name in OTHER_CASES)
    assert len({f.id for f in FAULTS}) == len(FAULTS)
    for _, test, _, _ in ELSEWHERE:  # the cases tested in other modules name tests that exist
        file, name = test.split("::")
        assert f"def {name}(" in (Path(__file__).parent / file).read_text(), test


def test_the_fault_table_in_docs_is_current():
    assert TABLE.read_text() == fault_table(), "regenerate: PYTHONPATH=. python -m tests.unit.test_faults > " \
                                                "docs/fault-injection.md"


if __name__ == "__main__":
    sys.stdout.write(fault_table())


@pytest.mark.parametrize("command", ["eval", "compress", "recover", "costs", "capture", "analyze"])
def test_every_command_that_loads_the_model_takes_allow_pickle(command):
    res = run_cli(command, "--help")
    assert res.code == 0 and "--allow-pickle" in res.stdout
