"""Paired tests on per-fact correctness: what a recovery regains and breaks, and which methods differ.

Every method answers the same eval facts, so methods are compared fact by fact. Against the
compressed model a recovery *regains* facts compression lost (the original knows them), *gains*
facts neither knew, and *newly breaks* facts the compressed model knew; its net change is
``regained + gained − broken``. Whether that net change is real is the exact two-sided McNemar
test: under no difference each discordant fact is a fair coin, so the p-value is the binomial
test of the ``gained`` side among the discordant facts (``scipy.stats.binomtest``). Methods are
compared pairwise the same way, Holm-corrected over all pairs, and ordered only where a
corrected test separates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import binomtest

from probe.knowledge.status import transitions

ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts (1 when there are none)."""
    return float(binomtest(int(b), int(b + c), 0.5).pvalue) if b + c > 0 else 1.0


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(pvalues, np.float64)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


@dataclass(frozen=True)
class NetRecovery:
    """A recovery against the compressed model on the eval facts, with its exact McNemar test."""

    variant: str
    regained: int  # lost by compression (the original knows them), known after recovery
    gained: int  # known by neither the original nor the compressed model, known after recovery
    broken: int  # known by the compressed model, not after recovery
    p: float  # exact two-sided McNemar against the compressed model
    p_holm: float  # Holm-corrected over the recoveries

    @property
    def net(self) -> int:
        return self.regained + self.gained - self.broken

    def as_dict(self) -> dict:
        return {"variant": self.variant, "regained": self.regained, "gained_unknown_to_original": self.gained,
                "newly_broken": self.broken, "net": self.net, "mcnemar_p": self.p, "mcnemar_p_holm": self.p_holm}


@dataclass(frozen=True)
class PairTest:
    """Two methods on the same facts: facts only ``a`` gets, facts only ``b`` gets, exact McNemar p."""

    a: str
    b: str
    only_a: int
    only_b: int
    p: float
    p_holm: float

    @property
    def separated(self) -> bool:
        return self.p_holm < ALPHA

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "only_a": self.only_a, "only_b": self.only_b, "mcnemar_p": self.p,
                "mcnemar_p_holm": self.p_holm, "separated": self.separated}


def net_recoveries(top1: dict[str, np.ndarray], recoveries: tuple[str, ...]) -> tuple[NetRecovery, ...]:
    """Each recovery against ``top1["compressed"]`` (``top1``: per-fact correctness, original included)."""
    orig, comp = top1["original"], top1["compressed"]
    moves = [transitions(orig, comp, top1[v]).counts() for v in recoveries]
    counts = [(m["regained"], m["gained"], m["newly_broken"]) for m in moves]
    p = [mcnemar_exact(r + g, b) for r, g, b in counts]
    return tuple(NetRecovery(v, r, g, b, pv, ph)
                 for v, (r, g, b), pv, ph in zip(recoveries, counts, p, holm(p) if p else [], strict=True))


def pairwise(top1: dict[str, np.ndarray], methods: tuple[str, ...]) -> tuple[PairTest, ...]:
    """Exact McNemar for every pair of methods, Holm-corrected over the pairs."""
    pairs = list(combinations(methods, 2))
    counts = [(int((top1[a] & ~top1[b]).sum()), int((top1[b] & ~top1[a]).sum())) for a, b in pairs]
    p = [mcnemar_exact(x, y) for x, y in counts]
    return tuple(PairTest(a, b, x, y, pv, ph)
                 for (a, b), (x, y), pv, ph in zip(pairs, counts, p, holm(p) if p else [], strict=True))
