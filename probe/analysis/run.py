"""`probe analyze`: compare every captured variant with the original, layer by layer, and write the verdict.

Order of work: find and check the captures (same probe set, split and tokens; an original
present) → load the original's final norm, unembedding and tokenizer → per layer: residual,
logit-lens and attention divergences, CKA, decodability → headline numbers with bootstrap
intervals → tables, figures and ``verdict.md`` written atomically to
``artifacts/analysis/<name>/``. Every statistic is at the probes' last token; divergences,
lens and verdict use eval-split facts only, train-split facts only train decodability probes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probe.analysis import bootstrap as bs
from probe.analysis.cka import cka_matrix, linear_cka
from probe.analysis.decodability import (
    CandidateSet,
    ProbeData,
    build_candidates,
    candidate_features,
    cross_val_correct,
    held_out_correct,
)
from probe.analysis.divergence import check_finite, cosine_distance, entropy, js_logp, js_prob, kl_logp, relative_l2
from probe.analysis.lens import Lens, answer_rank_prob
from probe.analysis.spec import VARIANT_ORDER, AnalyzeSpec
from probe.analysis.verdict import RecoveryNumbers, VerdictInputs, verdict_text
from probe.artifacts import artifacts_root, atomic_dir, build_manifest, write_json_atomic
from probe.capture.store import CaptureRun, captures_root, open_run
from probe.errors import ProbeError
from probe.progress import console, track

POS = "last"
RECOVERIES = tuple(v for v in VARIANT_ORDER if v not in ("original", "compressed"))


def analysis_root() -> Path:
    return artifacts_root() / "analysis"


# ---- finding and checking captures ---------------------------------------------------------------
def _capture_command(spec: AnalyzeSpec, variant: str) -> str:
    comp = "" if variant == "original" else f" --compression {spec.compression}"
    return f"`probe capture --model {spec.model} --variant {variant}{comp} --split all`"


_SPLIT_PREFERENCE = {"all": 2, "eval": 1}


def find_runs(spec: AnalyzeSpec) -> dict[str, CaptureRun]:
    """One complete capture per variant (original first), from ``--runs`` or by discovery.

    Discovery groups the complete captures of the original and of ``--compression`` by probe set
    and split, keeps the groups holding both an original and a compressed capture, and takes the
    one of ``--split all`` (held-out training facts for decodability) over an eval-only one, then
    the one with the most variants; captures of other probe sets (a quick look at a few probes)
    do not get in the way.
    """
    from probe.config import ModelSpec
    from probe.runtime.spec import model_key

    folder = captures_root() / model_key(ModelSpec(spec.model))
    if spec.runs:
        runs = [open_run(folder / r) for r in spec.runs]
        for r in runs:
            m = r.manifest
            if m.get("status") != "complete":
                raise ProbeError(f"capture {r.path} is unfinished: rerun its `probe capture` command to resume it")
            if m.get("variant") != "original" and m.get("compression") != spec.compression:
                raise ProbeError(f"run {r.path.name} is {m.get('compression')}/{m.get('variant')}, not of "
                                 f"--compression {spec.compression}")
        return _one_per_variant(runs)
    runs = [open_run(p.parent) for p in sorted(folder.glob("*/manifest.json"))]
    runs = [r for r in runs if r.manifest.get("status") == "complete" and (
        r.manifest.get("variant") == "original" or r.manifest.get("compression") == spec.compression)]
    groups: dict[tuple, list[CaptureRun]] = {}
    for r in runs:
        groups.setdefault((r.manifest.get("probe_hash"), r.manifest.get("split")), []).append(r)
    usable = [g for g in groups.values() if {"original", "compressed"} <= {r.manifest.get("variant") for r in g}]
    if not usable:
        have = {r.manifest.get("variant"): r.path.name for r in runs}
        for needed in ("original", "compressed"):
            if needed not in have:
                raise ProbeError(f"no complete {needed} capture of {spec.model} under {folder}: run "
                                 f"{_capture_command(spec, needed)}")
        raise ProbeError(f"captures come from different probe sets: original {have['original']} and compressed "
                         f"{have['compressed']} share no probe set and split; capture every variant with the same "
                         f"--probes and --split")

    def rank(group: list[CaptureRun]) -> tuple[int, int]:
        return _SPLIT_PREFERENCE.get(group[0].manifest.get("split"), 0), len({r.manifest["variant"] for r in group})

    usable.sort(key=rank, reverse=True)
    if len(usable) > 1 and rank(usable[0]) == rank(usable[1]):
        raise ProbeError(f"several capture sets fit equally ({', '.join(r.path.name for r in usable[0])} and "
                         f"{', '.join(r.path.name for r in usable[1])}): choose one per variant with --runs")
    return _one_per_variant(usable[0])


def _one_per_variant(runs: list[CaptureRun]) -> dict[str, CaptureRun]:
    out: dict[str, CaptureRun] = {}
    for r in runs:
        v = r.manifest.get("variant")
        if v in out:
            raise ProbeError(f"several captures of variant {v!r}: {out[v].path.name}, {r.path.name}; choose one "
                             f"per variant with --runs")
        out[v] = r
    for needed in ("original", "compressed"):
        if needed not in out:
            raise ProbeError(f"--runs names no {needed} capture: add one")
    return {v: out[v] for v in VARIANT_ORDER if v in out}


@dataclass
class RunSet:
    """Checked captures: common layers and hooks, the probe table, eval and train rows."""

    runs: dict[str, CaptureRun]
    layers: tuple[int, ...]
    hooks: frozenset[str]
    probes: list[dict]
    eval_rows: np.ndarray
    train_rows: np.ndarray

    def hook(self, kind: str, layer: int) -> str:
        from probe.models.bridge import HOOKS

        return f"{POS}/{HOOKS[kind].format(layer=layer)}"

    def read(self, variant: str, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one array (float64), refused if any value is NaN/inf."""
        run = self.runs[variant]
        values = np.asarray(run[name][:], dtype=np.float64)[rows]
        check_finite(values, f"{variant} capture {run.path.name}, array {name}")
        return values


def check_runs(runs: dict[str, CaptureRun]) -> RunSet:
    """Refuse captures that cannot be compared, saying why."""
    ref = runs["original"]
    for v, r in runs.items():
        for key, what in (("probe_hash", "probe sets"), ("split", "splits")):
            if r.manifest.get(key) != ref.manifest.get(key):
                raise ProbeError(f"captures come from different {what}: original {ref.path.name} has "
                                 f"{ref.manifest.get(key)}, {v} {r.path.name} has {r.manifest.get(key)}; capture "
                                 f"every variant with the same --probes and --split")
        if POS not in r.manifest.get("positions", []):
            raise ProbeError(f"{v} capture {r.path.name} has no '{POS}' position: recapture with --positions last")
        if v != "original":
            a, b = ref["tokens"][:], r["tokens"][:]
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = int(np.nonzero((a != b).any(1))[0][0]) if a.shape == b.shape else 0
                raise ProbeError(f"captures tokenise the probes differently (original {ref.path.name} vs {v} "
                                 f"{r.path.name}, first at probe {diff}): they were made with different "
                                 f"tokenizers; recapture with one model family")
    layers = sorted(set.intersection(*(set(r.manifest["layers"]) for r in runs.values())))
    if not layers:
        raise ProbeError("the captures share no layer: capture every variant with the same --layers")
    hooks = frozenset.intersection(*(frozenset(r.manifest["hooks"]) for r in runs.values()))
    if "resid_post" not in hooks:
        raise ProbeError("the analysis needs resid_post in every capture: recapture with --hooks resid_post,...")
    probes = ref.probes
    split = np.array([p["split"] for p in probes])
    return RunSet(runs, tuple(layers), hooks, probes, np.nonzero(split == "eval")[0], np.nonzero(split == "train")[0])


# ---- candidates for decodability -----------------------------------------------------------------
def _distractors(rs: RunSet) -> list[list[str]]:
    """Each fact's distractors from its probe file; else the other objects of its relation (up to 3)."""
    from probe.knowledge.loaders import load_probes

    source = rs.runs["original"].manifest.get("spec", {}).get("probes")
    try:
        facts = {f.id: f for f in load_probes(source)} if source else {}
    except ProbeError:
        facts = {}
    pool: dict[str, list[str]] = {}
    for p in rs.probes:
        pool.setdefault(p["relation"], []).append(p["object"])
    out = []
    for p in rs.probes:
        fact = facts.get(p["id"])
        if fact is not None and fact.distractors:
            out.append(list(fact.distractors))
        else:
            others = sorted(set(pool[p["relation"]]) - {p["object"]})
            out.append(others[:3])
    return out


def candidates(rs: RunSet, tokenizer, seed: int) -> CandidateSet:
    from probe.knowledge.scoring import encode_pair

    def first(prompt: str, text: str) -> int:
        return encode_pair(tokenizer, prompt, text)[1][0]

    answers = [first(p["prompt"], p["object"]) for p in rs.probes]
    dis = [[first(p["prompt"], d) for d in ds] for p, ds in zip(rs.probes, _distractors(rs), strict=True)]
    return build_candidates(answers, dis, seed)


# ---- the analysis --------------------------------------------------------------------------------
@dataclass
class Tables:
    """Long-format rows of every table, with the bootstrap settings that fill their intervals."""

    n_boot: int
    seed: int

    def __post_init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}

    def add(self, table: str, values: np.ndarray, layers: tuple[int, ...], **keys: object) -> None:
        """Per-fact values ``[n, L]`` or ``[n, L, H]`` → one row per layer (and head) with its interval."""
        mean, lo, hi = bs.bootstrap_mean(values, self.n_boot, self.seed)
        n = int(values.shape[0])
        for li, layer in enumerate(layers):
            heads = range(mean.shape[1]) if mean.ndim == 2 else [None]
            for h in heads:
                at = (li, h) if h is not None else (li,)
                self.rows.setdefault(table, []).append({**keys, "layer": layer, "head": -1 if h is None else h,
                                                        "mean": float(mean[at]), "lo": float(lo[at]),
                                                        "hi": float(hi[at]), "n": n})

    def put(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)


def _lens_and_residuals(rs: RunSet, lens: Lens, answers: list[list[int]], tables: Tables) -> dict[str, np.ndarray]:
    """Residual and logit-lens tables; returns each variant's eval residuals ``[L, n, d]`` for CKA."""
    ev, layers = rs.eval_rows, rs.layers
    n, nl = len(ev), len(layers)
    resid = {v: np.empty((nl, n, 0)) for v in rs.runs}
    per = {v: {k: np.zeros((n, nl)) for k in ("rank", "prob", "kl", "js", "cos", "rel_l2")} for v in rs.runs}
    for li, layer in enumerate(track(layers, "Logit lens and residuals")):
        hs = {v: rs.read(v, rs.hook("resid_post", layer), ev) for v in rs.runs}
        lp_ref = None
        for v, h in hs.items():
            if resid[v].shape[2] == 0:
                resid[v] = np.empty((nl, n, h.shape[1]))
            resid[v][li] = h
            logp = lens.logprobs(h)
            per[v]["rank"][:, li], per[v]["prob"][:, li] = answer_rank_prob(logp, answers)
            lp = logp.numpy()  # float32 over the vocabulary: 2× faster than float64, error ~1e-7 nats
            if v == "original":
                lp_ref = lp
                continue  # divergences of the original from itself are not tabled
            per[v]["kl"][:, li] = kl_logp(lp_ref, lp)
            per[v]["js"][:, li] = js_logp(lp_ref, lp)
            per[v]["cos"][:, li] = cosine_distance(h, hs["original"])
            per[v]["rel_l2"][:, li] = relative_l2(h, hs["original"])
    for v, d in per.items():
        tables.add("lens", d["prob"], layers, variant=v, metric="answer_prob")
        tables.add("lens", (d["rank"] == 0).astype(float), layers, variant=v, metric="answer_top1")
        tables.add("lens", np.log1p(d["rank"]), layers, variant=v, metric="log1p_answer_rank")
        if v != "original":
            for metric, key in (("lens_kl", "kl"), ("lens_js", "js"), ("resid_cosine_distance", "cos"),
                                ("resid_relative_l2", "rel_l2")):
                tables.add("divergence", d[key], layers, variant=v, metric=metric)
    return resid


def _outputs_and_attention(rs: RunSet, tables: Tables) -> dict[str, dict[str, np.ndarray]]:
    """MLP/attention-output and attention tables; returns per-fact means over layers (and heads) per variant."""
    ev, layers = rs.eval_rows, rs.layers
    per_fact: dict[str, dict[str, np.ndarray]] = {v: {} for v in rs.runs}
    for kind, change in (("mlp_out", "mlp_change"), ("attn_out", "attn_out_change")):
        if kind not in rs.hooks:
            continue
        vals = {v: {"orig": [], "comp": []} for v in rs.runs}
        for layer in layers:
            xs = {v: rs.read(v, rs.hook(kind, layer), ev) for v in rs.runs}
            for v, x in xs.items():
                vals[v]["orig"].append(relative_l2(x, xs["original"]))
                vals[v]["comp"].append(relative_l2(x, xs["compressed"]))
        for v in rs.runs:
            if v == "original":
                continue
            orig, comp = np.stack(vals[v]["orig"], 1), np.stack(vals[v]["comp"], 1)
            tables.add("divergence", orig, layers, variant=v, metric=f"{kind}_relative_l2")
            per_fact[v][change] = comp.mean(1)
            if v in RECOVERIES:
                tables.add("divergence", comp, layers, variant=v, metric=f"{kind}_relative_l2_vs_compressed")
    if "pattern" not in rs.hooks:
        return per_fact
    stats = {v: {k: [] for k in ("js", "js_comp", "entropy", "mass")} for v in rs.runs}
    for layer in track(layers, "Attention"):
        name = rs.hook("pattern", layer)
        pats = {v: rs.read(v, name, ev) for v in rs.runs}
        for v, p in pats.items():
            s = stats[v]
            s["js"].append(js_prob(p, pats["original"]))
            s["js_comp"].append(js_prob(p, pats["compressed"]))
            s["entropy"].append(entropy(p))
            has_mass = f"{name}.prompt_mass" in rs.runs[v].manifest.get("shapes", {})
            s["mass"].append(rs.read(v, f"{name}.prompt_mass", ev) if has_mass else np.zeros(p.shape[:2]))
    for v, s in stats.items():
        js, js_comp, ent, mass = (np.stack(s[k], 1) for k in ("js", "js_comp", "entropy", "mass"))  # [n, L, H]
        tables.add("attention", ent, layers, variant=v, metric="attention_entropy")
        tables.add("attention", mass, layers, variant=v, metric="prompt_mass")
        if v != "original":
            tables.add("attention", js, layers, variant=v, metric="attention_js")
            tables.add("divergence", js.mean(2), layers, variant=v, metric="attention_js")
        per_fact[v]["prompt_mass"] = mass.mean((1, 2))
        per_fact[v]["attn_shift"] = js_comp.mean((1, 2))
    return per_fact


def _cka(rs: RunSet, resid: dict[str, np.ndarray], spec: AnalyzeSpec, tables: Tables) -> dict[str, np.ndarray]:
    """Per-layer CKA with the original (bootstrap replicates kept for ΔCKA) and cross-layer CKA matrices."""
    layers = rs.layers
    idx = bs.resample(len(rs.eval_rows), spec.n_boot_cka, spec.seed)
    reps: dict[str, np.ndarray] = {}
    for v in track([v for v in rs.runs if v != "original"], "CKA"):
        reps[v] = np.stack([bs.bootstrap_cka(resid[v][li], resid["original"][li], idx) for li in range(len(layers))])
        for li, layer in enumerate(layers):
            lo, hi = bs.percentile(reps[v][li])
            tables.put("cka", {"variant": v, "layer": layer, "mean": linear_cka(resid[v][li], resid["original"][li]),
                               "lo": lo, "hi": hi, "n": len(rs.eval_rows)})
        matrix = cka_matrix(list(resid[v]), list(resid["original"]))
        for i, li in enumerate(layers):
            for j, lj in enumerate(layers):
                tables.put("cross_cka", {"variant": v, "layer": li, "original_layer": lj, "cka": float(matrix[i, j])})
    return reps


def _decodability(rs: RunSet, lens: Lens, cands: CandidateSet, spec: AnalyzeSpec, tables: Tables
                  ) -> tuple[dict[str, np.ndarray], str]:
    """Per layer, own and transfer probe correctness on eval facts ``[n_eval, L]``; and a note on how."""
    held_out = len(rs.train_rows) >= spec.min_facts
    note = ("(probes trained on train-split facts, scored on eval-split facts)" if held_out else
            f"(only eval facts were captured, so probes are {spec.folds}-fold cross-validated over them; capture "
            f"with --split all for held-out training facts)")
    cvec = lens.unembedding_rows(np.maximum(cands.ids, 0))
    ev, tr = rs.eval_rows, rs.train_rows
    out: dict[str, np.ndarray] = {}
    for li, layer in enumerate(track(rs.layers, "Decodability")):
        rows = np.arange(len(rs.probes))
        data = {v: ProbeData(candidate_features(lens.normed(rs.read(v, rs.hook("resid_post", layer), rows)), cvec),
                             cands) for v in rs.runs}
        ev_data = {v: d.subset(ev) for v, d in data.items()}
        for v, d in ev_data.items():  # the plain lens restricted to the candidates (no training)
            lens_pick = np.where(d.cands.mask, d.feats.sum(2), -np.inf).argmax(1) == d.cands.answer
            out.setdefault(f"{v}:lens", np.zeros((len(ev), len(rs.layers)), bool))[:, li] = lens_pick
        for v in rs.runs:
            targets = {f"{v}:own": ev_data[v]}
            if v == "original":  # transfer: the original's probe applied to every other variant
                targets |= {f"{w}:transfer": ev_data[w] for w in rs.runs if w != "original"}
            got = (held_out_correct(data[v].subset(tr), targets, seed=spec.seed) if held_out
                   else cross_val_correct(ev_data[v], targets, spec.folds, seed=spec.seed))
            for key, correct in got.items():
                out.setdefault(key, np.zeros((len(ev), len(rs.layers)), bool))[:, li] = correct
    for key, correct in out.items():
        v, kind = key.split(":")
        tables.add("decodability", correct.astype(float), rs.layers, variant=v, probe=kind, facts="eval")
    return out, note


def _headline(rs: RunSet, spec: AnalyzeSpec, tables: Tables, decode: dict[str, np.ndarray], note: str,
              cands: CandidateSet, per_fact: dict[str, dict[str, np.ndarray]], cka_reps: dict[str, np.ndarray]
              ) -> VerdictInputs:
    """The verdict's numbers: lost facts, their decodability, and each recovery on them."""
    ev = rs.eval_rows
    top1 = {v: np.asarray(r["logits/answer_top1"][:], bool)[ev] for v, r in rs.runs.items()}
    lost = top1["original"] & ~top1["compressed"]
    n_boot, seed = spec.n_boot, spec.seed
    comp = decode["compressed:own"]
    select = ~lost if (~lost).any() else np.ones_like(lost)
    best = int(comp[select].mean(0).argmax())
    chance = cands.chance[ev]
    never = ~top1["original"] & ~top1["compressed"]
    for v in rs.runs:
        for facts, rows in (("lost", lost), ("never", never)):
            if rows.any():
                for probe in ("own", "lens"):
                    tables.add("decodability", decode[f"{v}:{probe}"][rows].astype(float), rs.layers, variant=v,
                               probe=probe, facts=facts)
    recoveries = []
    for v in rs.runs:
        if v not in RECOVERIES:
            continue
        pf = per_fact.get(v, {})
        delta_reps = (cka_reps[v] - cka_reps["compressed"]).mean(0)
        point = float(np.mean([r["mean"] for r in tables.rows["cka"] if r["variant"] == v])
                      - np.mean([r["mean"] for r in tables.rows["cka"] if r["variant"] == "compressed"]))
        lo, hi = bs.percentile(delta_reps)
        recoveries.append(RecoveryNumbers(
            v, regained=bs.interval(top1[v][lost], n_boot, seed) if lost.any() else bs.EMPTY,
            delta_cka=bs.Interval(point, lo, hi, len(ev)),
            **{k: bs.interval(pf[k], n_boot, seed) if k in pf else bs.EMPTY
               for k in ("prompt_mass", "attn_shift", "mlp_change", "attn_out_change")}))
    n_lost = int(lost.sum())
    decodable = bs.interval(comp[lost, best], n_boot, seed) if n_lost >= spec.min_facts else bs.EMPTY
    enough = n_lost >= spec.min_facts and never.sum() >= spec.min_facts
    decodable_never = bs.interval(comp[never, best], n_boot, seed) if enough else bs.EMPTY
    output_lost = (bs.interval(decode["compressed:lens"][lost, -1], n_boot, seed) if n_lost >= spec.min_facts
                   else bs.EMPTY)
    return VerdictInputs(
        model=spec.model, compression=spec.compression, n_eval=len(ev),
        known_original=bs.interval(top1["original"], n_boot, seed),
        known_compressed=bs.interval(top1["compressed"], n_boot, seed), n_lost=n_lost, decodable=decodable,
        chance=float(chance[lost].mean()) if n_lost else float(chance.mean()), layer=rs.layers[best],
        min_facts=spec.min_facts, decodability_note=note, recoveries=tuple(recoveries), n_never=int(never.sum()),
        decodable_never=decodable_never, output_lost=output_lost)


# ---- output --------------------------------------------------------------------------------------
def _clean(obj: object) -> object:
    """NaN/inf → None, so the JSON is valid for browsers (the dashboard) as well as Python."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _write_table(folder: Path, name: str, rows: list[dict]) -> None:
    import pandas as pd

    write_json_atomic(folder / f"{name}.json", _clean(rows))
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


def _figures(folder: Path, tables: Tables) -> list[str]:
    """Line plots (mean with 95% band per variant over layers) and cross-layer CKA heatmaps."""
    import plotly.graph_objects as go

    figs: dict[str, go.Figure] = {}
    for table in ("divergence", "lens", "decodability", "cka"):
        rows = [r for r in tables.rows.get(table, []) if r.get("head", -1) == -1 and r.get("facts", "eval") == "eval"]
        for metric in sorted({r.get("metric", r.get("probe", table)) for r in rows}):
            fig = go.Figure()
            for v in VARIANT_ORDER:
                sel = [r for r in rows if r["variant"] == v and r.get("metric", r.get("probe", table)) == metric]
                if not sel:
                    continue
                x = [r["layer"] for r in sel]
                fig.add_scatter(x=x, y=[r["mean"] for r in sel], name=v, mode="lines+markers",
                                error_y={"type": "data", "symmetric": False,
                                         "array": [r["hi"] - r["mean"] for r in sel],
                                         "arrayminus": [r["mean"] - r["lo"] for r in sel]})
            fig.update_layout(title=f"{table}: {metric} (95% bootstrap intervals)", xaxis_title="layer",
                              yaxis_title=metric)
            figs[f"{table}_{metric}"] = fig
    for v in VARIANT_ORDER:
        sel = [r for r in tables.rows.get("cross_cka", []) if r["variant"] == v]
        if sel:
            xs, ys = sorted({r["original_layer"] for r in sel}), sorted({r["layer"] for r in sel})
            z = np.full((len(ys), len(xs)), np.nan)
            for r in sel:
                z[ys.index(r["layer"]), xs.index(r["original_layer"])] = r["cka"]
            fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, zmin=0, zmax=1, colorscale="Viridis"))
            fig.update_layout(title=f"cross-layer CKA: {v} layer (y) vs original layer (x)",
                              xaxis_title="original layer", yaxis_title=f"{v} layer")
            figs[f"cross_cka_{v}"] = fig
    (folder / "figures").mkdir()
    for name, fig in figs.items():
        fig.write_json(folder / "figures" / f"{name}.json")
        fig.write_html(folder / "figures" / f"{name}.html", include_plotlyjs="directory")
    return sorted(figs)


def summary_rows(v: VerdictInputs, tables: Tables) -> list[dict]:
    """One row per variant: eval top-1, regained lost facts, mean CKA, best decodability layer."""
    rows = []
    top = {r["variant"]: r for r in tables.rows["lens"] if r["metric"] == "answer_top1" and r["layer"] == max(
        x["layer"] for x in tables.rows["lens"])}
    cka = {}
    for r in tables.rows.get("cka", []):
        cka.setdefault(r["variant"], []).append(r["mean"])
    dec = {}
    for r in tables.rows["decodability"]:
        if r["probe"] == "own" and r["facts"] == "eval":
            dec[r["variant"]] = max(dec.get(r["variant"], (-1, 0)), (r["mean"], r["layer"]))
    regained = {r.variant: r.regained for r in v.recoveries}
    for name, t in top.items():
        rows.append({"variant": name, "top1": bs.Interval(t["mean"], t["lo"], t["hi"], t["n"]).fmt(pct=True),
                     "regained_lost": regained[name].fmt(pct=True) if name in regained else "",
                     "mean_cka": f"{np.mean(cka[name]):.3f}" if name in cka else "1.000",
                     "best_decodability": f"{dec[name][0] * 100:.0f}% @ layer {dec[name][1]}" if name in dec else ""})
    return rows


@dataclass
class AnalysisResult:
    path: Path
    summary: list[dict]
    verdict: str


def analyze(spec: AnalyzeSpec) -> AnalysisResult:
    """Run the analysis and write ``artifacts/analysis/<name>/``."""
    from probe.config import ModelSpec
    from probe.models.load import load_model

    final = analysis_root() / spec.folder_name
    if final.exists() and not spec.force:
        raise ProbeError(f"analysis {final} exists: use --force to overwrite it, or --name NAME")
    t0 = time.perf_counter()
    rs = check_runs(find_runs(spec))
    bs.check_enough(len(rs.eval_rows), spec.min_facts, "the eval split")
    base = load_model(ModelSpec(spec.model, model_path=spec.model_path, dtype="float32"))
    model_hash = rs.runs["original"].manifest.get("parents", {}).get("model")
    if model_hash and model_hash != base.model_hash:
        raise ProbeError(f"the original capture was made from other weights ({model_hash}) than {spec.model} "
                         f"loads now ({base.model_hash}): recapture with {_capture_command(spec, 'original')}")
    lens = Lens.from_model(base.model)
    tok = base.tokenizer
    from probe.knowledge.scoring import encode_pair

    answers = [[encode_pair(tok, rs.probes[i]["prompt"], a)[1][0] for a in rs.probes[i]["answers"]]
               for i in rs.eval_rows]
    cands = candidates(rs, tok, spec.seed)
    del base
    tables = Tables(spec.n_boot, spec.seed)
    resid = _lens_and_residuals(rs, lens, answers, tables)
    per_fact = _outputs_and_attention(rs, tables)
    cka_reps = _cka(rs, resid, spec, tables)
    decode, note = _decodability(rs, lens, cands, spec, tables)
    inputs = _headline(rs, spec, tables, decode, note, cands, per_fact, cka_reps)
    text = verdict_text(inputs)
    summary = summary_rows(inputs, tables)
    for r in inputs.recoveries:
        for metric in ("regained", "delta_cka", "prompt_mass", "attn_shift", "mlp_change", "attn_out_change"):
            tables.put("regimes", {"variant": r.variant, "metric": metric, **getattr(r, metric).as_dict()})
    headline = {"n_eval": inputs.n_eval, "n_lost": inputs.n_lost, "chance": inputs.chance, "layer": inputs.layer,
                "known_original": inputs.known_original.as_dict(),
                "known_compressed": inputs.known_compressed.as_dict(),
                "decodable_lost": inputs.decodable.as_dict(), "displaced": inputs.displaced.as_dict(),
                "n_never": inputs.n_never, "decodable_never": inputs.decodable_never.as_dict(),
                "output_ranks_answer_first_lost": inputs.output_lost.as_dict(),
                "decodability": note, "verdict": text}
    with atomic_dir(final, overwrite=True) as tmp:
        for name, rows in tables.rows.items():
            _write_table(tmp, name, rows)
        _write_table(tmp, "summary", summary)
        figures = _figures(tmp, tables)
        write_json_atomic(tmp / "verdict.json", _clean(headline))
        (tmp / "verdict.md").write_text(f"# Verdict: {spec.model} / {spec.compression}\n\n{text}\n")
        write_json_atomic(tmp / "manifest.json", build_manifest(
            "analysis", spec, parents={v: r.manifest.get("spec_hash", "") for v, r in rs.runs.items()},
            runs={v: str(r.path) for v, r in rs.runs.items()}, layers=list(rs.layers), hooks=sorted(rs.hooks),
            position=POS, n_eval=len(rs.eval_rows), n_train=len(rs.train_rows), tables=sorted(tables.rows),
            figures=figures, seconds=round(time.perf_counter() - t0, 2),
            lens="every variant is read through the ORIGINAL model's final norm and unembedding (compression "
                 "and recovery leave both untouched by default)"))
    console.print(f"analysis written in {time.perf_counter() - t0:.1f} s: {final}")
    return AnalysisResult(final, summary, text)
