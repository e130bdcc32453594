"""`probe analyze`: compare every captured variant with the original, layer by layer, and write the verdict.

The pipeline, one typed result per step:

1. :mod:`~probe.analysis.captures` finds and checks the captures → :class:`RunSet`;
2. the original model, hooked, gives the lens (the bridge's final norm and unembedding) and the
   token ids of answers and candidates (:mod:`~probe.analysis.candidates`);
3. the metric families (:mod:`probe.analysis.families`: lens, divergence, attention, CKA,
   decodability) return per-fact arrays keyed by variant;
4. :mod:`~probe.analysis.headline` turns them into the verdict's numbers with intervals;
5. :mod:`~probe.analysis.writers` and :mod:`~probe.analysis.figures` write tables, figures and
   ``verdict.md`` atomically into the store's analysis folder.

Every statistic is at the probes' last token; families and verdict use eval-split facts only,
train-split facts only train decodability probes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from probe.analysis import bootstrap as bs
from probe.analysis import candidates as cand
from probe.analysis.captures import POS, capture_command, check_runs, find_runs
from probe.analysis.families.attention import attention_family
from probe.analysis.families.cka import cka_family
from probe.analysis.families.decodability import decodability_family
from probe.analysis.families.divergence import divergence_family
from probe.analysis.families.lens import cached_lens_family
from probe.analysis.families.patching import curves, patch_numbers, patching_family
from probe.analysis.families.patching import summary as patch_summary
from probe.analysis.figures import write_figures
from probe.analysis.graded import graded
from probe.analysis.headline import headline
from probe.analysis.lens import Lens
from probe.analysis.spec import AnalyzeSpec
from probe.analysis.verdict import verdict_text
from probe.analysis.writers import build_tables, clean, summary_rows, verdict_json, write_table
from probe.artifacts import build_manifest, write_json_atomic
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.bridge import hook_model
from probe.models.load import load_model
from probe.progress import console
from probe.store import ArtifactStore, model_key


@dataclass
class AnalysisResult:
    path: Path
    summary: list[dict]
    verdict: str


def analyze(spec: AnalyzeSpec, allow_pickle: bool = False, dtype: str = "auto") -> AnalysisResult:
    """Run the analysis and write the store's analysis ``spec.folder_name``.

    The original loads in ``dtype`` (``auto``: float32 on CPU) for its final norm and unembedding only,
    which the lens upcasts to float32; CKA runs in float64, divergences in float32 or above.
    """
    artifact = ArtifactStore.default().analysis(spec.folder_name)
    final = artifact.path
    if final.exists() and not spec.force:
        raise ProbeError(f"analysis {final} exists: use --force to overwrite it, or --name NAME")
    t0 = time.perf_counter()
    rs = check_runs(find_runs(spec))
    bs.check_enough(len(rs.eval_rows), spec.min_facts, "the eval split")
    base = load_model(ModelSpec(spec.model, model_path=spec.model_path, dtype=dtype, allow_pickle=allow_pickle))
    model_hash = rs.runs["original"].manifest.get("parents", {}).get("model")
    if model_hash and model_hash != base.model_hash:
        raise ProbeError(f"the original capture was made from other weights ({model_hash}) than {spec.model} "
                         f"loads now ({base.model_hash}): recapture with {capture_command(spec, 'original')}")
    cands = cand.build(rs, base.tokenizer, spec.seed)
    lens = Lens.from_bridge(hook_model(base))
    tokenizer = base.tokenizer
    model_hash_now = base.model_hash
    del base

    lens_f, streamed = cached_lens_family(rs, lens, cands.answers, model_key(spec.model), model_hash_now)
    div = divergence_family(rs)
    att = attention_family(rs)
    cka = cka_family(rs, spec.n_boot_cka, spec.seed)
    dec = decodability_family(rs, lens, cands.cands, spec.min_facts, spec.folds, spec.seed, spec.shuffles)
    head = headline(rs, spec, cands, dec, div, att, cka)
    patch = patching_family(spec, rs, head.lost, allow_pickle)
    patch_rows = curves(patch, head.boot)
    ranks, replaced, graded_numbers = graded(rs, lens_f.rank, cands, head.lost, head.never, head.boot,
                                             lambda t: tokenizer.decode([t]))
    head = replace(head, verdict=replace(head.verdict, patching=patch_numbers(patch, patch_rows),
                                         patching_note=patch.note if spec.patching else "", graded=graded_numbers))
    text = verdict_text(head.verdict)
    tables = build_tables(rs.layers, lens_f, div, att, cka, dec, head)
    for name, rows in (("patching", patch_rows), ("ranks", ranks), ("replacements", replaced)):
        if rows:
            tables.rows[name] = rows
    summary = summary_rows(head, cka, dec, rs.layers)

    with artifact.writer(overwrite=True) as tmp:
        for name, rows in tables.rows.items():
            write_table(tmp, name, rows)
        write_table(tmp, "summary", summary)
        verdict = clean({**verdict_json(head, text, cands.distractors), "patching": patch_summary(patch, patch_rows),
                         "graded": {"ranks": ranks, "replacements": replaced}})
        figures = write_figures(tmp, tables.rows, verdict)
        write_json_atomic(tmp / "verdict.json", verdict)
        (tmp / "verdict.md").write_text(f"# Verdict: {spec.model} / {spec.compression}\n\n{text}\n")
        write_json_atomic(tmp / "manifest.json", build_manifest(
            "analysis", spec, parents={v: r.manifest.get("spec_hash", "") for v, r in rs.runs.items()},
            runs={v: str(r.path) for v, r in rs.runs.items()}, layers=list(rs.layers), hooks=sorted(rs.hooks),
            position=POS, n_eval=len(rs.eval_rows), n_train=len(rs.train_rows), tables=sorted(tables.rows),
            figures=figures, seconds=round(time.perf_counter() - t0, 2), distractors=cands.distractors,
            lens_streamed=streamed,
            lens="every variant is read through the ORIGINAL model's final norm and unembedding (compression "
                 "and recovery leave both untouched by default)"))
    console.print(f"analysis written in {time.perf_counter() - t0:.1f} s: {final}")
    return AnalysisResult(final, summary, text)
