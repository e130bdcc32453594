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
# # Quickstart: load a variant, capture a few probes, look inside
#
# This notebook walks through the three building blocks of `probe` on a handful of facts:
#
# 1. **load a variant** (`probe.runtime.variant`): the original model and its compressed copy;
# 2. **capture** (`probe.capture.run.capture`): run a few knowledge probes through both, hooked at every
#    layer, into a zarr store;
# 3. **read the store** (`probe.capture.store.open_run`): one probe's attention map, original vs
#    compressed, and the logit lens (each layer read through the original's unembedding).
#
# By default it uses the SmolLM2 demo's artifacts (`make demo` builds them). The parameters below can be
# overridden with environment variables (`PROBE_NOTEBOOK_MODEL`, `PROBE_NOTEBOOK_COMPRESSION`, ...), which is
# how the tests run it on a tiny random model.

# %% tags=["parameters"]
# ruff: noqa: E402, B018  (a notebook: imports per cell, last expressions are displayed)
import os
from pathlib import Path

MODEL = os.environ.get("PROBE_NOTEBOOK_MODEL", "smollm2-135m")
COMPRESSION = os.environ.get("PROBE_NOTEBOOK_COMPRESSION", "gptq3")
PROBES = os.environ.get("PROBE_NOTEBOOK_PROBES", "builtin")  # where the few probes come from
N_PROBES = int(os.environ.get("PROBE_NOTEBOOK_N_PROBES", "6"))  # how many probes to capture
PROBE_INDEX = 0  # which captured probe to look at
LAYER = None  # attention layer to plot (None: the middle layer)
HEAD = 0  # attention head to plot

# run from notebooks/ (Jupyter's default), the artifacts live one folder up
if "PROBE_ARTIFACTS" not in os.environ and Path.cwd().name == "notebooks":
    os.environ["PROBE_ARTIFACTS"] = str(Path.cwd().parent / "artifacts")

# %%
import warnings

warnings.filterwarnings("ignore", message=".*(ipywidgets|IProgress)")  # progress bars without Jupyter widgets

from probe.config import ModelSpec
from probe.runtime.spec import variant_artifact
from probe.store import ArtifactStore

STORE = ArtifactStore.default()
ROOT = STORE.root
MODEL_SPEC = ModelSpec(MODEL, dtype="float32")
if variant_artifact(MODEL_SPEC, COMPRESSION).manifest() is None:
    message = (f"No {COMPRESSION} variant of {MODEL} under {ROOT}: run `make demo` first "
               f"(or `probe compress --model {MODEL} --method {COMPRESSION}`).")
    print(message)
    raise FileNotFoundError(message)
print(f"artifacts: {ROOT}")

# %% [markdown]
# ## 1. Load a variant
#
# A variant is a base model plus (optionally) a compression and a recovery, named by a `VariantSpec`.
# `load_variant` returns the model, its tokenizer and a `logits_fn` with one calling convention for every
# variant (prompt-based recoveries prepend their prompt inside it).

# %%
import torch

from probe.runtime.spec import VariantSpec
from probe.runtime.variant import load_variant

SPECS = {"original": VariantSpec(MODEL_SPEC), "compressed": VariantSpec(MODEL_SPEC, "compressed", COMPRESSION)}
loaded = {name: load_variant(spec) for name, spec in SPECS.items()}
tok = loaded["original"].base.tokenizer
for name, v in loaded.items():
    n_params = sum(p.numel() for p in v.base.model.parameters())
    print(f"{name:>10}: {v.spec.label}, {n_params / 1e6:.1f} M parameters, parents {v.parents}")

# %% [markdown]
# The probes are facts with a prompt and an answer. Here are the first few of the eval split, one relation
# after another so that different kinds of fact show up.

# %%
import pandas as pd

from probe.knowledge.loaders import load_probes

facts = load_probes(PROBES).split("eval").facts
by_relation: dict[str, list] = {}
for fact in facts:
    by_relation.setdefault(fact.relation, []).append(fact)
chosen = []
for i in range(max(len(v) for v in by_relation.values())):  # round-robin over relations
    chosen += [v[i] for v in by_relation.values() if i < len(v)]
chosen = chosen[:N_PROBES]
pd.DataFrame([{"id": f.id, "relation": f.relation, "prompt": f.prompt, "answer": f.object} for f in chosen])

# %% [markdown]
# What does each variant predict next for the first prompt? `logits_fn` takes right-padded ids and a mask
# and returns next-token logits for every real token.

# %%
enc = tok([chosen[0].prompt], return_tensors="pt")
rows = {}
with torch.no_grad():
    for name, v in loaded.items():
        logits, _ = v.logits_fn(enc.input_ids, enc.attention_mask)
        top = torch.log_softmax(logits[0, -1].float(), -1).topk(5)
        rows[name] = [f"{tok.decode([int(i)])!r} {p:.2f}" for i, p in zip(top.indices, top.values.exp(), strict=True)]
print(f"{chosen[0].prompt!r} → answer {chosen[0].object!r}")
pd.DataFrame(rows, index=[f"top {k + 1}" for k in range(5)])

# %% [markdown]
# ## 2. Capture
#
# `capture(CaptureSpec(...))` runs the variant with hooks on every layer and writes residual stream, attention
# and MLP outputs at the probes' last and subject tokens, full attention maps for the first probes, and the
# top next tokens. It is what `probe capture` runs.
#
# `probe analyze` compares the captures it finds in the artifact store, so these few-probe captures go to a
# scratch store that shares the real model (a link) and holds the compressed variant (hard links where the file
# system allows, else a copy).

# %%
import json
import shutil
import tempfile

from probe.capture.run import capture
from probe.capture.spec import CaptureSpec
from probe.store import model_key


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


scratch = Path(tempfile.mkdtemp(prefix="probe-quickstart-"))
SCRATCH = ArtifactStore(scratch)
model = STORE.model(model_key(MODEL))
if model.path.exists():
    SCRATCH.model(model.model).path.parent.mkdir(parents=True)
    SCRATCH.model(model.model).path.symlink_to(model.path.resolve())
variant = STORE.variant(model_key(MODEL), COMPRESSION)
shutil.copytree(variant.path, SCRATCH.variant(variant.model, variant.compression).path, copy_function=link_or_copy)
probe_file = scratch / "quickstart.jsonl"
rows = [{"id": f.id, "relation": f.relation, "subject": f.subject, "prompt": f.prompt, "answer": f.object,
         "split": "eval", **({"aliases": list(f.aliases)} if f.aliases else {}),
         **({"choices": list(f.distractors)} if f.distractors else {})} for f in chosen]
probe_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
os.environ["PROBE_ARTIFACTS"] = str(scratch)
try:
    paths = {name: capture(CaptureSpec(variant=spec, probes=str(probe_file), batch_size=N_PROBES,
                                       full_attention=N_PROBES))
             for name, spec in SPECS.items()}
finally:
    os.environ["PROBE_ARTIFACTS"] = str(ROOT)
paths

# %% [markdown]
# ## 3. Open the store
#
# `open_run` gives lazy access to the arrays (zarr, read by slice), the manifest (what was captured, from which
# parent artifacts) and the probe table, which also holds each probe's answer rank and top tokens.

# %%
from probe.capture.store import open_run

runs = {name: open_run(path) for name, path in paths.items()}
run = runs["original"]
print("layers", run.manifest["layers"], "| hooks", run.manifest["hooks"], "| positions", run.manifest["positions"])
print(len(run.names()), "arrays, e.g.", run.names()[:4], "...")
table = pd.DataFrame(run.probes)[["id", "prompt", "object", "answer_rank", "top_tokens"]]
table["compressed_rank"] = [p["answer_rank"] for p in runs["compressed"].probes]
table["top_tokens"] = table["top_tokens"].map(lambda t: t[:3])
table

# %% [markdown]
# ### Attention of one probe
#
# `full/blocks.<L>.attn.hook_pattern` holds the full query × key attention map of the first probes,
# `[probe, head, query, key]`. Rows are the query token, columns the key it attends to (causal: nothing
# above the diagonal). The colour scale is a square root, so that weak attention stays visible next to the
# first token, which usually takes most of it. Where compression moved attention, the two maps differ.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from probe.models.bridge import HOOKS

layers = run.manifest["layers"]
layer = layers[len(layers) // 2] if LAYER is None else LAYER
name = f"full/{HOOKS['pattern'].format(layer=layer)}"
n_tok = int(run["n_tokens"][PROBE_INDEX])
labels = [tok.decode([int(t)]) for t in run["tokens"][PROBE_INDEX, :n_tok]]
maps = {v: r[name][PROBE_INDEX, HEAD, :n_tok, :n_tok] for v, r in runs.items()}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
for ax, (v, m) in zip(axes, maps.items(), strict=False):
    im = ax.imshow(m, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
    ax.set_title(f"{v}: layer {layer}, head {HEAD}")
diff = maps["compressed"] - maps["original"]
lim = max(float(np.abs(diff).max()), 1e-6)
im2 = axes[2].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[2].set_title("compressed − original")
for ax in axes:
    ax.set_xticks(range(n_tok), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n_tok), labels, fontsize=7)
    ax.set_xlabel("key")
axes[0].set_ylabel("query")
fig.colorbar(im, ax=axes[:2], shrink=0.8)
fig.colorbar(im2, ax=axes[2], shrink=0.8)
plt.show()
print(f"probe {run.probes[PROBE_INDEX]['id']!r}: total variation between the maps, per query row, "
      f"mean {0.5 * np.abs(diff).sum(1).mean():.3f}")

# %% [markdown]
# ### Logit lens
#
# The residual stream after each layer, read through the **original** model's final norm and unembedding
# (`probe.analysis.lens.Lens`), shows what the model "would say" if it stopped at that layer. Below: the top
# tokens per layer at the probe's last token, and the probability of the answer layer by layer.

# %%
from probe.analysis.lens import Lens, answer_rank_prob
from probe.knowledge.scoring import encode_pair

lens = Lens.from_model(loaded["original"].base.model)
probe = run.probes[PROBE_INDEX]
rows = {}
for v, r in runs.items():
    for layer_ in layers:
        logp = lens.logprobs(r[f"last/{HOOKS['resid_post'].format(layer=layer_)}"][PROBE_INDEX:PROBE_INDEX + 1])
        rows.setdefault(f"layer {layer_}", {})[v] = " ".join(repr(tok.decode([int(i)]))
                                                              for i in logp[0].topk(3).indices)
print(f"{probe['prompt']!r} → {probe['object']!r}")
pd.DataFrame(rows).T

# %%
answers = [[encode_pair(tok, p["prompt"], a)[1][0] for a in p["answers"]] for p in run.probes]
fig, ax = plt.subplots(figsize=(7, 3.5))
for v, r in runs.items():
    probs = np.stack([answer_rank_prob(lens.logprobs(r[f"last/{HOOKS['resid_post'].format(layer=la)}"][:]),
                                       answers)[1] for la in layers], 1)  # [probe, layer]
    ax.plot(layers, probs.mean(0), marker="o", label=v)
ax.set(xlabel="layer", ylabel="answer probability (mean over probes)", title="Logit lens: answer probability")
ax.legend()
plt.show()

# %% [markdown]
# The scratch captures were only for this tour: remove them (skip this cell to keep exploring `runs`).

# %%
import shutil

shutil.rmtree(scratch)

# %% [markdown]
# Next: `02_displaced_vs_forgotten.py` runs the full analysis on the demo's captures (every eval fact,
# every variant, with bootstrap intervals), and `03_idp.py` looks at the IDP recovery's prompt routing.
