"""`probe compress`: load → calibrate → compress → bake → report → save a dense HF variant.

The variant folder ``artifacts/variants/<model>/<preset-or-hash>/`` is written through the
store's atomic writer (:meth:`probe.store.FolderArtifact.writer`) with ``manifest.json`` last, so an
interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import contextlib
import copy
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, CompressedTensorsConfig

from probe.artifacts import MANIFEST, build_manifest, spec_hash, write_json_atomic
from probe.compress.bake import bake_quantized, plain_copy
from probe.compress.llmc import hessian_errors, quantize_recipe, run_oneshot, sparsify_recipe
from probe.compress.report import (
    knowledge_and_perplexity,
    layer_sparsity,
    overall_sparsity,
    report_table,
    streamed_errors,
)
from probe.compress.simple import magnitude_prune
from probe.compress.spec import CompressSpec, check_against_model, target_linears
from probe.config import ModelSpec
from probe.corpus import filter_probe_leaks, general_corpus, load_text, refuse_probe_leaks
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.models.load import LoadedModel, check_weight_format, load_model, preflight
from probe.models.registry import REGISTRY
from probe.progress import console, status
from probe.store import ArtifactStore, VariantArtifact, model_key


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calibration_texts(spec: CompressSpec, loaded: LoadedModel | None) -> tuple[list[str], dict]:
    """The calibration texts and a description for the manifest; user text with eval probes is refused."""
    probes = load_probes("builtin")
    if spec.calibration:
        texts = load_text(spec.calibration)
        refuse_probe_leaks(texts, probes, f"--calibration {spec.calibration}")
        info = {"source": str(spec.calibration), "removed_probe_leaks": 0}
    else:
        if loaded is None:
            return [], {}
        texts, removed = filter_probe_leaks(general_corpus(loaded, spec.n_calibration, spec.seq_len, spec.seed),
                                            probes)
        info = {"source": "self-generated", "removed_probe_leaks": removed}
    texts = texts[:spec.n_calibration]
    return texts, {**info, "n_texts": len(texts), "hash": spec_hash(texts, 16)}


def _ensure_folder(loaded: LoadedModel, workdir: Path) -> None:
    """llmcompressor on CPU wants the model to come from a folder with config.json."""
    if loaded.path is not None:
        return
    loaded.model.save_pretrained(workdir)
    loaded.tokenizer.save_pretrained(workdir)
    loaded.model.config._name_or_path = str(workdir)
    loaded.model.name_or_path = str(workdir)


def _apply(spec: CompressSpec, loaded: LoadedModel, texts: list[str]) -> tuple[torch.nn.Module, dict]:
    """Compress ``loaded.model`` in place and return a plain dense copy plus stats."""
    model, layers = loaded.model, target_linears(loaded.model, spec)
    stats: dict = {"oneshot_s": 0.0}
    masks = None
    with tempfile.TemporaryDirectory(prefix="probe-compress-") as work:
        if spec.sparsifier or spec.quantizer in ("gptq", "awq", "rtn"):
            _ensure_folder(loaded, Path(work))
        if spec.sparsifier == "magnitude":
            with status("Magnitude pruning"):
                masks = magnitude_prune(layers, spec.sparsity, spec.pattern)
        elif spec.sparsifier == "sparsegpt":
            with status(f"SparseGPT on {len(texts)} calibration texts"):
                stats["oneshot_s"] += run_oneshot(model, loaded.tokenizer, texts, sparsify_recipe(spec), spec)
            masks = {n: m.weight.detach() != 0 for n, m in layers.items()}
        if spec.quantizer:
            with status(f"{spec.quantizer.upper()} {spec.bits}-bit on {len(texts)} calibration texts"):
                stats["oneshot_s"] += run_oneshot(model, loaded.tokenizer, texts, quantize_recipe(spec), spec)
    t = time.perf_counter()
    bake = bake_quantized(model, masks) if spec.quantizer else None
    plain = plain_copy(model)
    stats["bake_s"] = time.perf_counter() - t
    stats["bake"] = None if bake is None else {"n_quantized": bake.n_quantized, "max_grid_error": bake.max_grid_error}
    return plain, stats


def _load_compressed_tensors(path: Path, allow_pickle: bool = False) -> torch.nn.Module:
    """Decompress a compressed-tensors checkpoint folder (llmcompressor/vLLM) to a dense model."""
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ProbeError(f"--from {path} is not an HF model folder (no config.json): give a compressed-tensors folder")
    qcfg = json.loads(cfg.read_text()).get("quantization_config") or {}
    if qcfg.get("quant_method") != "compressed-tensors":
        raise ProbeError(f"--from {path} is not a compressed-tensors checkpoint (config.json has no "
                         f"quantization_config with quant_method compressed-tensors): give one saved by llmcompressor")
    check_weight_format(path, allow_pickle)
    with status(f"Decompressing {path.name}"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     use_safetensors=None if allow_pickle else True,
                                                     quantization_config=CompressedTensorsConfig(run_compressed=False))
        bake = bake_quantized(model)
    return plain_copy(model), {"oneshot_s": 0.0, "bake_s": 0.0, "bake": {"n_quantized": bake.n_quantized,
                                                                         "max_grid_error": bake.max_grid_error},
                               "quantization_config": qcfg}


def compress(spec: CompressSpec, *, device: str = "cpu", dtype: str = "float32", allow_pickle: bool = False,
             force: bool = False, evaluate: bool = True, rebuild_changed: bool = False) -> Path:
    """Build (or reuse) the variant described by ``spec``; returns its folder.

    ``evaluate=False`` skips perplexity and knowledge accuracy in the report (per-layer errors stay).
    A finished variant made with other settings is an error, or rebuilt with ``rebuild_changed``
    (experiment files: the file is the source of truth).
    """
    start = time.perf_counter()
    model_spec = ModelSpec(spec.model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    preflight(model_spec)
    if spec.calibration:
        load_text(spec.calibration)  # fail fast on a missing/empty file, before loading anything
    if spec.from_path and not Path(spec.from_path).is_dir():
        raise ProbeError(f"--from {spec.from_path} does not exist: give a compressed-tensors checkpoint folder")
    with status(f"Loading {spec.model}"):
        loaded = load_model(model_spec)
    entry = REGISTRY.get(spec.model)
    spec = check_against_model(spec, loaded.model, entry.group_size if entry else 128)
    variant = ArtifactStore.default().variant(model_key(spec.model), spec.label)
    with variant.lock():  # from the reuse check to the rename: a second `probe compress` of it is refused at once
        return _compress_locked(spec, variant, loaded, start, force=force, evaluate=evaluate,
                                rebuild_changed=rebuild_changed, allow_pickle=allow_pickle)


def _compress_locked(spec: CompressSpec, variant: VariantArtifact, loaded: LoadedModel, start: float, *, force: bool,
                     evaluate: bool, rebuild_changed: bool, allow_pickle: bool) -> Path:
    """Reuse the variant while fresh, else calibrate, compress, report and save it (holding its lock)."""
    final = variant.path
    stored_model = ArtifactStore.default().model(model_key(spec.model))  # absent for random or local models
    parents = [stored_model] if stored_model.manifest() is not None else []
    if not force and variant.is_fresh(spec_hash(spec), parents):
        console.print(f"Reusing the finished variant {final} (pass --force to rebuild)")
        return final
    existing = None if force else variant.manifest()  # --force overwrites even a damaged variant
    if existing is not None:
        if existing.get("spec_hash") != spec_hash(spec) and not rebuild_changed:
            raise ProbeError(f"variant {final} exists with other settings (e.g. calibration): pass --force to "
                             f"rebuild it, or change a method setting to get a new folder")
        why = "settings" if existing.get("spec_hash") != spec_hash(spec) else "base model"
        console.print(f"The {why} of {final} changed: rebuilding it")
        force = True
    layers = target_linears(loaded.model, spec)
    original = {n: m.weight.detach() for n, m in layers.items()}  # ``loaded`` stays intact: a clone is compressed
    # an imported checkpoint needs no calibration (and then gets no per-layer reconstruction error)
    texts, calib = calibration_texts(spec, loaded) if not spec.from_path else ([], {"source": None})
    reuse = bool(texts) and _last_pass_builds_hessians(spec)
    load_s = time.perf_counter() - start
    with variant.writer(overwrite=force) as tmp:
        errors: dict[str, float] = {}
        if spec.from_path:
            plain, stats = _load_compressed_tensors(Path(spec.from_path), allow_pickle)
        else:
            copy_ = replace(loaded, model=_clone(loaded))  # the original stays intact for the report
            with hessian_errors(copy_.model, original) if reuse else contextlib.nullcontext({}) as errors:
                plain, stats = _apply(spec, copy_, texts)
            del copy_  # ``plain`` holds its weights: two models alive (original and compressed), not three
        measured = bool(texts) and spec.quantizer != "awq"
        if measured and not reuse:
            errors = streamed_errors(loaded.model, layers, plain, _calibration_ids(loaded, texts, spec.seq_len))
        names = list(layers)
        report = {
            "label": spec.label,
            "sparsity": overall_sparsity(plain, names),
            "effective_bits": spec.effective_bits(),
            "layer_sparsity": layer_sparsity(plain, names),
            "reconstruction_error": {n: errors[n] for n in names if n in errors} if measured else {},
            "reconstruction_inputs": None if not measured
            else "as compressed (earlier layers compressed)" if reuse else "original",
        }
        if evaluate:
            report["knowledge"] = knowledge_and_perplexity(loaded, plain, spec.label)
        t = time.perf_counter()
        with status(f"Saving {final}"):
            plain.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
        save_s = time.perf_counter() - t
        write_json_atomic(tmp / "report.json", report)
        manifest = build_manifest(
            "variant", spec, {"model": loaded.model_hash}, label=spec.label, method=spec.method,
            calibration=calib, achieved_sparsity=report["sparsity"], effective_bits=spec.effective_bits(),
            wall_time_s=time.perf_counter() - start, peak_memory_mb=_peak_rss_mb(),
            timings={"load_calibrate_s": load_s, "oneshot_s": stats["oneshot_s"], "bake_s": stats["bake_s"],
                     "save_s": save_s}, bake=stats["bake"], source=stats.get("quantization_config"),
        )
        write_json_atomic(tmp / MANIFEST, manifest)
    console.print(report_table(report))
    console.print(f"Saved {final}")
    return final


def _last_pass_builds_hessians(spec: CompressSpec) -> bool:
    """GPTQ alone or SparseGPT alone: the one llmcompressor pass builds each layer's input Hessian and writes the
    layer's final weights, so the report takes the error from it (:func:`probe.compress.llmc.hessian_errors`)
    instead of a forward pass of its own. With a sparsifier and a quantizer the masks are re-applied after
    baking, so the final weights come later."""
    return (spec.quantizer == "gptq" and not spec.sparsifier) or (spec.sparsifier == "sparsegpt"
                                                                  and not spec.quantizer)


def _calibration_ids(loaded: LoadedModel, texts: list[str], seq_len: int) -> list[torch.Tensor]:
    """The calibration texts as token ids, cut at ``seq_len``."""
    return [loaded.tokenizer(t, return_tensors="pt", truncation=True, max_length=seq_len).input_ids.to(loaded.device)
            for t in texts]


def _clone(loaded: LoadedModel) -> torch.nn.Module:
    """An independent copy of the model to compress (the original stays intact for the report)."""
    return copy.deepcopy(loaded.model)
