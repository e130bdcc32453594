"""Attention family: where each head looks at the probes' last token, and how that moves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probe.analysis.captures import RunSet
from probe.analysis.divergence import entropy, js_prob
from probe.progress import track


@dataclass(frozen=True)
class AttentionFamily:
    """Per eval fact, layer and head ``[n, L, H]``.

    ``entropy`` of each head's pattern and ``prompt_mass``, its attention on prepended prompt
    positions (0 for a variant without prompt positions: there is nothing to attend), every
    variant; ``js``: Jensen–Shannon divergence (nats) from the original's pattern, every variant
    but the original; ``js_vs_compressed``: from the compressed model's, for the recoveries;
    ``js_vs_compressed_no_sink``: the same over the keys after the first (the attention sink: with no
    BOS, the first token draws most attention), each pattern renormalised over those keys.
    """

    entropy: dict[str, np.ndarray]
    prompt_mass: dict[str, np.ndarray]
    js: dict[str, np.ndarray]
    js_vs_compressed: dict[str, np.ndarray]
    js_vs_compressed_no_sink: dict[str, np.ndarray] = field(default_factory=dict)


def without_first_key(p: np.ndarray) -> np.ndarray:
    """Attention rows over keys 1.. renormalised (a row with no mass there stays zero)."""
    rest = np.asarray(p, np.float64)[..., 1:]
    total = rest.sum(-1, keepdims=True)
    return np.divide(rest, total, out=np.zeros_like(rest), where=total > 0)


def attention_family(rs: RunSet) -> AttentionFamily | None:
    """None when the captures hold no attention patterns."""
    if "pattern" not in rs.hooks:
        return None
    ev = rs.eval_rows
    ent: dict[str, list[np.ndarray]] = {v: [] for v in rs.variants}
    mass: dict[str, list[np.ndarray]] = {v: [] for v in rs.variants}
    js: dict[str, list[np.ndarray]] = {v: [] for v in rs.others}
    js_comp: dict[str, list[np.ndarray]] = {v: [] for v in rs.recoveries}
    js_sink: dict[str, list[np.ndarray]] = {v: [] for v in rs.recoveries}
    for layer in track(rs.layers, "Attention"):
        name = rs.hook("pattern", layer)
        pats = {v: rs.read(v, name, ev) for v in rs.variants}
        for v, p in pats.items():
            ent[v].append(entropy(p))
            has_mass = rs.has(v, f"{name}.prompt_mass")
            mass[v].append(rs.read(v, f"{name}.prompt_mass", ev) if has_mass else np.zeros(p.shape[:2]))
        for v in rs.others:
            js[v].append(js_prob(pats[v], pats["original"]))
        comp_rest = without_first_key(pats["compressed"])
        for v in rs.recoveries:
            js_comp[v].append(js_prob(pats[v], pats["compressed"]))
            js_sink[v].append(js_prob(without_first_key(pats[v]), comp_rest))

    def stack(d: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {v: np.stack(x, 1) for v, x in d.items()}

    return AttentionFamily(stack(ent), stack(mass), stack(js), stack(js_comp), stack(js_sink))
