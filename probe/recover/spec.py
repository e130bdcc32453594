"""``RecoverSpec``: every setting of one recovery run, validated on construction.

Defaults (chosen so each method trains in about 5 minutes on SmolLM2-135M, 2 CPU cores; the
measurements are in ``probe/recover/run.py``'s docstring):

* data: the original model's self-generated corpus (64 texts × 128 new tokens, the same cache the
  compression stage calibrates on) cut into ``seq_len=64`` token windows (111 train + 12 held
  out on SmolLM2), ``batch_size=4``, ``steps=60`` (~2.2 passes over the corpus).
* objective ``kl``: distillation KL(original ‖ recovered) on every real token's next-token
  distribution; ``lm`` is plain next-token cross-entropy.
* ``prompt``: ``n_tokens=32`` virtual tokens (32 × 576 = 18,432 parameters on SmolLM2), lr 1e-2,
  initialised from the embeddings of ``init_text``.
* ``prefix``: ``n_tokens=32`` learned key/value positions per layer (32 × 30 layers × 2 × 192 =
  368,640 parameters on SmolLM2), lr 1e-2, initialised from the model's own KV of ``init_text``.
* ``lora``: rank 8, alpha 16, on ``q_proj,v_proj`` (460,800 parameters on SmolLM2), lr 2e-3.

``fast`` is a preset for tests: a few steps on tiny windows, seconds on ``tiny-llama``. Any
value given explicitly wins over both the defaults and the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from probe.errors import ProbeError
from probe.runtime.idp_options import IDPOptions

METHODS: tuple[str, ...] = ("prompt", "prefix", "lora", "idp")
OBJECTIVES = ("kl", "lm")
TRAIN_DATA = ("corpus", "facts", "both")

DEFAULT_LR = {"prompt": 1e-2, "prefix": 1e-2, "lora": 2e-3, "idp": 1e-2}
DEFAULTS = dict(steps=60, batch_size=4, seq_len=64, n_tokens=32, n_texts=64, text_tokens=128)
FAST = dict(steps=4, batch_size=2, seq_len=16, n_tokens=4, n_texts=8, text_tokens=24)


@dataclass(frozen=True)
class RecoverSpec:
    """One recovery run. ``None`` fields take the method's default (or the ``fast`` preset)."""

    model: str = "smollm2-135m"
    compression: str = "gptq3"
    method: str = "prompt"
    steps: int | None = None
    lr: float | None = None
    seed: int = 0
    batch_size: int | None = None
    seq_len: int | None = None
    n_tokens: int | None = None
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    objective: str = "kl"
    train_data: str = "corpus"
    train_text: str | None = None
    n_texts: int | None = None
    text_tokens: int | None = None
    heldout_fraction: float = 0.1
    init_text: str = ("Recall the facts you know and complete the sentence with the correct, well-known answer. "
                      "Think about people, places, science, history and language.")
    fast: bool = False
    # IDP (probe.recover.idp_pool.IDPOptions): n_tokens is the length of each of idp_m prompts; other
    # methods carry None here, so IDP settings never change their spec hash
    idp_m: int | None = IDPOptions.m
    idp_layer: int | None = IDPOptions.select_layer
    idp_statistic: str | None = IDPOptions.statistic
    idp_routing: str | None = IDPOptions.routing
    idp_training: str | None = IDPOptions.training
    idp_init: str | None = IDPOptions.init
    idp_capacity: float | None = IDPOptions.capacity

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ProbeError(f"unknown recovery method {self.method!r}: use one of {', '.join(METHODS)}")
        preset = FAST if self.fast else DEFAULTS
        if self.method == "idp" and self.n_tokens is None:
            object.__setattr__(self, "n_tokens", max(1, preset["n_tokens"] // max(1, self.idp_m or 1)))
        for name, value in preset.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR.get(self.method, 1e-3))
        object.__setattr__(self, "targets", tuple(self.targets))
        for name in ("steps", "batch_size", "seq_len", "n_tokens", "n_texts", "text_tokens", "rank"):
            if getattr(self, name) <= 0:
                raise ProbeError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ProbeError(f"--lr must be > 0, got {self.lr}")
        if self.seq_len < 2:
            raise ProbeError("--seq-len must be at least 2 tokens (next-token targets)")
        if self.objective not in OBJECTIVES:
            raise ProbeError(f"unknown --objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        if self.train_data not in TRAIN_DATA:
            raise ProbeError(f"unknown --train-data {self.train_data!r}: use one of {', '.join(TRAIN_DATA)}")
        if not 0 < self.heldout_fraction < 1:
            raise ProbeError(f"held-out fraction must be in (0, 1), got {self.heldout_fraction}")
        if not self.targets:
            raise ProbeError("--targets needs at least one module name, e.g. q_proj,v_proj")
        if self.method == "idp":
            self.idp_options()
        else:
            for f in fields(self):
                if f.name.startswith("idp_"):
                    object.__setattr__(self, f.name, None)

    def idp_options(self) -> IDPOptions:
        """The IDP pool settings of this spec (validated)."""
        return IDPOptions(m=self.idp_m, n=self.n_tokens, select_layer=self.idp_layer, statistic=self.idp_statistic,
                          routing=self.idp_routing, training=self.idp_training, init=self.idp_init,
                          capacity=self.idp_capacity)

    def with_(self, **changes) -> RecoverSpec:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def content(self) -> dict:
        """What identifies the recovery (its manifest's spec and hash): IDP settings only for IDP."""
        return {k: v for k, v in self.as_dict().items() if self.method == "idp" or not k.startswith("idp_")}

