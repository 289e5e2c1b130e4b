"""
The tokenizers a dataset can be prepared with, by the name stored in its meta.json:

- gpt2: tiktoken's GPT-2 BPE (50257 tokens, end-of-text 50256; the same ranks as r50k_base).
- byte: the 256 byte values of the UTF-8 text plus an end-of-text token 256; needs no file.
- char: a character vocabulary (nanoGPT's meta.pkl: itos), stored in the info itself; it has
  no end-of-text token.

GPT-2's ranks file is found, in this order, at the path a program is given, in tiktoken's cache folders
(TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, $TMPDIR/data-gym-cache, ~/.cache/tiktoken, where
.ci/seed_tiktoken.sh puts it), or downloaded by tiktoken when its host can be reached. The
reachability check comes first because tiktoken's own download has no timeout and can hang
offline; without any of them the error says how to get the file.
"""
import base64
import binascii
import hashlib
import os
import socket
import tempfile
import threading

import numpy as np

from errors import UserError

EOT_TEXT = "<|endoftext|>"
NO_SPECIAL_TOKENS = frozenset()  # ordinary encoding: a special token's text is encoded as text

# tiktoken_ext/openai_public.py: r50k_base is GPT-2's BPE as a tiktoken ranks file, and
# whisper/assets/gpt2.tiktoken is the same file (same sha256).
GPT2_RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's own "gpt2" encoding reads the original data-gym pair (same ids); used when cached
GPT2_DATA_GYM = {
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe":
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json":
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = 50256
# neutral: each script adds its own flag spelling (catching GPT2RanksError)
GPT2_HOW_TO_GET = ("run .ci/seed_tiktoken.sh (fetches it from PyPI into ~/.cache/tiktoken), "
                   "or give the path of a local gpt2.tiktoken or r50k_base.tiktoken file")

TOKENIZERS = ("gpt2", "byte")  # what prepare.py can write; "char" comes only from nanoGPT's meta.pkl


class GPT2RanksError(UserError):
    """GPT-2's ranks file is missing or unusable; the message names no script's flag."""


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, end-of-text 256."""
    name = "byte"
    n_vocab = 257
    eot_token = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def encode_to_numpy(self, text):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def encode_to_buffer(self, text):
        return self.encode_to_numpy(text)

    def decode(self, ids):
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() > self.eot_token):
            raise ValueError(f"byte tokenizer ids are 0..{self.eot_token}")
        # split at end-of-text tokens; a multi-byte character cut by one decodes as U+FFFD
        cuts = np.flatnonzero(ids == self.eot_token)
        pieces, start = [], 0
        for cut in cuts:
            pieces.append(ids[start:cut].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            start = cut + 1
        pieces.append(ids[start:].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
        return EOT_TEXT.join(pieces)

    def info(self):
        return tokenizer_info(self)


class CharTokenizer:
    """A character vocabulary: id i is the string itos[i] (nanoGPT's shakespeare_char)."""
    name = "char"
    eot_token = None

    def __init__(self, itos):
        self.itos = list(itos)
        self.n_vocab = len(self.itos)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self._longest = max(map(len, self.itos), default=1)

    def encode(self, text):
        if self._longest == 1:
            missing = sorted(set(text) - self.stoi.keys())
            if missing:
                raise UserError(f"the text has characters the dataset's vocabulary lacks "
                                f"({', '.join(map(repr, missing[:5]))}); use only characters of the training text")
            return [self.stoi[c] for c in text]
        return self._encode_longest_first(text)

    def _encode_longest_first(self, text):
        """For vocabularies of multi-character strings: the longest entry that matches, in turn."""
        ids, i = [], 0
        while i < len(text):
            for n in range(min(self._longest, len(text) - i), 0, -1):
                if text[i:i + n] in self.stoi:
                    ids.append(self.stoi[text[i:i + n]])
                    i += n
                    break
            else:
                raise UserError(f"the text has a character the dataset's vocabulary lacks ({text[i]!r}); "
                                f"use only characters of the training text")
        return ids

    def encode_to_numpy(self, text):
        return np.asarray(self.encode(text), dtype=np.uint32)

    encode_to_buffer = encode_to_numpy

    def decode(self, ids):
        ids = [int(i) for i in np.asarray(ids).ravel()]
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise ValueError(f"character ids are 0..{self.n_vocab - 1}, not {bad[0]}")
        return "".join(self.itos[i] for i in ids)

    def info(self):
        return {**tokenizer_info(self), "itos": list(self.itos)}


class TiktokenTokenizer:
    """A tiktoken Encoding with the interface of this repository (ordinary encoding, no specials)."""

    def __init__(self, name, encoding):
        self.name = name
        self.encoding = encoding
        self.n_vocab = encoding.n_vocab
        self.eot_token = encoding.eot_token
        # tiktoken's Rust encoder, called directly by encode_to_buffer: its Python wrapper costs
        # ~4% of the encoding time per document (checks for special tokens we never allow)
        self._encode_buffer = getattr(getattr(encoding, "_core_bpe", None), "encode_to_tiktoken_buffer", None)

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def encode_to_numpy(self, text):
        # same ids as encode_ordinary (no special token allowed or refused), without a Python list
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def encode_to_buffer(self, text):
        """The ids of encode_ordinary as a buffer of native uint32 (a bytes-like object)."""
        if self._encode_buffer is None:  # a tiktoken without it
            return self.encode_to_numpy(text)
        return self._encode_buffer(text, NO_SPECIAL_TOKENS)

    def decode(self, ids):
        return self.encoding.decode([int(i) for i in ids])

    def info(self):
        return tokenizer_info(self)


def tokenizer_info(tok):
    """What meta.json stores about the tokenizer."""
    return {"name": tok.name, "vocab_size": tok.n_vocab, "eot_token": tok.eot_token,
            "eot_position": "prepend" if tok.eot_token is not None else None}


def prompt_ids(tok, prompt):
    """(ids, skip): the ids a sample starts from and how many of them not to print. A document
    starts after an end-of-text token, as in the training data. A character vocabulary has none:
    an empty prompt then starts from a newline, as nanoGPT's sample.py does (or from id 0)."""
    if tok.eot_token is not None:
        return [tok.eot_token] + tok.encode(prompt), 1
    if prompt:
        return tok.encode(prompt), 0
    return [getattr(tok, "stoi", {}).get("\n", 0)], 1


def load_tokenizer(info, bpe_file=None):
    """The tokenizer named by `info`: meta.json's "tokenizer" dict or just its name."""
    name = info.get("name") if isinstance(info, dict) else info
    if name == "byte":
        tok = ByteTokenizer()
    elif name == "char":
        if not isinstance(info, dict) or not isinstance(info.get("itos"), list):
            raise UserError("a character tokenizer needs its vocabulary (itos), which this record lacks; "
                            "use the dataset's meta.pkl")
        tok = CharTokenizer(info["itos"])
    elif name == "gpt2":
        tok = TiktokenTokenizer("gpt2", gpt2_encoding(bpe_file))
    else:
        raise UserError(f"unknown tokenizer {name!r}; use one of {', '.join(TOKENIZERS + ('char',))}")
    if isinstance(info, dict):
        for key in ("vocab_size", "eot_token"):
            if key in info and info[key] != tokenizer_info(tok)[key]:
                raise UserError(f"meta.json says tokenizer {name} has {key} {info[key]}, but it has "
                                f"{tokenizer_info(tok)[key]}; prepare the dataset again")
    return tok


# -----------------------------------------------------------------------------
# GPT-2's ranks

_encodings = {}  # ranks path -> tiktoken.Encoding, so a process parses the file once


def gpt2_encoding(bpe_file=None):
    """tiktoken's GPT-2 Encoding, from bpe_file, a cached ranks file, or a download."""
    import tiktoken
    path = bpe_file if bpe_file is not None else cached_gpt2_ranks()
    if path is not None:
        if path not in _encodings:
            _encodings[path] = tiktoken.Encoding(
                name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=read_gpt2_ranks(path),
                special_tokens={EOT_TEXT: GPT2_EOT}, explicit_n_vocab=GPT2_EOT + 1)
        return _encodings[path]
    if data_gym_gpt2_cached():
        return tiktoken.get_encoding("gpt2")
    if not download_host_reachable():
        raise GPT2RanksError(f"GPT-2's BPE file is not cached on this machine and its download host "
                        f"cannot be reached; {GPT2_HOW_TO_GET}")
    try:
        return tiktoken.get_encoding("r50k_base")  # downloads into tiktoken's cache
    except Exception as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GPT2RanksError(f"downloading GPT-2's BPE file failed ({first_line}); {GPT2_HOW_TO_GET}")


def read_gpt2_ranks(path):
    """{token bytes: rank} from a tiktoken-format file, checked to be GPT-2's ranks."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise GPT2RanksError(f"cannot read the BPE file {path} ({e.strerror}); {GPT2_HOW_TO_GET}")
    if hashlib.sha256(data).hexdigest() == GPT2_RANKS_SHA256:
        # the known file (the usual case): parse it in one pass, without per-line checks
        fields = data.split()
        return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2])))
    try:
        ranks = {}
        for line in data.splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:
        raise GPT2RanksError(f"{path} is not a tiktoken ranks file (lines of 'base64-token rank'); "
                        f"{GPT2_HOW_TO_GET}")
    # compare in tiktoken's own layout, so a re-saved copy of the same ranks is accepted too
    if ranks_sha256(ranks) != GPT2_RANKS_SHA256:
        raise GPT2RanksError(f"{path} holds other BPE ranks than GPT-2's ({len(ranks)} tokens, not r50k_base); "
                        f"give gpt2.tiktoken (whisper) or r50k_base.tiktoken (tiktoken)")
    return ranks


def ranks_sha256(ranks):
    lines = (base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
             for token, rank in sorted(ranks.items(), key=lambda item: item[1]))
    return hashlib.sha256(b"".join(lines)).hexdigest()


def tiktoken_cache_dirs():
    """Where tiktoken keeps downloads (load.py's read_file_cached), then the seed script's default."""
    dirs = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR"),
            os.path.join(tempfile.gettempdir(), "data-gym-cache"),
            os.path.join(os.path.expanduser("~"), ".cache", "tiktoken")]
    return [d for i, d in enumerate(dirs) if d and d not in dirs[:i]]


def cached_file(cache_dir, url, sha256):
    """Path of tiktoken's cached download of `url` in cache_dir (named by the sha1 of the URL)
    when its content has the expected sha256, else None."""
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() == sha256:
                return path
    return None


def cached_gpt2_ranks():
    """Path of a cached copy of GPT-2's ranks file, or None."""
    for cache_dir in tiktoken_cache_dirs():
        path = cached_file(cache_dir, GPT2_RANKS_URL, GPT2_RANKS_SHA256)
        if path:
            return path
    return None


def data_gym_gpt2_cached():
    """Whether tiktoken.get_encoding("gpt2") would find both its files in its cache (no download)."""
    if os.environ.get("TIKTOKEN_CACHE_DIR") == "":
        return False  # tiktoken's "no cache" setting: it would download
    cache_dir = tiktoken_cache_dirs()[0]  # the folder tiktoken itself reads
    return all(cached_file(cache_dir, url, sha) for url, sha in GPT2_DATA_GYM.items())


def download_host_reachable(timeout=3.0):
    """Whether tiktoken's download host answers within `timeout` seconds.

    Name resolution can block far longer than a socket timeout, so the probe runs in a
    daemon thread that is abandoned when it does not answer in time."""
    host = GPT2_RANKS_URL.split("/")[2]
    reachable = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(reachable)
