"""`probe recover` end to end on the tiny Llama with a fake compressed variant; bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from probe.artifacts import build_manifest
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.evaluation.run import EvalSpec, result_artifact, run_eval
from probe.models.tiny import build_tiny_llama, tiny_config
from probe.recover.registry import get_method
from probe.recover.run import recover
from probe.recover.spec import RecoverSpec
from probe.runtime.spec import VariantSpec, recovery_artifact, variant_artifact
from probe.runtime.variant import load_variant
from tests.cli_helpers import run_cli

TINY = ModelSpec("tiny-llama")


def make_tiny_variant(preset: str = "fake3", seed: int = 5) -> Path:
    """A 'compressed' tiny Llama: weights rounded to a coarse grid, saved like `probe compress` does."""
    model, tok = build_tiny_llama()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.copy_((p / 0.02).round() * 0.02)
    variant = variant_artifact(TINY, preset)
    with variant.writer(overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "manifest.json").write_text(json.dumps(build_manifest("variant", {"preset": preset, "seed": seed})))
    return variant.path


@pytest.fixture
def tiny_variant(artifacts) -> Path:
    return make_tiny_variant()


def fast(method: str, **kw) -> RecoverSpec:
    return RecoverSpec(model="tiny-llama", compression="fake3", method=method, fast=True, **kw)


@pytest.mark.parametrize("method", ["prompt", "prefix", "lora"])
def test_recover_saves_and_loads_as_variant(tiny_variant, method):
    folder = recover(fast(method, steps=3))
    assert folder == recovery_artifact(TINY, "fake3", method).path
    names = {p.name for p in folder.iterdir()}
    assert {"adapter", "manifest.json", "losses.json", "loss.png", "eval.json"} <= names
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((folder / "adapter").glob("*.bin"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spec"]["method"] == method and manifest["spec"]["steps"] == 3
    assert manifest["trainable_parameters"] > 0 and manifest["parents"]["compressed"]
    assert len(json.loads((folder / "losses.json").read_text())["losses"]) == 3
    ev = json.loads((folder / "eval.json").read_text())
    assert set(ev["top1"]) == {"original", "compressed", "recovered"}
    assert not list(folder.parent.glob(".*tmp*"))
    # the saved adapter loads as a variant and gives the logits it was evaluated with
    loaded = load_variant(VariantSpec(TINY, method, "fake3"))
    ids = loaded.base.tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    logits, past = loaded.logits_fn(ids, torch.ones_like(ids), use_cache=True)
    assert logits.shape[:2] == ids.shape and past is not None
    plain = load_variant(VariantSpec(TINY, "compressed", "fake3"))
    assert not torch.allclose(logits, plain.logits_fn(ids, torch.ones_like(ids))[0], atol=1e-4)


def test_recover_is_deterministic(tiny_variant):
    a = json.loads((recover(fast("prompt"), with_eval=False) / "losses.json").read_text())["losses"]
    b = json.loads((recover(fast("prompt"), force=True, with_eval=False) / "losses.json").read_text())["losses"]
    assert a == b


def test_recovery_is_reused_until_its_compressed_variant_is_rebuilt(tiny_variant, capsys):
    first = recover(fast("prompt", steps=2), with_eval=False)
    made = (first / "manifest.json").stat().st_mtime_ns
    recover(fast("prompt", steps=2), with_eval=False)
    assert "Reusing the finished recovery" in capsys.readouterr().err
    assert (first / "manifest.json").stat().st_mtime_ns == made
    later = made + 10**9  # the compressed variant's manifest is newer: what was trained on it is stale
    os.utime(tiny_variant / "manifest.json", ns=(later, later))
    recover(fast("prompt", steps=2), with_eval=False)
    assert "The compressed variant of" in " ".join(capsys.readouterr().err.split())
    assert (first / "manifest.json").stat().st_mtime_ns > made


LOCK_HOLDER = """
import sys
from probe.store import ArtifactStore
with ArtifactStore(sys.argv[1]).recovery("tiny-llama", "fake3", "prompt").lock():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_recovery_being_trained_elsewhere_is_refused_before_training(tiny_variant, capsys):
    root = recovery_artifact(TINY, "fake3", "prompt").store.root
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ProbeError, match=rf"is being written by process {holder.pid} "):
            recover(fast("prompt", steps=2), with_eval=False)
    finally:
        holder.communicate("")
    assert not re.search(r"step \d+/\d+", capsys.readouterr().err)  # refused at once, not after training
    assert not recovery_artifact(TINY, "fake3", "prompt").path.exists()


def test_missing_variant_names_compress_command(artifacts):
    with pytest.raises(ProbeError, match="probe compress --model tiny-llama --method fake3"):
        recover(fast("prompt"))


def test_missing_recovery_names_recover_command(tiny_variant):
    with pytest.raises(ProbeError, match="probe recover --model tiny-llama --compression fake3 --method lora"):
        load_variant(VariantSpec(TINY, "lora", "fake3"))


def test_adapter_from_another_base_is_refused(tiny_variant, tmp_path):
    saved = shutil.move(recover(fast("prompt"), with_eval=False).parent, tmp_path / "recover")
    make_tiny_variant(seed=6)  # the compressed variant is rebuilt; the old adapter is copied back in
    shutil.move(saved, tiny_variant / "recover")
    with pytest.raises(ProbeError, match="trained on another base model"):
        load_variant(VariantSpec(TINY, "prompt", "fake3"))


@pytest.mark.parametrize("method", ["prompt", "prefix", "lora"])
def test_adapter_with_wrong_shapes_is_one_line_error(tmp_path, method):
    impl = get_method(method)
    model, tok = build_tiny_llama()
    impl.save(impl.create(model, tok, fast(method)), tmp_path / "adapter")
    cfg = tiny_config(len(tok))
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 32, 64, 8  # another base model
    with pytest.raises(ProbeError, match="does not fit this model"):
        impl.load(LlamaForCausalLM(cfg), tmp_path / "adapter")


@pytest.mark.parametrize("kw, match", [
    ({"method": "dora"}, "unknown recovery method"),
    ({"steps": 0}, "--steps must be > 0"),
    ({"steps": -3}, "--steps must be > 0"),
    ({"lr": 0.0}, "--lr must be > 0"),
    ({"objective": "mse"}, "unknown --objective"),
    ({"train_data": "web"}, "unknown --train-data"),
])
def test_bad_spec(kw, match):
    with pytest.raises(ProbeError, match=match):
        RecoverSpec(**{"model": "tiny-llama", "compression": "fake3", **kw})


@pytest.mark.parametrize("content, match", [(b"", "contains no text"), (b"\x00\x01\x02binary", "binary"),
                                            (b"\xff\xfe\xfa", "not UTF-8")])
def test_bad_corpus_file_saves_nothing(tiny_variant, tmp_path, content, match):
    bad = tmp_path / "corpus.txt"
    bad.write_bytes(content)
    with pytest.raises(ProbeError, match=match):
        recover(fast("prompt", train_text=str(bad)))
    assert not (tiny_variant / "recover").exists()


def test_cli_bad_input_is_one_line_exit_2(artifacts):
    make_tiny_variant()
    base = ["recover", "--model", "tiny-llama", "--compression", "fake3"]
    for extra, match in ((["--method", "dora"], "unknown recovery method"), (["--steps", "0"], "--steps must be"),
                         (["--compression", "nope"], "probe compress --model tiny-llama --method nope")):
        res = run_cli(*base, *extra)
        assert res.code == 2, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], res.stderr
    assert not recovery_artifact(TINY, "fake3", "lora").path.parent.exists()


def test_saved_eval_is_reused_only_for_the_same_parents(tiny_variant):
    loaded = load_variant(VariantSpec(TINY, "compressed", "fake3"))
    spec = EvalSpec(variant=loaded.spec, relations=("capital",))
    first = run_eval(spec, loaded=loaded)
    path = result_artifact(first).path
    path.write_text(json.dumps({**json.loads(path.read_text()), "marker": 1}))
    assert run_eval(spec, loaded=loaded, reuse=True).get("marker") == 1
    loaded.parents = {**loaded.parents, "compressed": "other"}
    assert "marker" not in run_eval(spec, loaded=loaded, reuse=True)


def test_recover_sweeps_lr_trains_seeds_and_saves_curves(tiny_variant):
    """LoRA edits the base model in place: the sweep's and the extra seed's adapters must be discarded cleanly."""
    folder = recover(fast("lora", steps=4, lr_sweep=(1e-4, 1e-2), seeds=2, eval_every=2), with_eval=False)
    losses = json.loads((folder / "losses.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    sweep = manifest["lr_sweep"]["held_out"]
    assert set(sweep) == {"0.0001", "0.01"} and manifest["lr"] == float(min(sweep, key=sweep.get))
    curves = losses["curves"]
    assert curves["heldout"]["step"][0] == 0 and curves["heldout"]["kl"][0] == losses["held_out_before"]
    assert len(curves["train"]["kl"]) == manifest["stopped_step"] and manifest["tokens_seen"] > 0
    seeds = losses["seeds"]
    lo, hi = seeds["interval95"]
    assert seeds["n"] == 2 and lo <= seeds["mean"] <= hi and seeds["held_out_after"][0] == losses["held_out_after"]
    loaded = load_variant(VariantSpec(TINY, "lora", "fake3"))  # one adapter saved, loadable
    assert sum("lora_A" in n for n, _ in loaded.adapter.named_parameters()) > 0
