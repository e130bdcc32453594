"""Training IDP as a recovery method: the pool (:class:`~probe.runtime.idp.IDPAdapter`), saved as safetensors + JSON.

Selection and routing at inference are :mod:`probe.runtime.idp_router` and :mod:`probe.runtime.idp`;
initialisation and the routed training forward are :mod:`probe.recover.idp_pool`. This module
plugs them into the shared recovery machinery (data, objective, training loop, saving).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from probe.recover.idp_pool import kmeans_init, routed_student, vocab_init
from probe.recover.method import RecoveryMethod
from probe.recover.spec import RecoverSpec
from probe.recover.train import LogitsOf
from probe.runtime.idp import CONFIG, WEIGHTS, IDPAdapter, IDPRuntime, usage_histogram


class IDPMethod(IDPRuntime, RecoveryMethod):
    def __init__(self) -> None:
        self._init: tuple[torch.Tensor | None, torch.Tensor | None] | None = None

    def prepare(self, original, data, spec: RecoverSpec) -> None:
        opts = spec.idp_options()
        if opts.init == "kmeans" or opts.routing == "centroid" or opts.training == "cluster":
            windows = [(w, torch.ones_like(w)) for w in data.train.split(spec.batch_size)]
            prompts, centroids = kmeans_init(original, windows, opts, spec.seed)
            self._init = (None if opts.init == "vocab" else prompts, centroids)
        else:
            self._init = (None, None)

    def create(self, model, tokenizer, spec: RecoverSpec) -> IDPAdapter:
        opts = spec.idp_options()
        prompts, centroids = self._init or (None, None)
        if prompts is None:
            prompts = vocab_init(model, tokenizer, opts, spec.init_text)
        return IDPAdapter(model, prompts, centroids, opts)

    def student(self, adapter: IDPAdapter) -> LogitsOf:
        return routed_student(adapter.model, adapter.prompts, adapter.opts, adapter.centroids, adapter.usage)

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


METHOD = IDPMethod()
