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


# -----------------------------------------------------------------------------
# train.py's eval records


def test_eval_records_carry_val_bpb_of_the_val_targets(tmp_path):
    from dataloader import fixed_windows, TokenFile
    from train_helpers import TINY, make_dataset, read_metrics, train_in_process
    rng = np.random.default_rng(3)  # a draw whose inputs and targets hold different numbers of end-of-texts
    val = rng.integers(0, 256, size=600)
    val[rng.random(600) < 0.2] = 256  # end-of-text targets: nats but no bytes
    data = make_dataset(str(tmp_path / "data"), train_tokens=1200, val_ids=val)
    out = str(tmp_path / "out")
    printed = train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    evals = [r for r in read_metrics(out) if r["event"] == "eval"]
    # the targets of the eval windows, read straight from the val tokens (4 batches x 4 windows of 32)
    starts = fixed_windows(TokenFile(f"{data}/val.bin", "uint16"), 32, 16, 1337)
    targets = np.concatenate([val[s + 1:s + 33] for s in starts])
    text_fraction = np.mean(targets != 256)
    inputs = np.concatenate([val[s:s + 32] for s in starts])
    assert 0.7 < text_fraction < 0.9 and np.mean(inputs != 256) != text_fraction  # the test tells them apart
    for r in evals:
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / text_fraction, rel=1e-6)
    lines = [line for line in printed.splitlines() if line.startswith("step 2:")]
    assert lines == [f"step 2: train loss {evals[1]['train_loss']:.4f}, val loss {evals[1]['val_loss']:.4f}, "
                     f"val bpb {evals[1]['val_bpb']:.4f}"]


def test_without_the_tokenizer_the_eval_records_have_no_val_bpb():
    from evaluation import token_byte_lengths_for
    notes = []
    assert token_byte_lengths_for({"name": "char", "vocab_size": 3}, note=notes.append) is None
    assert notes == ["note: the eval records have no val_bpb: the dataset's tokenizer cannot be loaded (a character "
                     "tokenizer needs its vocabulary (itos), which this record lacks; use the dataset's meta.pkl)"]
    lengths = token_byte_lengths_for({"name": "char", "vocab_size": 3, "itos": ["a", "é", "\n"]})
    assert lengths.tolist() == [1, 2, 1]  # UTF-8 bytes; a character vocabulary has no end-of-text token
