"""``RecoverSpec``: every setting of one recovery run, validated on construction.

Defaults (chosen so each method trains in about 5 minutes on SmolLM2-135M, 2 CPU cores; the
measurements are in ``probe/recover/run.py``'s docstring):

* data: the original model's self-generated corpus (:data:`DEFAULTS`: 64 texts × 128 new tokens, the
  same cache the compression stage calibrates on) cut into 64-token windows (111 train + 12 held
  out on SmolLM2), 4 windows a step, 60 steps (~2.2 passes over the corpus).
* objective ``kl``: distillation KL(original ‖ recovered) on every real token's next-token
  distribution; ``lm`` is plain next-token cross-entropy.
* ``prompt``: 32 virtual tokens (32 × 576 = 18,432 parameters on SmolLM2), initialised from the
  embeddings of ``init_text``.
* ``prefix``: 32 learned key/value positions per layer (32 × 30 layers × 2 × 192 = 368,640
  parameters on SmolLM2), initialised from the model's own KV of ``init_text``.
* ``lora``: rank 8, alpha 16, on ``q_proj,v_proj`` (460,800 parameters on SmolLM2).
* learning rates per method: :data:`DEFAULT_LR`.

``fast`` is a preset for tests: a few steps on tiny windows, seconds on ``tiny-llama``. Any
value given explicitly wins over both the defaults and the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from probe.config import DEFAULT_COMPRESSION, ModelSpec
from probe.errors import ProbeError
from probe.runtime.idp_options import IDPOptions
from probe.settings import like, setting
from probe.store import check_name

METHODS: tuple[str, ...] = ("prompt", "prefix", "lora", "idp")
OBJECTIVES = ("kl", "lm")
TRAIN_DATA = ("corpus", "facts", "both")
SCHEDULES = ("cosine", "linear", "constant")
INIT_FROM = ("eos", "text")

DEFAULT_LR = {"prompt": 1e-2, "prefix": 1e-2, "lora": 2e-3, "idp": 1e-2}
DEFAULTS = dict(steps=60, batch_size=4, seq_len=64, n_tokens=32, n_texts=64, text_tokens=128, eval_every=10,
                sweep_steps=20)
FAST = dict(steps=4, batch_size=2, seq_len=16, n_tokens=4, n_texts=8, text_tokens=24, eval_every=2, sweep_steps=2)


def _preset(name: str) -> str:
    return f"{DEFAULTS[name]} (--fast: {FAST[name]})"


def _per_method(values: dict[str, float]) -> str:
    return ", ".join(f"{method} {value:g}" for method, value in values.items())


@dataclass(frozen=True)
class RecoverSpec:
    """One recovery run. ``None`` fields take the method's default (or the ``fast`` preset)."""

    model: str = like(ModelSpec, "name")
    compression: str = setting(DEFAULT_COMPRESSION, "Compressed variant to recover, e.g. gptq3")
    method: str = setting("prompt", "Recovery method", choices=METHODS)
    steps: int | None = setting(None, "Most training steps (early stopping may end sooner)",
                                default_text=_preset("steps"))
    lr: float | None = setting(None, "AdamW peak learning rate", default_text=_per_method(DEFAULT_LR))
    schedule: str = setting("cosine", "Learning-rate decay after warmup (to 0 at --steps)", choices=SCHEDULES)
    warmup: float = setting(0.05, "Linear warmup, as a share of --steps")
    clip: float = setting(1.0, "Gradient-norm clipping (0 = off)")
    eval_every: int | None = setting(None, "Held-out KL every this many steps (early stopping, curves)",
                                     unit="steps", default_text=_preset("eval_every"))
    patience: int = setting(3, "Stop after this many held-out evaluations without improvement (0 = never); "
                               "the best evaluated parameters are kept", unit="evaluations")
    lr_sweep: tuple[float, ...] = setting((), "Learning rates to try first, --sweep-steps each, best held-out KL "
                                              "wins (empty: use --lr)")
    sweep_steps: int | None = setting(None, "Steps per learning rate of --lr-sweep", unit="steps",
                                      default_text=_preset("sweep_steps"))
    seed: int = setting(0, "Seed for data order and initialisation")
    seeds: int = setting(1, "Train this many seeds (seed, seed+1, …); the adapter saved is the first seed's, the "
                            "summary gives mean and interval over seeds")
    batch_size: int | None = setting(None, "Windows per step", unit="windows",
                                     default_text=_preset("batch_size"))
    seq_len: int | None = setting(None, "Tokens per window", unit="tokens", default_text=_preset("seq_len"))
    n_tokens: int | None = setting(None, "Virtual tokens of prompt/prefix (IDP: of each prompt)", unit="tokens",
                                   default_text=_preset("n_tokens") + "; IDP: that divided by --idp-m")
    rank: int = setting(8, "LoRA rank")
    alpha: float = setting(16.0, "LoRA alpha")
    targets: tuple[str, ...] = setting(("q_proj", "v_proj"), "LoRA target modules, comma-separated")
    objective: str = setting("kl", "kl (distil from the original) or lm (next-token loss)", choices=OBJECTIVES)
    train_data: str = setting("corpus", "Training text: the corpus, the train-split facts, or both",
                              choices=TRAIN_DATA)
    train_text: str | None = setting(None, "Corpus file (.txt/.jsonl)", default_text="self-generated")
    n_texts: int | None = setting(None, "Self-generated corpus texts", unit="texts",
                                  default_text=_preset("n_texts"))
    text_tokens: int | None = setting(None, "New tokens per self-generated text", unit="tokens",
                                      default_text=_preset("text_tokens"))
    heldout_fraction: float = setting(0.1, "Share of windows held out for the loss report")
    init_from: str = setting("text", "Prompt/prefix initialisation: --init-text, or the end-of-text token repeated "
                                     "(measured worse on SmolLM2: README, Recovery methods)", choices=INIT_FROM)
    init_text: str = setting("Recall the facts you know and complete the sentence with the correct, well-known "
                             "answer. Think about people, places, science, history and language.",
                             "Text whose embeddings (prompt) or KV (prefix) initialise the virtual tokens")
    fast: bool = setting(False, "Tiny preset for tests: " + ", ".join(f"{k} {v}" for k, v in FAST.items()))
    # IDP (IDPOptions): n_tokens is the length of each of idp_m prompts; other methods carry None here, so
    # IDP settings never change their spec hash
    idp_m: int | None = like(IDPOptions, "m", flag="--idp-m")
    idp_layer: int | None = like(IDPOptions, "select_layer", flag="--idp-layer")
    idp_statistic: str | None = like(IDPOptions, "statistic", flag="--idp-statistic")
    idp_routing: str | None = like(IDPOptions, "routing", flag="--idp-routing")
    idp_router: str | None = like(IDPOptions, "router", flag="--idp-router")
    idp_init: str | None = like(IDPOptions, "init", flag="--idp-init")
    idp_temperature: float | None = like(IDPOptions, "temperature", flag="--idp-temperature")
    idp_balance: float | None = like(IDPOptions, "balance", flag="--idp-balance")
    idp_bias_rate: float | None = like(IDPOptions, "bias_rate", flag="--idp-bias-rate")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ProbeError(f"unknown recovery method {self.method!r}: use one of {', '.join(METHODS)}")
        check_name(self.compression, "--compression")
        preset = FAST if self.fast else DEFAULTS
        if self.method == "idp" and self.n_tokens is None:
            object.__setattr__(self, "n_tokens", max(1, preset["n_tokens"] // max(1, self.idp_m or 1)))
        for name, value in preset.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])
        object.__setattr__(self, "targets", tuple(self.targets))
        for name in ("steps", "batch_size", "seq_len", "n_tokens", "n_texts", "text_tokens", "rank", "eval_every",
                     "sweep_steps", "seeds"):
            if getattr(self, name) <= 0:
                raise ProbeError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ProbeError(f"--lr must be > 0, got {self.lr}")
        if not all(lr > 0 for lr in self.lr_sweep):
            raise ProbeError(f"every --lr-sweep rate must be > 0, got {self.lr_sweep}")
        object.__setattr__(self, "lr_sweep", tuple(float(lr) for lr in self.lr_sweep))
        if self.schedule not in SCHEDULES:
            raise ProbeError(f"unknown --schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.init_from not in INIT_FROM:
            raise ProbeError(f"unknown --init-from {self.init_from!r}: use one of {', '.join(INIT_FROM)}")
        if not 0 <= self.warmup < 1 or self.clip < 0 or self.patience < 0:
            raise ProbeError(f"--warmup must be in [0, 1), --clip and --patience ≥ 0 (got {self.warmup}, "
                             f"{self.clip}, {self.patience})")
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
        if self.method == "idp":  # unset IDP settings (e.g. replace() of another method's spec) take their defaults
            for f in fields(self):
                if f.name.startswith("idp_") and getattr(self, f.name) is None:
                    object.__setattr__(self, f.name, f.default)
            self.idp_options()
        else:
            for f in fields(self):
                if f.name.startswith("idp_"):
                    object.__setattr__(self, f.name, None)

    def idp_options(self) -> IDPOptions:
        """The IDP pool settings of this spec (validated)."""
        return IDPOptions(m=self.idp_m, n=self.n_tokens, select_layer=self.idp_layer, statistic=self.idp_statistic,
                          routing=self.idp_routing, router=self.idp_router, init=self.idp_init,
                          temperature=self.idp_temperature, balance=self.idp_balance, bias_rate=self.idp_bias_rate)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def content(self) -> dict:
        """What identifies the recovery (its manifest's spec and hash): IDP settings only for IDP."""
        return {k: v for k, v in self.as_dict().items() if self.method == "idp" or not k.startswith("idp_")}

