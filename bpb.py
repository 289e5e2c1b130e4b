"""
Bits per byte: the val loss in a unit that does not depend on the tokenizer, as nanochat reports it.

    lengths = token_byte_lengths(tokenizer)            # once per run
    val_bpb = bits_per_byte(summed_nats, targets, lengths)

bits_per_byte = (summed nats of the targets) / (ln 2 x the UTF-8 bytes the targets decode to).
The end-of-text token (and any special token) counts 0 bytes: it is not text. So a model of
the byte tokenizer has val_bpb = loss / ln 2 on text without end-of-text tokens, and a GPT-2 BPE
model's val_bpb is its loss spread over the ~4 bytes each token covers. torch-free: targets and
lengths may be numpy arrays or torch tensors (both index and sum alike).
"""
import math

import numpy as np


def token_byte_lengths(tokenizer):
    """int64 array: the UTF-8 byte length of every token id of `tokenizer` (tokenizer.py's
    ByteTokenizer, CharTokenizer or TiktokenTokenizer), 0 for special tokens."""
    if tokenizer.name == "byte":
        lengths = np.ones(tokenizer.n_vocab, dtype=np.int64)
    elif tokenizer.name == "char":
        lengths = np.array([len(s.encode("utf-8")) for s in tokenizer.itos], dtype=np.int64)
    else:
        enc = tokenizer.encoding
        special = set(enc.special_tokens_set) if hasattr(enc, "special_tokens_set") else set()
        special_ids = {enc.encode_single_token(t) for t in special}
        lengths = np.array([0 if i in special_ids else len(enc.decode_single_token_bytes(i))
                            for i in range(tokenizer.n_vocab)], dtype=np.int64)
    if tokenizer.eot_token is not None:
        lengths[tokenizer.eot_token] = 0
    return lengths


def target_bytes(targets, lengths):
    """UTF-8 bytes the target ids decode to (ids < 0, the ignored targets, count nothing)."""
    if hasattr(targets, "clamp"):  # torch
        return int((lengths[targets.clamp(min=0)] * (targets >= 0)).sum())
    targets = np.asarray(targets)
    return int((lengths[np.maximum(targets, 0)] * (targets >= 0)).sum())


def bpb_from_sums(summed_nats, n_bytes):
    """Bits per byte from the summed nats and the byte count (NaN when there are no bytes)."""
    return float(summed_nats) / (math.log(2) * n_bytes) if n_bytes > 0 else float("nan")


def bits_per_byte(summed_nats, targets, lengths):
    """val_bpb of targets whose losses sum to summed_nats (e.g. mean loss x number of targets)."""
    return bpb_from_sums(summed_nats, target_bytes(targets, lengths))
