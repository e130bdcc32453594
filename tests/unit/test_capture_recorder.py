"""Capture parity on tiny-llama: stored arrays equal HF eager outputs; prompt variants align and select."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import probe.capture.run as capture_run
from probe.capture.run import capture
from probe.capture.store import open_run
from probe.knowledge.loaders import load_probes
from probe.knowledge.protocol import ProbeFormat, build_prompts
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.models.tiny import build_tiny_llama
from probe.runtime.kv_prefix import KVPrefix, prefix_from_embeddings
from probe.runtime.variant import CaptureView
from tests.unit.test_capture_helpers import FACTS, build_capture_cfg, probe_file

N_LAYERS = 4


def hf_reference(run, prefix: KVPrefix | None = None, choice: torch.Tensor | None = None):
    """HF eager hidden states and attentions of every probe, run one at a time (no padding)."""
    model, _ = build_tiny_llama()
    outs = []
    with torch.no_grad():
        for i, row in enumerate(run.probes):
            ids = torch.tensor(run["tokens"][i, : row["n_tokens"]], dtype=torch.long)[None]
            kw: dict = {}
            if prefix is not None:
                n = prefix.n_tokens
                mask = torch.ones(1, n + ids.shape[1], dtype=torch.long)
                kw = {"attention_mask": mask, "position_ids": torch.arange(n, n + ids.shape[1])[None],
                      "past_key_values": prefix.cache_for(choice[i: i + 1])}
            outs.append(model(input_ids=ids, output_attentions=True, output_hidden_states=True, **kw))
    return outs


def test_original_capture_equals_hf_hidden_states_and_attentions(artifacts, tmp_path):
    run = open_run(capture(build_capture_cfg(probe_file(tmp_path))))
    ref = hf_reference(run)
    assert run.manifest["status"] == "complete" and run.manifest["prompt"]["n_tokens"] == 0
    for i, row in enumerate(run.probes):
        t, last, subj = row["n_tokens"], row["last"], row["subject_pos"]
        assert last == t - 1 and 0 <= subj < last
        for layer in range(N_LAYERS - 1):  # HF's final hidden state is after the final norm
            hs = ref[i].hidden_states[layer + 1][0].numpy()
            np.testing.assert_allclose(run[f"last/blocks.{layer}.hook_resid_post"][i], hs[last], atol=1e-5)
            np.testing.assert_allclose(run[f"subject/blocks.{layer}.hook_resid_post"][i], hs[subj], atol=1e-5)
            np.testing.assert_allclose(run[f"all/blocks.{layer}.hook_resid_post"][i, :t], hs, atol=1e-5)
            assert not run[f"all/blocks.{layer}.hook_resid_post"][i, t:].any()
        for layer in range(N_LAYERS):
            att = ref[i].attentions[layer][0].numpy()  # [heads, q, k]
            np.testing.assert_allclose(run[f"last/blocks.{layer}.attn.hook_pattern"][i][:, :t], att[:, last],
                                       atol=1e-5)
            if i < 5:
                np.testing.assert_allclose(run[f"full/blocks.{layer}.attn.hook_pattern"][i][:, :t, :t], att,
                                           atol=1e-5)
            # the residual stream is the sum of the block's attention and MLP outputs
            prev = run[f"all/blocks.{layer - 1}.hook_resid_post"][i] if layer else None
            if prev is not None:
                delta = run[f"all/blocks.{layer}.hook_resid_post"][i] - prev
                added = run[f"all/blocks.{layer}.hook_attn_out"][i] + run[f"all/blocks.{layer}.hook_mlp_out"][i]
                np.testing.assert_allclose(delta, added, atol=1e-5)
    assert "full/blocks.0.attn.hook_pattern" in run.names() and run["full/blocks.0.attn.hook_pattern"].shape[0] == 5


def test_answer_top1_agrees_with_probe_eval(artifacts, tmp_path):
    path = probe_file(tmp_path)
    run = open_run(capture(build_capture_cfg(path, positions=("last",), hooks=("resid_post",))))
    model, tok = build_tiny_llama()
    scores = score_facts(load_probes(str(path)).facts, tok, hf_logits_fn(model))
    assert [s.rank for s in scores] == [p["answer_rank"] for p in run.probes]
    assert [s.known for s in scores] == list(run["logits/answer_top1"][:])
    ids = run["logits/topk_ids"][:]
    assert [tok.decode([int(ids[i, 0])]) for i in range(len(scores))] == [s.prediction for s in scores]


def _prefix(m: int) -> KVPrefix:
    model, _ = build_tiny_llama()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return prefix_from_embeddings(model, torch.randn(m, 3, 64, generator=gen) * 0.5)


def _with_view(monkeypatch, prefix: KVPrefix, select=None) -> None:
    monkeypatch.setattr(capture_run, "capture_view", lambda loaded: CaptureView(loaded.base.model, prefix, select))


def test_prefix_capture_renormalises_attention_and_matches_hf(artifacts, tmp_path, monkeypatch):
    prefix = _prefix(1)
    _with_view(monkeypatch, prefix)
    run = open_run(capture(build_capture_cfg(probe_file(tmp_path, n=6), run="prefix")))
    ref = hf_reference(run, prefix, torch.zeros(6, dtype=torch.long))
    assert run.manifest["prompt"]["n_tokens"] == 3 and run.manifest["prompt"]["key_columns"] == [0, 3]
    for i, row in enumerate(run.probes):
        t, last = row["n_tokens"], row["last"]
        for layer in range(N_LAYERS):
            att = ref[i].attentions[layer][0].numpy()  # [heads, q, 3 + t]
            mass, keys = att[..., :3].sum(-1), att[..., 3:]
            keys = keys / keys.sum(-1, keepdims=True)
            np.testing.assert_allclose(run[f"last/blocks.{layer}.attn.hook_pattern"][i][:, :t], keys[:, last],
                                       atol=1e-5)
            np.testing.assert_allclose(run[f"last/blocks.{layer}.attn.hook_pattern.prompt_mass"][i], mass[:, last],
                                       atol=1e-5)
            if i < 5:
                full = f"full/blocks.{layer}.attn.hook_pattern"
                np.testing.assert_allclose(run[full][i][:, :t, :t], keys, atol=1e-5)
                np.testing.assert_allclose(run[full + ".prompt_mass"][i][:, :t], mass, atol=1e-5)
            if layer < N_LAYERS - 1:
                np.testing.assert_allclose(run[f"all/blocks.{layer}.hook_resid_post"][i, :t],
                                           ref[i].hidden_states[layer + 1][0].numpy(), atol=1e-5)
        assert float(run["last/blocks.0.attn.hook_pattern.prompt_mass"][i].min()) > 0


def test_idp_capture_equals_single_prompt_capture_of_the_chosen_prompt(artifacts, tmp_path, monkeypatch):
    pool = _prefix(2)
    path = probe_file(tmp_path, n=8)

    def by_length(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.sum(-1) % 2

    _with_view(monkeypatch, pool, by_length)
    idp = open_run(capture(build_capture_cfg(path, run="idp")))
    chosen = idp["prompt/chosen"][:]
    assert set(chosen) == {0, 1}
    assert [int(c) for c in chosen] == [p["n_tokens"] % 2 for p in idp.probes]
    for k in (0, 1):
        _with_view(monkeypatch, KVPrefix([key[k: k + 1] for key in pool.keys], [v[k: k + 1] for v in pool.values]))
        alone = open_run(capture(build_capture_cfg(path, run=f"alone{k}", full_attention=0)))
        rows = np.flatnonzero(chosen == k)
        for name in alone.names():
            if name.startswith(("full/", "prompt/")):
                continue
            np.testing.assert_allclose(idp[name][:][rows], alone[name][:][rows], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("positions", [("last",), ("subject", "all")])
def test_layout_only_has_requested_arrays(artifacts, tmp_path, positions):
    run = open_run(capture(build_capture_cfg(probe_file(tmp_path, n=3), positions=positions, layers=(1, 3),
                                             hooks=("mlp_out", "pattern"), full_attention=0)))
    hooked = {n for n in run.names() if "blocks" in n}
    expected = {f"{p}/blocks.{la}.hook_mlp_out" for p in positions for la in (1, 3)}
    expected |= {f"{p}/blocks.{la}.attn.hook_pattern" for p in positions if p != "all" for la in (1, 3)}
    assert hooked == expected


def _few_shot_file(tmp_path):
    """Capital and currency facts, interleaved (batches mix demonstration prefixes), half of them train."""
    money = [("Japan", "yen"), ("India", "rupee"), ("Mexico", "peso"), ("Russia", "ruble"), ("Korea", "won"),
             ("China", "yuan"), ("Poland", "zloty"), ("Brazil", "real")]
    rows = []
    for i, ((s, p, a), (c, m)) in enumerate(zip(FACTS, money, strict=False)):
        split = "train" if i % 2 else "eval"
        rows.append({"id": f"cap:{s}", "subject": s, "prompt": p, "answer": a, "relation": "capital", "split": split})
        rows.append({"id": f"cur:{c}", "subject": c, "prompt": f"The currency of {c} is the", "answer": m,
                     "relation": "currency", "split": split})
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_few_shot_capture_reuses_the_demonstration_cache_and_equals_the_full_sequence(artifacts, tmp_path):
    spec = build_capture_cfg(_few_shot_file(tmp_path), split="eval", format=ProbeFormat(shots=2),
                             batch_size=3, full_attention=3)
    run = open_run(capture(spec))
    ref = hf_reference(run)  # one unpadded forward over the stored tokens: demonstrations + query
    assert run.manifest["protocol"]["shots"] == 2
    for i, row in enumerate(run.probes):
        t, last, q0 = row["n_tokens"], row["last"], row["query_start"]
        assert q0 > 0 and len(row["demonstrations"]) == 2 and last == t - 1 and q0 <= row["subject_pos"] < last
        assert isinstance(row["known"], bool)
        for layer in range(N_LAYERS - 1):
            hs = ref[i].hidden_states[layer + 1][0].numpy()
            np.testing.assert_allclose(run[f"last/blocks.{layer}.hook_resid_post"][i], hs[last], atol=1e-4)
            np.testing.assert_allclose(run[f"subject/blocks.{layer}.hook_resid_post"][i], hs[row["subject_pos"]],
                                       atol=1e-4)
            stored = run[f"all/blocks.{layer}.hook_resid_post"][i]
            np.testing.assert_allclose(stored[q0:t], hs[q0:], atol=1e-4)
            assert not stored[:q0].any() and not stored[t:].any()  # demonstration rows are not recorded
        for layer in range(N_LAYERS):
            att = ref[i].attentions[layer][0].numpy()
            np.testing.assert_allclose(run[f"last/blocks.{layer}.attn.hook_pattern"][i][:, :t], att[:, last],
                                       atol=1e-4)
            if i < 3:
                np.testing.assert_allclose(run[f"full/blocks.{layer}.attn.hook_pattern"][i][:, q0:t, :t],
                                           att[:, q0:], atol=1e-4)
    model, tok = build_tiny_llama()
    pool = load_probes(spec.probes)
    facts = pool.split("eval").facts
    scores = score_facts(facts, tok, hf_logits_fn(model), prompted=build_prompts(facts, pool.facts, 2))
    assert [p["answer_rank"] for p in run.probes] == [s.rank for s in scores]  # the capture asks as eval does
