"""Recovery on the real SmolLM2: each method lowers the held-out distillation loss of a 3-bit model.

The compressed variant is a cheap 3-bit RTN (group 64, asymmetric) baked here in a second, so
the test does not depend on GPTQ's minutes of calibration; RTN3 hurts SmolLM2 more than GPTQ3,
which makes the recovery signal clearer. Training is short (a few steps); the corpus is the
32 × 128-token self-generated cache shared with the compression tests.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.integration

PRESET = "rtn3-test"


def rtn3(w: torch.Tensor, group: int = 64) -> torch.Tensor:
    g = w.reshape(w.shape[0], -1, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 7).clamp(min=1e-8)
    zero = (-lo / scale).round()
    return (((g / scale).round() + zero).clamp(0, 7) - zero).mul(scale).reshape(w.shape)


@pytest.fixture(scope="module")
def root(tmp_path_factory, smollm2_folder):
    from probe.artifacts import build_manifest
    from probe.config import ModelSpec
    from probe.runtime.spec import variant_artifact
    from tests.conftest import load_smollm2, module_artifacts

    with module_artifacts(tmp_path_factory, smollm2_folder, "recover") as root:
        loaded = load_smollm2(smollm2_folder)
        with torch.no_grad():
            for name, p in loaded.model.named_parameters():
                if name.endswith("proj.weight"):
                    p.copy_(rtn3(p))
        with variant_artifact(ModelSpec("smollm2-135m"), PRESET).writer() as tmp:
            loaded.model.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
            (tmp / "manifest.json").write_text(json.dumps(build_manifest("variant", {"preset": PRESET})))
        yield root


def short(method: str, **kw):
    from probe.recover.spec import RecoverSpec

    return RecoverSpec(model="smollm2-135m", compression=PRESET, method=method, steps=10, batch_size=4, seq_len=48,
                       n_tokens=8, n_texts=32, text_tokens=128, **kw)  # IDP: 4 prompts of 8 tokens


@pytest.mark.parametrize("method", ["prompt", "prefix", "lora", "idp"])
def test_each_method_lowers_held_out_distillation_loss(root, method):
    from probe.recover.run import recover

    manifest = json.loads((recover(short(method), with_eval=False) / "manifest.json").read_text())
    assert manifest["held_out_after"] < manifest["held_out_before"], manifest
    if method in ("prefix", "lora"):
        assert manifest["held_out_after"] < manifest["held_out_compressed"], manifest
    # A soft prompt or an IDP pool starts from a text's embeddings, which puts it above the compressed model's
    # held-out KL (issue 16, open): in 10 steps it comes down but not yet below the compressed model.
    expected = {"prompt": 8 * 576, "prefix": 8 * 30 * 2 * 192, "lora": 460_800, "idp": 4 * 8 * 576}[method]
    assert manifest["trainable_parameters"] == expected
    assert manifest["data"]["n_removed"] >= 0 and manifest["data"]["n_texts"] > 0


def test_recovered_variant_evaluates(root):
    """`probe eval --variant prompt` path: the saved soft prompt loads and scores facts."""
    from probe.config import ModelSpec
    from probe.evaluation.run import EvalSpec, run_eval
    from probe.recover.run import recover
    from probe.runtime.spec import VariantSpec

    recover(short("prompt"), with_eval=False)  # reused when the test above built it
    spec = VariantSpec(ModelSpec("smollm2-135m", dtype="float32"), "prompt", PRESET)
    result = run_eval(EvalSpec(variant=spec, relations=("capital",)))
    assert result["n_facts"] > 0 and 0 <= result["top1_accuracy"] <= 1
    assert result["parents"]["recovery"]
