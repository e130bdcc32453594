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
from tests.cli_helpers import run_cli
from tests.unit.test_capture_helpers import assert_same_arrays, build_capture_cfg, probe_file

ROOT = Path(__file__).parents[2]


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


def test_finished_run_needs_force_and_unfinished_run_needs_same_settings(artifacts, tmp_path):
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
    with pytest.raises(ProbeError, match="unfinished capture with other settings"):
        capture(replace(spec, run="half", dtype="float16"))


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
