"""The artifact store: layout, damaged artifacts, listings, the freshness rule, locks, atomic writers, names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.artifacts import build_manifest, write_json_atomic
from probe.errors import ProbeError
from probe.knowledge.protocol import ProbeFormat
from probe.store import MAX_NAME, ArtifactStore, check_name, model_key

REPO = Path(__file__).resolve().parents[2]
DEAD_PID = 2**22 + 1  # above Linux's largest pid_max: never a running process


@pytest.fixture
def messages() -> list[str]:
    return []


@pytest.fixture
def store(tmp_path, messages) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", warn=messages.append)


def finished(folder: Path, spec: object = "spec", **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "manifest.json", {**build_manifest("test", spec), **extra})
    return folder


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


# ---- layout --------------------------------------------------------------------------------------
def test_layout_is_todays(artifacts):
    store = ArtifactStore.default()
    root = artifacts.resolve()
    assert store.root == root
    assert store.model("smollm2-135m").path == root / "models" / "smollm2-135m"
    assert store.variant("tiny-llama", "rtn3").path == root / "variants" / "tiny-llama" / "rtn3"
    assert store.recovery("tiny-llama", "rtn3", "idp").path == root / "variants/tiny-llama/rtn3/recover/idp"
    assert store.eval("tiny-llama", "lora", "rtn3", "builtin:eval", 2).path == \
        root / "eval/tiny-llama/rtn3-lora/builtin-eval-t2.json"
    assert store.eval("tiny-llama", "original", None, "capitals", 0).path == \
        root / "eval/tiny-llama/original/capitals-t0.json"
    assert store.capture("tiny-llama", "original-builtin-all").path == root / "captures/tiny-llama/original-builtin-all"
    assert store.cost("tiny-llama", "rtn3").path == root / "costs/tiny-llama/rtn3.json"
    assert store.analysis("tiny-llama-rtn3").path == root / "analysis/tiny-llama-rtn3"
    assert store.analysis("a").figure_file("cka") == root / "analysis/a/figures/cka.json"
    assert store.corpus_file("tiny-llama", "abc") == root / "corpus/tiny-llama/abc.jsonl"
    assert store.experiment_log("demo") == root / "experiments/demo.json"


def test_the_stages_handles_are_at_todays_paths(artifacts):
    from probe.analysis.spec import AnalyzeSpec
    from probe.capture.run import capture_artifact
    from probe.capture.spec import CaptureSpec
    from probe.config import ModelSpec
    from probe.evaluation.run import result_artifact
    from probe.runtime.spec import VariantSpec, recovery_artifact, variant_artifact
    from probe.runtime.spec import model_key as spec_model_key

    root = artifacts.resolve()
    spec = ModelSpec("tiny-llama")
    assert variant_artifact(spec, "rtn3").path == root / "variants/tiny-llama/rtn3"
    assert recovery_artifact(spec, "rtn3", "lora").path == root / "variants/tiny-llama/rtn3/recover/lora"
    result = {"model": "tiny-llama", "variant": "idp", "compression": "rtn3", "probes": "builtin:eval", "template": 1,
              "protocol": ProbeFormat().describe()}
    assert result_artifact(result).path == root / "eval/tiny-llama/rtn3-idp/builtin-eval-t1.json"
    zero_shot = {**result, "protocol": ProbeFormat(shots=0, known="first_token").describe()}
    assert result_artifact(zero_shot).path == root / "eval/tiny-llama/rtn3-idp/builtin-eval-0shot-first_token-t1.json"
    cspec = CaptureSpec(variant=VariantSpec(ModelSpec("/models/local-folder"), "compressed", "rtn3"))
    assert capture_artifact(cspec).path == root / "captures/local-folder/rtn3-compressed-builtin-eval"
    assert AnalyzeSpec(model="org/hub-model", compression="rtn3").folder_name == "hub-model-rtn3"
    for name, key in (("smollm2-135m", "smollm2-135m"), ("/models/local-folder", "local-folder"),
                      ("org/hub-model", "hub-model")):
        assert model_key(name) == spec_model_key(ModelSpec(name)) == key


# ---- manifests: absent, unfinished, damaged -------------------------------------------------------
def test_absent_and_unfinished_are_none_and_status_shows_running(store):
    handle = store.capture("m", "r")
    assert handle.manifest() is None and handle.status() is None
    handle.path.mkdir(parents=True)
    write_json_atomic(handle.manifest_file, {**build_manifest("capture", "s"), "status": "running"})
    assert handle.manifest() is None and handle.status()["status"] == "running"
    finished(handle.path)
    assert handle.manifest()["spec_hash"] == build_manifest("x", "spec")["spec_hash"]


CORRUPT = {
    "empty": (b"", "manifest.json is empty"),
    "truncated": (json.dumps(build_manifest("variant", "s")).encode()[:40], "manifest.json is not valid JSON"),
    "not an object": (b"[1, 2]", "manifest.json is not a JSON object"),
    "no status": (b'{"spec_hash": "x"}', "manifest.json has no status"),
    "no spec hash": (b'{"status": "complete"}', "manifest.json has no spec hash"),
    "not utf-8": (b'{"status": "\xff\xfe"}', "manifest.json cannot be read"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_a_damaged_manifest_is_one_line_naming_the_rebuild_command(store, case):
    content, why = CORRUPT[case]
    handle = store.variant("m", "c")
    handle.path.mkdir(parents=True)
    handle.manifest_file.write_bytes(content)
    with pytest.raises(ProbeError) as info:
        handle.manifest()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"compressed variant m/c is damaged ({why}")
    assert message.endswith("): rebuild it with `probe compress --model m --method c --force`")


def test_damaged_messages_name_each_kinds_command(store):
    for handle, command in [
        (store.recovery("m", "c", "lora"), "`probe recover --model m --compression c --method lora --force`"),
        (store.capture("m", "r"), "`probe capture --model m --run r --force`"),
        (store.analysis("m-c"), "`probe analyze --name m-c --force`"),
    ]:
        handle.path.mkdir(parents=True)
        handle.manifest_file.write_text("{")
        with pytest.raises(ProbeError, match=f"^{handle.what} is damaged .*rebuild it with {command}"):
            handle.manifest()


def test_a_json_file_artifact_needs_an_embedded_manifest(store):
    costs = store.cost("m", "c")
    costs.path.parent.mkdir(parents=True)
    costs.path.write_text('{"rows": []}')
    with pytest.raises(ProbeError, match=r"^cost table m/c is damaged \(c.json has no manifest\): rebuild it with "
                                         r"`probe costs --model m --compression c`$"):
        costs.read()
    costs.write({"rows": [1], "manifest": build_manifest("costs", "s")})
    assert costs.read()["rows"] == [1] and costs.manifest()["kind"] == "costs"


def test_reading_turns_a_failed_read_of_stored_data_into_the_damaged_error(store):
    handle = store.capture("m", "r")
    with pytest.raises(ProbeError, match=r"capture m/r is damaged \(FileNotFoundError: .*arrays.*\): rebuild it"), \
            handle.reading():
        (handle.arrays / "x").read_bytes()
    with pytest.raises(ProbeError, match=r"is damaged \(RuntimeError: bad chunk\)"), handle.reading(RuntimeError):
        raise RuntimeError("bad chunk")
    with pytest.raises(KeyError), handle.reading():  # a programming error is not damage
        raise KeyError("x")


# ---- listings --------------------------------------------------------------------------------------
def test_listings_skip_damaged_artifacts_with_a_warning(store, messages):
    root = store.root
    finished(root / "captures/m/good")
    finished(root / "captures/m/running", status="running")
    (root / "captures/m/broken").mkdir(parents=True)
    (root / "captures/m/broken/manifest.json").write_text('{"status": "compl')
    (root / "captures/m/.good.tmp-123").mkdir()
    (root / "captures/m/.good.lock").write_text("1")
    (root / "captures/m/empty").mkdir()  # no manifest yet: not listed, no warning
    finished(root / "captures/m/bad name")
    assert [c.run for c in store.captures()] == ["good", "running"]
    assert [c.run for c in store.captures("m")] == ["good", "running"]
    assert len(messages) == 4  # two listings: the damaged one and the invalid name, each once per listing
    assert any("capture m/broken is damaged (manifest.json is not valid JSON" in m for m in messages)
    assert any("bad name" in m and "not a valid artifact name" in m for m in messages)
    assert store.capture("m", "good").summary()["batches"] == "0/?"

    finished(root / "analysis/ok")
    (root / "analysis/bad").mkdir(parents=True)
    (root / "analysis/bad/manifest.json").write_text("")
    finished(root / "variants/m/c")
    finished(root / "variants/m/c/recover/lora")
    (root / "variants/m/c/recover/idp").mkdir()
    (root / "variants/m/c/recover/idp/manifest.json").write_text("[]")
    store.cost("m", "c").write({"rows": [], "manifest": build_manifest("costs", "s")})
    (root / "costs/m/d.json").write_text("{")
    store.eval("m", "lora", "c", "builtin", 0).write({"top1_accuracy": 1.0, "manifest": build_manifest("eval", "s")})
    (root / "eval/m/c-lora/builtin-t1.json").write_text("nope")
    messages.clear()
    assert [a.name for a in store.analyses()] == ["ok"]
    assert [(r.compression, r.method) for r in store.recoveries()] == [("c", "lora")]
    assert [v.compression for v in store.variants()] == ["c"]
    assert [c.compression for c in store.costs()] == ["c"]
    assert [(e.label, e.file) for e in store.evals()] == [("c-lora", "builtin-t0.json")]
    assert len(messages) == 4 and all("is damaged" in m for m in messages)


def test_listing_an_empty_or_missing_root_is_empty(store, messages):
    assert store.captures() == store.analyses() == store.evals() == store.costs() == store.recoveries() == []
    assert messages == []


# ---- freshness ------------------------------------------------------------------------------------
def test_fresh_while_the_spec_hash_matches_and_newer_than_every_parent(store):
    parent = store.variant("m", "c")
    finished(parent.path)
    child = store.recovery("m", "c", "lora")
    finished(child.path, spec={"steps": 5})
    good = child.manifest()["spec_hash"]
    set_mtime(parent.manifest_file, 1_000)
    set_mtime(child.manifest_file, 2_000)
    assert child.is_fresh(good, [parent])
    assert not child.is_fresh("other-hash", [parent])  # settings changed
    set_mtime(parent.manifest_file, 3_000)
    assert not child.is_fresh(good, [parent])  # parent rebuilt after the child
    set_mtime(parent.manifest_file, 2_000)
    assert not child.is_fresh(good, [parent])  # same time is not newer
    set_mtime(parent.manifest_file, 1_000)
    assert not child.is_fresh(good, [parent, store.variant("m", "missing")])  # a missing parent counts as newest
    write_json_atomic(child.manifest_file, {**child.manifest(), "status": "running"})
    assert not child.is_fresh(good, [parent])  # unfinished
    assert not store.recovery("m", "c", "idp").is_fresh(good)  # absent


def test_a_damaged_parent_makes_freshness_its_damaged_error(store):
    parent, child = store.variant("m", "c"), store.cost("m", "c")
    finished(parent.path)
    child.write({"manifest": build_manifest("costs", "s")})
    parent.manifest_file.write_text("{")
    with pytest.raises(ProbeError, match="compressed variant m/c is damaged"):
        child.is_fresh(child.manifest()["spec_hash"], [parent])


def test_a_file_artifact_is_fresh_against_folder_parents(store):
    parent, child = store.capture("m", "r"), store.cost("m", "c")
    finished(parent.path)
    child.write({"manifest": build_manifest("costs", "s")})
    set_mtime(parent.manifest_file, 1_000)
    assert child.is_fresh(child.manifest()["spec_hash"], [parent])
    set_mtime(child.path, 500)
    assert not child.is_fresh(child.manifest()["spec_hash"], [parent])


# ---- locks ----------------------------------------------------------------------------------------
HOLDER = """
import sys
from probe.store import ArtifactStore
handle = ArtifactStore(sys.argv[1]).variant("m", "c")
with handle.writer() as tmp:
    (tmp / "half").write_text("x")
    print("holding", flush=True)
    sys.stdin.readline()
"""


def start_holder(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_the_lock_holds_the_writers_pid_is_reentrant_in_its_process_and_is_released(store, messages):
    handle = store.variant("m", "c")
    with handle.lock():
        assert handle.lock_file.read_text() == str(os.getpid())
        with handle.lock(), handle.writer() as tmp:  # a stage holds it and its writer takes it again
            (tmp / "manifest.json").write_text("{}")
        assert handle.lock_file.read_text() == str(os.getpid())  # still held by the outer block
    assert not handle.lock_file.exists() and messages == []
    with handle.lock():  # free again
        pass


def test_a_live_writer_is_refused_and_a_dead_ones_lock_and_temp_are_taken_over(store, messages):
    handle = store.variant("m", "c")
    holder = start_holder(store.root)
    try:
        with pytest.raises(ProbeError, match=rf"being written by process {holder.pid} "), handle.writer():
            pass
        assert handle.temp_path(holder.pid).is_dir()  # a live writer's temporary folder is left alone
    finally:
        holder.kill()
        holder.wait()
    assert handle.lock_file.read_text() == str(holder.pid) and handle.temp_path(holder.pid).is_dir()
    with handle.writer() as tmp:
        (tmp / "whole").write_text("y")
    assert (handle.path / "whole").read_text() == "y"
    assert not handle.temp_path(holder.pid).exists() and not handle.lock_file.exists()
    assert any(f"stale lock of compressed variant m/c: process {holder.pid}" in m for m in messages)
    assert any(f"left unfinished by process {holder.pid}" in m for m in messages)


def test_temporary_folders_of_dead_writers_are_removed_on_the_next_write(store, messages):
    handle = store.capture("m", "r")
    handle.path.parent.mkdir(parents=True)
    dead, live = handle.temp_path(DEAD_PID), handle.temp_path(os.getppid())
    other = handle.path.with_name(f".other.tmp-{DEAD_PID}")
    for folder in (dead, live, other):
        folder.mkdir()
    with handle.lock():
        pass
    assert not dead.exists() and live.exists() and other.exists()  # only this artifact's, only dead writers'
    assert messages == [f"removed {dead}, left unfinished by process {DEAD_PID} that is no longer running"]


# ---- atomic writers -------------------------------------------------------------------------------
def test_the_writer_publishes_only_a_complete_folder(store):
    handle = store.analysis("a")
    with pytest.raises(RuntimeError), handle.writer() as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert not handle.exists() and not handle.path.parent.exists()  # no temporary folder, lock or empty folder left
    with handle.writer() as tmp:
        finished(tmp)
    assert handle.manifest() is not None
    with pytest.raises(ProbeError, match=r"analysis a already exists at .*: rebuild it with `probe analyze --name a "
                                         r"--force`"), handle.writer() as tmp:
        (tmp / "new").write_text("x")
    assert not (handle.path / "new").exists()


def test_force_overwrites_a_damaged_artifact(store):
    handle = store.variant("m", "c")
    handle.path.mkdir(parents=True)
    handle.manifest_file.write_text("{")
    with handle.writer(overwrite=True) as tmp:
        finished(tmp)
    assert handle.manifest()["status"] == "complete"
    assert sorted(p.name for p in handle.path.parent.iterdir()) == ["c"]


# ---- names ------------------------------------------------------------------------------------------
HOSTILE = ["../../x", "a/b", ".hidden", "[/bold]", "", "x" * 300, "..", ".", "x\0y", "..\\x", "-flag", "a b", None]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_for_every_handle(store, name):
    makers = [
        lambda n: store.variant("m", n),  # compression label
        lambda n: store.recovery("m", "c", n),
        lambda n: store.capture("m", n),  # run name
        lambda n: store.experiment_log(n),  # experiment name
        lambda n: store.analysis(n),  # analysis name
        lambda n: store.model(n),
        lambda n: store.cost(n, "c"),
        lambda n: store.eval("m", "original", None, n),  # probe set name
        lambda n: store.analysis("a").figure_file(n),
    ]
    for make in makers:
        with pytest.raises(ProbeError, match=r"^refused .*: use letters, digits and \. _ \+ -"):
            make(name)


def test_longest_name_is_accepted():
    assert check_name("a" * MAX_NAME) and check_name("gptq-w3g64_v1.2+x")


def test_a_symlink_out_of_the_root_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "captures/m").mkdir(parents=True)
    (store.root / "captures/m/evil").symlink_to(outside)
    with pytest.raises(ProbeError, match=r"refused captures/m/evil: it resolves to .*outside, outside the artifacts"):
        _ = store.capture("m", "evil").path
    (store.root / "variants").mkdir()
    (store.root / "variants/m").symlink_to(outside)
    with pytest.raises(ProbeError, match="outside the artifacts folder"):
        _ = store.variant("m", "c").path
    (store.root / "captures/m/inner").symlink_to(store.root / "captures/m/..")  # stays inside: fine
    assert store.capture("m", "inner").path == store.root / "captures/m/inner"


def test_a_model_folder_may_be_a_shared_link(store, tmp_path):
    shared = finished(tmp_path / "shared-model")
    (store.root / "models").mkdir(parents=True)
    (store.root / "models/smol").symlink_to(shared)
    assert store.model("smol").manifest()["status"] == "complete"


def test_listing_warns_about_an_escaping_link(store, messages, tmp_path):
    finished(tmp_path / "outside")
    (store.root / "analysis").mkdir(parents=True)
    (store.root / "analysis/evil").symlink_to(tmp_path / "outside")
    assert store.analyses() == []
    assert len(messages) == 1 and "outside the artifacts folder" in messages[0]


# ---- cached reads, imports ------------------------------------------------------------------------
def test_a_cached_store_rereads_only_a_changed_file(tmp_path):
    from probe.store import clear_read_cache

    store = ArtifactStore(tmp_path, cached=True)
    handle = store.cost("m", "c")
    handle.write({"rows": [1], "manifest": build_manifest("costs", "s")})
    first = handle.read()
    assert handle.read() is first
    handle.write({"rows": [1, 2], "manifest": build_manifest("costs", "s")})
    second = handle.read()
    assert second["rows"] == [1, 2] and handle.read() is second
    clear_read_cache()
    assert handle.read() == second and handle.read() is not second


def test_the_store_imports_neither_torch_nor_transformers():
    code = "import sys, probe.store; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_the_dashboard_lists_skip_damaged_artifacts_with_a_warning(tmp_path, capsys):
    from dashboards import data

    store = ArtifactStore(tmp_path)
    store.cost("m", "c").write({"compression": "c", "rows": [{"variant": "original"}],
                                "manifest": build_manifest("costs", "s")})
    (tmp_path / "costs/m/d.json").write_text('{"rows": [')
    finished(tmp_path / "captures/m/good", variant="original")
    (tmp_path / "captures/m/bad").mkdir()
    (tmp_path / "captures/m/bad/manifest.json").write_text("")
    finished(tmp_path / "variants/m/c/recover/lora")
    (tmp_path / "variants/m/c/recover/idp").mkdir()
    (tmp_path / "variants/m/c/recover/idp/manifest.json").write_text("{")
    data.clear_caches()
    assert [(r["compression"], r["variant"]) for r in data.cost_rows(tmp_path)] == [("c", "original")]
    assert [r["run"] for r in data.capture_rows(tmp_path)] == ["good"]
    assert [r["method"] for r in data.recovery_rows(tmp_path)] == ["lora"]
    err = capsys.readouterr().err
    for what in ("cost table m/d", "capture m/bad", "recovery m/c/idp"):
        assert f"warning: skipped: {what} is damaged" in err


# ---- stages writing through the store ----------------------------------------------------------------
def test_compress_reports_a_damaged_variant_and_force_rebuilds_it(artifacts):
    from probe.compress import build_spec, compress

    spec = build_spec("tiny-llama", "mag50", n_calibration=2, seq_len=16)
    variant = ArtifactStore.default().variant("tiny-llama", "mag50")
    variant.path.mkdir(parents=True)
    variant.manifest_file.write_text('{"status": "comp')
    with pytest.raises(ProbeError, match=r"^compressed variant tiny-llama/mag50 is damaged \(manifest.json is not "
                                         r"valid JSON.*\): rebuild it with `probe compress --model tiny-llama "
                                         r"--method mag50 --force`$"):
        compress(spec, evaluate=False)
    assert compress(spec, evaluate=False, force=True) == variant.path
    assert variant.is_fresh(variant.manifest()["spec_hash"])
    assert sorted(p.name for p in variant.path.parent.iterdir()) == ["mag50"]  # no temp, no lock left


def test_a_truncated_weights_file_is_damaged_before_loading(artifacts):
    from probe.compress import build_spec, compress
    from probe.config import ModelSpec
    from probe.runtime.spec import VariantSpec
    from probe.runtime.variant import load_variant

    variant = ArtifactStore.default().variant("tiny-llama", "mag50")
    compress(build_spec("tiny-llama", "mag50", n_calibration=2, seq_len=16), evaluate=False)
    variant.check_weights()
    weights = variant.path / "model.safetensors"
    full = weights.read_bytes()
    weights.write_bytes(full[:-100])
    spec = VariantSpec(ModelSpec("tiny-llama"), "compressed", "mag50")
    with pytest.raises(ProbeError, match=rf"^compressed variant tiny-llama/mag50 is damaged \(model.safetensors is "
                                         rf"truncated \({len(full) - 100} bytes, its header says {len(full)}\)\): "
                                         rf"rebuild it with `probe compress --model tiny-llama --method mag50 "
                                         rf"--force`$"):
        load_variant(spec)


@pytest.mark.parametrize(("cut", "why"), [(3, r"is truncated \(3 bytes, no header\)"),
                                          (20, r"is truncated \(20 bytes, its header alone needs \d+\)"),
                                          (None, "has a corrupt header")])
def test_safetensors_problems_are_named(store, cut, why):
    import numpy as np
    from safetensors.numpy import save_file

    handle = store.recovery("m", "c", "lora")
    file = handle.path / "adapter" / "adapter_model.safetensors"
    file.parent.mkdir(parents=True)
    save_file({"w": np.ones((4, 4), np.float32)}, str(file))
    handle.check_weights()
    data = file.read_bytes()
    file.write_bytes(data[:cut] if cut is not None else data[:8] + b"{" * (len(data) - 8))
    with pytest.raises(ProbeError, match=rf"^recovery m/c/lora is damaged \(adapter/adapter_model.safetensors {why}"):
        handle.check_weights()
