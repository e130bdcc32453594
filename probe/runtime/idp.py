"""IDP at inference: the saved prompt pool (:class:`IDPAdapter`), loaded from safetensors + JSON, routed per input.

The router (which prompt each input gets) is :mod:`probe.runtime.idp_router`; building and
training the pool is :mod:`probe.recover.idp_method` and :mod:`probe.recover.idp_pool`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file

from probe.errors import ProbeError
from probe.knowledge.scoring import LogitsFn
from probe.runtime.adapters import HookView, RecoveryRuntime
from probe.runtime.idp_options import IDPOptions
from probe.runtime.idp_router import IDPRouter
from probe.runtime.kv_prefix import KVPrefix, prefix_from_embeddings, prefix_logits_fn

WEIGHTS = "idp.safetensors"  # "prompts" [m, n, d], "bias" [m] and, for centroid routing, "centroids" [m, d]
CONFIG = "idp.json"  # {"options": IDPOptions as a dict, "train_usage": [windows per prompt]}


class IDPAdapter(torch.nn.Module):
    """A frozen model plus a trainable pool of ``m`` prompts ``[m, n, d]``, the router's per-prompt
    ``bias`` (``bias`` router) and k-means centroids (trainable under the ``softmax``/``em`` routers)."""

    def __init__(self, model: torch.nn.Module, prompts: torch.Tensor, centroids: torch.Tensor | None,
                 opts: IDPOptions, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.prompts = torch.nn.Parameter(prompts.to(model.device))
        learns = opts.router in ("softmax", "em") and opts.routing == "centroid"
        self.centroids = None if centroids is None else torch.nn.Parameter(centroids.float().to(model.device),
                                                                           requires_grad=learns)
        self.register_buffer("bias", torch.zeros(opts.m) if bias is None else bias.float().clone())
        self.opts = opts
        self.usage: Counter = Counter()
        self._model = [model]  # not a submodule: its weights are not the adapter's

    @property
    def model(self) -> torch.nn.Module:
        return self._model[0]

    def prefix(self) -> KVPrefix:
        with torch.no_grad():
            return prefix_from_embeddings(self.model, self.prompts.detach().to(self.model.dtype))

    def router(self, prefix: KVPrefix | None = None) -> IDPRouter:
        return IDPRouter(self.model, prefix or self.prefix(), self.opts.select_layer, self.opts.statistic,
                         self.opts.routing, self.centroids, self.opts.temperature, self.bias)


def usage_histogram(usage: Counter, m: int) -> list[int]:
    """How many inputs chose each of the ``m`` prompts."""
    return [int(usage.get(k, 0)) for k in range(m)]


class IDPRuntime(RecoveryRuntime):
    name = "idp"

    def logits_fn(self, adapter: IDPAdapter) -> LogitsFn:
        prefix = adapter.prefix()
        return prefix_logits_fn(adapter.model, prefix, adapter.router(prefix))

    def hook_view(self, adapter: IDPAdapter) -> HookView:
        prefix = adapter.prefix()
        return adapter.model, prefix, adapter.router(prefix)

    def annotate(self, adapter: IDPAdapter, facts, tokenizer) -> dict:
        """The prompt each fact's primary prompt chose, and the usage histogram."""
        router = adapter.router()
        side = tokenizer.padding_side
        tokenizer.padding_side = "right"
        try:
            choices: list[int] = []
            for i in range(0, len(facts), 64):
                enc = tokenizer([f.prompt for f in facts[i:i + 64]], return_tensors="pt", padding=True)
                choices += router(enc.input_ids.to(adapter.model.device), enc.attention_mask.to(adapter.model.device)
                                  ).tolist()
        finally:
            tokenizer.padding_side = side
        return {"idp_choice": {f.id: c for f, c in zip(facts, choices, strict=True)},
                "idp_usage": usage_histogram(Counter(choices), adapter.opts.m)}

    def extra_kv_positions(self, adapter: IDPAdapter) -> int:
        return adapter.opts.n

    def extra_parameters(self, adapter: IDPAdapter) -> int:
        """Prompts, plus the bias of the ``bias`` router and the centroids of centroid routing."""
        opts = adapter.opts
        return (adapter.prompts.numel() + (opts.m if opts.router == "bias" else 0)
                + (adapter.centroids.numel() if opts.routing == "centroid" else 0))

    def load(self, model: torch.nn.Module, folder: str | Path) -> IDPAdapter:
        folder = Path(folder)
        try:
            tensors = load_file(str(folder / WEIGHTS))
            opts = IDPOptions(**json.loads((folder / CONFIG).read_text())["options"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ProbeError(f"the IDP pool in {folder} is unreadable ({exc}): rerun `probe recover --method idp "
                             f"--force`") from None
        prompts = tensors["prompts"]
        if prompts.shape[-1] != model.config.hidden_size:
            raise ProbeError(f"the idp adapter in {folder} does not fit this model (prompt width "
                             f"{prompts.shape[-1]}, model width {model.config.hidden_size}; trained on another base "
                             f"model?): rerun `probe recover --method idp --force`")
        return IDPAdapter(model, prompts.to(model.dtype), tensors.get("centroids"), opts, tensors.get("bias"))
