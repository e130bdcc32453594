"""Patching family: activation patching of the lost eval facts, both directions, every captured layer.

Needs the models themselves, not the captures: the original (``--model``/``--model-path``) and the
built compressed variant, loaded one at a time through :mod:`probe.runtime.variant`. The facts
come from the probe file the original capture names. Where either is missing the family is
skipped and says why (:attr:`PatchingFamily.note`), so an analysis of copied captures still runs.

Shares count only facts that this run confirms: *restored* among facts the original answers and
the compressed model does not (unpatched), *broken* among facts the original answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.captures import RunSet
from probe.analysis.patching import MODES, PatchResult, patch_facts, patch_items
from probe.analysis.spec import AnalyzeSpec
from probe.analysis.verdict import PatchCurve, PatchNumbers
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import build_prompts
from probe.models.bridge import hook_model
from probe.models.load import load_model
from probe.runtime.spec import VariantSpec, compress_command, variant_artifact
from probe.runtime.variant import load_variant

DIRECTIONS = {"restored": "original → compressed: lost facts whose answer comes back",
              "broken": "compressed → original: facts the original knows that it no longer answers"}


@dataclass(frozen=True)
class PatchingFamily:
    """Per eval fact and layer ``[n_eval, L]`` (NaN for facts not patched): ``shares[(direction, mode, answer)]``
    with ``answer`` ``first`` (first token top-1) or ``full`` (whole answer under teacher forcing)."""

    shares: dict[tuple[str, str, str], np.ndarray]
    result: PatchResult | None
    n_facts: int
    note: str = ""
    answer: str = "first"  # the curves the verdict states: "full" where the captures' known is the full answer

    def lost_here(self) -> np.ndarray:
        """Patched facts the original answers and the compressed model does not, unpatched (as ``answer`` counts)."""
        r = self.result
        o, c = (r.unpatched_original.full, r.unpatched_compressed.full) if self.answer == "full" else \
            (r.unpatched_original.top1, r.unpatched_compressed.top1)
        return o & ~c

    def sanity(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last layer patched everywhere, as ``answer`` counts: restored, broken, and the facts the original
        answers unpatched."""
        r = self.result
        if self.answer == "full":
            return r.sanity_restored_full, r.sanity_broken_full, r.unpatched_original.full
        return r.sanity_restored, r.sanity_broken, r.unpatched_original.top1


def skipped(note: str) -> PatchingFamily:
    return PatchingFamily({}, None, 0, note)


def patching_family(spec: AnalyzeSpec, rs: RunSet, lost: np.ndarray, allow_pickle: bool = False) -> PatchingFamily:
    """Patch up to ``spec.patch_facts`` lost eval facts (a seeded subset beyond that), or say why not."""
    if not spec.patching:
        return skipped("activation patching was not asked for (--patching off)")
    model = ModelSpec(spec.model, model_path=spec.model_path, dtype="float32", allow_pickle=allow_pickle)
    if variant_artifact(model, spec.compression).manifest() is None:
        return skipped(f"activation patching skipped: the compressed model is not built here: run "
                       f"{compress_command(model, spec.compression)}")
    source = rs.runs["original"].manifest.get("spec", {}).get("probes")
    try:
        facts = {f.id: f for f in load_probes(source)} if source else {}
    except ProbeError as exc:
        return skipped(f"activation patching skipped: the probe file could not be loaded ({exc})")
    rows = np.nonzero(lost)[0]
    rows = np.array([r for r in rows if rs.probes[rs.eval_rows[r]]["id"] in facts], np.int64)
    if len(rows) == 0:
        return skipped("activation patching skipped: no lost fact to patch" if not lost.any() else
                       "activation patching skipped: the probe file does not hold the lost facts")
    if len(rows) > spec.patch_facts:
        rows = np.sort(np.random.default_rng(spec.seed).choice(rows, spec.patch_facts, replace=False))
    chosen = [facts[rs.probes[rs.eval_rows[r]]["id"]] for r in rows]

    def load(which: str):
        return hook_model(load_model(model) if which == "original" else
                          load_variant(VariantSpec(model, "compressed", spec.compression)).base)

    protocol = rs.runs["original"].manifest.get("protocol") or {}  # ask as the captures asked
    shots, template = int(protocol.get("shots", 0)), int(protocol.get("template", 0))
    prompted = build_prompts(chosen, tuple(facts.values()), shots, template, warn=False)
    first = load_model(model)
    items = patch_items(chosen, first.tokenizer, first.max_positions, template, prompted)
    pad_id = first.tokenizer.pad_token_id if first.tokenizer.pad_token_id is not None else 0
    del first
    result = patch_facts(items, load, rs.layers, pad_id, spec.patch_batch)
    answer = "first" if protocol.get("known", "first_token") == "first_token" else "full"
    return PatchingFamily(spread(result, rows, len(lost)), result, len(rows), answer=answer)


def spread(result: PatchResult, rows: np.ndarray, n_eval: int) -> dict[tuple[str, str, str], np.ndarray]:
    """Patched facts' outcomes as ``[n_eval, L]`` floats, NaN where a fact does not count."""
    lost_here = result.unpatched_original.top1 & ~result.unpatched_compressed.top1
    known_here = result.unpatched_original.top1
    full_lost = result.unpatched_original.full & ~result.unpatched_compressed.full
    full_known = result.unpatched_original.full
    out = {}
    for mode in MODES:
        has = result.has_subject if mode == "subject" else np.ones(len(rows), bool)
        for (direction, answer), (values, valid) in {
                ("restored", "first"): (result.restored[mode], lost_here),
                ("restored", "full"): (result.restored_full[mode], full_lost),
                ("broken", "first"): (result.broken[mode], known_here),
                ("broken", "full"): (result.broken_full[mode], full_known)}.items():
            full = np.full((n_eval, len(result.layers)), np.nan)
            ok = valid & has
            full[rows[ok]] = values[ok]
            out[(direction, mode, answer)] = full
    return out


def curves(fam: PatchingFamily, boot: bs.ClusterBootstrap) -> list[dict]:
    """One row per direction, mode, answer and layer: the share with its cluster-bootstrap interval."""
    if fam.result is None:
        return []
    rows = []
    for (direction, mode, answer), values in fam.shares.items():
        counted = np.isfinite(values[:, 0])
        if not counted.any():
            continue
        reps = boot.replicates(values, counted)
        lo, hi = np.nanquantile(reps, [(1 - bs.LEVEL) / 2, (1 + bs.LEVEL) / 2], axis=0)
        mean = np.nanmean(values[counted], 0)
        for li, layer in enumerate(fam.result.layers):
            rows.append({"direction": direction, "mode": mode, "answer": answer, "layer": layer,
                         "mean": float(mean[li]), "lo": float(lo[li]), "hi": float(hi[li]), "n": int(counted.sum())})
    return rows


def summary(fam: PatchingFamily, rows: list[dict]) -> dict:
    """What verdict.json carries: the curves, the sanity checks and the cost."""
    r = fam.result
    if r is None:
        return {"note": fam.note}
    lost_here = fam.lost_here()
    return {
        "note": fam.note, "facts_patched": fam.n_facts, "lost_in_this_run": int(lost_here.sum()),
        "answer_counted": {"first": "the answer's first token becomes top-1",
                           "full": "the whole answer is the greedy choice (teacher forcing)"}[fam.answer],
        "directions": DIRECTIONS, "positions": {"last": "the prompt's last token", "subject": "the subject's tokens"},
        "sanity": {"compressed_answers_unpatched": int((r.unpatched_compressed.full if fam.answer == "full" else
                                                            r.unpatched_compressed.top1).sum()),
                   "original_misses_unpatched": int((~fam.sanity()[2]).sum()),
                   "restored_by_last_layer_everywhere": int((fam.sanity()[0] & lost_here).sum()),
                   "broken_by_last_layer_everywhere": int((fam.sanity()[1] & fam.sanity()[2]).sum()),
                   "of": int(lost_here.sum())},
        "seconds": round(r.seconds, 2), "seconds_per_fact_layer": r.seconds_per_fact_layer,
        "forward_passes_per_fact": r.runs, "curves": rows}


def patch_numbers(fam: PatchingFamily, rows: list[dict]) -> PatchNumbers | None:
    """The curves of both directions and modes that count as the captures' known does, for the verdict text."""
    r = fam.result
    if r is None:
        return None
    out = []
    for direction in DIRECTIONS:
        for mode in MODES:
            sel = [x for x in rows if x["direction"] == direction and x["mode"] == mode and x["answer"] == fam.answer]
            if sel:
                out.append(PatchCurve(direction, mode, tuple(x["layer"] for x in sel),
                                      tuple(bs.Interval(x["mean"], x["lo"], x["hi"], x["n"]) for x in sel)))
    lost_here = fam.lost_here()
    return PatchNumbers(fam.n_facts, tuple(out), int((fam.sanity()[0] & lost_here).sum()), int(lost_here.sum()),
                        r.seconds_per_fact_layer)
