"""
The worker side of prepare.py: what each tokenizing process runs on a batch of documents.

It lives in its own module, not in prepare.py, so that the pool pickles its functions by an
importable name (data.fineweb_single.tokenize_worker.tokenize_batch) however prepare.py was
started: as a script, with `python -m`, under a profiler or a debugger, with fork or spawn.
"""
import hashlib
import os
import signal
import threading
import time

import numpy as np

from data.fineweb_single import speedups
from data.fineweb_single.sources import texts_of
from errors import UserError
from tokenizer import load_tokenizer

_tokenizer = None  # this process's tokenizer, set by init_worker


def init_worker(tokenizer_info, bpe_file, ignore_sigint=True):
    global _tokenizer
    if ignore_sigint:  # a worker process: Ctrl-C is handled once, by the main process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        speedups.freeze_inherited()
        threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    speedups.tune_allocator()
    _tokenizer = load_tokenizer(tokenizer_info, bpe_file)


def exit_with_parent(parent):
    """A worker whose main process was killed would wait for tasks forever: leave instead."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def kept_documents(batch, where):
    """The texts of a batch that are neither null nor blank, the 64-bit blake2b hash of each
    one's UTF-8 bytes (read little-endian, as meta.json says), and the numbers of null and of
    empty or blank texts."""
    path, first_row = where
    blake2b = hashlib.blake2b
    kept, digests, n_null, n_empty = [], [], 0, 0
    for i, text in enumerate(texts_of(batch, path, first_row)):
        if text is None:
            n_null += 1
            continue
        try:
            if type(text) is bytes:  # a binary column
                text = text.decode("utf-8")
            data = text.encode("utf-8")
        except UnicodeError:
            raise UserError(f"{path} row {first_row + i}: the text is not valid UTF-8; "
                            f"repair or drop that document")
        if not data or text.isspace():
            n_empty += 1
            continue
        kept.append(text)
        digests.append(blake2b(data, digest_size=8).digest())
    hashes = np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)
    return kept, hashes, n_null, n_empty


def hash_batch(batch, where):
    """The text hashes of a batch's kept documents (the first pass of --val-docs)."""
    return kept_documents(batch, where)[1]


def tokenize_batch(batch, where, dtype, slot=None):
    """Tokenize a batch of documents, each after an end-of-text token.

    Returns (tokens, token count of each kept document, 64-bit blake2b hash of each kept
    document's UTF-8 text, number of null texts, number of empty or blank texts). The tokens
    are an array, or an InSlot when they were put in the given slot of speedups.TokenSlots."""
    texts, hashes, n_null, n_empty = kept_documents(batch, where)
    encode = _tokenizer.encode_to_buffer
    ids = [memoryview(encode(text)) for text in texts]  # native uint32 each
    lengths = np.fromiter((v.nbytes for v in ids), dtype=np.int64, count=len(ids)) // 4 + 1
    # one bytes join of [eot, ids, eot, ids, ...] and one cast to the file's dtype: ~2x faster
    # than np.concatenate of the pieces (ids were checked to fit the dtype by token_dtype)
    pieces = [_eot_bytes()] * (2 * len(ids))
    pieces[1::2] = ids
    tokens = np.frombuffer(b"".join(pieces), dtype=np.uint32)
    return speedups.put_tokens(slot, tokens) or tokens.astype(dtype), lengths, hashes, n_null, n_empty


def _eot_bytes():
    return np.array([_tokenizer.eot_token], dtype=np.uint32).tobytes()
