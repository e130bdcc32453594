"""Building and training an IDP prompt pool: initialisation, the routed training forward, per-prompt losses.

Initialisation (``init="kmeans"``): the training windows are clustered (scikit-learn k-means)
by the original model's mean residual entering ``select_layer``; prompt ``k`` starts as the
token embeddings of the first ``n`` tokens of the window nearest centroid ``k``, so prompts
start different and tied to a region of the corpus. ``init="vocab"`` starts every prompt from
a different slice of one vocabulary text (ablation); ``init="eos"`` starts every prompt at the
end-of-text embedding (a document boundary: close to no prompt at all) plus small seeded noise.

Training (:class:`RoutedStudent`) routes every window with the inference router (the argmax of
:meth:`~probe.runtime.idp_router.IDPRouter.logits`); how the router learns is
:attr:`~probe.runtime.idp_options.IDPOptions.router` (see :mod:`probe.runtime.idp_options`).
Only the chosen prompt of a window receives the language-modelling gradient: the window runs
with that prompt prepended. :func:`prompt_losses` (every window under every prompt) is both
hard-EM's assignment and the oracle router of :mod:`probe.recover.idp_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from probe.errors import ProbeError
from probe.recover.objective import kl_per_row, lm_per_row
from probe.runtime.idp import IDPAdapter
from probe.runtime.idp_options import IDPOptions
from probe.runtime.idp_router import mean_hidden
from probe.runtime.kv_prefix import KVPrefix, forward_with_prefix, prefix_from_embeddings

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


def eos_init(model: torch.nn.Module, tokenizer, opts: IDPOptions, seed: int = 0,
             noise: float = 0.05) -> torch.Tensor:
    """``m`` prompts of the end-of-text embedding plus noise (``noise`` × the embedding table's std)."""
    table = model.get_input_embeddings().weight
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    gen = torch.Generator().manual_seed(seed)
    jitter = torch.randn(opts.m, opts.n, table.shape[1], generator=gen) * noise * float(table.std())
    return table[eos].detach().float().cpu().expand(opts.m, opts.n, -1) + jitter


@torch.no_grad()
def prompt_losses(model: torch.nn.Module, prefix: KVPrefix, ids: torch.Tensor, mask: torch.Tensor,
                  teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, m]``: every window's loss under every prompt (``m`` forwards): KL to ``teacher_logits``, else LM."""
    detached = KVPrefix([k.detach() for k in prefix.keys], [v.detach() for v in prefix.values])
    b = ids.shape[0]
    rows = []
    for k in range(prefix.n_prompts):
        logits = forward_with_prefix(model, detached, torch.full((b,), k, dtype=torch.long, device=ids.device),
                                     ids, mask).logits
        rows.append(lm_per_row(logits, ids, mask) if teacher_logits is None
                    else kl_per_row(logits, teacher_logits, mask))
    return torch.stack(rows, -1)


class RoutedStudent:
    """Training forward of the pool: route each window, prepend its prompt, return logits of the real tokens.

    Without gradients (held-out evaluation) it routes exactly as inference does. With them it also
    leaves the router's loss for the step in :meth:`aux_loss` (softmax: load balancing; em: the
    assignment's cross-entropy) and updates the ``bias`` router's bias in :meth:`after_step`.
    """

    def __init__(self, adapter: IDPAdapter, teacher: Callable | None = None) -> None:
        self.adapter = adapter
        self.teacher = teacher  # logits of the original (em's per-window KL); None: next-token loss
        self._aux: torch.Tensor | None = None
        self._load: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        a, opts = self.adapter, self.adapter.opts
        training = torch.is_grad_enabled()
        learns = training and opts.router in ("softmax", "em")
        with torch.set_grad_enabled(learns):
            prefix = prefix_from_embeddings(a.model, a.prompts.to(a.model.dtype))
            logits = a.router(prefix).logits(input_ids, attention_mask)
        choice = logits.detach().argmax(-1)
        if not training:
            return self._forward(a.prompts[choice], input_ids, attention_mask)
        used = a.prompts[choice]
        if opts.router == "em":
            with torch.no_grad():
                target = None if self.teacher is None else self.teacher(input_ids, attention_mask)
            choice = prompt_losses(a.model, prefix, input_ids, attention_mask, target).argmin(-1)
            self._aux = F.cross_entropy(logits, choice)
            used = a.prompts[choice]
        elif opts.router == "softmax":
            soft = logits.softmax(-1)
            hard = F.one_hot(choice, opts.m).to(soft)
            used = torch.einsum("bm,mnd->bnd", hard - soft.detach() + soft, a.prompts)  # straight-through
            self._aux = opts.balance * opts.m * (hard.mean(0) * soft.mean(0)).sum()
        self._load = torch.bincount(choice, minlength=opts.m)
        a.usage.update(choice.tolist())
        return self._forward(used, input_ids, attention_mask)

    def _forward(self, prompts: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model, n = self.adapter.model, self.adapter.opts.n
        emb = model.get_input_embeddings()
        b = input_ids.shape[0]
        full = torch.cat([prompts.to(emb.weight.dtype), emb(input_ids)], dim=1)
        mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        return model(inputs_embeds=full, attention_mask=mask).logits[:, n:]

    def aux_loss(self) -> torch.Tensor | None:
        """The router's loss of the last training forward (None for the fixed and bias routers)."""
        aux, self._aux = self._aux, None
        return aux

    @torch.no_grad()
    def after_step(self) -> None:
        """Bias router: move each prompt's bias towards even usage by ``bias_rate`` (sign of the imbalance)."""
        opts = self.adapter.opts
        if opts.router == "bias" and self._load is not None:
            load = self._load.float()
            self.adapter.bias += opts.bias_rate * torch.sign(load.mean() - load).to(self.adapter.bias)
        self._load = None
