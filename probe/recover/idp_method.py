"""IDP as a recovery method: the pool lives in :class:`IDPAdapter`, saved as safetensors + JSON.

Everything IDP-specific (selection, routing, initialisation, routed training forward) is in
:mod:`probe.recover.idp` and :mod:`probe.recover.idp_pool`; this module plugs it into the shared
recovery machinery (data, objective, training loop, saving, eval, costs, capture).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from probe.errors import ProbeError
from probe.recover.idp import IDPRouter
from probe.recover.idp_options import IDPOptions
from probe.recover.idp_pool import kmeans_init, routed_student, usage_histogram, vocab_init
from probe.recover.kv_prefix import KVPrefix, prefix_from_embeddings, prefix_logits_fn
from probe.recover.spec import RecoverSpec, RecoveryMethod

WEIGHTS = "idp.safetensors"
CONFIG = "idp.json"


class IDPAdapter(torch.nn.Module):
    """A frozen model plus a trainable pool of ``m`` prompts ``[m, n, d]`` (and k-means centroids)."""

    def __init__(self, model: torch.nn.Module, prompts: torch.Tensor, centroids: torch.Tensor | None,
                 opts: IDPOptions) -> None:
        super().__init__()
        self.prompts = torch.nn.Parameter(prompts.to(model.device))
        self.centroids = centroids
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
                         self.opts.routing, self.centroids)


class IDPMethod(RecoveryMethod):
    name = "idp"

    def __init__(self) -> None:
        self._init: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def prepare(self, original, data, spec: RecoverSpec) -> None:
        opts = spec.idp_options()
        if opts.init == "kmeans" or opts.routing == "centroid" or opts.training == "cluster":
            windows = [(w, torch.ones_like(w)) for w in data.train.split(spec.batch_size)]
            prompts, centroids = kmeans_init(original, windows, opts, spec.seed)
            if opts.init == "vocab":
                prompts = None
            self._init = (prompts, centroids)
        else:
            self._init = (None, None)

    def create(self, model, tokenizer, spec: RecoverSpec):
        opts = spec.idp_options()
        prompts, centroids = self._init or (None, None)
        if prompts is None:
            prompts = vocab_init(model, tokenizer, opts, spec.init_text)
        return IDPAdapter(model, prompts, centroids, opts)

    def student(self, adapter: IDPAdapter):
        return routed_student(adapter.model, adapter.prompts, adapter.opts, adapter.centroids, adapter.usage)

    def logits_fn(self, adapter: IDPAdapter):
        prefix = adapter.prefix()
        return prefix_logits_fn(adapter.model, prefix, adapter.router(prefix))

    def hook_view(self, adapter: IDPAdapter) -> tuple:
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
        return adapter.prompts.numel()

    def save(self, adapter: IDPAdapter, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"prompts": adapter.prompts.detach().float().cpu().contiguous()}
        if adapter.centroids is not None:
            tensors["centroids"] = adapter.centroids.float().cpu().contiguous()
        save_file(tensors, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps({"options": asdict(adapter.opts),
                                                 "train_usage": usage_histogram(adapter.usage, adapter.opts.m)},
                                                indent=2))

    def load(self, model, folder):
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
        return IDPAdapter(model, prompts.to(model.dtype), tensors.get("centroids"), opts)


METHOD = IDPMethod()
