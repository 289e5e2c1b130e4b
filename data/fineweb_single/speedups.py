"""
prepare.py's speed tricks, in one place behind one switch: PREPARE_PLAIN=1 in the environment
(or prepare.py --plain) turns every one of them off. They change how fast the output comes,
never what it is: the files are the same bytes either way (tests/test_prepare.py checks it).
Measured on 2 cores, each is worth 1-3% of a run (see the README's preparation figures).

- TokenSlots: forked workers write a batch's tokens into shared memory instead of pickling them
  back through a pipe.
- tune_allocator: glibc keeps freed blocks for reuse, and Arrow allocates through it, instead
  of handing large blocks back to the OS and faulting fresh zeroed pages in for the next batch.
- freeze_inherited: a forked worker's garbage collections skip the objects it inherited.
- tail_splits: the last batches are cut in halves, so that the workers finish closer together.
- skip_teardown: once everything is written, synced and closed, exit without the interpreter's
  teardown (freeing the tokenizer and Arrow's pools).
"""
import collections
import contextlib
import gc
import mmap
import os
import sys

import numpy as np
import pyarrow as pa

import allocator
from data.fineweb_single.sources import batch_part

ON = os.environ.get("PREPARE_PLAIN", "") in ("", "0")


def set_plain(plain):
    """--plain: every trick off (call before the workers start; spawned ones read the variable)."""
    global ON
    ON = not plain
    os.environ["PREPARE_PLAIN"] = "1" if plain else "0"


# -----------------------------------------------------------------------------
# tokens back from the workers through shared memory


class InSlot(collections.namedtuple("InSlot", "slot count")):
    """Where a batch's tokens are: the first `count` tokens of slot `slot` of the TokenSlots."""


_token_slots = None  # the TokenSlots shared with this process when it was forked, if any


class TokenSlots:
    """Memory shared with the forked workers, a slot for each batch in flight, that a worker
    writes a batch's tokens into: they then reach the main process without being pickled,
    piped and unpickled, six copies of every token on the way (~2% of preparing on 2 cores).
    The main process must be done with a slot's tokens before it hands that slot out again
    (prepare.ordered_results' window makes sure of it). A batch too large for its slot travels
    the usual way."""
    slot_bytes = 8 << 20  # 4M uint16 tokens: a row group of FineWeb (1000 documents) holds ~0.7M

    def __init__(self, count, dtype):
        self.count, self.dtype = count, np.dtype(dtype)
        self.memory = mmap.mmap(-1, count * self.slot_bytes)  # anonymous, shared with forked children

    @contextlib.contextmanager
    def shared(self):
        """Inside, worker processes forked get these slots (and put_tokens here uses them)."""
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


def token_slots(count, dtype, forked):
    """TokenSlots for `count` batches in flight, or None: switched off, workers not forked (spawn:
    they would not share the memory), or no memory to be had (a strict overcommit limit)."""
    if not (ON and forked):
        return None
    with contextlib.suppress(OSError):
        return TokenSlots(count, dtype)
    return None


def put_tokens(slot, tokens):
    """In a worker: the batch's tokens in its shared slot (an InSlot), or None to send them back."""
    return _token_slots.put(slot, tokens) if _token_slots is not None and slot is not None else None


# -----------------------------------------------------------------------------
# memory reuse, garbage collection, load balance, exit

def tune_allocator():
    """Have glibc keep freed blocks of up to 32 MB for reuse (allocator.py), and Arrow allocate
    through it: Arrow's mimalloc also hands freed memory back within ~10 ms, and each batch's
    texts, ids, tokens and pickles would come back as fresh pages: ~3% of the CPU of a run.
    Returns whether it did (switched off, or not glibc: no change)."""
    if not ON or not allocator.keep_freed_memory():
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True


def freeze_inherited():
    """In a forked worker: the objects inherited from the main process (the tokenizer's 50k
    ranks, the modules) live as long as it does; its garbage collections need not walk them."""
    if ON:
        gc.freeze()


def tail_splits(workers):
    """How many of the last batches to cut in halves: one per worker (0 when switched off)."""
    return workers if ON else 0


def split_tail(batches, n):
    """The (texts, path, first row, bytes read) batches, the last n of them cut in halves, so
    that the workers finish closer together: the one done first would idle for up to a whole
    batch otherwise."""
    last = collections.deque()
    for batch in batches:
        last.append(batch)
        if len(last) > n:
            yield last.popleft()
    for texts, path, first, read in last:
        half = max(1, -(-len(texts) // 2))
        for start in range(0, max(len(texts), 1), half):
            yield batch_part(texts, start, min(start + half, len(texts))), path, first + start, read


def skip_teardown():
    """Exit now, without the interpreter's teardown (~50 ms of freeing, 1% of preparing 200 MB);
    not under a profiler, a debugger or coverage, which write their results at exit."""
    if ON and sys.getprofile() is None and sys.gettrace() is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
