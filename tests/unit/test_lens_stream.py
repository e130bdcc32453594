"""The streamed logit lens equals the unstreamed one, holds one vocabulary chunk at a time, and is stored once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.analysis import lens as lens_mod
from probe.analysis.divergence import js_logp, kl_logp
from probe.analysis.families.lens import cached_lens_family, lens_family
from probe.analysis.lens import Lens, answer_rank_prob, stream_layer
from probe.models.tiny import build_tiny_llama
from tests.unit.synthetic_captures import lens as synthetic_lens
from tests.unit.synthetic_captures import runset

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def tiny_lens() -> Lens:
    model, _ = build_tiny_llama()
    return Lens.from_model(model)


def _unstreamed(lz: Lens, h: dict[str, np.ndarray], answers):
    """The analysis's lens before streaming: full-vocabulary log-probabilities per variant."""
    out, ref = {}, None
    for v, x in h.items():
        logp = lz.logprobs(x)
        rank, prob = answer_rank_prob(logp, answers)
        lp = logp.numpy()
        top = logp.topk(lens_mod.TOP_K, dim=1).indices.numpy()
        if ref is None:
            ref = lp
            out[v] = (rank, prob, top, None, None)
        else:
            out[v] = (rank, prob, top, kl_logp(ref, lp), js_logp(ref, lp))
    return out


@pytest.mark.parametrize("chunk", [65536, 97, 16])
def test_streamed_statistics_equal_the_unstreamed_lens_on_a_tiny_llama(tiny_lens, chunk):
    n, d = 23, tiny_lens.unembed.W_U.shape[0]
    vocab = tiny_lens.unembed.W_U.shape[1]
    base = RNG.normal(size=(n, d)).astype(np.float32)
    h = {"original": base, "compressed": base + 0.3 * RNG.normal(size=(n, d)).astype(np.float32),
         "prompt": RNG.normal(size=(n, d)).astype(np.float32)}
    answers = [[int(a) for a in RNG.choice(vocab, 1 + i % 3, replace=False)] for i in range(n)]
    old = _unstreamed(tiny_lens, h, answers)
    new = stream_layer(tiny_lens, h, answers, "original", chunk=chunk, rows=5)
    for v, (rank, prob, top, kl, js) in old.items():
        np.testing.assert_array_equal(new[v].rank, rank)
        np.testing.assert_allclose(np.exp(new[v].logprob), prob, rtol=1e-5)
        np.testing.assert_array_equal(new[v].top_ids, top)
        if kl is None:
            assert new[v].kl is None and new[v].js is None
        else:
            np.testing.assert_allclose(new[v].kl, kl, atol=2e-6, rtol=1e-4)
            np.testing.assert_allclose(new[v].js, js, atol=2e-6, rtol=1e-4)
    assert (new["compressed"].kl > 0).all() and (new["prompt"].js > new["compressed"].js).mean() > 0.5


def test_logits_never_span_more_than_one_chunk_whatever_the_vocabulary(monkeypatch):
    """Memory beyond one chunk does not grow with the vocabulary: every logits block is rows × chunk."""
    largest: list[int] = []
    linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        out = linear(x, w, b)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(lens_mod.F, "linear", spy)
    for vocab in (500, 5000):
        largest.clear()
        lz = synthetic_lens(8, vocab, seed=1)
        h = {"original": RNG.normal(size=(12, 8)), "compressed": RNG.normal(size=(12, 8))}
        stats = stream_layer(lz, h, [[1, 2]] * 12, "original", chunk=64, rows=4)
        assert max(largest) == 4 * 64
        assert stats["compressed"].kl.shape == (12,)


def test_the_family_is_stored_once_and_recomputed_when_a_capture_changes(artifacts):
    lz = synthetic_lens(8, 40)
    h = RNG.normal(size=(10, 3, 8))
    rs = runset({"original": {"resid_post": h}, "compressed": {"resid_post": h + RNG.normal(size=h.shape)}}, 3)
    answers = [[i % 40] for i in range(10)]
    first, streamed = cached_lens_family(rs, lz, answers, "m", "hash")
    assert streamed == ["original", "compressed"]
    direct = lens_family(rs, lz, answers)
    for field in ("rank", "prob", "kl", "js"):
        for v, a in getattr(direct, field).items():
            np.testing.assert_array_equal(getattr(first, field)[v], a)
    again, streamed = cached_lens_family(rs, lz, answers, "m", "hash")
    assert streamed == []
    np.testing.assert_array_equal(again.kl["compressed"], first.kl["compressed"])
    rs.runs["compressed"].manifest["seconds"] = 1.0  # a recapture: its statistics are stale
    _, streamed = cached_lens_family(rs, lz, answers, "m", "hash")
    assert streamed == ["compressed"]
    _, streamed = cached_lens_family(rs, lz, answers, "m", "other weights")
    assert streamed == ["original", "compressed"]


def test_the_dashboard_click_reads_the_stored_ranks_equal_to_unembedding_again(tmp_path):
    from dashboards import data
    from tests.browser.conftest import COMPRESSION, MODEL, build_artifacts

    root = build_artifacts(tmp_path)
    exp = data.find_experiment(root, f"{MODEL}/{COMPRESSION}")
    runs = tuple(exp.runs[v] for v in exp.variants)
    layers = list(range(4))
    facts = data.probes(root, MODEL, runs[0])
    eval_rows = [i for i, f in enumerate(facts) if f["split"] == "eval"]
    assert eval_rows and len(eval_rows) < len(facts)
    for i in range(len(facts)):
        stored = data.stored_lens_ranks(root, MODEL, runs, layers, i)
        recomputed = data._lens_ranks(str(root.resolve()), MODEL, runs, tuple(layers), i, facts[i]["prompt"],
                                      tuple(facts[i]["answers"]))
        if i not in eval_rows:
            assert stored is None  # the analysis stores eval facts only: the click unembeds those
            continue
        for a, b in zip(stored, recomputed, strict=True):
            np.testing.assert_array_equal(a, b)
    manifest = root / "captures" / MODEL / runs[1] / "manifest.json"  # a recapture makes them stale
    manifest.write_text(manifest.read_text().replace('"status"', '"note": "recaptured", "status"', 1))
    data.clear_caches()
    assert data.stored_lens_ranks(root, MODEL, runs, layers, eval_rows[0]) is None
