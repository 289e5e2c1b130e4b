"""
A dataset in any of the three layouts train.py reads, opened as train and val token files
plus the facts the run record and diagnose need (tokenizer, dtype, token counts):

- this repository's: train.bin, val.bin and meta.json (data/<name>/prepare.py writes them)
- nanoGPT's: train.bin and val.bin, uint16, without meta.json; GPT-2 BPE with an end-of-text
  token after each document, or a character vocabulary when a meta.pkl (vocab_size, stoi, itos)
  lies beside them. meta.pkl is read by an unpickler that builds no object but plain data.
- llm.c / modded-nanogpt shards: *_train_*.bin and *_val_*.bin in a folder (or a glob), each a
  header of 256 int32 (magic 20240520, version 1, token count) then the uint16 GPT-2 tokens.

The token counts always come from the files themselves. Torch-free (diagnose may read it).
"""
import glob
import io
import os
import pickle
from collections import namedtuple

import numpy as np

import facts
from errors import UserError
from token_files import ShardedTokens, TokenFile

SHARD_MAGIC = 20240520    # llm.c's dev/data/data_common.py, GPT-2 tokens
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4
GLOB_CHARS = "*?["
META_PKL_MAX_BYTES = 16 << 20  # a character vocabulary is a few KB
PREPARE_TEMPORARIES = ("train.bin.tmp", "val.bin.tmp", "meta.json.tmp")  # output.py's, until meta.json
GPT2_INFO = {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256}

# train: the token files; meta: the facts (meta.json's keys, plus 'format' and 'assumed');
# note: the one line to print at start-up saying what was assumed, or None
Dataset = namedtuple("Dataset", "train val meta note")


def dataset_location(data_dir, dataset):
    """The folder (or glob) a run reads: data_dir; else dataset when it is a path or a glob;
    else data/<dataset>."""
    if data_dir:
        return data_dir
    if os.sep in dataset or "/" in dataset or any(c in dataset for c in GLOB_CHARS):
        return dataset
    return os.path.join("data", dataset)


def open_dataset(location):
    """Dataset(train, val, meta, note) of the folder or glob `location`, whichever layout it has."""
    if any(c in location for c in GLOB_CHARS) or location.endswith(".bin"):
        return open_shards(location, sorted(glob.glob(location)))
    def has(name):
        return os.path.isfile(os.path.join(location, name))

    if has("meta.json") or not os.path.isdir(location):
        return open_prepared(location)
    unfinished = [n for n in PREPARE_TEMPORARIES if has(n)]
    if unfinished:
        raise UserError(f"{os.path.join(location, 'meta.json')} not found: the preparation of {location} did not "
                        f"finish (its {unfinished[0]} is there); run its prepare.py again")
    if has("train.bin") and has("val.bin"):
        return open_nanogpt(location)
    shards = sorted(glob.glob(os.path.join(glob.escape(location), "*.bin")))
    if shards:
        return open_shards(location, shards)
    raise UserError(f"{os.path.join(location, 'meta.json')} not found: the dataset in {location} is missing "
                    f"or its preparation did not finish; run its prepare.py (a nanoGPT folder needs "
                    f"train.bin and val.bin; llm.c shards are named *_train_*.bin and *_val_*.bin)")


def open_prepared(location):
    meta = dict(facts.read_dataset_meta(location), format="prepare.py")
    return Dataset(*(TokenFile(os.path.join(location, f"{s}.bin"), meta["dtype"]) for s in ("train", "val")),
                   meta, None)


# -----------------------------------------------------------------------------
# nanoGPT's dataset folders


def open_nanogpt(location):
    """train.bin / val.bin as nanoGPT's prepare.py scripts write them (np.uint16, no header)."""
    meta_pkl = os.path.join(location, "meta.pkl")
    if os.path.exists(meta_pkl):
        tokenizer = char_tokenizer_info(read_meta_pkl(meta_pkl), meta_pkl)
        assumed = f"a character vocabulary of {tokenizer['vocab_size']} from meta.pkl"
    else:
        tokenizer = dict(GPT2_INFO, eot_position="append")
        assumed = "GPT-2 BPE with an end-of-text token after each document (no meta.pkl)"
    train, val = (TokenFile(os.path.join(location, f"{s}.bin"), "uint16") for s in ("train", "val"))
    for f in (train, val):
        if os.path.getsize(f.path) % 2:
            raise UserError(f"{f.path} has an odd number of bytes, so it is not nanoGPT's uint16 tokens; "
                            f"prepare it again")
    meta = {"tokenizer": tokenizer, "dtype": "uint16", "train_tokens": train.num_tokens,
            "val_tokens": val.num_tokens, "format": "nanogpt", "assumed": assumed}
    note = f"note: {location} has no meta.json: read as a nanoGPT dataset folder (uint16 tokens, {assumed})"
    return Dataset(train, val, meta, note)


class PlainDataUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings and numbers only: every global (class, function) is
    refused, so no code can run on load (a __reduce__ payload names one)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference")


def read_meta_pkl(path):
    """nanoGPT's meta.pkl as a plain dict, read without running any of its code."""
    fix = "a nanoGPT meta.pkl holds only a dict of vocab_size, stoi and itos; rewrite it, or delete it for GPT-2"
    if os.path.getsize(path) > META_PKL_MAX_BYTES:
        raise UserError(f"{path} is larger than {META_PKL_MAX_BYTES >> 20} MB; {fix}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        meta = PlainDataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # refused global, truncated or not a pickle
        raise UserError(f"{path} is not plain data ({type(e).__name__}: {e}); {fix}")
    if not isinstance(meta, dict) or not is_plain(meta):
        raise UserError(f"{path} holds other things than a dict of ints and strings; {fix}")
    return meta


def is_plain(value):
    """Only ints, strings, and lists / tuples / dicts of them."""
    if type(value) in (int, str):
        return True
    if type(value) in (list, tuple):
        return all(map(is_plain, value))
    if type(value) is dict:
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    return False


def char_tokenizer_info(meta, path):
    """The tokenizer info (tokenizer.CharTokenizer's) of a meta.pkl's itos / stoi / vocab_size."""
    itos, stoi, n = meta.get("itos"), meta.get("stoi"), meta.get("vocab_size")
    ok = (type(n) is int and isinstance(itos, dict) and isinstance(stoi, dict)
          and sorted(itos) == list(range(n)) and all(type(s) is str for s in itos.values())
          and stoi == {s: i for i, s in itos.items()})
    if not ok:
        raise UserError(f"{path} is not a character vocabulary (vocab_size, itos {{id: str}} for ids 0..vocab_size-1 "
                        f"and stoi its inverse); fix it, or delete it to read the data as GPT-2 tokens")
    return {"name": "char", "vocab_size": n, "eot_token": None, "eot_position": None,
            "itos": [itos[i] for i in range(n)]}


# -----------------------------------------------------------------------------
# llm.c / modded-nanogpt shards


def open_shards(location, paths):
    """The *_train_* and *_val_* shards among `paths`, each split read as one stream."""
    splits = {s: [p for p in paths if f"_{s}_" in os.path.basename(p)] for s in ("train", "val")}
    for split, found in splits.items():
        if not found:
            raise UserError(f"{location} has no {split} shard (a .bin file named *_{split}_*, as llm.c and "
                            f"modded-nanogpt name them); give the folder or glob that holds both splits")
    train, val = (ShardedTokens([open_shard(p) for p in splits[s]]) for s in ("train", "val"))
    meta = {"tokenizer": dict(GPT2_INFO, eot_position="prepend"), "dtype": "uint16",
            "train_tokens": train.num_tokens, "val_tokens": val.num_tokens, "format": "llm.c",
            "train_shards": len(splits["train"]), "val_shards": len(splits["val"]),
            "assumed": "GPT-2 BPE (llm.c's shard version 1)"}
    note = (f"note: {location}: llm.c shards, {len(splits['train'])} train ({train.num_tokens:,} tokens) and "
            f"{len(splits['val'])} val ({val.num_tokens:,} tokens), read as GPT-2 BPE tokens")
    return Dataset(train, val, meta, note)


def read_shard_header(path):
    """The token count of an llm.c shard, after checking its header against the file's size."""
    size = os.path.getsize(path)
    if size < SHARD_HEADER_BYTES:
        raise UserError(f"{path} is {size} bytes, shorter than an llm.c shard's {SHARD_HEADER_BYTES}-byte header; "
                        f"download or write it again")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    magic, version, count = (int(v) for v in header[:3])
    if magic != SHARD_MAGIC:
        raise UserError(f"{path} starts with {magic}, not the llm.c shard magic {SHARD_MAGIC}; "
                        f"give GPT-2 shards made by llm.c's or modded-nanogpt's fineweb.py")
    if version != SHARD_VERSION:
        raise UserError(f"{path} is llm.c shard version {version}, not {SHARD_VERSION} (uint16 GPT-2 tokens); "
                        f"give GPT-2 shards")
    expected = SHARD_HEADER_BYTES + 2 * count
    if size != expected:
        raise UserError(f"{path} is {size} bytes but its header says {count:,} tokens ({expected} bytes); "
                        f"the file is truncated or damaged: download or write it again")
    return count


def open_shard(path):
    return TokenFile(path, "uint16", offset=SHARD_HEADER_BYTES, num_tokens=read_shard_header(path))
