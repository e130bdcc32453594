"""SmolLM2 activation patching: original ↔ a 3-bit round-to-nearest copy, on builtin eval facts.

The compressed model is built in memory (per-row RTN, 3 bits, every linear layer of the blocks) so
the test needs no compression run; what is tested is the patching on the real architecture: the
scorer's encoding, the subject positions, and the sanity checks of a causal method.
"""

from __future__ import annotations

import numpy as np
import torch

from probe.analysis.patching import patch_facts, patch_items
from probe.knowledge.loaders import load_probes
from probe.models.bridge import hook_model
from tests.conftest import load_smollm2

LAYERS = (0, 10, 20, 29)


def _rtn3(loaded):
    with torch.no_grad():
        for module in loaded.model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                scale = w.abs().amax(1, keepdim=True) / 3
                w.copy_((w / scale).round().clamp(-4, 3) * scale)
    return loaded


def test_smollm2_patching_restores_lost_facts_at_the_last_layer_and_finds_subjects(smollm2_folder):
    facts = load_probes("builtin").split("eval").facts[::12]  # ~50 facts across every relation
    first = load_smollm2(smollm2_folder)
    items = patch_items(facts, first.tokenizer, first.max_positions)
    assert sum(bool(p.subject) for p in items) >= 0.8 * len(items)  # subjects found in the scorer's prompts
    for p, f in zip(items, facts, strict=True):
        if p.subject:
            assert first.tokenizer.decode([p.ids[i] for i in p.subject]).strip().endswith(f.subject.split()[-1])

    def load(which: str):
        loaded = load_smollm2(smollm2_folder)
        return hook_model(loaded if which == "original" else _rtn3(loaded))

    r = patch_facts(items, load, LAYERS, first.tokenizer.pad_token_id, batch_size=16)
    lost = r.unpatched_original.top1 & ~r.unpatched_compressed.top1
    assert lost.sum() >= 3, "3-bit RTN should lose some facts SmolLM2 knows"
    assert r.sanity_restored[lost].all() and r.sanity_broken[lost].all()
    assert r.restored["last"][lost, -1].all()  # layer 29 is the last: its last-token residual is the output
    early = r.restored["last"][lost, 0].mean()
    assert early < 1 and np.isfinite(r.seconds_per_fact_layer)
