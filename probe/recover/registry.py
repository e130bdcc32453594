"""Every trainable recovery method by name (``probe recover --method``)."""

from __future__ import annotations

from probe.errors import ProbeError
from probe.recover import idp_method, lora, prefix, soft_prompt
from probe.recover.method import RecoveryMethod

TRAINABLE: dict[str, RecoveryMethod] = {m.METHOD.name: m.METHOD for m in (soft_prompt, prefix, lora, idp_method)}


def get_method(name: str) -> RecoveryMethod:
    if name not in TRAINABLE:
        raise ProbeError(f"unknown recovery method {name!r}: use one of {', '.join(TRAINABLE)}")
    return TRAINABLE[name]
