"""
The output side of prepare.py: train.bin and val.bin under temporary names, renamed when
complete, then meta.json (written last, atomically: its presence marks a finished dataset).
"""
import contextlib
import datetime
import json
import os
import threading

import numpy as np

from errors import UserError

PREPARE_VERSION = 1
SPLITS = ("train", "val")


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

    def __init__(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.files = {split: open(self.path(f"{split}.bin.tmp"), "wb") for split in SPLITS}
        self.unsynced = dict.fromkeys(SPLITS, 0)
        self.threads = {}  # "sync" and "discard": the latest of each, joined before the files change

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def write(self, split, tokens):
        tokens.tofile(self.files[split])  # straight to the file descriptor: nothing left buffered
        self.unsynced[split] += tokens.nbytes
        if self.unsynced[split] >= self.sync_every and not self.running("sync"):
            self.unsynced[split] = 0
            self.start("sync", os.fsync, self.files[split].fileno())

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
            f.flush()
            os.fsync(f.fileno())
            f.close()
        # meta.json.tmp first: until meta.json exists, some *.tmp is always there, which tells an
        # unfinished preparation from a nanoGPT folder (train.bin and val.bin, no meta.json)
        write_json(self.path("meta.json.tmp"), meta)
        for split in SPLITS:
            os.replace(self.path(f"{split}.bin.tmp"), self.path(f"{split}.bin"))
        os.replace(self.path("meta.json.tmp"), self.path("meta.json"))

    def abort(self):
        self.join_threads()
        for split, f in self.files.items():
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
