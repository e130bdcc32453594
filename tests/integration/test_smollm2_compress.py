"""Compression of the real SmolLM2: GPTQ vs RTN per layer, baked grids, and `probe eval` on a variant.

The two variants are built once per module (32 calibration texts × 128 tokens) without the
knowledge part of the report (the tiny-llama tests cover it; `probe eval` runs here instead) and
shared. The self-generated calibration text is cached in the shared test artifacts, like SmolLM2.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli_helpers import run_cli

pytestmark = pytest.mark.integration

N_CAL, SEQ = 32, 128


@pytest.fixture(scope="module")
def root(tmp_path_factory, smollm2_folder):
    from tests.conftest import module_artifacts

    with module_artifacts(tmp_path_factory, smollm2_folder, "compress") as root:
        yield root


@pytest.fixture(scope="module")
def variants(root):
    from probe.compress import build_spec, compress

    return {name: compress(build_spec("smollm2-135m", name, n_calibration=N_CAL, seq_len=SEQ), evaluate=False)
            for name in ("gptq3", "rtn3")}


def _read(path, name):
    return json.loads((path / name).read_text())


def test_gptq3_beats_rtn3_on_every_decoder_linear(variants):
    gptq = _read(variants["gptq3"], "report.json")["reconstruction_error"]
    rtn = _read(variants["rtn3"], "report.json")["reconstruction_error"]
    assert len(gptq) == len(rtn) == 30 * 7
    worse = sorted(n for n in gptq if gptq[n] >= rtn[n])
    assert not worse, f"GPTQ not better than RTN on {worse}"
    assert all(_read(variants[v], "manifest.json")["spec"]["group_size"] == 64 for v in variants)


def test_baked_variants_are_on_grid_dense_and_keep_embeddings(variants, smollm2_folder):
    from safetensors.torch import load_file

    original = load_file(smollm2_folder / "model.safetensors")
    for path in variants.values():
        bake = _read(path, "manifest.json")["bake"]
        assert bake["n_quantized"] == 210 and bake["max_grid_error"] < 1e-4
        weights = load_file(path / "model.safetensors")
        assert not [k for k in weights if not k.endswith(".weight")]
        assert torch.equal(weights["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
        assert "quantization_config" not in _read(path, "config.json")


def test_probe_eval_cli_on_saved_variant(variants, root):
    res = run_cli("eval", "--model", "smollm2-135m", "--variant", "compressed", "--compression", "gptq3",
                   "--relations", "capital,chemical_symbol,continent", "--json", env={"PROBE_ARTIFACTS": str(root)})
    assert res.code == 0, res.stderr[-2000:]
    result = json.loads(res.stdout)
    assert result["variant"] == "compressed" and result["compression"] == "gptq3"
    assert result["n_facts"] > 100 and result["n_relations"] == 3 and 0 <= result["top1_accuracy"] < 0.5
    assert result["parents"]["compressed"] == _read(variants["gptq3"], "manifest.json")["spec_hash"]
