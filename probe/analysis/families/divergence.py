"""Divergence family: how far each variant's residuals and block outputs are from the original's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis.captures import RunSet
from probe.analysis.divergence import cosine_distance, relative_l2
from probe.progress import track

OUTPUT_KINDS = ("mlp_out", "attn_out")


@dataclass(frozen=True)
class DivergenceFamily:
    """Per eval fact and layer ``[n, L]``, every variant but the original.

    ``cosine``/``relative_l2``: the residual stream against the original's (``‖h − h₀‖/‖h₀‖``);
    ``outputs[kind]``: the relative L2 change of the MLP or attention output (``mlp_out``,
    ``attn_out``) against the original's, for each kind captured; ``outputs_vs_compressed[kind]``:
    the same against the compressed model's, for the recoveries (how much a recovery changes it).
    """

    cosine: dict[str, np.ndarray]
    relative_l2: dict[str, np.ndarray]
    outputs: dict[str, dict[str, np.ndarray]]
    outputs_vs_compressed: dict[str, dict[str, np.ndarray]]


def divergence_family(rs: RunSet) -> DivergenceFamily:
    ev = rs.eval_rows
    cos: dict[str, list[np.ndarray]] = {v: [] for v in rs.others}
    rel: dict[str, list[np.ndarray]] = {v: [] for v in rs.others}
    for layer in track(rs.layers, "Residual divergence"):
        hs = {v: rs.read(v, rs.hook("resid_post", layer), ev) for v in rs.variants}
        for v in rs.others:
            cos[v].append(cosine_distance(hs[v], hs["original"]))
            rel[v].append(relative_l2(hs[v], hs["original"]))
    outputs: dict[str, dict[str, np.ndarray]] = {}
    vs_comp: dict[str, dict[str, np.ndarray]] = {}
    for kind in OUTPUT_KINDS:
        if kind not in rs.hooks:
            continue
        orig: dict[str, list[np.ndarray]] = {v: [] for v in rs.others}
        comp: dict[str, list[np.ndarray]] = {v: [] for v in rs.recoveries}
        for layer in rs.layers:
            xs = {v: rs.read(v, rs.hook(kind, layer), ev) for v in rs.variants}
            for v in rs.others:
                orig[v].append(relative_l2(xs[v], xs["original"]))
            for v in rs.recoveries:
                comp[v].append(relative_l2(xs[v], xs["compressed"]))
        outputs[kind] = {v: np.stack(x, 1) for v, x in orig.items()}
        vs_comp[kind] = {v: np.stack(x, 1) for v, x in comp.items()}
    return DivergenceFamily({v: np.stack(x, 1) for v, x in cos.items()}, {v: np.stack(x, 1) for v, x in rel.items()},
                            outputs, vs_comp)
