"""Hooked models: wrap a loaded causal LM in a TransformerLens 4.x ``TransformerBridge``.

No hub calls: the bridge is built from the in-memory module and its config
(``build_bridge_from_module``). Building rewrites the HF model's submodules in place, so give
each bridge its own model object (take state dicts first if you need the plain model too).

Hook names the toolkit uses (TransformerLens vocabulary; ``L`` is the layer):

=================================  ==============================================
``hook_embed``                     token embeddings ``[batch, pos, d_model]``
``blocks.L.hook_resid_pre``        residual stream entering block L
``blocks.L.hook_attn_out``         attention output added to the residual
``blocks.L.hook_mlp_out``          MLP output added to the residual
``blocks.L.hook_resid_post``       residual stream leaving block L
``blocks.L.attn.hook_q``/``hook_k`` queries / keys before rotary embedding
``blocks.L.attn.hook_rot_q``/``_k`` queries / keys after rotary embedding
``blocks.L.attn.hook_pattern``     attention probabilities ``[batch, head, q, k]``
``ln_final.hook_normalized``       final-norm output (the logit lens input)
=================================  ==============================================

Inputs are token ids that *we* tokenized (never ``bridge.to_tokens``, which prepends BOS by
default), or float input embeddings ``[batch, pos, d_model]`` for soft prompts.
"""

from __future__ import annotations

import copy
import logging

from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

from probe.models.load import LoadedModel

RESID_POST = "blocks.{layer}.hook_resid_post"
ATTN_OUT = "blocks.{layer}.hook_attn_out"
MLP_OUT = "blocks.{layer}.hook_mlp_out"
PATTERN = "blocks.{layer}.attn.hook_pattern"
HOOKS = {"resid_post": RESID_POST, "attn_out": ATTN_OUT, "mlp_out": MLP_OUT, "pattern": PATTERN}


def hook_names(kind: str, n_layers: int) -> list[str]:
    """Hook names of one kind (``resid_post``, ``attn_out``, ``mlp_out``, ``pattern``) per layer."""
    return [HOOKS[kind].format(layer=layer) for layer in range(n_layers)]


def _bridge_tokenizer(loaded: LoadedModel):
    """A shallow copy the bridge may normalise without reloading from disk or the hub.

    TransformerLens reloads tokenizers with ``add_bos_token=True`` unless they already declare
    it; declaring it on a copy keeps our tokenizer untouched and avoids any file access.
    """
    tok = copy.copy(loaded.tokenizer)
    tok.init_kwargs = {**tok.init_kwargs, "add_bos_token": True,
                       "name_or_path": str(loaded.path or loaded.name)}
    return tok


def hook_model(loaded: LoadedModel) -> TransformerBridge:
    """Wrap ``loaded.model`` (modified in place) in a TransformerBridge, offline."""
    model = loaded.model
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    bridge = build_bridge_from_module(
        model, loaded.architecture, hf_config=model.config,
        tokenizer=_bridge_tokenizer(loaded), model_name=loaded.name,
    )
    return bridge.eval()
