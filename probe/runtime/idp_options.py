"""IDP settings: the pool's size and every choice the paper leaves open (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError
from probe.settings import setting

STATISTICS = ("mean", "max")
ROUTINGS = ("attention", "centroid")
TRAININGS = ("joint", "cluster")
INITS = ("kmeans", "vocab")


@dataclass(frozen=True)
class IDPOptions:
    """The pool and its routing. Defaults: 4 prompts × 8 tokens (= one 32-token prompt)."""

    m: int = setting(4, "IDP: prompts in the pool (each --n-tokens long)", unit="prompts")
    n: int = setting(8, "IDP: tokens per prompt", unit="tokens")
    select_layer: int = setting(0, "IDP: layer whose attention selects the prompt")
    statistic: str = setting("mean", "IDP: attention mass statistic", choices=STATISTICS)
    routing: str = setting("attention", "IDP: how a prompt is chosen", choices=ROUTINGS)
    training: str = setting("joint", "IDP: joint routing or per-cluster training", choices=TRAININGS)
    init: str = setting("kmeans", "IDP: prompt initialisation", choices=INITS)
    capacity: float = setting(1.5, "IDP: most facts a prompt takes, as a multiple of an even share (1 = even)")

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
