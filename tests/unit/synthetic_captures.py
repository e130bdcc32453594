"""In-memory captures for the analysis family tests: arrays chosen by the test, checked by check_runs; no tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probe.analysis.captures import RunSet, check_runs
from probe.analysis.lens import Lens
from probe.models.hooks import HOOKS


@dataclass
class ArrayRun:
    """What the analysis reads of a capture: path, manifest, probe table and named arrays."""

    path: Path
    manifest: dict
    probes: list[dict]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def name(kind: str, layer: int) -> str:
    return f"last/{HOOKS[kind].format(layer=layer)}"


def runset(arrays: Mapping[str, Mapping[str, np.ndarray]], n_layers: int, splits: list[str] | None = None,
           top1: Mapping[str, np.ndarray] | None = None, relations: list[str] | None = None,
           probe_file: str | None = None, objects: list[str] | None = None,
           topk_logprobs: Mapping[str, np.ndarray] | None = None, subjects: list[str] | None = None) -> RunSet:
    """A checked RunSet; ``arrays[variant][f"{kind}"]`` is ``[n_facts, n_layers, ...]`` for each hook kind.

    ``prompt_mass`` (``[n, L, H]``), when given, is stored as the pattern's ``.prompt_mass`` array;
    ``topk_logprobs[variant]`` (``[n, k]``) as the capture's top-k output log-probabilities.
    """
    first = next(iter(arrays.values()))
    n = len(first["resid_post"])
    splits = splits or ["eval"] * n
    relations = relations or ["r"] * n
    objects = objects or [f"obj{i}" for i in range(n)]
    probes = [{"id": f"f{i}", "prompt": f"prompt {i}", "object": objects[i], "answers": [objects[i]],
               "relation": relations[i], "split": splits[i]} for i in range(n)]
    for i, subject in enumerate(subjects or []):
        probes[i]["subject"] = subject
    hooks = sorted(k for k in first if k in HOOKS)
    runs = {}
    for v, kinds in arrays.items():
        stored = {"tokens": np.zeros((n, 3), np.int64),
                  "logits/answer_top1": np.asarray((top1 or {}).get(v, np.zeros(n, bool)))}
        if topk_logprobs and v in topk_logprobs:
            stored["logits/topk_logprobs"] = np.asarray(topk_logprobs[v], np.float32)
        for kind in hooks:
            for la in range(n_layers):
                stored[name(kind, la)] = kinds[kind][:, la]
        if "prompt_mass" in kinds:
            for la in range(n_layers):
                stored[name("pattern", la) + ".prompt_mass"] = kinds["prompt_mass"][:, la]
        manifest = {"probe_hash": "h", "split": "all", "positions": ["last"], "layers": list(range(n_layers)),
                    "hooks": hooks, "variant": v, "shapes": {k: list(a.shape) for k, a in stored.items()},
                    "spec": {"probes": probe_file}}
        runs[v] = ArrayRun(Path(f"/captures/{v}-run"), manifest, probes, stored)
    return check_runs(runs)


class _Unembed(torch.nn.Linear):
    """A linear unembedding exposing ``W_U`` ``[d, vocab]`` as the bridge's does."""

    @property
    def W_U(self) -> torch.Tensor:  # TransformerLens's name
        return self.weight.T


def lens(d: int, vocab: int, seed: int = 0) -> Lens:
    """A lens with an identity final norm and a random unembedding."""
    torch.manual_seed(seed)
    unembed = _Unembed(d, vocab, bias=False)
    return Lens(torch.nn.Identity(), unembed.requires_grad_(False))
