"""SmolLM2 capture: stored residuals and patterns equal HF eager; answer top-1 equals `probe eval`."""

from __future__ import annotations

import json

import numpy as np
import torch

from probe.capture.run import capture
from probe.capture.spec import CaptureSpec
from probe.capture.store import open_run
from probe.config import ModelSpec
from probe.knowledge.loaders import load_probes
from probe.knowledge.scoring import hf_logits_fn, score_facts
from probe.runtime.spec import VariantSpec
from tests.conftest import load_smollm2

LAYERS = (0, 14, 28)
BATCH = 8


def test_smollm2_capture_matches_hf_eager_and_eval(smollm2_artifacts, smollm2_folder, tmp_path):
    facts = load_probes("builtin").split("eval").facts[:16]
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps({"id": f.id, "prompt": f.prompt, "answer": f.object, "subject": f.subject,
                                        "relation": f.relation, "split": "eval"}) + "\n" for f in facts))
    spec = CaptureSpec(VariantSpec(ModelSpec("smollm2-135m", dtype="float32")), probes=str(path), layers=LAYERS,
                       batch_size=BATCH, full_attention=4)
    run = open_run(capture(spec))
    assert run.manifest["status"] == "complete" and run.manifest["n_probes"] == 16
    assert run["last/blocks.14.hook_resid_post"].chunks == (BATCH, 576)

    hf = load_smollm2(smollm2_folder)
    tok = hf.tokenizer
    with torch.no_grad():
        for start in range(0, 16, BATCH):
            rows = run.probes[start: start + BATCH]
            enc = tok([r["prompt"] for r in rows], return_tensors="pt", padding=True, padding_side="right")
            out = hf.model(**enc, output_hidden_states=True, output_attentions=True)
            for j, row in enumerate(rows):
                i, t = start + j, row["n_tokens"]
                assert list(enc.input_ids[j, :t]) == list(run["tokens"][i, :t])
                for layer in LAYERS:
                    hs = out.hidden_states[layer + 1][j].numpy()
                    np.testing.assert_allclose(run[f"last/blocks.{layer}.hook_resid_post"][i], hs[t - 1], atol=1e-5)
                    np.testing.assert_allclose(run[f"subject/blocks.{layer}.hook_resid_post"][i],
                                               hs[row["subject_pos"]], atol=1e-5)
                    att = out.attentions[layer][j].numpy()
                    np.testing.assert_allclose(run[f"last/blocks.{layer}.attn.hook_pattern"][i][:, :t],
                                               att[:, t - 1, :t], atol=1e-5)
                    if i < 4:
                        np.testing.assert_allclose(run[f"full/blocks.{layer}.attn.hook_pattern"][i][:, :t, :t],
                                                   att[:, :t, :t], atol=1e-5)

    scores = score_facts(load_probes(str(path)).facts, tok, hf_logits_fn(hf.model))
    assert [s.known for s in scores] == [r["answer_top1"] for r in run.probes]
    subjects = [tok.decode(run["tokens"][i, : r["subject_pos"] + 1]) for i, r in enumerate(run.probes)]
    assert all(s.rstrip().endswith(r["subject"]) for s, r in zip(subjects, run.probes, strict=True))
