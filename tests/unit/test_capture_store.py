"""Capture store: resume after failure or kill -9, --force, float16 size, bad input, CLI, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probe.capture.run import capture
from probe.capture.store import list_runs, open_run
from probe.cli import app
from probe.compress import build_spec, compress
from probe.errors import ProbeError
from probe.store import ArtifactStore
from tests.cli_helpers import run_cli
from tests.unit.test_capture_helpers import assert_same_arrays, build_capture_cfg, probe_file

ROOT = Path(__file__).parents[2]
RESID = "last/blocks.2.hook_resid_post"
DEAD_PID = 2**22 + 1  # above Linux's largest pid_max: never a running process


class Stop(Exception):
    pass


def _stop_after(k: int):
    def on_batch(index: int) -> None:
        if index + 1 >= k:
            raise Stop

    return on_batch


def test_resume_after_failure_equals_uninterrupted(artifacts, tmp_path):
    path = probe_file(tmp_path)
    whole = open_run(capture(build_capture_cfg(path, run="whole")))
    with pytest.raises(Stop):
        capture(build_capture_cfg(path, run="cut"), on_batch=_stop_after(2))
    cut = artifacts / "captures" / "tiny-llama" / "cut"
    assert json.loads((cut / "manifest.json").read_text())["status"] == "running"
    assert sorted(p.name for p in (cut / "done").iterdir()) == ["000000", "000001"]
    seen: list[int] = []
    resumed = open_run(capture(build_capture_cfg(path, run="cut"), on_batch=seen.append))
    assert seen == [2]  # 12 probes, batches of 4: only the third batch was left
    assert_same_arrays(whole, resumed)
    assert resumed.probes == whole.probes


def test_resume_after_kill_9_equals_uninterrupted(artifacts, tmp_path):
    path = probe_file(tmp_path)
    cmd = [sys.executable, "-m", "probe", "capture", "--model", "tiny-llama", "--model-dtype", "float32",
           "--probes", str(path), "--batch-size", "1", "--positions", "last,all", "--run", "killed"]
    env = {**os.environ, "PROBE_ARTIFACTS": str(artifacts)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = artifacts / "captures" / "tiny-llama" / "killed" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_dir() and len(list(done.iterdir())) >= 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(done.iterdir()))
    if n_done >= 12:
        pytest.skip("the capture finished before it could be killed")
    assert json.loads((done.parent / "manifest.json").read_text())["status"] == "running"
    resumed = run_cli(*cmd[3:], env={"PROBE_ARTIFACTS": str(artifacts)})  # the resume needs no new process
    assert resumed.code == 0, resumed.stderr
    ref = capture(build_capture_cfg(path, run="ref", batch_size=1, positions=("last", "all"), full_attention=64))
    assert_same_arrays(open_run(ref), open_run(done.parent))


def test_finished_run_needs_force_and_unfinished_run_with_other_settings_restarts(artifacts, tmp_path, capsys):
    spec = build_capture_cfg(probe_file(tmp_path, n=3), positions=("last",), batch_size=2)
    first = capture(spec)
    stamp = (first / "manifest.json").read_text()
    with pytest.raises(ProbeError, match=r"already complete.*--force"):
        capture(spec)
    assert (first / "manifest.json").read_text() == stamp
    assert capture(replace(spec, force=True)) == first
    assert json.loads((first / "manifest.json").read_text())["status"] == "complete"
    with pytest.raises(Stop):
        capture(replace(spec, run="half"), on_batch=_stop_after(1))
    capsys.readouterr()
    seen: list[int] = []
    half = open_run(capture(replace(spec, run="half", dtype="float16"), on_batch=seen.append))
    assert "from scratch: its settings changed" in " ".join(capsys.readouterr().err.split())
    assert seen == [0, 1] and half.manifest["status"] == "complete" and half.manifest["dtype"] == "float16"


def _edit(path: Path) -> None:
    """The probe file with other, longer prompts and one fact fewer (other probes, other token width)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()][:-1]
    for i, row in enumerate(rows):
        row["prompt"] = f"Fact {i}: everyone who has studied geography agrees that " + row["prompt"].lower()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_kill_edit_rerun_restarts_and_equals_a_fresh_run_of_the_edited_file(artifacts, tmp_path, capsys):
    path = probe_file(tmp_path)
    with pytest.raises(Stop):
        capture(build_capture_cfg(path, run="edited"), on_batch=_stop_after(2))
    old_width = open_run(artifacts / "captures/tiny-llama/edited")["tokens"].shape[1]
    _edit(path)
    capsys.readouterr()
    resumed = open_run(capture(build_capture_cfg(path, run="edited")))
    said = " ".join(capsys.readouterr().err.split())
    assert "restarting the unfinished capture" in said and "probe set, tokenisation width, number of probes" in said
    fresh = open_run(capture(build_capture_cfg(path, run="fresh")))
    assert resumed["tokens"].shape[1] == fresh.manifest["t_max"] != old_width
    assert_same_arrays(fresh, resumed)
    assert resumed.probes == fresh.probes and len(resumed.probes) == 11
    assert {k: resumed.manifest[k] for k in ("probe_hash", "t_max", "n_probes", "shapes", "status")} == \
        {k: fresh.manifest[k] for k in ("probe_hash", "t_max", "n_probes", "shapes", "status")}


def test_a_second_capture_of_the_same_run_is_one_error_naming_the_first_ones_pid(artifacts, tmp_path):
    path = probe_file(tmp_path, n=2)
    handle = ArtifactStore.default().capture("tiny-llama", "busy")
    with handle.lock():  # held by this process: a second process capturing the same run is refused
        cmd = [sys.executable, "-m", "probe", "capture", "--model", "tiny-llama", "--probes", str(path), "--run",
               "busy"]
        done = subprocess.run(cmd, env={**os.environ, "PROBE_ARTIFACTS": str(artifacts)}, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: capture tiny-llama/busy is being written by process "
                                                   f"{os.getpid()}"), done.stderr
    assert handle.status() is None


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_capture(artifacts, tmp_path, capsys):
    handle = ArtifactStore.default().capture("tiny-llama", "tidy")
    left = handle.temp_path(DEAD_PID)
    (left / "arrays").mkdir(parents=True)
    capture(build_capture_cfg(probe_file(tmp_path, n=2), run="tidy", positions=("last",)))
    assert not left.exists()
    assert f"left unfinished by process {DEAD_PID}" in capsys.readouterr().err
    assert sorted(p.name for p in handle.path.parent.iterdir()) == ["tidy"]


def _damage(run: Path, how: str) -> None:
    if how == "manifest":
        text = (run / "manifest.json").read_text()
        (run / "manifest.json").write_text(text[: len(text) // 2])
    else:
        chunk = next(p for p in sorted((run / "arrays" / RESID / "c").rglob("*")) if p.is_file())
        chunk.write_bytes(chunk.read_bytes()[:7])


def test_a_truncated_manifest_is_skipped_by_probe_runs_and_force_overwrites_it(artifacts, tmp_path, capsys):
    spec = build_capture_cfg(probe_file(tmp_path, n=3), positions=("last",), batch_size=2)
    good = capture(replace(spec, run="good"))
    bad = capture(replace(spec, run="bad"))
    _damage(bad, "manifest")
    capsys.readouterr()
    assert [r["run"] for r in list_runs()] == ["good"]
    assert "warning: skipped: capture tiny-llama/bad is damaged (manifest.json is not valid JSON" in \
        capsys.readouterr().err
    result = CliRunner().invoke(app, ["runs"], catch_exceptions=False)
    assert result.exit_code == 0 and "good" in result.output
    with pytest.raises(ProbeError, match=r"^capture tiny-llama/bad is damaged \(manifest.json is not valid JSON.*"
                                         r"rebuild it with `probe capture --model tiny-llama --run bad --force`"):
        capture(replace(spec, run="bad"))
    assert capture(replace(spec, run="bad", force=True)) == bad
    assert_same_arrays(open_run(good), open_run(bad))


def test_a_corrupt_chunk_is_the_damaged_error_when_read(artifacts, tmp_path):
    run = capture(build_capture_cfg(probe_file(tmp_path, n=3), positions=("last",), batch_size=2, run="chunk"))
    _damage(run, "chunk")
    reader = open_run(run)
    assert reader["tokens"][:].shape[0] == 3  # the other arrays still read
    with pytest.raises(ProbeError, match=r"^capture tiny-llama/chunk is damaged \(RuntimeError: .*blosc.*\): "
                                         r"rebuild it with `probe capture"):
        reader[RESID][:]


def test_float16_halves_the_store(artifacts, tmp_path):
    path = probe_file(tmp_path)
    r32 = open_run(capture(build_capture_cfg(path, run="f32")))
    r16 = open_run(capture(build_capture_cfg(path, run="f16", dtype="float16")))
    floats = [n for n in r32.names() if "blocks" in n]
    assert all(r16[n].dtype == np.float16 and r32[n].dtype == np.float32 for n in floats)
    assert sum(r16[n].nbytes for n in floats) * 2 == sum(r32[n].nbytes for n in floats)
    on_disk = r16.manifest["size_bytes"] / r32.manifest["size_bytes"]
    assert 0.3 < on_disk < 0.65, on_disk
    np.testing.assert_allclose(r16["last/blocks.2.hook_resid_post"][:], r32["last/blocks.2.hook_resid_post"][:],
                               rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"layers": (7,)}, r"layer 7 does not exist: this model has layers 0\.\.3"),
    ({"max_gb": 1e-6}, r"above --max-gb.*--dtype float16"),
    ({"variant": "compressed", "compression": "gptq3"}, r"probe compress --model tiny-llama --method gptq3"),
    ({"long": True}, r"longer than the model's context of 512"),
])
def test_bad_input_is_one_clear_line(artifacts, tmp_path, overrides, message):
    long = overrides.pop("long", False)
    with pytest.raises(ProbeError, match=message):
        capture(build_capture_cfg(probe_file(tmp_path, long_prompt=long), **overrides))
    assert not (artifacts / "captures").exists() or not list((artifacts / "captures").rglob("manifest.json"))


@pytest.mark.parametrize(("flags", "message"), [
    (["--hooks", "resid_pre"], "unknown hook 'resid_pre': use one or more of resid_post, attn_out, mlp_out, pattern"),
    (["--positions", "first"], "unknown position 'first': use one or more of last, subject, all"),
    (["--dtype", "bfloat16"], "unknown --dtype 'bfloat16'"),
    (["--layers", "a,b"], "bad --layers"),
])
def test_cli_rejects_bad_flags(artifacts, flags, message):
    result = CliRunner().invoke(app, ["capture", "--model", "tiny-llama", *flags])
    assert isinstance(result.exception, ProbeError) and message in str(result.exception)


def test_cli_captures_compressed_variant_and_lists_runs(artifacts, tmp_path):
    compress(build_spec("tiny-llama", "rtn3", n_calibration=4, seq_len=32))
    path = probe_file(tmp_path, n=5)
    runner = CliRunner()
    for variant in (["--variant", "original"], ["--variant", "compressed", "--compression", "rtn3"]):
        result = runner.invoke(app, ["capture", "--model", "tiny-llama", "--probes", str(path), "--layers", "0,2",
                                     "--batch-size", "2", *variant], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    runs = {r["run"]: r for r in list_runs()}
    assert set(runs) == {"original-capitals-eval", "rtn3-compressed-capitals-eval"}
    assert runs["rtn3-compressed-capitals-eval"]["status"] == "complete"
    a, b = (open_run(r["path"]) for r in runs.values())
    assert b.manifest["parents"]["compressed"] and a.manifest["parents"]["probes"] == b.manifest["parents"]["probes"]
    assert not np.array_equal(a["last/blocks.2.hook_resid_post"][:], b["last/blocks.2.hook_resid_post"][:])
    listing = runner.invoke(app, ["runs"], catch_exceptions=False).output
    assert "Captures" in listing and "3/3" in listing


def test_torchrun_two_ranks_equals_single_process(artifacts, tmp_path):
    path = probe_file(tmp_path, n=10)
    single = open_run(capture(build_capture_cfg(path, run="single", batch_size=3)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "probe", "capture", "--model", "tiny-llama", "--model-dtype", "float32", "--probes", str(path),
           "--batch-size", "3", "--positions", "last,subject,all", "--full-attention", "5", "--run-name", "sharded"]
    env = {**os.environ, "PROBE_ARTIFACTS": str(artifacts), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = open_run(artifacts / "captures" / "tiny-llama" / "sharded")
    assert sharded.manifest["status"] == "complete" and sharded.manifest["world_size"] == 2
    assert_same_arrays(single, sharded)
    assert single.probes == sharded.probes
