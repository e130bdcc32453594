"""Building and training an IDP prompt pool: k-means initialisation, routed student, balanced routing.

Initialisation (``init="kmeans"``): the training windows are clustered (scikit-learn k-means)
by the original model's mean residual entering ``select_layer``; prompt ``k`` starts as the
token embeddings of the first ``n`` tokens of the window nearest centroid ``k``, so prompts
start different and tied to a region of the corpus. ``init="vocab"`` starts every prompt from
a different slice of one vocabulary text (ablation).

Training routes every window with the inference rule (``training="joint"``), capped per batch
by :func:`balanced_choice` against collapse, or by its k-means cluster
(``training="cluster"``: each prompt learns its own cluster). Only the chosen prompt of a
window receives its gradient: the window runs with that prompt prepended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.cluster import KMeans

from probe.errors import ProbeError
from probe.runtime.idp_options import IDPOptions
from probe.runtime.idp_router import IDPRouter, mean_hidden
from probe.runtime.kv_prefix import prefix_from_embeddings

Batch = tuple[torch.Tensor, torch.Tensor]  # right-padded input_ids, attention_mask


@torch.no_grad()
def window_features(model: torch.nn.Module, batches: Sequence[Batch], layer: int, n_prefix: int) -> np.ndarray:
    """Mean residual entering ``layer`` for every window (rows in batch order)."""
    return np.concatenate([mean_hidden(model, ids, mask, layer, n_prefix).cpu().numpy() for ids, mask in batches])


def kmeans_init(original: torch.nn.Module, batches: Sequence[Batch], opts: IDPOptions,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompts [m, n, d], centroids [m, d])`` from k-means over the original's window features."""
    feats = window_features(original, batches, opts.select_layer, opts.n)
    if len(feats) < opts.m:
        raise ProbeError(f"IDP with m={opts.m} prompts needs at least {opts.m} training windows, got "
                         f"{len(feats)}: use more training text or a smaller --idp-m")
    km = KMeans(n_clusters=opts.m, n_init=4, random_state=seed).fit(feats)
    rows = [row[mask.bool()] for ids, masks in batches for row, mask in zip(ids, masks, strict=True)]
    emb = original.get_input_embeddings()
    prompts = []
    for k in range(opts.m):
        nearest = int(np.argmin(((feats - km.cluster_centers_[k]) ** 2).sum(1)))
        tokens = rows[nearest].repeat(opts.n // max(1, len(rows[nearest])) + 1)[: opts.n]
        prompts.append(emb(tokens).detach())
    return torch.stack(prompts).float(), torch.tensor(km.cluster_centers_, dtype=torch.float32)


def vocab_init(model: torch.nn.Module, tokenizer, opts: IDPOptions, text: str) -> torch.Tensor:
    """``m`` prompts from consecutive ``n``-token slices of one vocabulary text (repeated as needed)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    need = opts.m * opts.n
    ids = (ids * (need // max(1, len(ids)) + 1))[:need]
    emb = model.get_input_embeddings()(torch.tensor(ids, device=model.device)).detach()
    return emb.view(opts.m, opts.n, -1).float()


def routed_student(model: torch.nn.Module, prompts: torch.nn.Parameter, opts: IDPOptions,
                   centroids: torch.Tensor | None, usage: Counter) -> Callable[[torch.Tensor, torch.Tensor],
                                                                               torch.Tensor]:
    """Training forward: route each window, prepend its prompt, return logits of the real tokens."""
    emb = model.get_input_embeddings()
    route_by = "centroid" if opts.training == "cluster" else opts.routing

    def student(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            prefix = prefix_from_embeddings(model, prompts.detach().to(emb.weight.dtype))
            router = IDPRouter(model, prefix, opts.select_layer, opts.statistic, route_by, centroids)
            choice = balanced_choice(router.scores(input_ids, attention_mask), opts.capacity)
        if torch.is_grad_enabled():  # count training steps only, not held-out evaluation
            usage.update(choice.tolist())
        b = input_ids.shape[0]
        full = torch.cat([prompts[choice].to(emb.weight.dtype), emb(input_ids)], dim=1)
        mask = torch.cat([attention_mask.new_ones(b, opts.n), attention_mask], dim=1)
        return model(inputs_embeds=full, attention_mask=mask).logits[:, opts.n:]

    return student


def balanced_choice(scores: torch.Tensor, capacity: float = 1.5) -> torch.Tensor:
    """Argmax routing with a per-prompt cap of ``ceil(capacity * batch / m)`` rows (training only).

    Rows are placed best-score first; a row whose favourite prompt is full takes its next best.
    This keeps every prompt trained and guards against collapse onto one prompt.
    """
    b, m = scores.shape
    cap = max(1, int(-(-capacity * b // m)))
    load = [0] * m
    choice = torch.empty(b, dtype=torch.long)
    best, _ = scores.max(-1)
    for row in best.argsort(descending=True).tolist():
        for k in scores[row].argsort(descending=True).tolist():
            if load[k] < cap:
                choice[row] = k
                load[k] += 1
                break
    return choice.to(scores.device)
