"""
The output side of prepare.py: train.bin and val.bin under temporary names, renamed when
complete, then meta.json (written last, atomically: its presence marks a finished dataset).
"""
import contextlib
import datetime
import json
import os

import numpy as np

from errors import UserError

PREPARE_VERSION = 1
SPLITS = ("train", "val")


class DatasetWriter:
    """train.bin and val.bin under temporary names; finish() renames them, then writes meta.json."""

    def __init__(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.files = {split: open(self.path(f"{split}.bin.tmp"), "wb") for split in SPLITS}

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def write(self, split, tokens):
        tokens.tofile(self.files[split])

    def finish(self, meta):
        for split, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.path(f"{split}.bin.tmp"), self.path(f"{split}.bin"))
        write_json_atomically(self.path("meta.json"), meta)

    def abort(self):
        for split, f in self.files.items():
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(f"{split}.bin.tmp"))


def write_json_atomically(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


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
                  "rule": "val when the first 8 bytes of blake2b(UTF-8 text), little-endian, "
                          "are below threshold (val_fraction * 2**64)"},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(counts.seconds, 2),
        "prepare_version": PREPARE_VERSION,
    }
