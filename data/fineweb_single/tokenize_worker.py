"""
The worker side of prepare.py: what each tokenizing process runs on a batch of documents.

It lives in its own module, not in prepare.py, so that the pool pickles its functions by an
importable name (data.fineweb_single.tokenize_worker.tokenize_batch) however prepare.py was
started: as a script, with `python -m`, under a profiler or a debugger, with fork or spawn.
"""
import collections
import contextlib
import ctypes
import gc
import hashlib
import mmap
import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa

from data.fineweb_single.sources import texts_of
from errors import UserError
from tokenizer import load_tokenizer

_tokenizer = None  # this process's tokenizer, set by init_worker
_token_slots = None  # the TokenSlots shared with this process when it was forked, if any


def init_worker(tokenizer_info, bpe_file, ignore_sigint=True):
    global _tokenizer
    if ignore_sigint:  # a worker process: Ctrl-C is handled once, by the main process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the objects inherited from the main process (the tokenizer's 50k ranks, the modules)
        # live as long as the worker: its garbage collections need not walk them every time
        gc.freeze()
        threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    keep_freed_memory()
    _tokenizer = load_tokenizer(tokenizer_info, bpe_file)


def keep_freed_memory():
    """Have glibc keep freed blocks of up to 32 MB for reuse, and Arrow allocate through it. By
    default glibc hands every freed block over 128 KB (a batch's texts, ids, tokens, pickles)
    back to the OS, and Arrow's mimalloc does the same within ~10 ms; the next batch then gets
    that memory back as fresh pages, zeroed one fault at a time: ~3% of the CPU of a run.
    Returns whether it could (not glibc: no change)."""
    try:
        libc = ctypes.CDLL(None)
        if not (libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)):
            return False
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


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
    are an array, or an InSlot when they were put in the given slot of the shared TokenSlots."""
    texts, hashes, n_null, n_empty = kept_documents(batch, where)
    encode = _tokenizer.encode_to_buffer
    ids = [memoryview(encode(text)) for text in texts]  # native uint32 each
    lengths = np.fromiter((v.nbytes for v in ids), dtype=np.int64, count=len(ids)) // 4 + 1
    # one bytes join of [eot, ids, eot, ids, ...] and one cast to the file's dtype: ~2x faster
    # than np.concatenate of the pieces (ids were checked to fit the dtype by token_dtype)
    pieces = [_eot_bytes()] * (2 * len(ids))
    pieces[1::2] = ids
    tokens = np.frombuffer(b"".join(pieces), dtype=np.uint32)
    in_slot = _token_slots.put(slot, tokens) if _token_slots is not None and slot is not None else None
    return in_slot or tokens.astype(dtype), lengths, hashes, n_null, n_empty


def _eot_bytes():
    return np.array([_tokenizer.eot_token], dtype=np.uint32).tobytes()


class InSlot(collections.namedtuple("InSlot", "slot count")):
    """Where a batch's tokens are: the first `count` tokens of slot `slot` of the TokenSlots."""


class TokenSlots:
    """Memory shared with the forked workers, a slot for each batch in flight, that a worker
    writes a batch's tokens into: they then reach the main process without being pickled,
    piped and unpickled, six copies of every token on the way (~2% of preparing on 2 cores).
    The main process must be done with a slot's tokens before it hands that slot out again
    (ordered_results' window makes sure of it). A batch too large for its slot travels the
    usual way, as does everything when the workers are not forked (spawn: they do not share
    this memory) or the memory cannot be had."""
    slot_bytes = 8 << 20  # 4M uint16 tokens: a row group of FineWeb (1000 documents) holds ~0.7M

    def __init__(self, count, dtype):
        self.count, self.dtype = count, np.dtype(dtype)
        self.memory = mmap.mmap(-1, count * self.slot_bytes)  # anonymous, shared with forked children

    @contextlib.contextmanager
    def shared(self):
        """Inside, worker processes forked get these slots (and tokenize_batch here uses them)."""
        global _token_slots
        _token_slots = self
        try:
            yield self
        finally:
            _token_slots = None

    def put(self, slot, tokens):
        """Write tokens into the slot in this dtype; an InSlot, or None when they do not fit."""
        if len(tokens) * self.dtype.itemsize > self.slot_bytes:
            return None
        np.copyto(self.view(slot, len(tokens)), tokens, casting="unsafe")  # ids fit: see token_dtype
        return InSlot(slot, len(tokens))

    def get(self, tokens):
        """The tokens a worker returned: an array, or a view of the slot an InSlot names."""
        return self.view(*tokens) if isinstance(tokens, InSlot) else tokens

    def view(self, slot, count):
        return np.ndarray(count, self.dtype, buffer=self.memory, offset=slot * self.slot_bytes)
