"""`CaptureSpec`: what `probe capture` records, validated on construction.

Layers are checked against the model only once it is loaded (the spec does not know the
depth); everything else is checked here so a bad flag fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.errors import ProbeError
from probe.knowledge.protocol import ProbeFormat
from probe.models.bridge import HOOKS
from probe.runtime.spec import VariantSpec
from probe.settings import setting

HOOK_KINDS = tuple(HOOKS)  # resid_post, attn_out, mlp_out, pattern
POSITIONS = ("last", "subject", "all")
STORE_DTYPES = ("float32", "float16")
SPLITS = ("eval", "train", "all")


def parse_list(text: str | None, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Comma-separated names, each one of ``valid`` (an unknown one lists the valid ones)."""
    items = tuple(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))
    if not items:
        raise ProbeError(f"no {what} given: use one or more of {', '.join(valid)}")
    for item in items:
        if item not in valid:
            raise ProbeError(f"unknown {what} {item!r}: use one or more of {', '.join(valid)}")
    return items


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``"all"``/empty → None (every layer); ``"0,5,10"`` → (0, 5, 10)."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        layers = tuple(dict.fromkeys(int(t) for t in text.split(",") if t.strip()))
    except ValueError:
        raise ProbeError(f"bad --layers {text!r}: give comma-separated layer numbers (e.g. 0,5,10) or 'all'") from None
    return layers


@dataclass(frozen=True)
class CaptureSpec:
    """One capture: a variant on a probe split, which layers/hooks/positions, and how to store them.

    ``full_attention`` is how many probes (the first ones of the split) also get full T×T
    attention maps; ``batch_size`` is also the store's chunk length along the probe axis.
    """

    variant: VariantSpec
    probes: str = setting("builtin", "'builtin' or a probe file (known_1000, LAMA, PopQA, JSONL)")
    split: str = setting("eval", "Which facts", choices=SPLITS)
    format: ProbeFormat = field(default_factory=ProbeFormat)
    layers: tuple[int, ...] | None = setting(None, "Comma-separated layers, or all", default_text="all",
                                             parse=parse_layers)
    hooks: tuple[str, ...] = setting(HOOK_KINDS, "Comma-separated hook kinds", choices=HOOK_KINDS,
                                     parse=lambda text: parse_list(text, HOOK_KINDS, "hook"))
    positions: tuple[str, ...] = setting(("last", "subject"), "Comma-separated token positions (real tokens)",
                                         choices=POSITIONS,
                                         parse=lambda text: parse_list(text, POSITIONS, "position"))
    dtype: str = setting("float32", "Stored dtype", choices=STORE_DTYPES)
    batch_size: int = setting(16, "Probes per batch (= store chunk)", unit="probes", min=1)
    run: str | None = setting(None, "Run name (--run-name under torchrun, whose own flags clash with --run)",
                              aliases=("--run-name",), default_text="<compression>-<variant>-<probes>-<split>")
    full_attention: int = setting(64, "Probes with full T×T attention maps", unit="probes", min=0)
    top_k: int = setting(10, "Next tokens kept per probe", unit="tokens", min=1)
    max_gb: float = setting(2.0, "Refuse a larger estimated store", unit="GB")
    force: bool = setting(False, "Overwrite a finished (or other) capture of that name")
    build: bool = setting(False, "Build a missing variant first (probe compress / recover)")

    def __post_init__(self) -> None:
        parse_list(",".join(self.hooks), HOOK_KINDS, "hook")
        parse_list(",".join(self.positions), POSITIONS, "position")
        if self.dtype not in STORE_DTYPES:
            raise ProbeError(f"unknown --dtype {self.dtype!r}: use one of {', '.join(STORE_DTYPES)}")
        if self.split not in SPLITS:
            raise ProbeError(f"unknown split {self.split!r}: use eval, train or all")
        if self.batch_size < 1:
            raise ProbeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.full_attention < 0:
            raise ProbeError(f"--full-attention must be 0 or more, got {self.full_attention}")
        if self.top_k < 1:
            raise ProbeError(f"--top-k must be at least 1, got {self.top_k}")
        if self.max_gb <= 0:
            raise ProbeError(f"--max-gb must be positive, got {self.max_gb}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ProbeError(f"bad --layers {self.layers}: layers are numbered from 0 (or use 'all')")
        if self.run is not None and (not self.run.strip() or "/" in self.run or self.run.startswith(".")):
            raise ProbeError(f"bad --run {self.run!r}: give a plain folder name")

    @property
    def run_name(self) -> str:
        """``<compression>-<variant>-<probeset>-<split>`` (``original-...`` for the original)."""
        if self.run:
            return self.run
        probes = self.probes if self.probes == "builtin" else self.probes.replace("\\", "/").rsplit("/", 1)[-1]
        probes = probes.rsplit(".", 1)[0] if "." in probes else probes
        v = self.variant
        head = "original" if v.variant == "original" else f"{v.compression}-{v.variant}"
        return f"{head}-{probes}-{self.split}"

    def check_layers(self, n_layers: int) -> tuple[int, ...]:
        """The layers to record, checked against the model's depth."""
        if self.layers is None:
            return tuple(range(n_layers))
        bad = [la for la in self.layers if la >= n_layers]
        if bad:
            raise ProbeError(f"layer {bad[0]} does not exist: this model has layers 0..{n_layers - 1} "
                             f"(--layers 0,1,... or all)")
        return tuple(sorted(self.layers))

    def content(self) -> dict:
        """What determines the arrays (not --force/--build/--max-gb/--run): resume needs it unchanged."""
        v = self.variant
        return {"model": v.model.name, "variant": v.variant, "compression": v.compression, "probes": self.probes,
                "split": self.split, "layers": self.layers, "hooks": self.hooks, "positions": self.positions,
                "dtype": self.dtype, "batch_size": self.batch_size, "full_attention": self.full_attention,
                "top_k": self.top_k, "model_dtype": v.model.dtype, "shots": self.format.shots,
                "template": self.format.template, "known": self.format.known}
