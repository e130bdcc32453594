"""IDP mechanics on the tiny Llama: forced selection, hand-computed statistic, cost, routing."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from probe.config import ModelSpec
from probe.errors import ProbeError
from probe.models.load import load_model
from probe.recover.idp_pool import RoutedStudent, kmeans_init
from probe.runtime.idp import IDPAdapter
from probe.runtime.idp_options import IDPOptions
from probe.runtime.idp_router import IDPRouter, mean_hidden, prompt_attention_mass, reduce_mass, residual_before
from probe.runtime.kv_prefix import prefix_from_embeddings, prefix_logits_fn

M, N = 4, 3


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec("tiny-llama", dtype="float32"))


@pytest.fixture(scope="module")
def pool(tiny):
    g = torch.Generator().manual_seed(1)
    return torch.randn(M, N, tiny.model.config.hidden_size, generator=g)


@pytest.fixture(scope="module")
def batch(tiny):
    return tiny.tokenizer(["The capital of France is", "Gold", "Water boils at one hundred"],
                          return_tensors="pt", padding=True)


def _prepended_logits(model, prompt, batch):
    emb = model.get_input_embeddings()(batch.input_ids)
    b = emb.shape[0]
    full = torch.cat([prompt.expand(b, -1, -1), emb], dim=1)
    mask = torch.cat([torch.ones(b, prompt.shape[0], dtype=torch.long), batch.attention_mask], dim=1)
    return model(inputs_embeds=full, attention_mask=mask).logits[:, prompt.shape[0]:]


@torch.no_grad()
def test_forced_selection_equals_single_prompt_prepended(tiny, pool, batch):
    prefix = prefix_from_embeddings(tiny.model, pool)
    real = batch.attention_mask.bool()
    for k in range(M):
        fn = prefix_logits_fn(tiny.model, prefix, lambda ids, mask, k=k: torch.full((ids.shape[0],), k))
        got, _ = fn(batch.input_ids, batch.attention_mask)
        want = _prepended_logits(tiny.model, pool[k], batch)
        assert (got - want)[real].abs().max().item() <= 1e-5


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Textbook rotary embedding (half-split convention), independent of transformers' code."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos.double()[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


@torch.no_grad()
def test_selection_statistic_matches_hand_computation(tiny, pool, batch):
    model = tiny.model
    cfg = model.config
    layer0 = model.model.layers[0]
    hd = cfg.hidden_size // cfg.num_attention_heads
    groups = cfg.num_attention_heads // cfg.num_key_value_heads
    theta = cfg.rope_parameters["rope_theta"]
    prefix = prefix_from_embeddings(model, pool)
    got = reduce_mass(prompt_attention_mass(model, prefix, batch.input_ids, batch.attention_mask),
                      batch.attention_mask)
    emb = model.get_input_embeddings()
    for b in range(batch.input_ids.shape[0]):
        t_real = int(batch.attention_mask[b].sum())
        x = layer0.input_layernorm(emb(batch.input_ids[b, :t_real])).double()
        q = (x @ layer0.self_attn.q_proj.weight.double().T).view(t_real, -1, hd)
        k_in = (x @ layer0.self_attn.k_proj.weight.double().T).view(t_real, -1, hd)
        pos_in = torch.arange(N, N + t_real)
        prompt_keys = []
        for j in range(M):
            p = layer0.input_layernorm(pool[j]).double()
            prompt_keys.append((p @ layer0.self_attn.k_proj.weight.double().T).view(N, -1, hd))
        masses = torch.zeros(M)
        for h in range(cfg.num_attention_heads):
            kv = h // groups
            qh = _rope(q[:, h], pos_in, theta)
            keys = [_rope(pk[:, kv], torch.arange(N), theta) for pk in prompt_keys]
            ks = _rope(k_in[:, kv], pos_in, theta)
            for t in range(t_real):
                logits = torch.cat([*(qh[t] @ kk.T for kk in keys), qh[t] @ ks[: t + 1].T]) / math.sqrt(hd)
                probs = logits.softmax(-1)
                for j in range(M):
                    masses[j] += probs[j * N:(j + 1) * N].sum() / (cfg.num_attention_heads * t_real)
        assert torch.allclose(got[b].double(), masses.double(), atol=1e-5)
        assert int(got[b].argmax()) == int(masses.argmax())


def _count_layer_tokens(model) -> tuple[list, list]:
    counts: list[int] = []
    handles = [layer.register_forward_hook(lambda mod, args, out: counts.append(args[0].shape[0] * args[0].shape[1]))
               for layer in model.model.layers]
    return counts, handles


@torch.no_grad()
def test_prompt_kv_is_precomputed_and_cost_does_not_grow_with_pool(tiny, batch):
    model = tiny.model
    totals = {}
    for m in (1, 8):
        pool = torch.randn(m, N, model.config.hidden_size, generator=torch.Generator().manual_seed(m))
        prefix = prefix_from_embeddings(model, pool)
        router = IDPRouter(model, prefix)
        fn = prefix_logits_fn(model, prefix, router)
        counts, handles = _count_layer_tokens(model)
        fn(batch.input_ids, batch.attention_mask)
        for h in handles:
            h.remove()
        totals[m] = sum(counts)
    # decoder layers process only the input's tokens, whatever the pool size
    assert totals[1] == totals[8] == batch.input_ids.numel() * len(model.model.layers)


@torch.no_grad()
def test_residual_before_deeper_layer_equals_hf_hidden_states(tiny, batch):
    model = tiny.model
    pos = N + (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    ref = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos,
                output_hidden_states=True).hidden_states
    real = batch.attention_mask.bool()
    for layer in (0, 2):
        got = residual_before(model, batch.input_ids, batch.attention_mask, layer, N)
        assert (got - ref[layer])[real].abs().max().item() <= 1e-5
    assert len(model.model.layers) == model.config.num_hidden_layers  # restored


@torch.no_grad()
def test_deeper_selection_layer_and_max_statistic_run(tiny, pool, batch):
    prefix = prefix_from_embeddings(tiny.model, pool)
    for layer, stat in ((2, "mean"), (0, "max")):
        choice = IDPRouter(tiny.model, prefix, layer=layer, statistic=stat)(batch.input_ids, batch.attention_mask)
        assert choice.shape == (3,) and int(choice.min()) >= 0 and int(choice.max()) < M


@torch.no_grad()
def test_centroid_routing_picks_nearest_centroid(tiny, pool, batch):
    prefix = prefix_from_embeddings(tiny.model, pool)
    feats = mean_hidden(tiny.model, batch.input_ids, batch.attention_mask, 0, N)
    centroids = torch.stack([feats[2], feats[0], feats[1], feats[0] + 100.0])
    router = IDPRouter(tiny.model, prefix, routing="centroid", centroids=centroids)
    assert router(batch.input_ids, batch.attention_mask).tolist() == [1, 2, 0]


def test_router_rejects_bad_options(tiny, pool):
    prefix = prefix_from_embeddings(tiny.model, pool)
    with pytest.raises(ProbeError, match="layer 9"):
        IDPRouter(tiny.model, prefix, layer=9)
    with pytest.raises(ProbeError, match="statistic"):
        IDPRouter(tiny.model, prefix, statistic="median")
    with pytest.raises(ProbeError, match="centroid"):
        IDPRouter(tiny.model, prefix, routing="centroid")


def test_routed_student_trains_only_the_chosen_prompts(tiny, batch):
    opts = IDPOptions(m=M, n=N, routing="centroid", router="fixed")
    model = tiny.model
    init = torch.randn(M, N, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = mean_hidden(model, batch.input_ids, batch.attention_mask, 0, N)
    centroids = torch.stack([feats[0], feats[1], feats[2], feats[2] + 100.0])  # rows go to prompts 0, 1, 2
    adapter = IDPAdapter(model, init, centroids, opts)
    student = RoutedStudent(adapter)
    logits = student(batch.input_ids, batch.attention_mask)
    assert adapter.usage == Counter({0: 1, 1: 1, 2: 1})
    with torch.no_grad():
        for row in range(3):
            want = _prepended_logits(model, adapter.prompts[row].detach(), batch)[row]
            real = batch.attention_mask[row].bool()
            assert (logits[row] - want)[real].abs().max().item() <= 1e-5
    logits.sum().backward()
    grad_norms = adapter.prompts.grad.flatten(1).norm(dim=1)
    assert (grad_norms[:3] > 0).all() and grad_norms[3] == 0


def test_kmeans_init_gives_distinct_prompts_from_corpus_windows(tiny):
    tok = tiny.tokenizer
    texts = ["cats and dogs play", "stock markets fell today", "the river floods in spring", "bake bread slowly",
             "dogs chase cats", "bonds and stocks rose", "spring rain on rivers", "knead the dough"]
    batches = [tuple(tok(texts[i:i + 4], return_tensors="pt", padding=True).values()) for i in (0, 4)]
    prompts, centroids = kmeans_init(tiny.model, batches, IDPOptions(m=4, n=3))
    assert prompts.shape == (4, 3, tiny.model.config.hidden_size) and centroids.shape == (4, 64)
    flat = prompts.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1.0).min() > 0
    with pytest.raises(ProbeError, match="at least 9 training windows"):
        kmeans_init(tiny.model, batches, IDPOptions(m=9, n=3))
