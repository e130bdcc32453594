"""`probe eval`: knowledge accuracy of a variant on a probe set, per relation, with intervals."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from probe.artifacts import build_manifest, spec_hash
from probe.errors import ProbeError
from probe.evaluation.perplexity import heldout_text, perplexity
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat
from probe.knowledge.schema import ProbeSet, parse_relation_list
from probe.knowledge.scoring import FactScore, score_with_format
from probe.knowledge.status import is_known
from probe.runtime.spec import VariantSpec, model_key
from probe.runtime.variant import LoadedVariant, load_variant, preflight_variant
from probe.settings import setting
from probe.store import ArtifactStore, EvalArtifact


@dataclass(frozen=True)
class EvalSpec:
    variant: VariantSpec
    probes: str = setting("builtin", "'builtin' or a probe file (known_1000, LAMA, PopQA, JSONL)")
    split: str = setting("eval", "Which facts: eval, train or all")
    relations: tuple[str, ...] = setting((), "Comma-separated relation ids", default_text="every relation",
                                         parse=parse_relation_list)
    format: ProbeFormat = field(default_factory=ProbeFormat)
    batch_size: int = setting(32, "Probes per forward batch", unit="probes", min=1)
    perplexity: bool = setting(False, "Also measure held-out perplexity")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def select_probes(spec: EvalSpec, pool: ProbeSet | None = None) -> ProbeSet:
    """The facts ``spec`` scores (``pool``: the whole loaded probe set, which demonstrations come from)."""
    probes = (pool or load_probes(spec.probes)).split(spec.split)
    return probes.select_relations(spec.relations) if spec.relations else probes


def shares_prefix(loaded: LoadedVariant) -> bool:
    """Whether the variant may reuse a demonstration prefix's cache: not IDP, whose router reads the whole input."""
    return loaded.method is None or loaded.method.name != "idp"


def score_variant(loaded: LoadedVariant, facts, pool, fmt: ProbeFormat, batch_size: int = 32,
                  desc: str | None = None) -> list[FactScore]:
    """Score ``facts`` on ``loaded`` under the probe format ``fmt`` (demonstrations from ``pool``)."""
    base = loaded.base
    return score_with_format(facts, pool, base.tokenizer, loaded.logits_fn, fmt, share_prefix=shares_prefix(loaded),
                             device=base.device, max_positions=base.max_positions, batch_size=batch_size,
                             desc=desc or f"Scoring {len(facts)} facts ({fmt.shots}-shot)")


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def summarise(scores: list[FactScore], spec: EvalSpec, probes: ProbeSet, loaded: LoadedVariant,
              ppl: float | None) -> dict:
    """The eval result as one JSON-able dict (the `--json` output and the saved artifact)."""
    n = len(scores)
    fmt = spec.format
    by_rel: dict[str, list[FactScore]] = defaultdict(list)
    for s in scores:
        by_rel[s.relation].append(s)
    known = [s.fact_id for s in scores if is_known(s, fmt.known)]

    def detail(v: list[FactScore]) -> dict:
        wrong = [s for s in v if s.rank != 0]
        return {"n": len(v), "known": _rate([is_known(s, fmt.known) for s in v]), "top1": _rate([s.known for s in v]),
                "full_answer": _rate([s.exact_match for s in v]), "mc": _rate([s.mc_correct for s in v]),
                "exact_match": _rate([s.exact_match for s in v]),
                "wrong_copies_demo": _rate([s.copies_demo for s in wrong])}

    n_top1 = sum(s.known for s in scores)
    return {
        "model": model_key(spec.variant.model),
        "variant": spec.variant.variant,
        "compression": spec.variant.compression,
        "probes": probes.name,
        "probe_source": probe_source(spec),
        "probe_hash": probes.content_hash(),
        "split": spec.split,
        "relations": list(spec.relations),
        "with_perplexity": spec.perplexity,
        "template": fmt.template,
        "protocol": fmt.describe(),
        "n_facts": n,
        "n_relations": len(by_rel),
        "known_definition": fmt.known,
        "known_rate": len(known) / n,
        "known_ci95": wilson_interval(len(known), n),
        "top1_accuracy": n_top1 / n,
        "top1_ci95": wilson_interval(n_top1, n),
        "mc_accuracy": sum(s.mc_correct for s in scores) / n,
        "mc_norm_accuracy": sum(s.mc_norm_correct for s in scores) / n,
        "exact_match": sum(s.exact_match for s in scores) / n,
        "wrong_copies_demo": detail(scores)["wrong_copies_demo"],
        "perplexity": ppl,
        "per_relation": {r: sum(s.known for s in v) / len(v) for r, v in sorted(by_rel.items())},
        "per_relation_detail": {r: detail(v) for r, v in sorted(by_rel.items())},
        "known_ids": known,
        **loaded.annotate(probes.facts),
        "parents": loaded.parents,
        "facts": [asdict(s) for s in scores],
    }


def result_artifact(result: dict) -> EvalArtifact:
    """The store handle of an eval result (from its model, variant, compression, probes label and template)."""
    return ArtifactStore.default().eval(result["model"], result["variant"], result["compression"],
                                        probes_label(result), result["template"])


def format_label(protocol: dict | None) -> str:
    """The probe format's part of a result name: empty for the default format (the names stay), else
    ``-<k>shot-<known>`` (a result saved before the format existed was zero-shot, first-token)."""
    p = protocol or {"shots": 0, "known": "first_token"}
    default = ProbeFormat()
    return "" if (p["shots"], p["known"]) == (default.shots, default.known) else f"-{p['shots']}shot-{p['known']}"


def probes_label(result: dict) -> str:
    """The probe part of a result's file name: the probe set's name (``name:split``) and, unless it is the whole
    built-in set, a short hash of the probe file's resolved path and the relations, so that results of another
    file of the same name or of a subset of relations never replace each other; "-ppl" when perplexity was
    measured, so a run without it never replaces one with it (the template is named apart)."""
    source, relations = result.get("probe_source", "builtin"), sorted(result.get("relations") or ())
    label = result["probes"]
    if source != "builtin" or relations:
        label += f"-{spec_hash({'source': source, 'relations': relations}, 8)}"
    label += format_label(result.get("protocol"))
    return label + ("-ppl" if result.get("with_perplexity") else "")  # a run without it keeps the measured one


def probe_source(spec: EvalSpec) -> str:
    """``builtin`` or the probe file's resolved path (what tells two files of the same name apart)."""
    return spec.probes if spec.probes == "builtin" else str(Path(spec.probes).expanduser().resolve())


def probe_set_name(spec: EvalSpec) -> str:
    """The name ``select_probes`` gives the probe set (file stem or ``builtin``, plus the split)."""
    name = spec.probes if spec.probes == "builtin" else Path(spec.probes).stem
    return name if spec.split in (None, "all") else f"{name}:{spec.split}"


def saved_result(spec: EvalSpec, parents: dict[str, str]) -> dict | None:
    """A saved result of the same spec over the same parent artifacts, if there is one."""
    v = spec.variant
    artifact = result_artifact({"model": model_key(v.model), "variant": v.variant, "compression": v.compression,
                                "probes": probe_set_name(spec), "probe_source": probe_source(spec),
                                "relations": spec.relations, "with_perplexity": spec.perplexity,
                                "template": spec.format.template, "protocol": spec.format.describe()})
    try:
        saved = artifact.read()
    except ProbeError as exc:  # a damaged saved result is recomputed (and overwritten)
        artifact.store.warn(str(exc))
        return None
    if saved is None:
        return None
    ok = saved.get("parents") == parents and saved["manifest"].get("spec_hash") == spec_hash(spec)
    return saved if ok else None


def run_eval(spec: EvalSpec, loaded: LoadedVariant | None = None, reuse: bool = False, save: bool = True) -> dict:
    """Score the variant on the selected probes; save (unless ``save=False``: :func:`save_result` later) and
    return the result dict.

    With ``reuse`` and ``loaded`` given, a saved result of the same spec and parents is returned instead.
    """
    if reuse and loaded is not None and (saved := saved_result(spec, loaded.parents)) is not None:
        return saved
    if loaded is None:
        preflight_variant(spec.variant)
    pool = load_probes(spec.probes)
    probes = select_probes(spec, pool)
    loaded = loaded or load_variant(spec.variant)
    base = loaded.base
    scores = score_variant(loaded, probes.facts, pool.facts, spec.format, spec.batch_size)
    ppl = None
    if spec.perplexity:
        ppl = perplexity(base.tokenizer, loaded.logits_fn, heldout_text(), device=base.device)
    result = summarise(scores, spec, probes, loaded, ppl)
    if save:
        save_result(result, spec)
    return result


def save_result(result: dict, spec: EvalSpec) -> Path:
    """Write the result of ``spec`` with its manifest (under the result's lock); returns where."""
    artifact = result_artifact(result)
    artifact.write({**result, "manifest": build_manifest("eval", spec)})
    return artifact.path
