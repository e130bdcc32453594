"""Compression on the tiny random Llama: grids, sparsity patterns, baking, saving, atomicity, import."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import replace

import llmcompressor
import pytest
import torch
from transformers import AutoModelForCausalLM

from probe.compress import build_spec, compress
from probe.compress.bake import bake_quantized, grid_error, plain_copy
from probe.compress.llmc import hessian_errors, quantize_recipe, run_oneshot
from probe.compress.run import _apply, _ensure_folder, calibration_texts
from probe.compress.simple import magnitude_mask
from probe.compress.spec import check_against_model, target_linears
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.load import load_model

TEXTS = [f"Sample {i}: the quick brown fox jumps over the lazy dog while it rains in town." for i in range(8)]


def _spec(method: str, **kw):
    return check_against_model(build_spec("tiny-llama", method, n_calibration=8, seq_len=32, **kw),
                               load_model(ModelSpec("tiny-llama")).model, 32)


def test_magnitude_mask_exact_counts_and_pattern():
    w = torch.randn(16, 64)
    keep = magnitude_mask(w, sparsity=0.3)
    assert int((~keep).sum()) == round(0.3 * w.numel())
    assert w.abs()[~keep].max() <= w.abs()[keep].min()
    keep24 = magnitude_mask(w, pattern="2:4")
    assert (keep24.reshape(16, -1, 4).sum(-1) == 2).all()
    assert (magnitude_mask(torch.zeros(4, 8), pattern="1:4").reshape(4, -1, 4).sum(-1) == 1).all()  # ties


def test_rtn_weights_are_off_grid_until_baked_and_gptq_weights_on_grid_already(tmp_path):
    for method, on_grid_before in (("rtn3", False), ("gptq3", True)):
        loaded = load_model(ModelSpec("tiny-llama"))
        spec = _spec(method)
        _ensure_folder(loaded, tmp_path / method)
        run_oneshot(loaded.model, loaded.tokenizer, TEXTS, quantize_recipe(spec), spec)
        layer = loaded.model.model.layers[1].mlp.down_proj
        assert (grid_error(layer) < 1e-4) == on_grid_before, method
        stats = bake_quantized(loaded.model)
        assert stats.n_quantized == 28 and stats.max_grid_error < 1e-4
        assert grid_error(layer) < 1e-4
        plain = plain_copy(loaded.model)
        assert not any(k.endswith(("_scale", "_zero_point")) for k in plain.state_dict())
        assert not hasattr(plain.model.layers[1].mlp.down_proj, "quantization_scheme")


@pytest.mark.parametrize(("method", "check"), [
    ("sparsegpt50", "unstructured"), ("sparsegpt24", "2:4"), ("mag50", "unstructured"),
    ("sparse50+gptq4", "unstructured"),
])
def test_sparsity_is_as_requested_and_embeddings_untouched(method, check):
    loaded = load_model(ModelSpec("tiny-llama"))
    emb = loaded.model.model.embed_tokens.weight.detach().clone()
    norm = loaded.model.model.norm.weight.detach().clone()
    spec = _spec(method)
    plain, stats = _apply(spec, loaded, TEXTS)
    for name, layer in target_linears(plain, spec).items():
        w = layer.weight.detach()
        if check == "2:4":
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
        elif spec.quantizer:  # the mask is kept; rounding to zero on the grid may add a few zeros
            assert 0.49 < float((w == 0).float().mean()) < 0.6, name
        else:
            assert abs(float((w == 0).float().mean()) - 0.5) < 0.01, name
    assert torch.equal(plain.model.embed_tokens.weight, emb) and torch.equal(plain.lm_head.weight, emb)
    assert torch.equal(plain.model.norm.weight, norm)
    if spec.quantizer:
        assert stats["bake"]["max_grid_error"] < 1e-4


def test_saved_variant_reloads_with_identical_logits(tmp_path):
    loaded = load_model(ModelSpec("tiny-llama"))
    plain, _ = _apply(_spec("gptq3"), loaded, TEXTS)
    plain.save_pretrained(tmp_path / "v")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "v", dtype=torch.float32).eval()
    ids = loaded.tokenizer(TEXTS[:2], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, again(ids).logits)
    original = load_model(ModelSpec("tiny-llama")).model
    with torch.no_grad():
        assert not torch.equal(original(ids).logits, again(ids).logits)


def test_compress_writes_manifest_report_and_is_reused(artifacts, capsys):
    spec = build_spec("tiny-llama", "gptq3", n_calibration=4, seq_len=32)
    path = compress(spec)
    assert path == artifacts / "variants" / "tiny-llama" / "gptq3"
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("method", "spec", "calibration", "achieved_sparsity", "effective_bits", "wall_time_s",
                "peak_memory_mb", "versions", "parents"):
        assert key in manifest, key
    assert manifest["spec"]["group_size"] == 32 and manifest["calibration"]["source"] == "self-generated"
    report = json.loads((path / "report.json").read_text())
    assert len(report["reconstruction_error"]) == 28 and "facts_forgotten" in report["knowledge"]
    capsys.readouterr()
    assert compress(spec) == path
    assert "Reusing" in capsys.readouterr().err
    with pytest.raises(ProbeError, match="other settings"):
        compress(build_spec("tiny-llama", "gptq3", n_calibration=5, seq_len=32))


def test_interrupted_run_leaves_no_finished_folder(artifacts, monkeypatch):
    import probe.compress.run as run

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "knowledge_and_perplexity", boom)
    with pytest.raises(KeyboardInterrupt):
        compress(build_spec("tiny-llama", "mag50", n_calibration=2, seq_len=16))
    folder = artifacts / "variants" / "tiny-llama"
    assert not (folder / "mag50").exists()
    assert not list(folder.glob("*/manifest.json")) and not list(folder.glob(".*"))


def test_calibration_with_eval_probe_prompt_is_refused(artifacts, tmp_path):
    from probe.knowledge.loaders import load_probes

    prompt = load_probes("builtin").split("eval").facts[0].prompt
    calib = tmp_path / "calib.txt"
    calib.write_text(f"A harmless paragraph.\n\nSome text where {prompt.upper()}  something.\n")
    spec = build_spec("tiny-llama", "gptq3", calibration=str(calib))
    with pytest.raises(ProbeError, match="eval-split probe prompts"):
        calibration_texts(spec, None)
    with pytest.raises(ProbeError, match="eval-split probe prompts"):
        compress(spec)
    assert not (artifacts / "variants").exists()


def test_import_compressed_tensors_checkpoint(artifacts, tmp_path):
    loaded = load_model(ModelSpec("tiny-llama"))
    spec = _spec("gptq4")
    _ensure_folder(loaded, tmp_path / "src")
    run_oneshot(loaded.model, loaded.tokenizer, TEXTS, quantize_recipe(spec), spec)
    expected = {k: v.clone() for k, v in plain_copy(loaded.model).state_dict().items()}
    loaded.model.save_pretrained(tmp_path / "ct", save_compressed=True)
    loaded.tokenizer.save_pretrained(tmp_path / "ct")
    assert "quantization_config" in json.loads((tmp_path / "ct" / "config.json").read_text())
    path = compress(build_spec("tiny-llama", "gptq4", from_path=str(tmp_path / "ct")))
    assert path.name.startswith("gptq-")  # an import never takes a preset's name
    got = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ProbeError, match="not a compressed-tensors checkpoint"):
        compress(build_spec("tiny-llama", "gptq3", from_path=str(path)), force=True)


def _reference_errors(loaded, layers, compressed, batches) -> dict[str, float]:
    """The float64 Gram-matrix form ``tr(ΔW G ΔWᵀ) / tr(W G Wᵀ)``, ``G`` summed from hooked inputs."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            seen[name] = seen.get(name, 0) + x.T @ x
        return hook

    handles = [m.register_forward_pre_hook(keep(n)) for n, m in layers.items()]
    with torch.no_grad():
        for ids in batches:
            loaded.model(input_ids=ids)
    for h in handles:
        h.remove()
    mods = dict(compressed.named_modules())
    out = {}
    for name, g in seen.items():
        w = layers[name].weight.detach().double()
        delta = mods[name].weight.detach().double() - w
        out[name] = float(((delta @ g) * delta).sum() / ((w @ g) * w).sum())
    return out


def test_streamed_errors_equal_the_gram_matrix_form_on_the_original_inputs(tmp_path):
    from probe.compress.report import streamed_errors

    loaded = load_model(ModelSpec("tiny-llama", dtype="float32"))
    spec = _spec("rtn3")
    layers = target_linears(loaded.model, spec)
    batches = [loaded.tokenizer(t, return_tensors="pt").input_ids for t in TEXTS[:4]]
    _ensure_folder(loaded, tmp_path)
    plain, _ = _apply(spec, replace(loaded, model=copy.deepcopy(loaded.model)), TEXTS)
    got = streamed_errors(loaded.model, layers, plain, batches)
    want = _reference_errors(loaded, layers, plain, batches)
    assert set(got) == set(layers) and all(v > 0 for v in got.values())
    for name in layers:
        assert got[name] == pytest.approx(want[name], rel=1e-4), name
    assert streamed_errors(loaded.model, layers, loaded.model, batches) == dict.fromkeys(layers, 0.0)


@pytest.mark.parametrize("method", ["gptq3", "sparsegpt50"])
def test_hessian_errors_give_the_reports_errors_of_the_original_inputs(method, tmp_path, monkeypatch):
    """The report takes each layer's error from the Hessian llmcompressor built instead of a forward pass of its
    own over the calibration texts. Where both see the same inputs (every layer with llmcompressor's error
    propagation off; the first decoder layer always) the per-layer errors are the ones the original inputs
    give; with propagation on (the default), later layers' inputs come from already-compressed layers and
    differ."""
    from probe.compress.report import streamed_errors

    oneshot = llmcompressor.oneshot
    for propagate in (False, True):
        monkeypatch.setattr(llmcompressor, "oneshot", functools.partial(oneshot, propagate_error=propagate))
        loaded = load_model(ModelSpec("tiny-llama", dtype="float32"))
        spec = _spec(method)
        layers = target_linears(loaded.model, spec)
        original = {n: m.weight.detach().clone() for n, m in layers.items()}
        _ensure_folder(loaded, tmp_path / f"{method}-{propagate}")
        compressed = replace(loaded, model=copy.deepcopy(loaded.model))
        with hessian_errors(compressed.model, original) as new:
            plain, _ = _apply(spec, compressed, TEXTS)
        ids = [loaded.tokenizer(t, return_tensors="pt", truncation=True, max_length=spec.seq_len).input_ids
               for t in TEXTS]
        old = streamed_errors(loaded.model, layers, plain, ids)
        assert set(new) == set(layers)
        for name in layers:
            same = not propagate or name.startswith("model.layers.0.")
            if same:
                assert new[name] == pytest.approx(old[name], rel=1e-4), (name, propagate)
        assert any(new[n] != pytest.approx(old[n], rel=1e-3) for n in layers if n.startswith("model.layers.1.")) \
            == propagate

