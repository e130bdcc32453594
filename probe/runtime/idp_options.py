"""IDP settings: the pool's size and every choice the paper leaves open (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError

STATISTICS = ("mean", "max")
ROUTINGS = ("attention", "centroid")
TRAININGS = ("joint", "cluster")
INITS = ("kmeans", "vocab")


@dataclass(frozen=True)
class IDPOptions:
    """The pool and its routing. Defaults: 4 prompts × 8 tokens (= one 32-token prompt)."""

    m: int = 4
    n: int = 8
    select_layer: int = 0
    statistic: str = "mean"
    routing: str = "attention"
    training: str = "joint"
    init: str = "kmeans"
    capacity: float = 1.5

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1:
            raise ProbeError(f"IDP needs m ≥ 1 prompts of n ≥ 1 tokens (got m={self.m}, n={self.n})")
        for value, allowed, flag in ((self.statistic, STATISTICS, "--idp-statistic"),
                                     (self.routing, ROUTINGS, "--idp-routing"),
                                     (self.training, TRAININGS, "--idp-training"),
                                     (self.init, INITS, "--idp-init")):
            if value not in allowed:
                raise ProbeError(f"unknown {flag} {value!r}: use one of {', '.join(allowed)}")
        if self.capacity < 1.0:
            raise ProbeError(f"--idp-capacity {self.capacity} must be ≥ 1 (1 = perfectly even routing)")
