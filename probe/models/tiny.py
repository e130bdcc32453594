"""Tiny random models with a byte-level tokenizer, built in memory from a config for fast tests.

``tiny-llama`` is the architecture family of SmolLM2 (grouped-query attention, tied embeddings,
RMSNorm, rotary positions) so code paths match; ``tiny-opt`` is OPT's (LayerNorm with biases,
learned positions, ReLU MLP), the second architecture of the paper. No files, no downloads,
fixed seed: every call gives the same weights.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

TINY_SEED = 0
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer plus three special tokens.

    One token per byte, except that a space merges with the letter after it ("ĠP"), so an
    answer's first token names its first letter rather than being a bare space.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    merges = [("Ġ", c) for c in string.ascii_letters]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIALS[1], eos_token=SPECIALS[2],
        unk_token=SPECIALS[0], pad_token=SPECIALS[2],
    )
    return fast


def tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
        pad_token_id=2, architectures=["LlamaForCausalLM"],
    )


def tiny_opt_config(vocab_size: int) -> OPTConfig:
    return OPTConfig(
        vocab_size=vocab_size, hidden_size=64, ffn_dim=128, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=512, word_embed_proj_dim=64, do_layer_norm_before=True,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        architectures=["OPTForCausalLM"],
    )


def _build(model_cls: type[PreTrainedModel], cfg, tok: PreTrainedTokenizerFast,
           attn_implementation: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    cfg._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = model_cls(cfg)
    return model.eval(), tok


def build_tiny_llama(attn_implementation: str = "eager") -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The tiny random Llama and its tokenizer; identical weights on every call."""
    tok = tiny_tokenizer()
    return _build(LlamaForCausalLM, tiny_config(len(tok)), tok, attn_implementation)


def build_tiny_opt(attn_implementation: str = "eager") -> tuple[OPTForCausalLM, PreTrainedTokenizerFast]:
    """The tiny random OPT and its tokenizer; identical weights on every call."""
    tok = tiny_tokenizer()
    return _build(OPTForCausalLM, tiny_opt_config(len(tok)), tok, attn_implementation)


TINY_BUILDERS: dict[str, Callable[[str], tuple[PreTrainedModel, PreTrainedTokenizerFast]]] = {
    "tiny-llama": build_tiny_llama,
    "tiny-opt": build_tiny_opt,
}
