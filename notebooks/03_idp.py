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
# # Inference-time Dynamic Prompting (IDP): which prompt does each fact choose?
#
# IDP (arXiv 2310.00867) recovers a compressed model with a **pool** of `m` soft prompts instead of one. For
# every input, the prompt that receives the most attention from the input's tokens (at one layer, by default
# the first) is chosen, and the input runs with that prompt alone prepended. Here we look at the trained pool
# of the demo's compressed model:
#
# 1. the pool and how training used it (the usage histogram saved with the recovery);
# 2. which prompt each probe chose (recorded by `probe capture` and by `probe eval`);
# 3. routing per relation: do facts of one kind go to one prompt?
# 4. an ablation: force every fact through prompt `k` and compare each fact's answer log-probability with
#    what the router picked.
#
# Default: the SmolLM2 demo's artifacts (`make demo`); environment variables override the parameters.

# %% tags=["parameters"]
# ruff: noqa: E402, B018  (a notebook: imports per cell, last expressions are displayed)
import os
from pathlib import Path

MODEL = os.environ.get("PROBE_NOTEBOOK_MODEL", "smollm2-135m")
COMPRESSION = os.environ.get("PROBE_NOTEBOOK_COMPRESSION", "gptq3")
ABLATION_FACTS = int(os.environ.get("PROBE_NOTEBOOK_ABLATION_FACTS", "200"))  # eval facts scored m + 2 times

if "PROBE_ARTIFACTS" not in os.environ and Path.cwd().name == "notebooks":
    os.environ["PROBE_ARTIFACTS"] = str(Path.cwd().parent / "artifacts")

# %%
import json
import warnings

warnings.filterwarnings("ignore", message=".*(ipywidgets|IProgress)")  # progress bars without Jupyter widgets

import pandas as pd

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.runtime.spec import VariantSpec, read_recovery, recovery_artifact
from probe.store import ArtifactStore

STORE = ArtifactStore.default()

MODEL_SPEC = ModelSpec(MODEL, dtype="float32")
IDP = VariantSpec(MODEL_SPEC, "idp", COMPRESSION)
try:
    manifest = read_recovery(IDP)
except ProbeError as exc:
    message = f"No IDP recovery of {MODEL}/{COMPRESSION} under {STORE.root}: run `make demo` first ({exc})"
    print(message)
    raise FileNotFoundError(message) from None
folder = recovery_artifact(MODEL_SPEC, COMPRESSION, "idp").path
pool = json.loads((folder / "adapter" / "idp.json").read_text())  # options and training usage
OPTIONS = pool["options"]
M = OPTIONS["m"]
pd.Series({**OPTIONS, "trainable parameters": manifest["trainable_parameters"],
           "extra KV positions": manifest["extra_kv_positions"], "train seconds": manifest["train_seconds"],
           "held-out loss, compressed": manifest["held_out_compressed"],
           "held-out loss, trained": manifest["held_out_after"]}, name="IDP recovery").to_frame()

# %% [markdown]
# `m` prompts of `n` tokens each; `select_layer`, `statistic` and `routing` say how a prompt is chosen. During
# training every window is routed the same way (capped per batch, so that no prompt starves); the recovery
# saves how often each prompt was used.

# %%
import matplotlib.pyplot as plt
import numpy as np

train_usage = np.array(pool["train_usage"], float)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(M), train_usage / max(train_usage.sum(), 1) * 100)
ax.set(xlabel="prompt", ylabel="training windows (%)", xticks=range(M), title="Prompt usage during training")
plt.show()
if manifest.get("eval"):
    print("saved eval summary:", {k: manifest["eval"][k] for k in ("top1", "n_lost", "n_regained")
                                  if k in manifest["eval"]})

# %% [markdown]
# ## The pool as a variant
#
# `load_variant` puts the saved pool on the compressed model. For capture and analysis, `capture_view` exposes
# it as a key/value prefix (`KVPrefix`: each prompt's keys and values, computed once since a prompt attends
# only to itself) and a selector, the router. Which vocabulary tokens are the prompts closest to? (Prompts
# start from corpus text and drift in training, so the nearest tokens only hint at what they became.)

# %%
import torch

from probe.runtime.variant import capture_view, load_variant

loaded = load_variant(IDP)
view = capture_view(loaded)
adapter, tok = loaded.adapter, loaded.base.tokenizer
print(f"pool: {view.prefix.n_prompts} prompts x {view.prefix.n_tokens} tokens, width {adapter.prompts.shape[-1]}")
with torch.no_grad():
    emb = torch.nn.functional.normalize(adapter.model.get_input_embeddings().weight.float(), dim=-1)
    directions = torch.nn.functional.normalize(adapter.prompts.float(), dim=-1)
    nearest = (directions @ emb.T).argmax(-1)  # [m, n]
pd.DataFrame({f"prompt {k}": [tok.decode([int(t)]) for t in nearest[k]] for k in range(M)},
             index=[f"position {i}" for i in range(nearest.shape[1])]).T

# %% [markdown]
# ## Which prompt did each probe choose?
#
# `probe capture` of the IDP variant stores the chosen prompt of every probe (array `prompt/chosen`, also in the
# probe table as `chosen_prompt`). Without a capture, the router is asked directly (`loaded.annotate`, what
# `probe eval` saves as `idp_choice`).

# %%
from probe.capture.store import open_run
from probe.knowledge.loaders import load_probes
from probe.runtime.spec import model_key

runs = [open_run(c) for c in STORE.captures(model_key(MODEL_SPEC)) if c.manifest() is not None]
runs = [r for r in runs if r.manifest.get("variant") == "idp" and r.manifest.get("compression") == COMPRESSION]
source = runs[0].manifest["spec"]["probes"] if runs else "builtin"
probe_set = load_probes(source)
if runs:
    print(f"capture {runs[0].path.name}")
    table = pd.DataFrame(runs[0].probes)[["id", "relation", "split", "prompt", "object", "chosen_prompt",
                                          "answer_top1"]]
else:
    print("no IDP capture: asking the router (run `probe capture --variant idp ...` to record it)")
    facts = probe_set.split("eval").facts
    chosen = loaded.annotate(facts)["idp_choice"]
    table = pd.DataFrame([{"id": f.id, "relation": f.relation, "split": f.split, "prompt": f.prompt,
                           "object": f.object, "chosen_prompt": chosen[f.id]} for f in facts])
table.head(10)

# %% [markdown]
# The router is deterministic, so asking it again gives the same choices; and a saved `probe eval` of the IDP
# variant (the recovery saves one for the built-in probes) recorded the same prompt for the facts it scored.

# %%
facts_by_id = {f.id: f for f in probe_set.facts}
again = loaded.annotate([facts_by_id[i] for i in table["id"]])["idp_choice"]
agree = float(np.mean([again[i] == c for i, c in zip(table["id"], table["chosen_prompt"], strict=True)]))
print(f"router asked again agrees on {agree:.1%} of {len(table)} probes")
for result in STORE.evals(model_key(MODEL_SPEC)):
    saved, path = result.read(), result.path
    if result.label != f"{COMPRESSION}-idp" or "idp_choice" not in saved:
        continue
    common = [(i, c) for i, c in zip(table["id"], table["chosen_prompt"], strict=True) if i in saved["idp_choice"]]
    same = np.mean([saved["idp_choice"][i] == c for i, c in common]) if common else float("nan")
    print(f"saved eval {path.name}: {saved['n_facts']} facts, usage {saved['idp_usage']}, "
          f"same choice on {same:.1%} of the {len(common)} probes in common")

# %% [markdown]
# ## Usage: training vs probes
#
# A pool that routes every probe to one prompt is a single soft prompt in disguise. Compare the share of
# probes each prompt gets with its share of training windows.

# %%
probe_usage = np.bincount(table["chosen_prompt"], minlength=M).astype(float)
x = np.arange(M)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(x - 0.2, train_usage / max(train_usage.sum(), 1) * 100, 0.4, label="training windows")
ax.bar(x + 0.2, probe_usage / probe_usage.sum() * 100, 0.4, label="probes")
ax.set(xlabel="prompt", ylabel="share (%)", xticks=x, title="Prompt usage")
ax.legend()
plt.show()

# %% [markdown]
# ## Routing per relation
#
# Each row is a relation, each column a prompt: the share of the relation's probes routed there. A clean block
# structure means the router separates kinds of fact; flat rows mean the choice depends on something else
# (prompt length, wording).

# %%
routing = pd.crosstab(table["relation"], table["chosen_prompt"], normalize="index").reindex(columns=range(M),
                                                                                             fill_value=0.0)
fig, ax = plt.subplots(figsize=(1.2 * M + 3, 0.35 * len(routing) + 1.5))
im = ax.imshow(routing.to_numpy() * 100, cmap="Blues", vmin=0, vmax=100, aspect="auto")
ax.set_xticks(range(M), [f"prompt {k}" for k in range(M)])
ax.set_yticks(range(len(routing)), routing.index)
for (r, c), share in np.ndenumerate(routing.to_numpy()):
    ax.text(c, r, f"{share:.0%}", ha="center", va="center", fontsize=7, color="white" if share > 0.6 else "black")
fig.colorbar(im, ax=ax, label="% of the relation's probes")
ax.set_title("Which prompt each relation is routed to")
plt.show()

# %% [markdown]
# How decisive is the router? Its scores are the attention mass each prompt receives; the margin between the
# best and the second-best prompt shows how close the calls are.

# %%
router = adapter.router()


def route_scores(prompts: list[str]) -> torch.Tensor:
    """``[len(prompts), m]`` router scores; the router reads right-padded inputs."""
    side, tok.padding_side = tok.padding_side, "right"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True)
        return router.scores(enc.input_ids.to(loaded.base.device), enc.attention_mask.to(loaded.base.device))
    finally:
        tok.padding_side = side


prompts = list(table["prompt"])
scores = torch.cat([route_scores(prompts[i:i + 64]) for i in range(0, len(prompts), 64)]).cpu()
top2 = scores.topk(min(2, M), dim=-1).values
margin = (top2[:, 0] - top2[:, -1]).numpy()
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(margin, bins=30)
ax.set(xlabel="best − second-best score", ylabel="probes", title="Routing margin")
plt.show()

# %% [markdown]
# ## Ablation: force each prompt
#
# The router picks by attention, not by answer quality. Is its pick good for the fact? We score eval facts
# (`probe.knowledge.scoring.score_facts`, as `probe eval` does) with every prompt forced in turn
# (`prefix_logits_fn` with a constant selector), with the router's choice, and with no prompt at all (the
# compressed model), and compare each fact's answer log-probability.

# %%
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.runtime.kv_prefix import constant_selector, prefix_logits_fn

facts = probe_set.split("eval").facts[:ABLATION_FACTS]
settings = {f"prompt {k}": prefix_logits_fn(adapter.model, view.prefix, constant_selector(k)) for k in range(M)}
settings |= {"routed (IDP)": loaded.logits_fn, "no prompt (compressed)": hf_logits_fn(adapter.model)}
with torch.no_grad():
    scored = {name: score_facts(facts, tok, fn, device=loaded.base.device, max_positions=loaded.base.max_positions,
                                desc=name) for name, fn in settings.items()}
logprob = pd.DataFrame({name: [s.answer_logprob for s in sc] for name, sc in scored.items()},
                       index=[f.id for f in facts])
known = pd.DataFrame({name: [s.known for s in sc] for name, sc in scored.items()}, index=logprob.index)
forced = logprob[[f"prompt {k}" for k in range(M)]].to_numpy()
summary = pd.DataFrame({"mean answer log-prob": logprob.mean(), "top-1 known (%)": known.mean() * 100})
summary.loc["best prompt per fact (oracle)"] = [forced.max(1).mean(), known[[f"prompt {k}" for k in range(M)]]
                                                 .any(axis=1).mean() * 100]
summary

# %%
routed = loaded.annotate(facts)["idp_choice"]
choice = np.array([routed[f.id] for f in facts])
best = forced.argmax(1)
print(f"the router picks the prompt that gives the answer the highest log-prob for {np.mean(choice == best):.1%} "
      f"of {len(facts)} facts (chance {1 / M:.0%})")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
gain_mean = summary["mean answer log-prob"] - summary.loc["no prompt (compressed)", "mean answer log-prob"]
axes[0].barh(gain_mean.index, gain_mean, color=["tab:green" if g >= 0 else "tab:red" for g in gain_mean])
axes[0].axvline(0, color="grey", lw=0.8)
axes[0].set(xlabel="mean answer log-prob gain over no prompt", title="Forcing each prompt")
gain = logprob["routed (IDP)"] - logprob["no prompt (compressed)"]
axes[1].scatter(forced.max(1) - logprob["no prompt (compressed)"], gain, s=10, alpha=0.6)
lim = [min(gain.min(), 0), max((forced.max(1) - logprob["no prompt (compressed)"]).max(), 0)]
axes[1].plot(lim, lim, color="grey", ls=":")
axes[1].set(xlabel="best prompt's gain over no prompt", ylabel="routed prompt's gain over no prompt",
            title="Per fact: routed vs best prompt (log-prob)")
plt.show()

# %% [markdown]
# Per relation: the gain in answer log-probability from forcing each prompt, over no prompt. A prompt that helps
# one relation and hurts another is specialised; the router's job is to send each fact to its helpful prompt.

# %%
relation = pd.Series([f.relation for f in facts], index=logprob.index)
gains = logprob.drop(columns="no prompt (compressed)").sub(logprob["no prompt (compressed)"], axis=0)
per_relation = gains.groupby(relation).mean()
fig, ax = plt.subplots(figsize=(1.3 * per_relation.shape[1] + 3, 0.35 * len(per_relation) + 1.5))
lim = max(float(np.abs(per_relation.to_numpy()).max()), 1e-6)
im = ax.imshow(per_relation.to_numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
ax.set_xticks(range(per_relation.shape[1]), per_relation.columns, rotation=30, ha="right")
ax.set_yticks(range(len(per_relation)), per_relation.index)
fig.colorbar(im, ax=ax, label="mean log-prob gain over no prompt")
ax.set_title("Answer log-prob gain per relation")
plt.show()
