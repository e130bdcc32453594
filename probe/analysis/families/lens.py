"""Logit-lens family: each layer read through the original's final norm and unembedding.

The statistics are computed once per capture by a streamed pass (:func:`probe.analysis.lens.stream_layer`:
facts × vocabulary chunks, bounded memory) and kept in the store (:class:`probe.store.LensArtifact`,
``stats.npz``), keyed by the capture, the original's capture, the lens weights, the answers and the
rows; `probe analyze` reuses them while all of those are unchanged, and the dashboard's probe click
reads them instead of unembedding again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probe.analysis.captures import RunSet
from probe.analysis.lens import TOP_K, VOCAB_CHUNK, Lens, stream_layer
from probe.artifacts import build_manifest, spec_hash, write_json_atomic
from probe.progress import track
from probe.store import ArtifactStore, LensArtifact

STATS = ("rank", "logprob", "top_ids", "kl", "js")


@dataclass(frozen=True)
class LensFamily:
    """Per eval fact and layer ``[n, L]``: the answer's lens rank and probability; divergence from the original.

    ``rank``/``prob``: every variant (rank 0 = the best accepted answer is the lens's top-1);
    ``kl``/``js``: KL(original ‖ variant) and Jensen–Shannon of the lens distributions (nats),
    every variant but the original.
    """

    rank: dict[str, np.ndarray]
    prob: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]
    js: dict[str, np.ndarray]

    def top1(self, variant: str) -> np.ndarray:
        return self.rank[variant] == 0


@dataclass(frozen=True)
class VariantLens:
    """One variant's stored lens statistics, per eval fact and layer (``top_ids``: ``[n, L, k]``)."""

    rank: np.ndarray
    logprob: np.ndarray
    top_ids: np.ndarray
    kl: np.ndarray | None = None
    js: np.ndarray | None = None


def stream_lens(rs: RunSet, lens: Lens, answers: Sequence[Sequence[int]], variants: Sequence[str] | None = None,
                chunk: int = VOCAB_CHUNK) -> dict[str, VariantLens]:
    """The lens statistics of ``variants`` (default: all) and the original, one layer at a time, streamed."""
    names = ["original", *[v for v in (variants or rs.variants) if v != "original"]]
    per_layer = []
    for layer in track(rs.layers, f"Logit lens ({len(names)} variants, streamed)"):
        h = {v: rs.read(v, rs.hook("resid_post", layer), rs.eval_rows) for v in names}
        per_layer.append(stream_layer(lens, h, answers, "original", chunk=chunk))
    out = {}
    for v in names:
        cols = {f: [getattr(s[v], f) for s in per_layer] for f in STATS}
        out[v] = VariantLens(*(None if cols[f][0] is None else np.stack(cols[f], 1) for f in STATS))
    return out


def family_of(stats: dict[str, VariantLens], variants: Sequence[str]) -> LensFamily:
    """The analysis's view of the stored statistics."""
    return LensFamily({v: stats[v].rank.astype(float) for v in variants},
                      {v: np.exp(stats[v].logprob) for v in variants},
                      {v: stats[v].kl for v in variants if v != "original"},
                      {v: stats[v].js for v in variants if v != "original"})


def lens_family(rs: RunSet, lens: Lens, answers: Sequence[Sequence[int]], chunk: int = VOCAB_CHUNK) -> LensFamily:
    """Residuals at every common layer through ``lens``; ``answers`` are each eval fact's accepted first tokens."""
    return family_of(stream_lens(rs, lens, answers, chunk=chunk), rs.variants)


def stats_key(rs: RunSet, variant: str, model_hash: str, answers: Sequence[Sequence[int]]) -> str:
    """What the statistics of ``variant`` depend on: both captures, the lens weights, answers, rows, layers."""
    return spec_hash({
        "capture": spec_hash(rs.runs[variant].manifest), "reference": spec_hash(rs.runs["original"].manifest),
        "model": model_hash, "answers": [list(a) for a in answers], "rows": rs.eval_rows.tolist(),
        "layers": list(rs.layers), "top_k": TOP_K})


def read_stats(handle: LensArtifact) -> VariantLens:
    with np.load(handle.stats_file) as f:
        return VariantLens(*(f[k] if k in f.files else None for k in STATS))


def cached_lens_family(rs: RunSet, lens: Lens, answers: Sequence[Sequence[int]], model: str, model_hash: str,
                       chunk: int = VOCAB_CHUNK) -> tuple[LensFamily, list[str]]:
    """:func:`lens_family` through the store: stored statistics reused, missing ones streamed and stored.

    Returns the family and the variants whose statistics were computed now.
    """
    store = ArtifactStore.default()
    handles = {v: store.lens(model, rs.runs[v].path.name) for v in rs.variants}
    keys = {v: stats_key(rs, v, model_hash, answers) for v in rs.variants}
    stats: dict[str, VariantLens] = {}
    for v, h in handles.items():
        m = h.manifest()
        if m is not None and m.get("key") == keys[v] and h.stats_file.is_file():
            stats[v] = read_stats(h)
    missing = [v for v in rs.variants if v not in stats]
    if missing:
        fresh = stream_lens(rs, lens, answers, missing, chunk)
        for v in missing:
            with handles[v].writer(overwrite=True) as tmp:
                arrays = {k: a for k in STATS if (a := getattr(fresh[v], k)) is not None}
                np.savez(tmp / "stats.npz", **arrays)
                write_json_atomic(tmp / "manifest.json", build_manifest(
                    "lens", {"top_k": TOP_K, "layers": list(rs.layers), "rows": rs.eval_rows.tolist(),
                             "answers": [list(a) for a in answers]},
                    parents={"capture": spec_hash(rs.runs[v].manifest),
                             "reference": spec_hash(rs.runs["original"].manifest), "model": model_hash},
                    key=keys[v], variant=v, capture=rs.runs[v].path.name, reference=rs.runs["original"].path.name))
            stats[v] = fresh[v]
    return family_of(stats, rs.variants), missing
