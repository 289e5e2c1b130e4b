"""
Batches of (x, y) token windows from a dataset's train.bin / val.bin, or from a
series of llm.c shards read as one stream (ShardedTokens; data_formats.py opens both).

sampling='epoch' (default): the file is cut into non-overlapping windows of
block_size + 1 tokens; each epoch visits every window once, in a permutation
seeded by (seed, epoch). All ranks walk one global stream of windows and each
takes its own share of every iteration, so a run over N ranks sees exactly the
windows a 1-process run with the same global batch sees. The position in the
stream (windows consumed) is the loader's whole state, saved in the checkpoint.

sampling='random': nanoGPT's i.i.d. random offsets, drawn from a generator
seeded by (seed, position), so they too replay exactly on resume.

Files are opened once and read with pread (token_files.py); the next micro-batch
is read in a background thread while the current one runs.
"""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cpu_load import usable_cores
from token_files import ShardedTokens, TokenFile  # noqa: F401  (the files this reads; imported from here too)

SAMPLING = ("epoch", "random")


def num_windows(num_tokens, block_size):
    """Non-overlapping windows of block_size + 1 tokens (x and y shifted by one)."""
    return max(0, (num_tokens - 1) // block_size)


def to_host(rows, device):
    """(x, y) CPU tensors from an int64 array of windows of block_size + 1 tokens; pinned for a GPU,
    so that the copy to it can overlap with compute."""
    t = torch.from_numpy(rows)
    x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def to_device(rows, device):
    """(x, y) on device from an int64 array of windows of block_size + 1 tokens."""
    x, y = to_host(rows, device)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class TrainLoader:
    """This rank's micro-batches, iteration after iteration, from a global stream of windows."""

    def __init__(self, file, block_size, batch_size, grad_accum, rank, world_size, seed, sampling, device):
        assert grad_accum % world_size == 0
        self.file, self.T, self.B = file, block_size, batch_size
        self.G = grad_accum                    # micro-batches per iteration, all ranks
        self.G_rank = grad_accum // world_size  # this rank's share
        self.rank, self.seed, self.sampling, self.device = rank, seed, sampling, device
        self.n = num_windows(file.num_tokens, block_size)
        self.pos = 0          # global windows consumed before the current iteration
        self._handed = 0      # micro-batches handed out since pos was set
        self._perms = {}      # epoch -> permutation (the current and the next)
        self._pool = ThreadPoolExecutor(max_workers=1)
        # a thread reading the next batch helps a GPU; on a CPU whose cores torch's threads fill
        # already, it only takes one from them
        self.prefetch = not (device.type == "cpu" and torch.get_num_threads() >= usable_cores())
        self._future = None
        self.wait_s = 0.0     # time spent waiting for batches (for the data-loader share of step time)

    # --- state ---
    def state_dict(self):
        assert self._handed % self.G_rank == 0, "loader state is only defined between iterations"
        pos = self.pos + (self._handed // self.G_rank) * self.B * self.G
        return {"pos": pos, "block_size": self.T, "seed": self.seed, "sampling": self.sampling, "n_windows": self.n}

    def load_state_dict(self, state):
        pos = int(state["pos"])
        if state.get("block_size", self.T) != self.T:
            pos = pos * state["block_size"] // self.T   # keep the token position when block_size changed
        self.pos, self._handed = pos, 0
        self._future = None

    # --- batches ---
    def _permutation(self, epoch):
        if epoch not in self._perms:
            for old in [e for e in self._perms if e < epoch]:
                del self._perms[old]
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def _starts(self, j):
        """Token offsets of the windows of this rank's j-th micro-batch."""
        it, m = divmod(j, self.G_rank)
        first = self.pos + it * self.B * self.G + (self.rank * self.G_rank + m) * self.B
        if self.sampling == "random":
            rng = np.random.default_rng([self.seed, 1, first])
            return rng.integers(0, self.file.num_tokens - self.T, size=self.B)
        w = np.arange(first, first + self.B)
        epochs, idx = np.divmod(w, self.n)
        windows = np.array([self._permutation(int(e))[i] for e, i in zip(epochs, idx)])
        return windows * self.T

    def _load(self, j):
        return to_host(self.file.rows(self._starts(j), self.T + 1), self.device)

    def next_batch(self):
        """(x, y) of this rank's next micro-batch; starts reading the one after."""
        t0 = time.perf_counter()
        if not self.prefetch:
            x, y = self._load(self._handed)
            self._handed += 1
            self.wait_s += time.perf_counter() - t0
            return x, y
        if self._future is None:
            self._future = self._pool.submit(self._load, self._handed)
        x, y = self._future.result()
        self._handed += 1
        self._future = self._pool.submit(self._load, self._handed)
        batch = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.wait_s += time.perf_counter() - t0
        return batch

    def windows_seen(self):
        return self.state_dict()["pos"]

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


def fixed_windows(file, block_size, count, seed):
    """Token offsets of `count` windows chosen once (seeded): the same eval set every time.
    Cycles when the file has fewer windows than asked for."""
    n = num_windows(file.num_tokens, block_size)
    order = np.random.default_rng([seed, 2]).permutation(n)
    return order[np.arange(count) % n] * block_size
