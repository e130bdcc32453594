"""Bake a compressed model into a plain dense HF model: ordinary float weights, no wrappers.

After llmcompressor, quantized linears carry ``weight_scale``/``weight_zero_point`` and a
forward that fake-quantizes. After GPTQ the weight is already dequantized; after RTN/AWQ it is
still the float weight and only the forward quantizes it. :func:`bake_quantized` applies the
fake-quant to every weight (a no-op for GPTQ up to float rounding), checks that each baked
weight lies on its grid (``W/scale + zero_point`` integral) *before* the scales are dropped,
and :func:`plain_copy` rebuilds a fresh model from the config with only the ordinary
parameters, so no quantization state can survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from probe.errors import ProbeError

GRID_TOL = 1e-4


@dataclass(frozen=True)
class BakeStats:
    n_quantized: int
    max_grid_error: float  # max |W/scale + zp - round(.)| over all baked weights


def _grid_coords(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None) -> torch.Tensor:
    """``w/scale + zp`` with per-group (or per-channel/tensor) scales broadcast over columns."""
    if scale.dim() == 2 and scale.shape[1] > 1:
        reps = w.shape[1] // scale.shape[1]
        scale = scale.repeat_interleave(reps, dim=1)
        zp = zp.repeat_interleave(reps, dim=1) if zp is not None else None
    return w / scale + (zp if zp is not None else 0)


@torch.no_grad()
def grid_error(module: torch.nn.Module) -> float:
    """Max distance of ``module.weight`` from its quantization grid."""
    zp = getattr(module, "weight_zero_point", None)
    q = _grid_coords(module.weight.double(), module.weight_scale.double(), zp.double() if zp is not None else None)
    return float((q - q.round()).abs().max())


@torch.no_grad()
def bake_quantized(model: torch.nn.Module, masks: dict[str, torch.Tensor] | None = None) -> BakeStats:
    """Write each quantized weight's fake-quantized value into ``weight`` and check it is on-grid.

    ``masks`` (keep-masks by layer name, from a sparsifier) are re-applied first: zero is on
    every grid with an integer zero point, so masked weights stay on-grid.
    """
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize  # lazy: start-up time

    n, worst = 0, 0.0
    for name, mod in model.named_modules():
        scheme = getattr(mod, "quantization_scheme", None)
        if scheme is None or scheme.weights is None or not hasattr(mod, "weight_scale"):
            continue
        mod.weight.data.copy_(forward_quantize(mod, mod.weight.data, "weight", scheme.weights))
        if masks is not None and name in masks:
            mod.weight.data.mul_(masks[name])
        err = grid_error(mod)
        if err > GRID_TOL:
            raise ProbeError(f"baked weights of {name} are off their quantization grid by {err:.2e}: "
                             f"this is a bug, report it with the command you ran")
        n, worst = n + 1, max(worst, err)
    return BakeStats(n, worst)


@torch.no_grad()
def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh HF model (same config minus ``quantization_config``) holding ``model``'s dense weights.

    The new model is built on the meta device and takes ``model``'s weight tensors as they are (no copy), so
    the two share storage: dropping ``model`` afterwards leaves one model's weights in memory, not two.
    Buffers outside the state dict (rotary frequencies) come from ``model`` too.
    """
    cfg = model.config.__class__.from_dict({k: v for k, v in model.config.to_dict().items()
                                            if k != "quantization_config"})
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=cfg._attn_implementation)
    state = {k: v for k, v in model.state_dict().items() if k in plain.state_dict()}
    missing, _ = plain.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing:
        raise ProbeError(f"baked model lacks {len(missing)} weights (e.g. {missing[0]}): this is a bug, report it")
    plain.tie_weights()
    source = dict(model.named_buffers())
    for name, buf in list(plain.named_buffers()):
        if buf.device.type == "meta":
            owner, _, attr = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(attr, source[name].clone(), persistent=False)
    left = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ProbeError(f"baked model left {left[0]} unset: this is a bug, report it")
    return plain.eval()
