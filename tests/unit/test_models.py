"""Registry, loading errors, and bridge and lens parity on the tiny random Llama and OPT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.analysis.lens import Lens
from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.bridge import hook_model, hook_names
from probe.models.load import load_model, resolve_device
from probe.models.registry import REGISTRY, get_entry, resolve_local
from probe.models.tiny import build_tiny_opt


def test_registry_has_required_names():
    for name in ("smollm2-135m", "tiny-llama", "tiny-opt", "llama7b", "llama2-7b", "llama3-8b", "opt-6.7b"):
        assert name in REGISTRY


def test_unknown_model_suggests_nearest():
    with pytest.raises(ProbeError, match=r"did you mean.*llama7b"):
        get_entry("lama7b")


def test_missing_local_weights_names_path_and_variable(monkeypatch):
    monkeypatch.delenv("PROBE_LLAMA7B_PATH", raising=False)
    with pytest.raises(ProbeError) as err:
        resolve_local(get_entry("llama7b"), None)
    msg = str(err.value)
    assert "--model-path" in msg and "PROBE_LLAMA7B_PATH" in msg and "\n" not in msg


def test_env_variable_pointing_nowhere_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBE_LLAMA7B_PATH", str(tmp_path))
    with pytest.raises(ProbeError, match=r"no config\.json"):
        resolve_local(get_entry("llama7b"), None)


def test_local_folder_path_loads(tmp_path):
    model = load_model(ModelSpec("tiny-llama")).model
    model.save_pretrained(tmp_path / "m")
    load_model(ModelSpec("tiny-llama")).tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(ModelSpec(str(tmp_path / "m")))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "bogus"])
def test_bad_device_is_a_clear_error(device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ProbeError):
        resolve_device(device)


def test_bad_dtype_rejected():
    with pytest.raises(ProbeError, match="dtype"):
        ModelSpec(dtype="half")


def test_tiny_llama_is_deterministic():
    a = load_model(ModelSpec("tiny-llama")).model.state_dict()
    b = load_model(ModelSpec("tiny-llama")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _ids(tok, texts):
    return tok(texts, return_tensors="pt", padding=True)


def test_bridge_logits_equal_hf_eager_tiny():
    ref = load_model(ModelSpec("tiny-llama", dtype="float32"))
    hooked = hook_model(load_model(ModelSpec("tiny-llama", dtype="float32")))
    batch = _ids(ref.tokenizer, ["The capital of France is", "Gold has the symbol"])
    with torch.no_grad():
        want = ref.model(**batch).logits
        got = hooked(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")
    assert (got - want).abs().max().item() <= 1e-4


def test_bridge_soft_prompt_embeddings_equal_hf_inputs_embeds_tiny():
    ref = load_model(ModelSpec("tiny-llama", dtype="float32"))
    hooked = hook_model(load_model(ModelSpec("tiny-llama", dtype="float32")))
    ids = _ids(ref.tokenizer, ["Water boils at"]).input_ids
    prompt = torch.randn(1, 5, ref.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    embeds = torch.cat([prompt, ref.model.get_input_embeddings()(ids)], dim=1)
    with torch.no_grad():
        want = ref.model(inputs_embeds=embeds).logits
        got = hooked(embeds, return_type="logits")
    assert got.shape[1] == ids.shape[1] + 5
    assert (got - want).abs().max().item() <= 1e-4


def test_bridge_exposes_documented_hooks():
    loaded = load_model(ModelSpec("tiny-llama"))
    hooked = hook_model(loaded)
    n = loaded.model.config.num_hidden_layers
    ids = _ids(loaded.tokenizer, ["abc def"]).input_ids
    _, cache = hooked.run_with_cache(ids)
    for kind in ("resid_post", "attn_out", "mlp_out", "pattern"):
        for name in hook_names(kind, n):
            assert name in cache, name
    # The last residual, after the final norm, is what the unembedding reads.
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt"])
def test_hooked_logits_equal_hf_and_the_lens_reads_the_last_layer_as_the_model_does(name):
    """Llama (RMSNorm, rotary) and OPT (LayerNorm with bias, learned positions): the bridge's own final norm and
    unembedding turn the last residual stream into the model's logits, with no architecture-specific code."""
    ref = load_model(ModelSpec(name, dtype="float32"))
    hooked = hook_model(load_model(ModelSpec(name, dtype="float32")))
    assert ref.architecture == ("OPTForCausalLM" if name == "tiny-opt" else "LlamaForCausalLM")
    ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = ref.model(input_ids=ids, attention_mask=mask).logits
        logits, cache = hooked.run_with_cache(ids, attention_mask=mask)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    n = ref.model.config.num_hidden_layers
    lens = Lens.from_bridge(hooked)
    torch.testing.assert_close(lens.logits(cache[f"blocks.{n - 1}.hook_resid_post"][0].numpy()), expected[0],
                               rtol=0, atol=1e-4)
    rows = lens.unembedding_rows(np.array([5, 9]))
    np.testing.assert_array_equal(rows, ref.model.get_output_embeddings().weight[[5, 9]].detach().numpy())


def test_a_saved_tiny_opt_folder_loads_as_a_local_model(tmp_path):
    model, tok = build_tiny_opt()
    model.save_pretrained(tmp_path / "opt")
    tok.save_pretrained(tmp_path / "opt")
    loaded = load_model(ModelSpec(str(tmp_path / "opt"), dtype="float32"))
    assert loaded.architecture == "OPTForCausalLM" and loaded.source == "local" and loaded.path == tmp_path / "opt"
    torch.testing.assert_close(loaded.model.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"])
