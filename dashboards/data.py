"""Read-only loaders for the dashboard: every path comes from the artifact store (names checked, inside the root).

Nothing here writes; a damaged artifact is left out of the lists with a warning. Capture arrays are
read one probe row at a time (one zarr chunk) and the rows are cached (``functools.lru_cache`` keyed
by root, model, run, array and probe index); whole arrays are never loaded except the small
per-probe vectors (``prompt/chosen``). JSON artifacts are cached keyed by their modification time
(the store's ``cached`` reads), so a rerun of the pipeline shows up without a restart.

Nothing here imports torch or transformers at start-up: the per-fact logit lens (Probes page) reads
the ranks `probe analyze` stored (:class:`probe.store.LensArtifact`); only a fact they do not cover
(a train-split fact, a capture changed since) needs the model's final norm and unembedding, imported
on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.io as pio
from tokenizers import Tokenizer
from zarr.core.sync import sync

from probe.analysis.spec import VARIANT_ORDER
from probe.artifacts import spec_hash
from probe.capture.store import READ_ERRORS, open_run
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.knowledge.status import variant_statuses
from probe.models.registry import REGISTRY
from probe.store import ArtifactStore, clear_read_cache, pid_alive

RECOVERIES = tuple(v for v in VARIANT_ORDER if v not in ("original", "compressed"))


# ---- the store -----------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _stores(root: str) -> ArtifactStore:
    return ArtifactStore(root, cached=True)


def store(root: Path | str) -> ArtifactStore:
    """The (cached-reads) artifact store at ``root``."""
    return _stores(str(Path(root).resolve()))


# ---- what exists ---------------------------------------------------------------------------------
def capture_rows(root: Path) -> list[dict]:
    """Every capture under ``captures/<model>/<run>`` with its status (the `probe runs` table)."""
    return [c.summary() for c in store(root).captures()]


@dataclass
class Experiment:
    """One model under one compression: its variant captures (variant → run) and its analysis folder."""

    model: str
    compression: str
    runs: dict[str, str] = field(default_factory=dict)
    analysis: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.compression}"

    @property
    def variants(self) -> list[str]:
        return [v for v in VARIANT_ORDER if v in self.runs]


def experiments(root: Path) -> list[Experiment]:
    """Experiments found from complete captures and analysis folders.

    One capture per variant: the ones the experiment's analysis compared, else the first by name.
    """
    found: dict[tuple[str, str], Experiment] = {}
    rows = [r for r in capture_rows(root) if r["status"] == "complete"]
    for r in rows:
        if r["variant"] != "original" and r["compression"]:
            exp = found.setdefault((r["model"], r["compression"]), Experiment(r["model"], r["compression"]))
            exp.runs.setdefault(r["variant"], r["run"])
    for exp in found.values():
        originals = [r["run"] for r in rows if r["model"] == exp.model and r["variant"] == "original"]
        if originals:
            exp.runs["original"] = originals[0]
    for analysis in store(root).analyses():
        manifest = analysis.manifest()
        if manifest is None:
            continue
        spec = manifest.get("spec", {})
        exp = found.setdefault((spec.get("model", "?"), spec.get("compression", "?")),
                               Experiment(spec.get("model", "?"), spec.get("compression", "?")))
        if exp.analysis:
            continue
        exp.analysis = analysis.name
        complete = {r["run"] for r in rows if r["model"] == exp.model}
        analysed = {v: Path(p).name for v, p in manifest.get("runs", {}).items() if Path(p).name in complete}
        if {"original", "compressed"} <= set(analysed):  # show exactly the captures the analysis compared
            exp.runs = analysed
    return sorted(found.values(), key=lambda e: e.key)


def find_experiment(root: Path, key: str | None) -> Experiment:
    """The experiment ``model/compression`` (the first one when ``key`` is empty), or a clear error."""
    exps = experiments(root)
    if not exps:
        raise ProbeError(f"no captures or analyses under {store(root).root}: run `probe capture --variant "
                         f"original` and `probe capture --variant compressed --compression gptq3`, then "
                         f"`probe analyze --compression gptq3`")
    if not key:
        return exps[0]
    for e in exps:
        if e.key == key:
            return e
    raise ProbeError(f"unknown experiment {key!r}: found {', '.join(e.key for e in exps)}")


# ---- captures ------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _open(root: str, model: str, run: str):

    handle = store(root).capture(model, run)
    status = handle.status()
    if status is None:
        raise ProbeError(f"unknown capture {model}/{run}: `probe runs` lists the captures under {root}")
    r = open_run(handle)
    if status["status"] != "complete":
        done = handle.done_count()
        raise ProbeError(f"capture {model}/{run} is unfinished ({done}/{r.manifest.get('n_batches', '?')} batches): "
                         f"rerun its `probe capture` command to resume it")
    return r


def open_capture(root: Path, model: str, run: str):
    """A complete capture (cached); unknown, unfinished or escaping runs raise ProbeError."""
    return _open(str(store(root).root), model, run)


@lru_cache(maxsize=64)
def _probes(root: str, model: str, run: str, mtime_ns: int) -> list[dict]:
    return _open(root, model, run).probes


def probes(root: Path, model: str, run: str) -> list[dict]:
    """The probe table of a complete capture (cached until probes.json changes)."""
    r = open_capture(root, model, run)
    return _probes(str(Path(root).resolve()), model, run, r.handle.probes_file.stat().st_mtime_ns)


@lru_cache(maxsize=4096)
def _array(root: str, model: str, run: str, name: str):
    """An open array handle (opening one reads its metadata: ~0.5 ms, 180 of them per lens trajectory)."""
    return _open(root, model, run)[name]


@lru_cache(maxsize=8192)
def _row(root: str, model: str, run: str, name: str, index: int) -> np.ndarray:
    return _rows_at_once(root, model, [(run, name)], index)[0]


def _rows_at_once(root: str, model: str, keys: list[tuple[str, str]], index: int) -> list[np.ndarray]:
    """One probe's row of several ``(run, array)``s, read concurrently in one pass of zarr's event loop
    (2× faster than one read after another for the 30 layers of a lens trajectory)."""
    arrays = [_array(root, model, run, n) for run, n in keys]
    for (run, n), arr in zip(keys, arrays, strict=True):
        if not 0 <= index < arr.shape[0]:
            raise ProbeError(f"probe {index} is out of range: {model}/{run} array {n} has {arr.shape[0]} rows")

    async def gather() -> list:
        return await asyncio.gather(*(a.async_array.getitem(index) for a in arrays))

    try:
        return [np.asarray(r) for r in sync(gather())]
    except (OSError, ValueError, *READ_ERRORS):  # read them one by one: a damaged one names its capture
        return [np.asarray(a[index]) for a in arrays]


def row(root: Path, model: str, run: str, name: str, index: int) -> np.ndarray:
    """One probe's row of one array (one chunk decompressed, then cached)."""
    open_capture(root, model, run)
    return _row(str(Path(root).resolve()), model, run, name, int(index))


def has_array(root: Path, model: str, run: str, name: str) -> bool:
    return name in open_capture(root, model, run).manifest.get("shapes", {})


def hook(root: Path, model: str, run: str, kind: str, layer: int, position: str = "last") -> str:
    """Array name of hook ``kind`` at ``layer``, from the capture's manifest (``last/blocks.3.attn.hook_pattern``)."""
    m = open_capture(root, model, run).manifest
    names = m.get("hook_names", {}).get(kind)
    if not names or layer not in m.get("layers", []):
        raise ProbeError(f"capture {model}/{run} has no {kind} at layer {layer} (hooks {m.get('hooks')}, layers "
                         f"{m.get('layers')}): recapture with --hooks {kind} --layers {layer}")
    return f"{position}/{names[m['layers'].index(layer)]}"


def attention(root: Path, model: str, run: str, layer: int, head: int, index: int) -> tuple[np.ndarray, str]:
    """Attention of probe ``index`` at ``layer`` (``head`` −1: mean of heads) over its real tokens.

    The full query×key map when this probe has one (the first ``--full-attention`` probes), else the
    last token's row ``[1, T]``; the second value says which.
    """
    n = int(probes(root, model, run)[index]["n_tokens"])
    full, last = hook(root, model, run, "pattern", layer, "full"), hook(root, model, run, "pattern", layer)
    shapes = open_capture(root, model, run).manifest.get("shapes", {})
    if full in shapes and index < shapes[full][0]:
        maps, kind = row(root, model, run, full, index)[:, :n, :n], "full"
    elif last in shapes:
        maps, kind = row(root, model, run, last, index)[:, None, :n], "last"
    else:
        raise ProbeError(f"capture {model}/{run} stored no attention pattern at its last token: capture with "
                         f"--positions last")
    return (maps.mean(0) if head < 0 else maps[head]).astype(np.float64), kind


def prompt_mass(root: Path, model: str, run: str, layers: list[int], index: int) -> np.ndarray | None:
    """Per layer and head, the last token's attention mass on the prompt positions ``[L, H]``; None if no prompt."""
    names = [hook(root, model, run, "pattern", la) + ".prompt_mass" for la in layers]
    if not all(has_array(root, model, run, n) for n in names):
        return None
    return np.stack([row(root, model, run, n, index) for n in names]).astype(np.float64)


@lru_cache(maxsize=32)
def _chosen(root: str, model: str, run: str) -> np.ndarray:
    return np.asarray(_open(root, model, run)["prompt/chosen"][:])


def chosen_prompts(root: Path, model: str, run: str) -> np.ndarray:
    """Which prompt (IDP) each probe chose, ``-1`` where the variant has no prompt pool: ``[n]`` ints."""
    open_capture(root, model, run)
    return _chosen(str(Path(root).resolve()), model, run)


# ---- logit lens per fact -------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _lens(root: str, model: str):
    """The original model's lens and tokenizer (loads the model: torch and transformers, on first use only)."""
    from probe.analysis.lens import Lens  # lazy: torch, only the Probes page's lens needs it
    from probe.models.load import load_model  # lazy: torch + transformers (~10 s), only for the lens

    entry = REGISTRY.get(model)
    if entry is not None and entry.source == "random":  # built from a config, nothing saved to disk
        spec = ModelSpec(model, dtype="float32")
    else:
        folder = store(root).model(model).path
        if not (folder / "config.json").is_file():
            raise ProbeError(f"the per-fact logit lens needs the original weights in {folder}: run `probe eval "
                             f"--model {model}` once to convert them")
        spec = ModelSpec(str(folder), dtype="float32")
    base = load_model(spec)
    return Lens.from_model(base.model), base.tokenizer


@lru_cache(maxsize=64)
def _lens_stats(root: str, model: str, run: str, mtime_ns: int) -> tuple[dict[int, int], dict[int, int], np.ndarray]:
    """A capture's stored lens ranks: row → position, layer → column, ranks ``[n, L]`` (cached until rewritten)."""
    handle = store(root).lens(model, run)
    spec = (handle.manifest() or {}).get("spec", {})
    with np.load(handle.stats_file) as f:
        ranks = f["rank"]
    return ({r: i for i, r in enumerate(spec.get("rows", []))}, {la: i for i, la in enumerate(spec.get("layers", []))},
            ranks)


def stored_lens_ranks(root: Path, model: str, runs: tuple[str, ...], layers: list[int],
                      index: int) -> list[np.ndarray] | None:
    """The ranks `probe analyze` stored for this fact (its eval facts), or None where any run lacks fresh ones."""
    out = []
    for run in runs:
        handle = store(root).lens(model, run)
        try:
            manifest = handle.manifest()
            if manifest is None or manifest.get("parents", {}).get("capture") != spec_hash(
                    open_capture(root, model, run).manifest):
                return None  # none stored, or the capture changed since
            rows, cols, ranks = _lens_stats(str(Path(root).resolve()), model, run,
                                            handle.stats_file.stat().st_mtime_ns)
        except (ProbeError, OSError, KeyError, ValueError):
            return None
        if int(index) not in rows or any(la not in cols for la in layers):
            return None
        out.append(ranks[rows[int(index)], [cols[la] for la in layers]].astype(np.int64))
    return out


def lens_ranks(root: Path, model: str, runs: tuple[str, ...], layers: list[int], index: int) -> list[np.ndarray]:
    """Per run, the rank of the fact's answer (best accepted answer's first token) through the logit lens per layer.

    Read from the statistics `probe analyze` stored (eval facts); otherwise every run's rows are read in
    one concurrent pass and unembedded in one product (the model loads on first use).
    """
    stored = stored_lens_ranks(root, model, runs, layers, index)
    if stored is not None:
        return stored
    fact = probes(root, model, runs[0])[int(index)]
    return list(_lens_ranks(str(Path(root).resolve()), model, tuple(runs), tuple(layers), int(index),
                            fact["prompt"], tuple(fact["answers"])))


@lru_cache(maxsize=1024)
def _lens_ranks(root: str, model: str, runs: tuple[str, ...], layers: tuple[int, ...], index: int, prompt: str,
                answers: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    from probe.analysis.lens import answer_rank_prob  # lazy: torch, only for the lens
    from probe.knowledge.scoring import encode_pair  # lazy: torch, only for the lens

    lens, tok = _lens(root, model)
    first = [encode_pair(tok, prompt, a)[1][0] for a in answers]
    keys = [(run, hook(Path(root), model, run, "resid_post", la)) for run in runs for la in layers]
    h = np.stack(_rows_at_once(root, model, keys, index))
    ranks, _ = answer_rank_prob(lens.logits(h), [first] * len(keys))  # ranks only: logits order as logprobs
    return tuple(ranks.reshape(len(runs), len(layers)))


# ---- facts known / forgotten / recovered ---------------------------------------------------------
def fact_status(root: Path, exp: Experiment) -> dict[str, list[str]]:
    """Per variant, each fact's status from the captures' top-1 flags (the original's known facts as reference).

    original/compressed: known | unknown | forgotten (compressed loses what the original knew);
    recoveries: known | unknown | recovered (a lost fact regained) | lost (still lost) | broken (newly lost).
    """
    known = {v: np.array([p.get("known", p.get("answer_top1", False)) for p in probes(root, exp.model, run)], bool)
             for v, run in exp.runs.items()}
    return variant_statuses(known, RECOVERIES)


# ---- analysis ------------------------------------------------------------------------------------
def analysis_json(root: Path, exp: Experiment, name: str) -> object | None:
    """``verdict.json``, a table (``cka.json`` …) or a manifest of the experiment's analysis; None if absent."""
    if not exp.analysis:
        return None
    analysis = store(root).analysis(exp.analysis)
    return analysis.read_json(analysis.file(name))


def analysis_text(root: Path, exp: Experiment, name: str) -> str | None:
    if not exp.analysis:
        return None
    path = store(root).analysis(exp.analysis).file(name)
    return path.read_text() if path.is_file() else None


def figure_names(root: Path, exp: Experiment) -> list[str]:
    manifest = analysis_json(root, exp, "manifest.json")
    return list(manifest.get("figures", [])) if isinstance(manifest, dict) else []


@lru_cache(maxsize=128)
def _figure_json(path: str, mtime_ns: int) -> str:
    return Path(path).read_text()


def figure(root: Path, exp: Experiment, name: str):
    """An analysis figure (plotly JSON written by `probe analyze`) as a fresh ``go.Figure``, or None."""
    if not exp.analysis:
        return None
    path = store(root).analysis(exp.analysis).figure_file(name)
    return pio.from_json(_figure_json(str(path), path.stat().st_mtime_ns)) if path.is_file() else None


# ---- eval, recoveries, costs ---------------------------------------------------------------------
def eval_rows(root: Path) -> list[dict]:
    """Saved `probe eval` results: model, label (variant folder), probes, top-1 accuracy, facts, known ids."""
    rows = []
    for result in store(root).evals():
        r = result.read()
        if r is not None and "top1_accuracy" in r:
            rows.append({"model": result.model, "label": result.label, "probes": r.get("probes"),
                         "split": r.get("split"), "n_facts": r.get("n_facts"),
                         "top1_accuracy": r["top1_accuracy"], "known_ids": r.get("known_ids", [])})
    return rows


def recovery_rows(root: Path) -> list[dict]:
    """Finished recoveries: model, compression, method, trainable parameters and their eval summary."""
    rows = []
    for recovery in store(root).recoveries():
        m = recovery.manifest()
        if m is None:
            continue
        ev = m.get("eval") or {}
        rows.append({"model": recovery.model, "compression": recovery.compression, "method": recovery.method,
                     "trainable_parameters": m.get("trainable_parameters"),
                     "top1_recovered": (ev.get("top1") or {}).get("recovered"),
                     "n_lost": ev.get("n_lost"), "n_regained": ev.get("n_regained")})
    return rows


def cost_rows(root: Path) -> list[dict]:
    """`probe costs` rows: model, compression, variant, extra parameters, latency and memory."""
    rows = []
    for table in store(root).costs():
        r = table.read() or {}
        for c in r.get("rows", []):
            rows.append({"model": table.model, "compression": r.get("compression"), "variant": c.get("variant"),
                         "extra_parameters": c.get("extra_parameters"), "forward_ms": c.get("forward_ms"),
                         "gen_ms_per_token": c.get("gen_ms_per_token"), "memory_mb": c.get("memory_mb")})
    return rows


def clear_caches() -> None:
    """Forget every cached read (tests and benchmarks measure cold reads with it)."""
    for fn in (_open, _array, _probes, _row, _chosen, _figure_json, _lens_ranks, _lens_stats, _tokenizer):
        fn.cache_clear()
    clear_read_cache()


# ---- attention axes: token labels and the prompt's share -------------------------------------------
@lru_cache(maxsize=4)
def _tokenizer(root: str, model: str):
    """The model's tokenizer alone, no weights: its ``tokenizer.json`` read by the ``tokenizers`` library (fast,
    no torch). The tiny random models' byte tokenizer is built in memory (imports transformers; tests only)."""
    entry = REGISTRY.get(model)
    if entry is not None and entry.source == "random":
        from probe.models.tiny import tiny_tokenizer  # lazy: transformers, only the tiny test models need it

        return tiny_tokenizer()
    path = store(root).model(model).path / "tokenizer.json"
    if not path.is_file():
        raise ProbeError(f"token labels need the original model's tokenizer, {path}: run `probe eval --model "
                         f"{model}` once to convert the model")
    return Tokenizer.from_file(str(path))


def token_labels(root: Path, model: str, run: str, index: int) -> list[str]:
    """Probe ``index``'s real tokens as text: the capture's stored ids (``tokens``) decoded one by one."""
    ids = row(root, model, run, "tokens", index)
    tok = _tokenizer(str(store(root).root), model)
    return [tok.decode([int(i)], skip_special_tokens=False) for i in ids[ids >= 0]]


def attention_prompt_mass(root: Path, model: str, run: str, layer: int, index: int, kind: str) -> np.ndarray | None:
    """Per head and query, the attention mass that went to the variant's prompt positions ``[H, Q]``.

    ``kind`` is :func:`attention`'s (``full``: every query of the probe's real tokens; ``last``: its last
    token). None when the variant has no prompt positions (original, compressed, LoRA).
    """
    name = hook(root, model, run, "pattern", layer, kind) + ".prompt_mass"
    if not has_array(root, model, run, name):
        return None
    mass = row(root, model, run, name, index).astype(np.float64)
    if kind == "full":
        return mass[:, : int(probes(root, model, run)[index]["n_tokens"])]
    return mass[:, None]


def prompt_length(root: Path, model: str, run: str) -> int:
    """How many prompt positions the variant puts before the probe's tokens (0: none)."""
    return int((open_capture(root, model, run).manifest.get("prompt") or {}).get("n_tokens") or 0)


# ---- the running experiment and the results that land first (Overview) ----------------------------
def experiment_status(root: Path, now: float | None = None) -> list[dict]:
    """Each experiment's status file (written by `probe run` / `probe demo`, :mod:`probe.experiment.run`), with
    what a reader needs now: per stage its ``elapsed`` (ticking while it runs), the experiment's ``left`` (the
    estimates of the stages not done, less what the running one already spent) and ``stopped`` when the file
    says running but its process is gone (killed: a rerun resumes)."""
    now = time.time() if now is None else now
    out = []
    for path in store(root).experiment_statuses():
        doc = store(root).read_json(path, f"experiment status {path.name}", "`probe run FILE` (rewrites it)")
        if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
            continue
        stages = [dict(s) for s in doc["stages"]]
        left = 0.0
        for s in stages:
            if s.get("state") == "running" and s.get("started"):
                s["elapsed"] = round(now - float(s["started"]), 1)
            if s.get("state") == "pending":
                left += float(s.get("estimate") or 0)
            elif s.get("state") == "running":
                left += max(0.0, float(s.get("estimate") or 0) - float(s["elapsed"] or 0))
        state = doc.get("state")
        if state == "running" and not pid_alive(int(doc.get("pid") or 0)):
            state = "stopped"
        out.append({**doc, "state": state, "stages": stages, "left": round(left, 1),
                    "elapsed": round((now if state == "running" else float(doc.get("updated") or now))
                                     - float(doc.get("started") or now), 1)})
    return out


def stage_for(root: Path, kind: str) -> dict | None:
    """The first not-yet-done stage of kind ``kind`` (``eval``, ``compress``, ``recover``, ``capture``, ``analyze``)
    in a status file, to tell a reader what will fill an empty page and when; None without a status file."""
    for doc in experiment_status(root):
        for s in doc["stages"]:
            if s.get("kind") == kind and s.get("state") != "done":
                return {**s, "experiment": doc.get("experiment"), "experiment_state": doc["state"]}
    return None


def relation_rows(root: Path) -> list[dict]:
    """Per saved `probe eval` result and relation: facts and top-1 (the original's knowledge lands first)."""
    rows = []
    for result in store(root).evals():
        r = result.read()
        for rel, d in ((r or {}).get("per_relation_detail") or {}).items():
            rows.append({"model": result.model, "label": result.label, "split": r.get("split"), "relation": rel,
                         "n": d.get("n"), "top1": d.get("top1")})
    return rows


def compression_reports(root: Path) -> list[dict]:
    """Finished compressed variants' reports (`probe compress`): knowledge, perplexity, per-layer error."""
    out = []
    for variant in store(root).variants():
        if variant.manifest() is None:
            continue
        report = variant.read_json(variant.file("report.json"))
        if isinstance(report, dict):
            out.append({"model": variant.model, "label": variant.compression, **report})
    return out


def recovery_curves(root: Path) -> list[dict]:
    """Finished recoveries' training curves from ``losses.json``: ``train``/``heldout`` as ``{step, kl}`` when the
    file has ``curves``, else the per-step training loss and the held-out loss before and after training."""
    out = []
    for recovery in store(root).recoveries():
        if recovery.manifest() is None:
            continue
        losses = recovery.read_json(recovery.file("losses.json"))
        if not isinstance(losses, dict):
            continue
        curves = losses.get("curves") or {}
        train = curves.get("train") or {"step": list(range(1, len(losses.get("losses") or []) + 1)),
                                         "kl": losses.get("losses") or []}
        heldout = curves.get("heldout")
        if heldout is None and losses.get("held_out_before") is not None:
            heldout = {"step": [0, len(train["step"])], "kl": [losses["held_out_before"], losses["held_out_after"]]}
        out.append({"model": recovery.model, "compression": recovery.compression, "method": recovery.method,
                    "objective": losses.get("objective"), "train": train, "heldout": heldout,
                    "baseline": losses.get("held_out_baseline"), "from_curves": bool(curves)})
    return out


def store_signature(root: Path) -> str:
    """What changes when an artifact lands (folder modification times two levels down, status files), as a short
    digest (text: it travels through the browser, where integers beyond 2⁵³ lose digits): pages are rebuilt when
    it changes, so they fill in without a reload. A few dozen ``stat`` calls."""
    sig = []
    for top in ("experiments", "eval", "variants", "captures", "analysis", "costs"):
        folder = store(root).resolve(top)
        if not folder.is_dir():
            continue
        for entry in [folder, *folder.iterdir()]:
            with contextlib.suppress(OSError):
                sig.append((entry.name, entry.stat().st_mtime_ns))
                if entry.is_dir() and entry != folder:
                    sig += [(f"{entry.name}/{e.name}", e.stat().st_mtime_ns) for e in entry.iterdir()]
    return hashlib.sha1(repr(sig).encode()).hexdigest()[:16]
