"""Bits per byte: per-token byte lengths and the nats -> bits-per-byte conversion."""
import math

import numpy as np
import pytest
import torch

import tokenizer as tok_mod
from bpb import bits_per_byte, bpb_from_sums, target_bytes, token_byte_lengths

needs_gpt2 = pytest.mark.skipif(tok_mod.cached_gpt2_ranks() is None,
                                reason="GPT-2 BPE ranks not cached; run .ci/seed_tiktoken.sh")
TEXT = "héllo wörld — 日本語 🤖\n\ttabs  and spaces"


def test_byte_tokenizer_lengths_and_bpb_is_loss_over_ln2():
    lengths = token_byte_lengths(tok_mod.ByteTokenizer())
    assert lengths.shape == (257,) and lengths[:256].tolist() == [1] * 256 and lengths[256] == 0
    targets = np.array(tok_mod.ByteTokenizer().encode(TEXT))
    mean_loss = 1.2345
    assert bits_per_byte(mean_loss * targets.size, targets, lengths) == pytest.approx(mean_loss / math.log(2),
                                                                                       rel=1e-15)


def test_end_of_text_counts_nats_but_no_bytes():
    lengths = token_byte_lengths(tok_mod.ByteTokenizer())
    targets = np.array([256] + list("héllo".encode()) + [256])  # 6 bytes, 8 targets
    assert target_bytes(targets, lengths) == 6
    assert bits_per_byte(8 * 2.0, targets, lengths) == 16.0 / (math.log(2) * 6)


def test_torch_targets_and_ignored_ids():
    lengths = torch.from_numpy(token_byte_lengths(tok_mod.ByteTokenizer()))
    targets = torch.tensor([[104, 105, -1], [256, 33, -1]])  # -1: ignored targets (no bytes)
    assert target_bytes(targets, lengths) == 3
    assert bpb_from_sums(3.0, 0) != bpb_from_sums(3.0, 0)  # no bytes: NaN, not a division error


@needs_gpt2
def test_gpt2_lengths_sum_to_the_text_bytes():
    tok = tok_mod.load_tokenizer("gpt2")
    lengths = token_byte_lengths(tok)
    assert lengths.shape == (50257,) and lengths[50256] == 0
    assert lengths[tok.encode(" the")[0]] == 4 and lengths[tok.encode("!")[0]] == 1
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT.encode())  # BPE merges bytes, and the emoji spans tokens
    assert target_bytes(np.array(ids + [50256]), lengths) == len(TEXT.encode("utf-8"))
    assert bits_per_byte(2.0 * len(ids), np.array(ids), lengths) == pytest.approx(
        2.0 * len(ids) / (math.log(2) * len(TEXT.encode("utf-8"))), rel=1e-15)
