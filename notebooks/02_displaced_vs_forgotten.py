# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Displaced or forgotten? The analysis step by step
#
# Compression makes a model lose facts it knew. This notebook asks, layer by layer, whether a lost fact is
# **forgotten** (the hidden states no longer carry the answer) or only **displaced** (the answer is still in
# the hidden states, but the model no longer reads it out). It rebuilds `probe analyze` one measure at a
# time on the captures of the original, the compressed model and any recoveries:
#
# 1. representational similarity per layer (debiased linear CKA);
# 2. the logit lens: what each layer would answer through the original's unembedding;
# 3. divergences from the original (KL/JS of the lens distributions, residual distance, attention);
# 4. decodability: can a linear probe still pick the answer out of the compressed model's hidden state?
# 5. bootstrap intervals, resampling subjects with their facts;
# 6. finally `probe.analysis.run.analyze`, whose verdict and figures sum it all up.
#
# Every statistic is at the probe's last token, on eval-split facts (train-split facts only train the
# decodability probes). Default: the SmolLM2 demo's captures (`make demo`); environment variables override
# the parameters.

# %% tags=["parameters"]
# ruff: noqa: E402  (a notebook: imports per cell)
import os
from pathlib import Path

MODEL = os.environ.get("PROBE_NOTEBOOK_MODEL", "smollm2-135m")
COMPRESSION = os.environ.get("PROBE_NOTEBOOK_COMPRESSION", "gptq3")
MIN_FACTS = int(os.environ.get("PROBE_NOTEBOOK_MIN_FACTS", "10"))  # fewest facts a bootstrap interval is drawn on
N_BOOT = int(os.environ.get("PROBE_NOTEBOOK_N_BOOT", "1000"))  # bootstrap resamples
N_BOOT_CKA = int(os.environ.get("PROBE_NOTEBOOK_N_BOOT_CKA", "200"))  # bootstrap resamples for CKA
SEED = 0

if "PROBE_ARTIFACTS" not in os.environ and Path.cwd().name == "notebooks":
    os.environ["PROBE_ARTIFACTS"] = str(Path.cwd().parent / "artifacts")

# %% [markdown]
# ## Find and check the captures
#
# `find_runs` picks one complete capture per variant (original, compressed, and the recoveries `prompt`,
# `prefix`, `idp`, `lora` when captured) and `check_runs` refuses captures that cannot be compared (other
# probes, splits or tokenisation). These are the same functions `probe analyze` uses.

# %%
import warnings

warnings.filterwarnings("ignore", message=".*(ipywidgets|IProgress)")  # progress bars without Jupyter widgets

from probe.analysis.captures import check_runs, find_runs
from probe.analysis.spec import AnalyzeSpec
from probe.errors import ProbeError
from probe.store import ArtifactStore

spec = AnalyzeSpec(MODEL, COMPRESSION, name=f"{MODEL}-{COMPRESSION}-notebook", n_boot=N_BOOT, n_boot_cka=N_BOOT_CKA,
                   min_facts=MIN_FACTS, seed=SEED, shuffles=1, force=True)  # one shuffled probe, as below
try:
    rs = check_runs(find_runs(spec))
except ProbeError as exc:
    root = ArtifactStore.default().root
    message = f"No usable captures of {MODEL}/{COMPRESSION} under {root}: run `make demo` first ({exc})"
    print(message)
    raise FileNotFoundError(message) from None
VARIANTS = list(rs.runs)
print(f"{len(rs.eval_rows)} eval facts, {len(rs.train_rows)} train facts, layers {rs.layers[0]}..{rs.layers[-1]}")

# %%
import pandas as pd

pd.DataFrame([{"variant": v, "run": r.path.name, "split": r.manifest["split"], "probes": r.manifest["n_probes"],
               "hooks": ", ".join(r.manifest["hooks"])} for v, r in rs.runs.items()])

# %% [markdown]
# ## Which facts are lost?
#
# A fact is **known** when its answer's first token is the model's top-1 next token (recorded by the capture),
# and **lost** when the original knows it and the compressed model does not. The bars carry 95% bootstrap
# intervals from a bootstrap that resamples **subjects** with all their facts (`ClusterBootstrap`): a subject
# appears in several relations, so its facts are not independent draws.

# %%
import matplotlib.pyplot as plt
import numpy as np

from probe.analysis import bootstrap as bs

ev = rs.eval_rows
top1 = {v: np.asarray(r["logits/answer_top1"][:], bool)[ev] for v, r in rs.runs.items()}
lost = top1["original"] & ~top1["compressed"]
boot = bs.ClusterBootstrap(bs.subject_labels(rs.probes, ev), N_BOOT, SEED)  # one set of resamples for all
known = {v: boot.interval(t) for v, t in top1.items()}
print(f"the original knows {top1['original'].sum()} of {len(ev)} eval facts; compression loses {lost.sum()}")

fig, ax = plt.subplots(figsize=(7, 3.2))
means = [known[v].mean * 100 for v in VARIANTS]
errors = [[(known[v].mean - known[v].lo) * 100 for v in VARIANTS], [(known[v].hi - known[v].mean) * 100
                                                                    for v in VARIANTS]]
ax.bar(VARIANTS, means, yerr=errors, capsize=4, color="tab:blue")
ax.set(ylabel="top-1 accuracy (%)", title="Eval facts known, with 95% bootstrap intervals")
plt.show()

# %% [markdown]
# ## The lens: the original model's final norm and unembedding
#
# Every variant is read through the **original** model's final norm and unembedding (compression and recovery
# leave both untouched), so layers are comparable across variants. `answers` holds each eval fact's accepted
# answers as first-token ids, exactly as the capture scores them.

# %%
from probe.analysis.lens import Lens, answer_rank_prob
from probe.config import ModelSpec
from probe.knowledge.scoring import encode_pair
from probe.models.load import load_model

base = load_model(ModelSpec(MODEL, dtype="float32"))
lens = Lens.from_model(base.model)
tok = base.tokenizer
answers = [[encode_pair(tok, rs.probes[i]["prompt"], a)[1][0] for a in rs.probes[i]["answers"]] for i in ev]
LAYERS = rs.layers
print(f"{len(LAYERS)} layers; residual stream arrays such as {rs.hook('resid_post', LAYERS[0])!r}")

# %% [markdown]
# ## 1. CKA per layer
#
# Linear CKA (`probe.analysis.cka.linear_cka`) compares the geometry of two sets of hidden states of the same
# facts: 1 means the same representation up to rotation and scale. With about as many facts as dimensions the
# plain (biased) estimate is inflated: two *independent* Gaussian representations of 608 × 576 score about 0.49.
# So the per-layer numbers are **debiased** (Song et al.'s unbiased HSIC, `debiased=True`, about 0 for unrelated
# representations); the biased value is drawn dotted for comparison. A dip says where compression changed the
# representation; a recovery that pulls CKA back toward 1 repairs the representation, one that does not but
# still regains facts works around it.

# %%
from probe.analysis.cka import linear_cka

resid = {v: [] for v in VARIANTS}  # per variant, per layer: eval residuals [n_eval, d_model]
for layer in LAYERS:
    for v in VARIANTS:
        resid[v].append(rs.read(v, rs.hook("resid_post", layer), ev).astype(np.float32))  # float32: half the memory
cka = {v: np.array([linear_cka(resid[v][i], resid["original"][i], debiased=True) for i in range(len(LAYERS))])
       for v in VARIANTS if v != "original"}
cka_biased = {v: np.array([linear_cka(resid[v][i], resid["original"][i]) for i in range(len(LAYERS))]) for v in cka}

fig, ax = plt.subplots(figsize=(7, 3.5))
for v, values in cka.items():
    line = ax.plot(LAYERS, values, marker="o", label=f"{v} (debiased)")[0]
    ax.plot(LAYERS, cka_biased[v], ls=":", color=line.get_color(), label=f"{v} (biased)")
ax.set(xlabel="layer", ylabel="linear CKA with the original", title="Representation similarity per layer")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Logit lens
#
# Per layer and fact: the rank of the answer under the lens (0 = top-1) and its probability. The lens at the
# last layer reproduces each variant's own output, so the last point of each curve is the top-1 accuracy
# above. Where the compressed curve leaves the original's tells at which depth the answer stops being read
# out.

# %%
from probe.analysis.divergence import cosine_distance, js_logp, kl_logp, relative_l2

METRICS = ("rank", "prob", "kl", "js", "cos", "rel_l2")
per = {v: {k: np.zeros((len(ev), len(LAYERS))) for k in METRICS} for v in VARIANTS}  # per fact and layer
for li in range(len(LAYERS)):
    lp_orig = lens.logprobs(resid["original"][li]).double().numpy()
    for v in VARIANTS:
        logp = lens.logprobs(resid[v][li])
        per[v]["rank"][:, li], per[v]["prob"][:, li] = answer_rank_prob(logp, answers)
        lp = logp.double().numpy()
        per[v]["kl"][:, li] = kl_logp(lp_orig, lp)  # KL(original ‖ variant), nats
        per[v]["js"][:, li] = js_logp(lp_orig, lp)
        per[v]["cos"][:, li] = cosine_distance(resid[v][li], resid["original"][li])
        per[v]["rel_l2"][:, li] = relative_l2(resid[v][li], resid["original"][li])

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for v in VARIANTS:
    axes[0].plot(LAYERS, (per[v]["rank"] == 0).mean(0) * 100, marker="o", label=v)
    axes[1].plot(LAYERS, np.log1p(per[v]["rank"]).mean(0), marker="o", label=v)
axes[0].set(xlabel="layer", ylabel="answer top-1 under the lens (%)", title="Logit lens: top-1 per layer")
axes[1].set(xlabel="layer", ylabel="mean log(1 + answer rank)", title="Logit lens: answer rank per layer")
axes[0].legend()
plt.show()

# %% [markdown]
# The lens on the **lost** facts alone: the original reads them out at the last layer by definition; does the
# compressed model get them anywhere along the way?

# %%
if lost.any():
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for v in VARIANTS:
        ax.plot(LAYERS, per[v]["prob"][lost].mean(0), marker="o", label=v)
    ax.set(xlabel="layer", ylabel="answer probability", title=f"Logit lens on the {lost.sum()} lost facts")
    ax.legend()
    plt.show()
else:
    print("compression loses no fact the original knows: nothing to show for lost facts")

# %% [markdown]
# ## 3. Divergences from the original
#
# Per layer, averaged over facts: the Jensen–Shannon divergence between the original's and the variant's lens
# distributions (`probe.analysis.divergence.js_logp`, nats), the KL divergence, and how far the residual stream
# moved (cosine distance and relative L2). Attention divergence compares each head's attention row at the last
# token (JS, averaged over heads).

# %%
from probe.analysis.divergence import js_prob

attention_js = {}
if "pattern" in rs.hooks:
    for v in VARIANTS[1:]:
        attention_js[v] = np.stack([js_prob(rs.read(v, rs.hook("pattern", la), ev),
                                            rs.read("original", rs.hook("pattern", la), ev)).mean(1)
                                    for la in LAYERS], 1)  # [n_eval, L]
panels = [("js", "lens JS (nats)"), ("kl", "lens KL (nats)"), ("rel_l2", "residual relative L2")]
fig, axes = plt.subplots(1, 4, figsize=(18, 3.5))
for ax, (key, label) in zip(axes, panels, strict=False):
    for v in VARIANTS[1:]:
        ax.plot(LAYERS, per[v][key].mean(0), marker="o", label=v)
    ax.set(xlabel="layer", title=label)
for v, values in attention_js.items():
    axes[3].plot(LAYERS, values.mean(0), marker="o", label=v)
axes[3].set(xlabel="layer", title="attention JS at the last token (nats)")
axes[0].legend()
plt.show()

# %% [markdown]
# ## 4. Decodability: is the answer still in the hidden state?
#
# For each fact the candidates are its answer and its distractors (from the probe file, else other objects of
# its relation). A candidate `c` is scored from `norm(h) ⊙ u_c` (the final-normed residual times the
# unembedding row of the candidate's first token) by one logistic regression shared by all facts
# (`probe.analysis.decodability`); the fact counts as decodable when its answer scores highest. Summing that
# product with unit weights is the plain logit lens restricted to the candidates, so the **lens** is shown next
# to the **probe** at every layer: the probe sees the lens score plus the top principal components of the
# product, and earns its place only where it beats the lens. Its regularisation `C` and component count are
# chosen by cross-validation **inside the training facts** (`select_probe`, folds grouped by subject), never on
# the eval facts it is scored on. The probe is trained on each variant's **train-split** facts and scored on
# its eval facts. If it still finds the answers of lost facts in the compressed model, those facts are
# displaced rather than forgotten.

# %%
from probe.analysis.bootstrap import subject_labels
from probe.analysis.candidates import build as build_candidates
from probe.analysis.decodability import ProbeData, candidate_features, cross_val_correct, held_out_correct

cands = build_candidates(rs, tok, SEED).cands  # probe.analysis.candidates: answer + distractor first tokens
cvec = lens.unembedding_rows(np.maximum(cands.ids, 0))
held_out = len(rs.train_rows) >= MIN_FACTS
print("probes trained on train-split facts" if held_out else
      f"only {len(rs.train_rows)} train facts: {spec.folds}-fold cross-validation over eval facts instead")
rows = np.arange(len(rs.probes))
decodable = {v: np.zeros((len(ev), len(LAYERS)), bool) for v in ("original", "compressed")}
lens_pick = {v: np.zeros((len(ev), len(LAYERS)), bool) for v in decodable}
shuffled = np.zeros((len(ev), len(LAYERS)))  # the compressed probe trained on label-shuffled answers: its chance
choices = []
for li, layer in enumerate(LAYERS):
    for v in decodable:
        data = ProbeData(candidate_features(lens.normed(rs.read(v, rs.hook("resid_post", layer), rows)), cvec), cands)
        test = data.subset(ev)
        lens_pick[v][:, li] = np.where(test.cands.mask, test.feats.sum(2), -np.inf).argmax(1) == test.cands.answer
        got = (held_out_correct(data.subset(rs.train_rows), {v: test},
                                groups=subject_labels(rs.probes, rs.train_rows), seed=SEED) if held_out
               else cross_val_correct(test, {v: test}, spec.folds, groups=subject_labels(rs.probes, ev), seed=SEED))
        decodable[v][:, li] = got.correct[v]
        if v == "compressed":  # the same probe, same choice of C and rank, on label-shuffled training answers
            fake = data.shuffled(SEED + 1)
            shuffled[:, li] = (held_out_correct(fake.subset(rs.train_rows), {v: test},
                                                groups=subject_labels(rs.probes, rs.train_rows), seed=SEED)
                               if held_out else
                               cross_val_correct(fake.subset(ev), {v: test}, spec.folds,
                                                 groups=subject_labels(rs.probes, ev), seed=SEED)).correct[v]
        choices.append({"layer": layer, "variant": v, "C": got.choice.c, "rank": got.choice.rank,
                        "inner-CV accuracy": round(got.choice.cv_accuracy, 3)})
chance = cands.chance[ev]
chosen = pd.DataFrame(choices).pivot(index="layer", columns="variant", values=["C", "rank"])
chosen.transpose()

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for v, correct in decodable.items():
    line = ax.plot(LAYERS, correct.mean(0) * 100, marker="o", label=f"{v}: probe")[0]
    ax.plot(LAYERS, lens_pick[v].mean(0) * 100, ls=":", color=line.get_color(), label=f"{v}: lens")
if lost.any():
    ax.plot(LAYERS, decodable["compressed"][lost].mean(0) * 100, marker="s", ls="--", label="compressed probe, lost")
ax.plot(LAYERS, shuffled.mean(0) * 100, color="grey", ls="--", label="compressed, label-shuffled probe")
ax.axhline(chance.mean() * 100, color="grey", ls=":", label="uniform guess (reference only)")
ax.set(xlabel="layer", ylabel="answer picked among its candidates (%)",
       title="Decodability per layer: trained probe vs plain lens")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 5. Bootstrap intervals
#
# How sure are these numbers? `bootstrap_mean` resamples facts (the same resamples for every layer) and gives
# a 95% percentile interval per layer. The headline numbers use `boot`, which resamples subjects with their
# facts. The headline is the share of lost facts still decodable, **set against measured baselines** rather
# than a uniform `1/k`: two floors (the label-shuffled probe on the lost facts; the probe on facts neither
# model knows) and a ceiling (facts compression keeps, matched to each lost fact by the original's margin
# between its top two tokens). The layer is chosen on eval facts that are none of these
# (`baseline_facts`), again inside every resample (`best_layers`), so the interval includes the uncertainty
# of that choice. Each comparison is a paired difference in the same resamples; the decision needs its
# interval to exclude zero.

# %%
mean, lo, hi = bs.bootstrap_mean(per["compressed"]["js"], N_BOOT, SEED)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(LAYERS, mean, marker="o", color="tab:orange", label="compressed")
ax.fill_between(LAYERS, lo, hi, color="tab:orange", alpha=0.25, label="95% bootstrap interval")
ax.set(xlabel="layer", ylabel="lens JS from the original (nats)", title="Lens divergence with its interval")
ax.legend()
plt.show()

# %%
from probe.analysis.baselines import compare, estimate_at, matched_values
from probe.analysis.headline import baseline_facts, best_layers, share_at
from probe.analysis.verdict import decide

comp = decodable["compressed"].astype(float)
never = ~top1["original"] & ~top1["compressed"]
base = baseline_facts(rs, top1, lost, never)
best = int(comp[base.select].mean(0).argmax())
picked = best_layers(boot, comp, base.select)
print(f"layer chosen on {base.select.sum()} facts that are neither lost, never known nor matched: {LAYERS[best]} "
      f"(chosen in {np.mean(picked == best):.0%} of resamples)")
if lost.sum() >= MIN_FACTS:
    share = estimate_at(boot, comp, lost, best, picked)
    lens_share = share_at(boot, lens_pick["compressed"], lost, best, picked)
    floors = [compare("label-shuffled probe", share, estimate_at(boot, shuffled, lost, best, picked))]
    if never.sum() >= MIN_FACTS:
        floors.append(compare("never-known facts", share, estimate_at(boot, comp, never, best, picked)))
    ceiling = compare("margin-matched kept facts", share,
                      estimate_at(boot, matched_values(comp, base.match), lost, best, picked))
    print(f"lost facts still decodable: probe {share.interval.fmt(pct=True)}, lens {lens_share.fmt(pct=True)} "
          f"(uniform guess {chance[lost].mean():.0%}, for reference only)")
    for c in (*floors, ceiling):
        print(f"  {c.what}: {c.baseline.fmt(pct=True)}; lost minus this {c.diff.fmt(pct=True)}")
    floor = max(floors, key=lambda f: f.baseline.mean)
    print("decision:", decide(floor, ceiling))
else:
    print(f"only {lost.sum()} lost facts, fewer than the {MIN_FACTS} a bootstrap interval needs: no headline")

# %% [markdown]
# ## 6. `probe analyze`: every measure, every variant, with intervals, and the verdict
#
# `analyze` does all of the above for every variant (plus MLP- and attention-output changes, attention
# entropy and prompt mass, cross-layer CKA and transfer probes) and writes tables, plotly figures and a
# verdict paragraph to `artifacts/analysis/<name>/`. This notebook writes its own copy (`<model>-<compression>
# -notebook`) so that it never overwrites the CLI's.

# %%
from IPython.display import Markdown, display

from probe.analysis.run import analyze

result = analyze(spec)
display(Markdown(f"**Verdict.** {result.verdict}"))
pd.DataFrame(result.summary)

# %% [markdown]
# The step-by-step numbers above are the analysis's own: its CKA table and its headline match ours. Its
# `verdict.json` also carries the activation-patching curves (where the original's residual brings a lost
# fact back), the lost answers' ranks per layer and what replaced them.

# %%
import json

table = pd.DataFrame(json.loads((result.path / "cka.json").read_text()))
for v, values in cka.items():
    saved = table[table.variant == v].sort_values("layer")["mean"].to_numpy()
    assert np.allclose(saved, values, atol=1e-6), (v, saved, values)
headline = json.loads((result.path / "verdict.json").read_text())
assert headline["n_lost"] == lost.sum() and headline["layer"] == LAYERS[best]
if lost.sum() >= MIN_FACTS:
    assert abs(headline["decodable_lost"]["mean"] - comp[lost, best].mean()) < 1e-9
    assert headline["decision"] == decide(floor, ceiling)
    assert abs(headline["lens_lost"]["mean"] - lens_pick["compressed"][lost, best].mean()) < 1e-9
table.head()

# %% [markdown]
# Its figures are plotly JSON (and HTML) files in `figures/`; any of them opens with `plotly.io.read_json`.

# %%
import plotly.io as pio

figures = sorted(p.stem for p in (result.path / "figures").glob("*.json"))
print(figures)
pio.read_json(result.path / "figures" / "lens_answer_top1.json")

# %%
pio.read_json(result.path / "figures" / "cross_cka_compressed.json")

# %% [markdown]
# The decision figure exists only when there are enough lost facts for a headline (section 5).

# %%
decision = result.path / "figures" / "verdict_decision.json"
pio.read_json(decision) if decision.is_file() else print(f"no decision figure: {headline['n_lost']} lost facts")
