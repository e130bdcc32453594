"""`probe capture`: run a variant hooked on every probe and write the resumable store.

Order of work: cheap checks (variant built) → the run's lock (rank 0) and store state → load →
tokenise and size the store (refuse above ``--max-gb``) → create, resume or restart the store →
batches not yet done → finalise. An unfinished store is resumed only when it was made from the same
settings, probe set, tokenisation and parent weights; otherwise it is restarted from scratch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from probe.artifacts import build_manifest, spec_hash
from probe.capture.distributed import Ranks, close, init_ranks, rank_device
from probe.capture.recorder import Layout, ProbeInput, Recorder, encode_probes, model_dims
from probe.capture.spec import CaptureSpec
from probe.capture.store import CaptureStore, estimate_bytes, open_run
from probe.errors import ProbeError
from probe.evaluation.run import score_variant
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat, Prompted, build_prompts
from probe.knowledge.schema import Fact
from probe.knowledge.status import is_known
from probe.models.bridge import hook_model
from probe.progress import console, track
from probe.runtime.spec import VariantSpec, model_key
from probe.runtime.variant import capture_view, load_variant, preflight_variant
from probe.store import ArtifactStore, CaptureArtifact

BatchCallback = Callable[[int], None]
VariantBuilder = Callable[[VariantSpec], None]  # builds a variant that is missing (`--build`)


RESUME_KEYS = {"spec_hash": "settings", "probe_hash": "probe set", "t_max": "tokenisation width",
               "n_probes": "number of probes", "parents": "parents (weights, probes)"}


def capture_artifact(spec: CaptureSpec) -> CaptureArtifact:
    """The store handle of the capture ``spec`` makes."""
    return ArtifactStore.default().capture(model_key(spec.variant.model), spec.run_name)


def check_existing(spec: CaptureSpec, handle: CaptureArtifact) -> dict | None:
    """The unfinished store's manifest (resumed if it matches), None when there is none or with ``--force``
    (whose store is overwritten unread, damaged or not); refuse to clobber a finished run."""
    if spec.force:
        return None
    status = handle.status()
    if status is not None and status["status"] == "complete":
        raise ProbeError(f"capture {handle.path} is already complete: use --force to overwrite it, or --run NAME "
                         f"for another run")
    return status


def changed(running: dict, manifest: dict) -> list[str]:
    """What differs between an unfinished store's manifest and the one this run would write."""
    return [what for key, what in RESUME_KEYS.items() if running.get(key) != manifest.get(key)]


def probe_rows(facts: tuple[Fact, ...], inputs: list[ProbeInput], prompted: list[Prompted]) -> list[dict]:
    """The probe table: positions index the stored tokens (demonstrations, then the query from ``query_start``)."""
    return [{"index": i, "id": f.id, "relation": f.relation, "subject": f.subject, "object": f.object,
             "answers": list(f.answers), "prompt": a.query, "split": f.split, "n_tokens": p.n_stored,
             "last": p.query_start + p.last, "subject_pos": p.query_start + p.subject if p.subject >= 0 else -1,
             "query_start": p.query_start, "demonstrations": list(a.demo_ids)}
            for i, (f, p, a) in enumerate(zip(facts, inputs, prompted, strict=True))]


def result_rows(rows: list[dict], handle: CaptureArtifact, tokenizer, known: list[bool] | None = None) -> list[dict]:
    """The probe table with each probe's top-k tokens, answer rank, chosen prompt (read back) and whether it is
    known under the probe format's definition."""
    run = open_run(handle)
    ids, lps = run["logits/topk_ids"][:], run["logits/topk_logprobs"][:]
    rank, chosen = run["logits/answer_rank"][:], run["prompt/chosen"][:]
    return [{**row, "answer_rank": int(rank[i]), "answer_top1": bool(rank[i] == 0), "chosen_prompt": int(chosen[i]),
             **({"known": known[i]} if known is not None else {}),
             "top_tokens": [tokenizer.decode([int(t)]) for t in ids[i]],
             "top_logprobs": [round(float(x), 5) for x in lps[i]]}
            for i, row in enumerate(rows)]


def known_flags(loaded, facts: tuple[Fact, ...], pool: tuple[Fact, ...], fmt: ProbeFormat) -> list[bool]:
    """Each probe known under ``fmt`` (answers only: distractors do not change it), as `probe eval` decides."""
    bare = [replace(f, distractors=()) for f in facts]
    return [is_known(s, fmt.known) for s in score_variant(loaded, bare, pool, fmt, desc="Scoring known facts")]


def capture(spec: CaptureSpec, on_batch: BatchCallback | None = None, build: VariantBuilder | None = None) -> Path:
    """Capture ``spec`` (sharded when under torchrun) and return the store's folder.

    With ``spec.build``, ``build`` first makes the variant if it is missing (the `probe capture --build`
    command passes :func:`probe.experiment.build.build_missing`: building runs stages above capture).
    """
    ranks = init_ranks(spec.variant.model.device)
    try:
        return _capture(spec, ranks, on_batch, build)
    finally:
        close(ranks)


def _capture(spec: CaptureSpec, ranks: Ranks, on_batch: BatchCallback | None, build: VariantBuilder | None) -> Path:
    vspec = replace(spec.variant, model=replace(spec.variant.model,
                                                device=rank_device(spec.variant.model.device, ranks)))
    if spec.build:
        if ranks.world > 1:
            raise ProbeError("--build cannot run under torchrun: build the variant first without torchrun")
        if build is None:
            raise ProbeError("capture --build needs a builder: pass build=probe.experiment.build.build_missing, "
                             "or build the variant first with `probe compress` / `probe recover`")
        build(vspec)
    preflight_variant(vspec)
    handle = capture_artifact(spec)
    with contextlib.ExitStack() as held:
        existing, failed = None, None
        if ranks.is_main:  # rank 0 holds the run's lock from the store's creation to its finalisation
            try:
                held.enter_context(handle.lock())
                existing = check_existing(spec, handle)
            except ProbeError as exc:
                failed = exc
        if ranks.share_error(failed is not None):
            raise failed or ProbeError(f"rank 0 could not start {handle.what}: see its error")
        return _record(spec, vspec, ranks, handle, existing, on_batch)


def _record(spec: CaptureSpec, vspec: VariantSpec, ranks: Ranks, handle: CaptureArtifact, existing: dict | None,
            on_batch: BatchCallback | None) -> Path:
    path = handle.path
    t0 = time.perf_counter()
    loaded = load_variant(vspec)
    view = capture_view(loaded)
    pool = load_probes(spec.probes)
    probes = pool.split(spec.split)
    n_layers, d_model, n_heads = model_dims(view.model)
    layers = spec.check_layers(n_layers)
    prompted = build_prompts(probes.facts, pool.facts, spec.format.shots, spec.format.template)
    n_prefix = view.prefix.n_tokens if view.prefix is not None else 0
    tok = loaded.base.tokenizer
    inputs = encode_probes(probes.facts, tok, loaded.base.max_positions, n_prefix, prompted)
    n = len(inputs)
    layout = Layout(layers, spec.hooks, spec.positions, n, max(p.n_stored for p in inputs), d_model, n_heads,
                    n_prefix, min(spec.full_attention, n), spec.top_k, spec.dtype)
    arrays = layout.arrays()
    size = estimate_bytes(arrays)
    n_batches = -(-n // spec.batch_size)
    if ranks.is_main:
        console.print(f"capture {path}: {n} probes, {len(layers)} layers, {len(arrays)} arrays, estimated "
                      f"{size / 1e9:.3f} GB uncompressed ({spec.dtype})")
    if size > spec.max_gb * 1e9:
        raise ProbeError(f"the capture would take about {size / 1e9:.2f} GB, above --max-gb {spec.max_gb:g}: "
                         f"record fewer --layers/--hooks/--positions, use --dtype float16, or raise --max-gb")

    manifest = build_manifest(
        "capture", spec.content(), parents={**loaded.parents, "probes": probes.content_hash()},
        model=model_key(vspec.model), variant=vspec.variant, compression=vspec.compression, probes=probes.name,
        probe_hash=probes.content_hash(), split=spec.split, layers=list(layers), hooks=list(spec.hooks),
        hook_names={kind: [layout.hook_name(kind, la) for la in layers] for kind in spec.hooks},
        positions=list(spec.positions), dtype=spec.dtype, n_probes=n, n_batches=n_batches,
        batch_size=spec.batch_size, t_max=layout.t_max, n_full_attention=layout.n_full,
        prompt={"n_tokens": n_prefix, "n_prompts": view.prefix.n_prompts if view.prefix is not None else 0,
                "key_columns": [0, n_prefix], "note": "prompt keys are attention columns 0..n-1; stored "
                "positions index real tokens only, so they align across variants; stored attention rows are "
                "over real keys, renormalised, with the prompt's mass in '.prompt_mass'"},
        protocol={**spec.format.describe(), "demonstration_columns": "stored tokens 0..query_start-1 of each probe "
                  "(probe table 'query_start') are its demonstrations: key columns of every attention row; their "
                  "rows are not recorded (run as a cached prefix)"},
        shapes={k: list(a.shape) for k, a in arrays.items()}, estimated_bytes=size, world_size=ranks.world,
    )
    manifest["spec_hash"] = spec_hash(spec.content())
    rows = probe_rows(probes.facts, inputs, prompted)
    if ranks.is_main:
        differs = changed(existing, manifest) if existing is not None else []
        if differs:
            console.print(f"restarting the unfinished capture {path} from scratch: its {', '.join(differs)} changed "
                          f"since it was started")
        if existing is None or differs:
            CaptureStore.create(handle, arrays, spec.batch_size, manifest, rows)
    ranks.barrier()
    store = CaptureStore(handle, spec.batch_size)
    bridge = hook_model(replace(loaded.base, model=view.model))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    recorder = Recorder(bridge, view, layout, pad_id)
    todo = [i for i in ranks.my_batches(n_batches) if i not in store.done()]
    failed: BaseException | None = None
    try:
        for index in track(todo, f"Capturing {vspec.label} (rank {ranks.rank})" if ranks.world > 1
                           else f"Capturing {vspec.label}"):
            start = index * spec.batch_size
            items = inputs[start: start + spec.batch_size]
            store.write_batch(index, recorder.record(items, max(0, min(layout.n_full - start, len(items)))))
            if on_batch is not None:
                on_batch(index)
    except BaseException as exc:  # every rank must learn of a failure before the final barrier
        failed = exc
    if ranks.share_error(failed is not None):
        if failed is not None:
            raise failed
        raise ProbeError(f"another rank failed: rerun the same command to resume {path}")
    ranks.barrier()
    if ranks.is_main:
        missing = set(range(n_batches)) - store.done()
        if missing:
            raise ProbeError(f"{len(missing)} batches of {path} are missing: rerun the same command to resume")
        known = known_flags(loaded, probes.facts, pool.facts, spec.format)
        manifest["seconds"] = round(time.perf_counter() - t0, 2)
        store.finalise(manifest, result_rows(rows, handle, tok, known))
        console.print(f"captured {n} probes in {manifest['seconds']:.1f} s: {path}")
    ranks.barrier()
    return path
