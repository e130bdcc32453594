"""A model's size from its ``config.json`` alone: parameters, layers, hidden size, heads, vocabulary.

The config comes from the experiment's ``[model] path``, the registry's local folder or variable,
the store's converted model, the tiny models' builders, or the configs shipped here
(``probe/plan/configs``: LLaMA-7B's public ``config.json``), so planning never needs the weights or
the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.registry import REGISTRY
from probe.models.tiny import tiny_config, tiny_opt_config, tiny_tokenizer
from probe.store import ArtifactStore, model_key

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model (``params`` counted from the config's matrices, as HF builds them)."""

    architecture: str
    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    checkpoint_dtype: str
    source: str

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def shape_of(cfg: dict, source: str) -> ModelShape:
    """Parameters and sizes of a Llama-like or OPT config."""
    arch = (cfg.get("architectures") or [cfg.get("model_type", "?")])[0]
    h, n_layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    heads = int(cfg["num_attention_heads"])
    tied = bool(cfg.get("tie_word_embeddings", cfg.get("model_type") == "opt"))
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    if cfg.get("model_type") == "opt" or arch.startswith("OPT"):
        ffn = int(cfg["ffn_dim"])
        proj = int(cfg.get("word_embed_proj_dim", h))
        per_layer = 4 * (h * h + h) + 2 * h * ffn + ffn + h + 4 * h  # q,k,v,o (+bias), fc1/fc2 (+bias), 2 LN
        params = vocab * proj + (int(cfg.get("max_position_embeddings", 2048)) + 2) * h + n_layers * per_layer
        params += 2 * h + (0 if proj == h else 2 * h * proj) + (0 if tied else vocab * proj)
        return ModelShape(arch, params, n_layers, h, heads, heads, ffn, vocab, dtype, source)
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    inter = int(cfg["intermediate_size"])
    per_layer = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * inter + 2 * h
    params = vocab * h * (1 if tied else 2) + n_layers * per_layer + h
    return ModelShape(arch, params, n_layers, h, heads, kv, inter, vocab, dtype, source)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProbeError(f"cannot read the model config {path}: {exc}") from None


def model_shape(spec: ModelSpec) -> ModelShape:
    """The shape of ``spec``'s model from the first local config found (see the module docstring)."""
    entry = REGISTRY.get(spec.name)
    folders = [Path(spec.model_path)] if spec.model_path else []
    if entry is not None and entry.env_var and os.environ.get(entry.env_var):
        folders.append(Path(os.environ[entry.env_var]))
    if entry is None:
        folders.append(Path(spec.name))
    folders.append(ArtifactStore.default().model(model_key(spec.name)).path)
    for folder in folders:
        if (folder / "config.json").is_file():
            return shape_of(_read(folder / "config.json"), str(folder / "config.json"))
    if spec.name in ("tiny-llama", "tiny-opt"):
        build = tiny_config if spec.name == "tiny-llama" else tiny_opt_config
        return shape_of(build(len(tiny_tokenizer())).to_dict(), f"probe.models.tiny ({spec.name})")
    shipped = CONFIGS / f"{spec.name}.json"
    if shipped.is_file():
        return shape_of(_read(shipped), f"{shipped.name} shipped with probe (the public config)")
    raise ProbeError(f"no config.json for {spec.name}: give [model] path (an HF folder) or run `probe eval "
                     f"--model {spec.name}` once so the store holds the converted model")
