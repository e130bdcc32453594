"""How well an IDP pool routes, on held-out windows: its router against the oracle and the best single prompt.

Every held-out window runs under every prompt (:func:`~probe.recover.idp_pool.prompt_losses`,
``m`` forwards), which gives at once the router's KL (the prompt it chooses), the *oracle*
router's (the best prompt per window: a bound no router can beat), the pool's best *single*
prompt's (the prompt with the lowest mean KL, used for every window), how evenly the router
uses the pool (normalised usage entropy: 1 = even, 0 = one prompt; the largest share) and the
router's accuracy against the oracle with a bootstrap interval over windows (the windows are
the resampling unit), next to chance (1/m) and the majority rule (always the oracle's most
frequent prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from probe.recover.idp_pool import prompt_losses
from probe.runtime.idp import IDPAdapter

Batch = tuple[torch.Tensor, torch.Tensor]


def usage_stats(choice: torch.Tensor, m: int) -> dict:
    """Usage share per prompt, its normalised entropy and the largest share."""
    share = torch.bincount(choice, minlength=m).double() / max(1, len(choice))
    nz = share[share > 0]
    entropy = max(0.0, float(-(nz * nz.log()).sum() / torch.log(torch.tensor(float(m))))) if m > 1 else 1.0
    return {"usage": share.tolist(), "usage_entropy": entropy, "max_share": float(share.max())}


def bootstrap_mean(values: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling its entries)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(values), (n_boot, len(values)), generator=gen)
    means = values.double()[idx].mean(1)
    return [float(means.quantile(0.025)), float(means.quantile(0.975))]


def routing_from_losses(losses: torch.Tensor, choice: torch.Tensor) -> dict:
    """The report from every window's loss under every prompt ``[W, m]`` and the router's choices ``[W]``."""
    w, m = losses.shape
    rows = torch.arange(w)
    best = losses.argmin(1)
    single = int(losses.mean(0).argmin())
    hit = (choice == best).double()
    majority = float((best == torch.bincount(best, minlength=m).argmax()).double().mean())
    return {"m": m, "n_windows": w,
            "held_out_router": float(losses[rows, choice].mean()),
            "held_out_oracle": float(losses[rows, best].mean()),
            "held_out_best_single": float(losses[:, single].mean()), "best_single": single,
            **usage_stats(choice, m), "oracle_usage": usage_stats(best, m)["usage"],
            "router_accuracy": float(hit.mean()), "router_accuracy_ci95": bootstrap_mean(hit),
            "chance": 1.0 / m, "majority_accuracy": majority}


@torch.no_grad()
def routing_report(adapter: IDPAdapter, teacher: Callable | None, held_out: Sequence[Batch]) -> dict:
    """:func:`routing_from_losses` over ``held_out`` (KL to ``teacher``'s logits, else next-token loss)."""
    prefix = adapter.prefix()
    router = adapter.router(prefix)
    losses, choices = [], []
    for ids, mask in held_out:
        target = None if teacher is None else teacher(ids, mask)
        losses.append(prompt_losses(adapter.model, prefix, ids, mask, target))
        choices.append(router(ids, mask))
    return routing_from_losses(torch.cat(losses).cpu(), torch.cat(choices).cpu())
