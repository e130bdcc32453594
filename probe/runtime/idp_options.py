"""IDP settings: the pool's size, its router and every choice the paper leaves open (no heavy imports).

Routers (``router``; training routes exactly as inference does, by the argmax of one score, except
hard-EM, which trains each prompt on the windows it fits best and the router to predict them):

* ``fixed``: the paper's rule, never trained: argmax of the selection score (control).
* ``bias``: the score plus a per-prompt bias nudged after each step towards even usage
  (auxiliary-loss-free load balancing, DeepSeek-V3); the bias is saved and used at inference.
* ``softmax``: differentiable routing (Switch Transformer): softmax of the score over a
  temperature, a straight-through hard choice and a load-balancing loss.
* ``em``: hard-EM: each training window is assigned to the prompt with the lowest loss, the prompt
  trains on it, and the router learns to predict the assignment (cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError
from probe.settings import setting

STATISTICS = ("mean", "max")
ROUTINGS = ("attention", "centroid")
ROUTERS = ("fixed", "bias", "softmax", "em")
INITS = ("kmeans", "vocab", "eos")


@dataclass(frozen=True)
class IDPOptions:
    """The pool and its routing. Defaults: 4 prompts × 8 tokens (= one 32-token prompt)."""

    m: int = setting(4, "IDP: prompts in the pool (each --n-tokens long)", unit="prompts")
    n: int = setting(8, "IDP: tokens per prompt", unit="tokens")
    select_layer: int = setting(0, "IDP: layer whose attention selects the prompt")
    statistic: str = setting("mean", "IDP: attention mass statistic", choices=STATISTICS)
    routing: str = setting("attention", "IDP: the selection score (attention mass, or nearest k-means centroid)",
                           choices=ROUTINGS)
    router: str = setting("softmax", "IDP: how the router learns (fixed = untrained; see probe/runtime/idp_options.py)",
                          choices=ROUTERS)
    init: str = setting("kmeans", "IDP: prompt initialisation (eos = the end-of-text embedding plus small noise)",
                        choices=INITS)
    temperature: float = setting(1.0, "IDP: router temperature (score = log attention mass / temperature)")
    balance: float = setting(0.01, "IDP softmax router: weight of the Switch load-balancing loss")
    bias_rate: float = setting(0.05, "IDP bias router: bias step per training step towards even usage")

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1:
            raise ProbeError(f"IDP needs m ≥ 1 prompts of n ≥ 1 tokens (got m={self.m}, n={self.n})")
        for value, allowed, flag in ((self.statistic, STATISTICS, "--idp-statistic"),
                                     (self.routing, ROUTINGS, "--idp-routing"),
                                     (self.router, ROUTERS, "--idp-router"),
                                     (self.init, INITS, "--idp-init")):
            if value not in allowed:
                raise ProbeError(f"unknown {flag} {value!r}: use one of {', '.join(allowed)}")
        if not self.temperature > 0:
            raise ProbeError(f"--idp-temperature must be > 0, got {self.temperature}")
        if self.balance < 0 or self.bias_rate < 0:
            raise ProbeError("--idp-balance and --idp-bias-rate must be ≥ 0")
