"""Perplexity of a causal LM on local held-out text (non-overlapping windows)."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch

from probe.errors import ProbeError
from probe.knowledge.scoring import LogitsFn
from probe.progress import track


def heldout_text(path: str | Path | None = None) -> str:
    """The text to measure perplexity on: ``path``, or the held-out text shipped with probe."""
    if path is None:
        return resources.files("probe").joinpath("corpus_data/heldout.txt").read_text()
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"perplexity text {p} does not exist: give a UTF-8 text file")
    text = p.read_text(errors="strict")
    if not text.strip():
        raise ProbeError(f"perplexity text {p} is empty: give a file with text")
    return text


@torch.no_grad()
def perplexity(tokenizer, logits_fn: LogitsFn, text: str, *, window: int = 256, max_tokens: int = 4096,
               device: torch.device | str = "cpu") -> float:
    """exp(mean next-token NLL) over the first ``max_tokens`` tokens, in windows of ``window``."""
    ids = tokenizer(text, add_special_tokens=False).input_ids[:max_tokens]
    if len(ids) < 2:
        raise ProbeError("perplexity text has fewer than 2 tokens: give a longer text")
    total, count = 0.0, 0
    chunks = [ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) > 1]
    for chunk in track(chunks, "Perplexity"):
        x = torch.tensor([chunk], device=device)
        logits = logits_fn(x, torch.ones_like(x))[0].float()
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
        total += float(nll)
        count += len(chunk) - 1
    return math.exp(total / count)
