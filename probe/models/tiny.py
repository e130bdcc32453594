"""A tiny random Llama with a byte-level tokenizer, built in memory for fast tests.

Same architecture family as SmolLM2 (grouped-query attention, tied embeddings, RMSNorm) so
code paths match; no files, no downloads, fixed seed.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


def build_tiny_llama(attn_implementation: str = "eager") -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The tiny random Llama and its tokenizer; identical weights on every call."""
    tok = tiny_tokenizer()
    cfg = tiny_config(len(tok))
    cfg._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(cfg)
    return model.eval(), tok
