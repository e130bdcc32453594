"""`CompressSpec`: what to compress and how, validated on construction; named presets.

A method is one of :data:`METHODS` or a ``+``-joined combination of one sparsifier and one
quantizer (``sparsegpt+gptq``). ``pattern`` ``"N:M"`` means at most N non-zero weights in
every M consecutive input weights (NVIDIA's 2:4 convention). Model-dependent checks (group
size against the target layers' widths, at least one target layer) run in
:func:`check_against_model`, once the model is known.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import torch

from probe.errors import ProbeError

QUANTIZERS = ("gptq", "awq", "rtn")
SPARSIFIERS = ("sparsegpt", "magnitude")
METHODS = QUANTIZERS + SPARSIFIERS
BITS = (2, 3, 4, 8)
ACTORDERS = (None, "static")  # group/weight orders need g_idx, which baking here does not handle
LLMC_METHODS = ("gptq", "awq", "rtn", "sparsegpt")  # run through llmcompressor oneshot


@dataclass(frozen=True)
class CompressSpec:
    """One compression run. ``group_size=None`` means the model's default (see :func:`default_group_size`)."""

    model: str
    method: str
    name: str | None = None  # preset name or None (then the folder is named by spec hash)
    bits: int | None = None
    group_size: int | None = None
    symmetric: bool = False
    actorder: str | None = "static"
    sparsity: float | None = None
    pattern: str | None = None
    targets: tuple[str, ...] = ("Linear",)
    ignore: tuple[str, ...] = ("lm_head",)
    calibration: str | None = None
    n_calibration: int = 64
    seq_len: int = 128
    seed: int = 0
    from_path: str | None = None

    def __post_init__(self) -> None:
        parts = self.method.split("+")
        unknown = [p for p in parts if p not in METHODS]
        if unknown or not parts:
            raise ProbeError(f"unknown method {self.method!r}: use a preset ({', '.join(PRESETS)}) or one of "
                             f"{', '.join(METHODS)}, or sparsifier+quantizer such as sparsegpt+gptq")
        quant = [p for p in parts if p in QUANTIZERS]
        sparse = [p for p in parts if p in SPARSIFIERS]
        if len(quant) > 1 or len(sparse) > 1:
            raise ProbeError(f"method {self.method!r} combines two of a kind: combine one sparsifier "
                             f"({', '.join(SPARSIFIERS)}) with one quantizer ({', '.join(QUANTIZERS)})")
        if quant and self.bits not in BITS:
            raise ProbeError(f"unsupported --bits {self.bits}: use one of {', '.join(map(str, BITS))}")
        if not quant and self.bits is not None:
            raise ProbeError(f"--bits does not apply to {self.method!r}: drop it or add a quantizer (e.g. +gptq)")
        if self.group_size is not None and self.group_size < 1:
            raise ProbeError(f"--group-size {self.group_size} must be a positive integer (e.g. 32, 64, 128)")
        if self.actorder not in ACTORDERS:
            raise ProbeError(f"unknown actorder {self.actorder!r}: use one of {', '.join(map(str, ACTORDERS))}")
        if sparse:
            if self.pattern is not None:
                n, m = parse_pattern(self.pattern)
                if self.sparsity is not None and not math.isclose(self.sparsity, 1 - n / m):
                    raise ProbeError(f"--sparsity {self.sparsity} contradicts --pattern {self.pattern}: give one")
            elif self.sparsity is None:
                raise ProbeError(f"method {self.method!r} needs --sparsity (e.g. 0.5) or --pattern N:M (e.g. 2:4)")
            elif not 0 < self.sparsity < 1:
                raise ProbeError(f"--sparsity {self.sparsity} is outside (0, 1): use e.g. 0.5")
        elif self.sparsity is not None or self.pattern is not None:
            raise ProbeError(f"--sparsity/--pattern do not apply to {self.method!r}: add a sparsifier "
                             f"(e.g. sparsegpt+{self.method})")
        if self.n_calibration < 1 or self.seq_len < 8:
            raise ProbeError("--n-calibration must be ≥ 1 and --seq-len ≥ 8")

    @property
    def quantizer(self) -> str | None:
        return next((p for p in self.method.split("+") if p in QUANTIZERS), None)

    @property
    def sparsifier(self) -> str | None:
        return next((p for p in self.method.split("+") if p in SPARSIFIERS), None)

    @property
    def target_sparsity(self) -> float | None:
        if self.pattern:
            n, m = parse_pattern(self.pattern)
            return 1 - n / m
        return self.sparsity

    @property
    def needs_calibration(self) -> bool:
        return self.from_path is None and any(p in ("gptq", "awq", "sparsegpt") for p in self.method.split("+"))

    @property
    def label(self) -> str:
        """Folder name under ``artifacts/variants/<model>/``."""
        from probe.artifacts import spec_hash

        return self.name or f"{self.method.replace('+', '-')}-{spec_hash(self, 8)}"

    def effective_bits(self) -> float:
        """Storage estimate, bits per target weight.

        Quantized: ``bits + (16 [fp16 scale] + bits [zero point, asymmetric]) / group_size``.
        Unstructured sparse: non-zero values plus a 1-bit mask; N:M: values plus
        ``ceil(log2 M)`` index bits per kept weight. Dense fp16 is 16.
        """
        value_bits = 16.0 if self.bits is None else float(self.bits)
        overhead = 0.0
        if self.bits is not None and self.group_size:
            overhead = (16 + (0 if self.symmetric else self.bits)) / self.group_size
        density = 1 - (self.target_sparsity or 0.0)
        if self.pattern:
            _, m = parse_pattern(self.pattern)
            return density * (value_bits + math.ceil(math.log2(m))) + overhead
        if self.target_sparsity:
            return density * value_bits + 1 + overhead
        return value_bits + overhead


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"2:4"`` → ``(2, 4)``; N must be smaller than M."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern)
    if not match:
        raise ProbeError(f"--pattern {pattern!r} is not N:M: use e.g. 2:4 or 4:8")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise ProbeError(f"--pattern {pattern}: N must be between 1 and M-1 (N<M), e.g. 2:4")
    return n, m


# preset name → CompressSpec fields (group size comes from the model)
PRESETS: dict[str, dict] = {
    "gptq2": {"method": "gptq", "bits": 2},
    "gptq3": {"method": "gptq", "bits": 3},
    "gptq4": {"method": "gptq", "bits": 4},
    "rtn3": {"method": "rtn", "bits": 3},
    "awq4": {"method": "awq", "bits": 4},
    "sparsegpt50": {"method": "sparsegpt", "sparsity": 0.5},
    "sparsegpt24": {"method": "sparsegpt", "pattern": "2:4"},
    "mag50": {"method": "magnitude", "sparsity": 0.5},
    "sparse50+gptq4": {"method": "sparsegpt+gptq", "sparsity": 0.5, "bits": 4},
}


def build_spec(model: str, method: str, **overrides) -> CompressSpec:
    """A spec from a preset name (with overrides; the name is kept only if nothing changed) or a method."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if method in PRESETS:
        fields = {**PRESETS[method], **given}
        changed = any(PRESETS[method].get(k) != v for k, v in given.items() if k in _SHAPING)
        return CompressSpec(model=model, name=None if changed else method, **fields)
    return CompressSpec(model=model, method=method, **given)


# fields that define a method's settings (changing one means the preset name no longer applies, and an
# imported checkpoint never takes a preset's name); calibration settings do not rename a preset, they are
# recorded in its manifest and spec hash
_SHAPING = ("method", "bits", "group_size", "symmetric", "actorder", "sparsity", "pattern", "targets", "ignore",
            "from_path")


def target_linears(model: torch.nn.Module, spec: CompressSpec) -> dict[str, torch.nn.Linear]:
    """The decoder linear layers the spec compresses (``nn.Linear`` not in ``ignore``)."""
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if any(name == ig or name.endswith("." + ig) for ig in spec.ignore):
            continue
        if "Linear" in spec.targets or any(re.search(t.removeprefix("re:"), name) for t in spec.targets):
            out[name] = mod
    return out


def default_group_size(widths: set[int], preferred: int) -> int:
    """``preferred`` when it divides every width, else the largest power of two ≤ 128 that does."""
    if all(w % preferred == 0 for w in widths):
        return preferred
    g = 128
    while any(w % g for w in widths):
        g //= 2
    return g


def check_against_model(spec: CompressSpec, model: torch.nn.Module, preferred_group: int) -> CompressSpec:
    """Resolve the group size and check the spec against the model's target layers."""
    layers = target_linears(model, spec)
    if not layers:
        raise ProbeError(f"no linear layers match --targets {', '.join(spec.targets)} (ignoring "
                         f"{', '.join(spec.ignore)}) in {spec.model}: check the layer names")
    widths = {m.in_features for m in layers.values()}
    if spec.pattern:
        _, m = parse_pattern(spec.pattern)
        if any(w % m for w in widths):
            raise ProbeError(f"--pattern {spec.pattern}: M={m} does not divide the layer widths "
                             f"{sorted(widths)}: use M dividing {math.gcd(*widths)}")
    if spec.quantizer is None:
        return replace(spec, group_size=None)
    if spec.group_size is None:
        return replace(spec, group_size=default_group_size(widths, preferred_group))
    bad = sorted(w for w in widths if w % spec.group_size)
    if bad:
        g = math.gcd(*widths)
        valid = [d for d in range(8, g + 1) if g % d == 0 and d % 8 == 0]
        raise ProbeError(f"--group-size {spec.group_size} does not divide the layer width(s) {bad} of {spec.model}: "
                         f"use one of {', '.join(map(str, valid)) or '(none: widths share no multiple of 8)'}")
    return spec
