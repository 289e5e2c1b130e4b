"""
Token files, torch-free: a .bin of token ids (TokenFile, after an optional header), and a
series of them read as one stream (ShardedTokens, for llm.c's shards). Opened once and read
with pread: no per-batch re-mapping and no growing resident memory from a mapping.
"""
import os

import numpy as np


class TokenFile:
    """A .bin file of token ids, opened once; the tokens may start after a header of `offset` bytes."""

    def __init__(self, path, dtype, offset=0, num_tokens=None):
        self.path = path
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.offset = offset
        size = (os.path.getsize(path) - offset) // self.dtype.itemsize
        self.num_tokens = size if num_tokens is None else num_tokens
        self._fd = os.open(path, os.O_RDONLY)
        self._memmap = None if hasattr(os, "pread") else np.memmap(
            path, dtype=self.dtype, mode="r", offset=offset, shape=(self.num_tokens,))

    def read(self, start, length):
        if self._memmap is not None:
            return np.array(self._memmap[start:start + length])
        nbytes = length * self.dtype.itemsize
        buf = os.pread(self._fd, nbytes, self.offset + start * self.dtype.itemsize)
        assert len(buf) == nbytes, f"short read from {self.path}"
        return np.frombuffer(buf, dtype=self.dtype)

    def rows(self, starts, length):
        """int64 array (len(starts), length) of the windows starting at starts."""
        return np.stack([self.read(int(s), length) for s in starts]).astype(np.int64)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ShardedTokens:
    """Several TokenFiles (llm.c's shards) read as one stream of tokens, in order: a window may
    run across two shards. Each shard is read where it lies; none is loaded whole."""

    def __init__(self, files):
        self.files = list(files)
        self.path = ", ".join(f.path for f in self.files)
        self.dtype = self.files[0].dtype
        self.starts = np.cumsum([0] + [f.num_tokens for f in self.files])  # first token of each shard
        self.num_tokens = int(self.starts[-1])

    def read(self, start, length):
        pieces, end = [], start + length
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < end:
            f, first = self.files[i], int(self.starts[i])
            take = min(end, first + f.num_tokens) - start
            pieces.append(f.read(start - first, take))
            start, i = start + take, i + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    rows = TokenFile.rows

    def close(self):
        for f in self.files:
            f.close()
