"""
The output side of prepare.py: train.bin and val.bin under temporary names, renamed when
complete, then meta.json (written last, atomically: its presence marks a finished dataset).
A write that fails (a full disk, a quota, a file-size limit) is one line saying how much the
dataset needs and how much is free; prepare.py then removes the temporaries.
"""
import contextlib
import datetime
import json
import os
import shutil
import threading

import numpy as np

from errors import UserError

PREPARE_VERSION = 1
SPLITS = ("train", "val")
# the fewest tokens per input byte: a text byte is at least one byte of its parquet (compressed)
# or .txt file and 0.8 of its .jsonl (quotes, escapes); GPT-2 makes ~0.25 tokens of English per byte
LEAST_TOKENS_PER_TEXT_BYTE = {"byte": 1.0, "gpt2": 0.2}
LEAST_TEXT_PER_INPUT_BYTE = {"parquet": 1.0, "txt": 1.0, "jsonl": 0.8}


def least_output_bytes(sources, tokenizer_name, dtype):
    """A lower bound on the size of train.bin + val.bin, from the input's size."""
    per_byte = LEAST_TOKENS_PER_TEXT_BYTE.get(tokenizer_name, 0.2) * dtype.itemsize
    return int(sum(s.size * LEAST_TEXT_PER_INPUT_BYTE.get(s.kind, 0.8) for s in sources) * per_byte)


def free_bytes(out_dir):
    """Free space for an unprivileged user on the filesystem that holds (or will hold) out_dir."""
    path = os.path.abspath(out_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def human_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.3g} {unit}"
    return f"{n} B"


def check_free_space(out_dir, needed, replaced=0):
    """A one-line error, before anything is touched, when the dataset cannot fit even by the
    lower-bound estimate `needed` (counting the `replaced` bytes of the dataset it replaces)."""
    free = free_bytes(out_dir)
    if needed > free + replaced:
        raise UserError(f"{out_dir} has {human_bytes(free)} free{f' (+{human_bytes(replaced)} of the dataset replaced)' if replaced else ''} "
                        f"but the dataset needs at least {human_bytes(needed)}; free some space or give another --out-dir")


def check_out_dir(out_dir):
    """A one-line error, before anything is written, when out_dir is a file or a name the
    dataset needs in it is taken by a folder."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out-dir {out_dir} is a file, not a folder; give a folder for the dataset")
    for name in [f"{split}.bin" for split in SPLITS] + ["meta.json"]:
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name) + ".tmp"):  # both are written
            if os.path.isdir(path):
                raise UserError(f"{path} is a folder, where the dataset writes a file; "
                                f"move it away or give another --out-dir")


class DatasetWriter:
    """train.bin and val.bin under temporary names; finish() renames them, then writes meta.json.

    Two jobs that would otherwise wait for the end run in threads meanwhile: every sync_every
    bytes, the data written so far goes to disk (finish() then syncs only the rest; ~0.4 s per
    GB otherwise), and discard_replaced() deletes the files of the dataset being replaced
    (dropping a file's cached pages takes ~0.25 s per GB)."""
    sync_every = 16 << 20

    def __init__(self, out_dir, least_bytes=0):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.files = {split: open(self.path(f"{split}.bin.tmp"), "wb") for split in SPLITS}
        self.unsynced = dict.fromkeys(SPLITS, 0)
        self.threads = {}  # "sync" and "discard": the latest of each, joined before the files change
        self.sync_error = None
        # for the message of a failed write: bytes written, and the share of the input read so far
        self.written, self.least_bytes, self.input_share = 0, least_bytes, 0.0

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def write(self, split, tokens):
        with self.failing_write_is_one_line(self.files[split]):
            tokens.tofile(self.files[split])  # straight to the file descriptor: nothing left buffered
        self.written += tokens.nbytes
        self.unsynced[split] += tokens.nbytes
        if self.unsynced[split] >= self.sync_every and not self.running("sync"):
            self.unsynced[split] = 0
            self.start("sync", self.sync, self.files[split])

    def sync(self, f):
        try:
            os.fsync(f.fileno())
        except OSError as e:  # raised in the main thread, by the next join_threads()
            self.sync_error = (f, e)

    @contextlib.contextmanager
    def failing_write_is_one_line(self, f):
        try:
            yield
        except OSError as e:
            if e.errno is None and not f.closed:  # numpy's short write says no why: one more byte does
                try:
                    os.write(f.fileno(), b"\0")  # (the file is deleted anyway)
                except OSError as why:
                    e = why
            raise self.write_failed(os.path.basename(f.name), e) from None

    def write_failed(self, name, e):
        needed = max(self.least_bytes, int(self.written / self.input_share) if self.input_share > 0 else 0)
        return UserError(f"writing {self.path(name)} failed ({e.strerror or e}) after {human_bytes(self.written)}: "
                         f"the dataset needs about {human_bytes(needed)} and {human_bytes(free_bytes(self.out_dir))} is free; "
                         f"free some space or give another --out-dir (nothing was kept)")

    def discard_replaced(self):
        """Start deleting the .bin files that finish() would replace (--force, or an unfinished
        run's), in a thread. Call it after forking any worker processes."""
        def remove():
            for split in SPLITS:
                with contextlib.suppress(OSError):  # not there (or not a file): finish() will say
                    os.remove(self.path(f"{split}.bin"))
        self.start("discard", remove)

    def finish(self, meta):
        self.join_threads()  # the renames must come after the deletions
        for f in self.files.values():
            with self.failing_write_is_one_line(f):
                f.flush()
                os.fsync(f.fileno())
            f.close()
        # meta.json.tmp first: until meta.json exists, some *.tmp is always there, which tells an
        # unfinished preparation from a nanoGPT folder (train.bin and val.bin, no meta.json)
        try:
            write_json(self.path("meta.json.tmp"), meta)
        except OSError as e:
            raise self.write_failed("meta.json.tmp", e) from None
        for split in SPLITS:
            os.replace(self.path(f"{split}.bin.tmp"), self.path(f"{split}.bin"))
        os.replace(self.path("meta.json.tmp"), self.path("meta.json"))

    def abort(self):
        with contextlib.suppress(UserError):  # the error being handled is the one to report
            self.join_threads()
        for split, f in self.files.items():
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(f"{split}.bin.tmp"))
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path("meta.json.tmp"))

    def start(self, job, target, *args):
        self.threads[job] = threading.Thread(target=target, args=args, daemon=True)
        self.threads[job].start()

    def running(self, job):
        return job in self.threads and self.threads[job].is_alive()

    def join_threads(self):
        for thread in self.threads.values():
            thread.join()
        if self.sync_error:
            f, e = self.sync_error
            self.sync_error = None
            raise self.write_failed(os.path.basename(f.name), e)


def write_json(path, obj):
    """obj as JSON at path, synced to disk (finish() renames it into place)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def token_dtype(n_vocab, choice="auto"):
    """Little-endian uint16 when every id fits, else uint32; --dtype can force either."""
    fits16 = n_vocab <= 2 ** 16
    if choice == "uint16" and not fits16:
        raise UserError(f"--dtype uint16 cannot hold the {n_vocab} token ids of this tokenizer; "
                        f"use --dtype uint32 or auto")
    if choice == "uint32" or not fits16:
        return np.dtype("<u4")
    return np.dtype("<u2")


def dataset_meta(sources, sha256s, tok, dtype, counts, dedup, val_threshold):
    return {
        "tokenizer": tok.info(),
        "dtype": "uint16" if dtype.itemsize == 2 else "uint32",
        "train_tokens": counts.train_tokens,
        "val_tokens": counts.val_tokens,
        "train_docs": counts.train_docs,
        "val_docs": counts.val_docs,
        "eot_position": "prepend",
        "source": {
            "files": [{"name": os.path.basename(s.path), "path": os.path.abspath(s.path),
                       "kind": s.kind, "size": s.size, "sha256": sha256s[s.path]} for s in sources],
            "text_column": sources[0].text_column,
            "rows": counts.rows,
        },
        "skipped": {"empty": counts.empty, "null": counts.null, "duplicate": counts.duplicates_dropped},
        "duplicates_found": counts.duplicates_found,
        "dedup": dedup,
        "val_fraction": val_threshold / 2 ** 64,
        "split": {"method": "hash", "unit": "document", "threshold": val_threshold,
                  # blake2b with an 8-byte digest, which is not the first 8 bytes of the default one
                  "rule": "val when int.from_bytes(hashlib.blake2b(text.encode('utf-8'), digest_size=8)"
                          ".digest(), 'little') < threshold (val_fraction * 2**64)"},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(counts.seconds, 2),
        "prepare_version": PREPARE_VERSION,
    }
