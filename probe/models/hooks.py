"""Hook names the toolkit captures (TransformerLens vocabulary), importable without torch.

``L`` is the layer: ``blocks.L.hook_resid_post`` is the residual stream leaving block L, and so
on (the full table is in :mod:`probe.models.bridge`). Reading captures needs the names but not
the model, so they live here, below the bridge.
"""

from __future__ import annotations

RESID_POST = "blocks.{layer}.hook_resid_post"
ATTN_OUT = "blocks.{layer}.hook_attn_out"
MLP_OUT = "blocks.{layer}.hook_mlp_out"
PATTERN = "blocks.{layer}.attn.hook_pattern"
HOOKS = {"resid_post": RESID_POST, "attn_out": ATTN_OUT, "mlp_out": MLP_OUT, "pattern": PATTERN}


def hook_names(kind: str, n_layers: int) -> list[str]:
    """Hook names of one kind (``resid_post``, ``attn_out``, ``mlp_out``, ``pattern``) per layer."""
    return [HOOKS[kind].format(layer=layer) for layer in range(n_layers)]
