"""`probe costs` on the tiny Llama with a fake compressed variant and fast recoveries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from probe.costs import CostSpec, cost_table, generate_greedy, measure_costs, probe_batch
from probe.errors import ProbeError
from probe.recover.run import recover
from probe.recover.spec import RecoverSpec
from probe.runtime.spec import VariantSpec
from probe.runtime.variant import load_variant
from tests.unit.test_recover_run import TINY, make_tiny_variant


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Iterator[None]:
    """One fake variant with all three recoveries, shared by this module's tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PROBE_ARTIFACTS", str(tmp_path_factory.mktemp("costs") / "artifacts"))
    try:
        make_tiny_variant()
        for method in ("prompt", "prefix", "lora"):
            recover(RecoverSpec(model="tiny-llama", compression="fake3", method=method, fast=True, steps=2),
                    with_eval=False)
        yield
    finally:
        mp.undo()


def test_costs_rows_and_json(built):
    result = measure_costs(CostSpec("tiny-llama", "fake3", repeats=2, n_probes=4, gen_tokens=3))
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["original", "compressed", "prompt", "prefix", "lora"]
    assert rows["original"]["extra_parameters"] == rows["compressed"]["extra_parameters"] == 0
    assert rows["prompt"]["extra_parameters"] == 4 * 64 and rows["prompt"]["extra_kv_positions"] == 4
    assert rows["prefix"]["extra_kv_positions"] == 4 and rows["lora"]["extra_kv_positions"] == 0
    assert rows["lora"]["extra_parameters"] > rows["prompt"]["extra_parameters"]
    assert all(r["forward_ms"] > 0 and r["gen_ms_per_token"] > 0 and len(r["gen_ms_all"]) == 2 for r in rows.values())
    # the prompt's KV positions show up in memory (the cache holds them)
    assert rows["prompt"]["memory_mb"] > rows["compressed"]["memory_mb"]
    saved = json.loads(Path(result["path"]).read_text())
    assert saved["rows"][0]["variant"] == "original"
    assert cost_table(result).row_count == 5


def test_lora_is_timed_unmerged(built):
    loaded = load_variant(VariantSpec(TINY, "lora", "fake3"))
    assert any("lora_A" in n for n, _ in loaded.base.model.named_parameters())


@pytest.mark.parametrize("variant", ["prompt", "prefix", "lora"])
def test_cached_greedy_equals_uncached(built, variant):
    """Generation through the KV cache gives the tokens a full re-run gives (KV-cache contract)."""
    fn = load_variant(VariantSpec(TINY, variant, "fake3")).logits_fn
    tok = load_variant(VariantSpec(TINY, "compressed", "fake3")).base.tokenizer
    ids, mask = probe_batch(tok, 3, torch.device("cpu"))
    cached, _, _ = generate_greedy(fn, ids, mask, 4)
    lengths = mask.sum(1).tolist()
    for row in range(len(ids)):
        seq = ids[row, : lengths[row]].tolist()
        for _ in range(4):
            t = torch.tensor([seq])
            logits, _ = fn(t, torch.ones_like(t))
            seq.append(int(logits[0, -1].argmax()))
        assert cached[row].tolist() == seq[lengths[row]:]


def test_costs_without_variant_is_clear(artifacts):
    with pytest.raises(ProbeError, match="probe compress --model tiny-llama --method fake3"):
        measure_costs(CostSpec("tiny-llama", "fake3"))
