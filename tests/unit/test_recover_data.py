"""Recovery data, objective and the generic training loop (no model needed except the tokenizer)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from probe.corpus import RECOVERY_PROMPTS, SEED_PROMPTS, find_probe_leaks
from probe.errors import ProbeError
from probe.knowledge.loaders import load_probes
from probe.models.tiny import tiny_tokenizer
from probe.recover.data import build_data, fact_sentences, split_texts, to_windows, training_texts
from probe.recover.objective import kl_loss, lm_loss
from probe.recover.spec import RecoverSpec
from probe.recover.train import held_out_loss, lr_factor, train


def spec(**kw) -> RecoverSpec:
    return RecoverSpec(model="tiny-llama", compression="fake3", fast=True, **kw)


def test_planted_eval_prompt_is_removed_and_counted(tmp_path):
    planted = load_probes("builtin").split("eval").facts[0]
    lines = [f"Some general text number {i} about gardens, rivers and bread." for i in range(30)]
    lines.insert(7, f"A story. {planted.prompt} {planted.object}, as everyone knows.")
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(lines))
    texts, info = training_texts(spec(train_text=str(path)))
    assert info["n_removed"] == 1 and len(texts) == 30
    assert not any(planted.prompt.lower() in t.lower() for t in texts)
    tok = tiny_tokenizer()
    data = build_data(spec(train_text=str(path), seq_len=8), tok)
    assert data.info["n_removed"] == 1
    seen = tok.decode(torch.cat([data.train.flatten(), data.held_out.flatten()]).tolist())
    assert "gardens" in seen and planted.prompt not in seen


def test_facts_use_only_train_split_and_never_an_eval_subject():
    probes = load_probes("builtin")
    texts, info = training_texts(spec(train_data="facts"))
    assert texts and info["n_facts_dropped_eval_subject"] > 0
    eval_facts = probes.split("eval").facts
    rendered_eval = {f"{p} {f.object}." for f in eval_facts for p in f.prompts}
    assert not rendered_eval & set(texts)
    subjects = {f.subject for f in eval_facts if f.subject}
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, subjects)) + r")\b")
    assert not [t for t in texts if pattern.search(t)]
    train_objects = {f.object for f in probes.split("train").facts}
    assert all(any(t.endswith(f" {o}.") for o in train_objects) for t in texts)
    sentences, dropped = fact_sentences(probes)
    assert len(sentences) == len(texts) and dropped == info["n_facts_dropped_eval_subject"]


def test_both_adds_facts_to_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "Plain general text about weather."}\n')
    corpus, _ = training_texts(spec(train_text=str(path)))
    both, _ = training_texts(spec(train_text=str(path), train_data="both"))
    assert both[: len(corpus)] == corpus and len(both) > len(corpus)


def test_windows_held_out_and_batches():
    tok = tiny_tokenizer()
    w = to_windows(["abcdefghij" * 5, "klmnop" * 5], tok, 8)
    assert w.shape[1] == 8 and w.shape[0] == (50 + 30 + 2) // 8
    with pytest.raises(ProbeError, match="too few for 2 window"):
        to_windows(["ab"], tok, 64)


def test_held_out_is_disjoint_and_batches_deterministic(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(" ".join(str(k) for k in range(30 * i, 30 * i + 30)) for i in range(20)))
    data = build_data(spec(train_text=str(path), seq_len=16), tiny_tokenizer())
    held = {tuple(r) for r in data.held_out.tolist()}
    assert held and not held & {tuple(r) for r in data.train.tolist()}
    a = [b[0] for b in data.batches(5, 3, seed=1)]
    b = [b[0] for b in data.batches(5, 3, seed=1)]
    assert len(a) == 5 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_objectives():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.ones(2, 5, dtype=torch.long)
    assert kl_loss(t, t, mask) == pytest.approx(0, abs=1e-6)
    manual = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum") / 10
    assert kl_loss(s, t, mask) == pytest.approx(float(manual), rel=1e-5)
    mask[1, 3:] = 0  # padded positions do not count
    s2 = s.clone()
    s2[1, 3:] = 100.0
    assert kl_loss(s2, t, mask) == pytest.approx(float(kl_loss(s, t, mask)), rel=1e-6)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    full = torch.ones_like(ids)
    assert lm_loss(s, ids, full) == pytest.approx(float(F.cross_entropy(s[:, :-1].reshape(-1, 11),
                                                                        ids[:, 1:].reshape(-1))), rel=1e-6)


def test_generic_loop_lowers_held_out_loss_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    teacher_table = torch.randn(13, 7, generator=g)

    def run() -> tuple:
        table = torch.zeros(13, 7, requires_grad=True)
        ids = torch.randint(0, 13, (20, 6), generator=torch.Generator().manual_seed(1))
        batches = [(ids[i:i + 4], torch.ones(4, 6, dtype=torch.long)) for i in range(0, 20, 4)] * 10
        result = train(lambda x, m: table[x], [table], batches, lambda x, m: teacher_table[x],
                       spec(steps=40, lr=0.1), held_out=[(ids[:4], torch.ones(4, 6, dtype=torch.long))],
                       baseline=lambda x, m: torch.zeros(*x.shape, 7))
        return result, table.detach().clone()

    r1, t1 = run()
    r2, t2 = run()
    assert len(r1.losses) == 40 and r1.losses == r2.losses and torch.equal(t1, t2)
    assert r1.held_out_after < 0.5 * r1.held_out_before
    assert r1.held_out_baseline == pytest.approx(r1.held_out_before)


def test_recovery_prompts_are_their_own_and_leak_no_probe():
    assert not set(RECOVERY_PROMPTS) & set(SEED_PROMPTS)
    assert not find_probe_leaks(list(RECOVERY_PROMPTS), load_probes("builtin"), split="all")
    assert 32 <= len(RECOVERY_PROMPTS) <= 64


def test_held_out_texts_are_whole_texts_disjoint_from_training(tmp_path):
    texts = [f"text {i}: " + " ".join(f"w{i}x{k}" for k in range(5 + i % 7)) for i in range(30)]
    tok = tiny_tokenizer()
    train_texts, held = split_texts(texts, tok, 8, 0.2, seed=3)
    assert held and train_texts and not set(held) & set(train_texts) and len(held) + len(train_texts) == 30
    assert split_texts(texts, tok, 8, 0.2, seed=3) == (train_texts, held)
    held_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in held)
    total = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in texts)
    assert 0.2 * total <= held_tokens < 0.2 * total + max(len(tok(t).input_ids) + 1 for t in texts)
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(texts))
    data = build_data(spec(train_text=str(path), seq_len=8, heldout_fraction=0.2), tok)
    assert data.info["n_held_out_texts"] == len(held) and len(data.held_out) >= 1


def test_lr_schedule_warms_up_then_decays():
    assert [lr_factor(s, 10, 0.2, "cosine") for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 0.2, "cosine") == pytest.approx(1.0)
    assert lr_factor(9, 10, 0.2, "cosine") < 0.05 and lr_factor(9, 10, 0.2, "linear") == pytest.approx(1 / 8)
    assert lr_factor(9, 10, 0.0, "constant") == 1.0


def test_early_stopping_keeps_the_best_state_and_records_curves():
    """A learning rate far too high: held-out loss rises after the first evaluations; patience stops the run
    and the kept table is the best evaluated one (its held-out loss is the one reported)."""
    g = torch.Generator().manual_seed(0)
    teacher_table = torch.randn(13, 7, generator=g)
    table = torch.zeros(13, 7, requires_grad=True)
    ids = torch.randint(0, 13, (20, 6), generator=torch.Generator().manual_seed(1))
    batches = [(ids[i:i + 4], torch.ones(4, 6, dtype=torch.long)) for i in range(0, 20, 4)] * 20
    held = [(ids[:4], torch.ones(4, 6, dtype=torch.long))]
    result = train(lambda x, m: table[x] ** 3, [table], batches, lambda x, m: teacher_table[x],
                   spec(steps=100, lr=3.0, eval_every=2, patience=2, schedule="constant", clip=0.0), held_out=held)
    curve = result.curves["heldout"]
    assert result.stopped_step < 100 and curve["step"][0] == 0 and curve["step"][-1] == result.stopped_step
    assert result.held_out_after == min(curve["kl"]) and result.best_step == curve["step"][curve["kl"].index(min(
        curve["kl"]))]
    assert held_out_loss(lambda x, m: table[x] ** 3, lambda x, m: teacher_table[x], held) == pytest.approx(
        result.held_out_after)
    assert result.curves["train"]["step"] == list(range(1, result.stopped_step + 1))
    assert result.tokens_seen == 24 * result.stopped_step
