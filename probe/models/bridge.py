"""Hooked models: wrap a loaded causal LM in a TransformerLens 4.x ``TransformerBridge``.

No hub calls: the bridge is built from the in-memory module and its config with
``transformer_lens.model_bridge.sources.build_bridge_from_module`` (public: exported in that
package's ``__all__``; ``boot_transformers`` would read the hub). Any architecture
TransformerLens has an adapter for works (Llama, OPT, …); the final norm and unembedding are the
bridge's own ``ln_final`` and ``unembed`` components. Building rewrites the HF model's submodules
in place, so give each bridge its own model object (take state dicts first if you need the plain
model too).

Hook names the toolkit uses (TransformerLens vocabulary; ``L`` is the layer):

=================================  ==============================================
``hook_embed``                     token embeddings ``[batch, pos, d_model]``
``blocks.L.hook_resid_pre``        residual stream entering block L
``blocks.L.hook_attn_out``         attention output added to the residual
``blocks.L.hook_mlp_out``          MLP output added to the residual
``blocks.L.hook_resid_post``       residual stream leaving block L
``blocks.L.attn.hook_q``/``hook_k`` queries / keys before rotary embedding
``blocks.L.attn.hook_rot_q``/``_k`` queries / keys after rotary embedding (rotary models)
``blocks.L.attn.hook_pattern``     attention probabilities ``[batch, head, q, k]``
``ln_final.hook_normalized``       final-norm output (the logit lens input)
=================================  ==============================================

Inputs are token ids that *we* tokenized (never ``bridge.to_tokens``, which prepends BOS by
default), or float input embeddings ``[batch, pos, d_model]`` for soft prompts.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources import build_bridge_from_module

from probe.models.hooks import ATTN_OUT, HOOKS, MLP_OUT, PATTERN, RESID_POST, hook_names
from probe.models.load import LoadedModel

__all__ = ["ATTN_OUT", "HOOKS", "MLP_OUT", "PATTERN", "RESID_POST", "hook_model", "hook_module", "hook_names"]


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
    return hook_module(loaded.model, loaded.architecture, _bridge_tokenizer(loaded), loaded.name)


def hook_module(model: torch.nn.Module, architecture: str | None = None, tokenizer=None,
                name: str = "external") -> TransformerBridge:
    """Wrap an HF causal LM (modified in place) in a TransformerBridge, offline.

    ``architecture`` defaults to the model config's first architecture (``OPTForCausalLM`` …).
    """
    arch = architecture or (model.config.architectures or [type(model).__name__])[0]
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    bridge = build_bridge_from_module(model, arch, hf_config=model.config, tokenizer=tokenizer, model_name=name)
    return bridge.eval()
