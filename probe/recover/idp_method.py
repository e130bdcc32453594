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

from probe.recover.idp_pool import RoutedStudent, eos_init, kmeans_init, vocab_init
from probe.recover.idp_report import routing_report
from probe.recover.method import RecoveryMethod
from probe.recover.spec import RecoverSpec
from probe.recover.train import LogitsOf
from probe.runtime.idp import CONFIG, WEIGHTS, IDPAdapter, IDPRuntime, usage_histogram


class IDPMethod(IDPRuntime, RecoveryMethod):
    def __init__(self) -> None:
        self._init: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._teacher = None

    def prepare(self, original, data, spec: RecoverSpec) -> None:
        opts = spec.idp_options()
        self._teacher = None if spec.objective != "kl" else (
            lambda ids, mask: original(input_ids=ids, attention_mask=mask).logits)
        if opts.init == "kmeans" or opts.routing == "centroid":
            windows = [(w, torch.ones_like(w)) for w in data.train.split(spec.batch_size)]
            prompts, centroids = kmeans_init(original, windows, opts, spec.seed)
            self._init = (prompts if opts.init == "kmeans" else None, centroids)
        else:
            self._init = (None, None)

    def create(self, model, tokenizer, spec: RecoverSpec) -> IDPAdapter:
        opts = spec.idp_options()
        prompts, centroids = self._init or (None, None)
        if prompts is None and opts.init == "eos":
            prompts = eos_init(model, tokenizer, opts, spec.seed)
        elif prompts is None:
            prompts = vocab_init(model, tokenizer, opts, spec.init_text)
        return IDPAdapter(model, prompts, centroids, opts)

    def student(self, adapter: IDPAdapter) -> LogitsOf:
        return RoutedStudent(adapter, self._teacher)

    def report(self, adapter: IDPAdapter, teacher, held_out) -> dict:
        return routing_report(adapter, teacher, held_out)

    def state(self, adapter: IDPAdapter) -> list[torch.Tensor]:
        return [adapter.bias]

    def save(self, adapter: IDPAdapter, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"prompts": adapter.prompts.detach().float().cpu().contiguous()}
        tensors["bias"] = adapter.bias.detach().float().cpu().contiguous()
        if adapter.centroids is not None:
            tensors["centroids"] = adapter.centroids.detach().float().cpu().contiguous()
        save_file(tensors, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps({"options": asdict(adapter.opts),
                                                 "train_usage": usage_histogram(adapter.usage, adapter.opts.m)},
                                                indent=2))


METHOD = IDPMethod()
