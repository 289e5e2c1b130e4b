"""The three dataset layouts data_formats.open_dataset reads: ours, nanoGPT's folders, llm.c's shards."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_formats import dataset_location, open_dataset, read_meta_pkl
from dataloader import TokenFile, TrainLoader, fixed_windows
from errors import UserError
from tokenizer import CharTokenizer, load_tokenizer, prompt_ids

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def write_nanogpt_char_folder(folder, text=TEXT, val_share=0.1):
    """What nanoGPT's data/shakespeare_char/prepare.py writes: uint16 ids and meta.pkl."""
    os.makedirs(folder, exist_ok=True)
    chars = sorted(set(text))
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, {i: ch for i, ch in enumerate(chars)}
    n = int(len(text) * (1 - val_share))
    np.array([stoi[c] for c in text[:n]], dtype=np.uint16).tofile(os.path.join(folder, "train.bin"))
    np.array([stoi[c] for c in text[n:]], dtype=np.uint16).tofile(os.path.join(folder, "val.bin"))
    with open(os.path.join(folder, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return chars, n


def write_llmc_shard(path, tokens, magic=20240520, version=1, count=None):
    """llm.c's dev/data/data_common.py write_datafile for GPT-2: 256 int32, then uint16 tokens."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = magic, version, len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def test_nanogpt_folder_without_meta_pkl_is_gpt2_counted_from_the_files(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 50257, 1000, dtype=np.uint16), rng.integers(0, 50257, 300, dtype=np.uint16)
    train.tofile(tmp_path / "train.bin")
    val.tofile(tmp_path / "val.bin")
    ds = open_dataset(str(tmp_path))
    assert ds.meta["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256, "eot_position": "append"}
    assert (ds.meta["dtype"], ds.meta["train_tokens"], ds.meta["val_tokens"], ds.meta["format"]) == \
        ("uint16", 1000, 300, "nanogpt")
    assert ds.note == (f"note: {tmp_path} has no meta.json: read as a nanoGPT dataset folder (uint16 tokens, "
                       f"GPT-2 BPE with an end-of-text token after each document (no meta.pkl))")
    assert np.array_equal(ds.train.read(10, 500), train[10:510])
    assert np.array_equal(ds.val.rows([0, 7], 5), np.stack([val[0:5], val[7:12]]).astype(np.int64))


def test_nanogpt_char_folder_decodes_characters(tmp_path):
    chars, n = write_nanogpt_char_folder(tmp_path)
    ds = open_dataset(str(tmp_path))
    info = ds.meta["tokenizer"]
    assert (info["name"], info["vocab_size"], info["itos"]) == ("char", len(chars), chars)
    assert (ds.meta["train_tokens"], ds.meta["val_tokens"]) == (n, len(TEXT) - n)
    assert f"a character vocabulary of {len(chars)} from meta.pkl" in ds.note
    tok = load_tokenizer(info)
    assert tok.decode(ds.train.read(0, n)) == TEXT[:n]
    assert tok.encode("Speak") == [chars.index(c) for c in "Speak"]
    with pytest.raises(UserError, match=r"characters the dataset's vocabulary lacks \('Z', 'q'\)"):
        tok.encode("qZ")


def test_prompt_ids_start_a_document_for_every_tokenizer(tmp_path):
    write_nanogpt_char_folder(tmp_path)
    char = load_tokenizer(open_dataset(str(tmp_path)).meta["tokenizer"])
    byte = load_tokenizer("byte")
    assert prompt_ids(byte, "hi") == ([256, 104, 105], 1)  # after an end-of-text token, not printed
    assert prompt_ids(char, "All") == (char.encode("All"), 0)
    assert prompt_ids(char, "") == ([char.stoi["\n"]], 1)  # nanoGPT's sample.py starts from "\n"
    assert prompt_ids(CharTokenizer(["a", "b", "\n"]), "") == ([2], 1)
    assert prompt_ids(CharTokenizer(["a", "b"]), "") == ([0], 1)  # no newline: the first character


class WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling would create the file


def test_meta_pkl_that_would_run_code_is_refused_in_one_line(tmp_path):
    write_nanogpt_char_folder(tmp_path)
    victim = tmp_path / "created_by_pickle"
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 3, "itos": WritesAFile(str(victim))}, f)
    assert pickle.loads((tmp_path / "meta.pkl").read_bytes()) and victim.exists()  # the payload is real
    victim.unlink()
    with pytest.raises(UserError) as info:
        open_dataset(str(tmp_path))
    assert not victim.exists()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}/meta.pkl is not plain data (UnpicklingError: it refers to ")
    assert "io.open" in message or "builtins.open" in message


@pytest.mark.parametrize("content, why", [
    ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}, "x": 1.5}, "other things than"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}, "x": {1, 2}}, "other things than"),
    (["not", "a", "dict"], "other things than"),
    ({"vocab_size": 3, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}}, "is not a character vocabulary"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 1, "b": 0}}, "is not a character vocabulary"),
])
def test_meta_pkl_that_is_not_a_plain_character_vocabulary_is_one_line(tmp_path, content, why):
    write_nanogpt_char_folder(tmp_path)
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(UserError, match=why) as info:
        open_dataset(str(tmp_path))
    assert "\n" not in str(info.value)


def test_truncated_meta_pkl_is_one_line(tmp_path):
    write_nanogpt_char_folder(tmp_path)
    data = (tmp_path / "meta.pkl").read_bytes()
    (tmp_path / "meta.pkl").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match=r"meta.pkl is not plain data \((UnpicklingError|EOFError)"):
        read_meta_pkl(str(tmp_path / "meta.pkl"))


def test_an_unfinished_preparation_of_ours_is_not_taken_for_a_nanogpt_folder(tmp_path):
    np.zeros(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.zeros(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json.tmp").write_text("{}")
    with pytest.raises(UserError, match=r"meta.json not found: the preparation of .* did not finish "
                                        r"\(its meta.json.tmp is there\); run its prepare.py again"):
        open_dataset(str(tmp_path))
    with pytest.raises(UserError, match=r"meta.json not found: the dataset in .* is missing"):
        open_dataset(str(tmp_path / "nothing_here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"nanoGPT folder needs train.bin and val.bin"):
        open_dataset(str(tmp_path / "empty"))


def test_dataset_location():
    assert dataset_location("", "prose") == os.path.join("data", "prose")
    assert dataset_location("/x/y", "prose") == "/x/y"
    assert dataset_location("", "shards/fineweb_*.bin") == "shards/fineweb_*.bin"


# -----------------------------------------------------------------------------
# llm.c shards


def write_shards(folder, lengths=(700, 500), val_length=300, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    train = [rng.integers(0, 50257, n, dtype=np.uint16) for n in lengths]
    for i, tokens in enumerate(train):
        write_llmc_shard(os.path.join(folder, f"fineweb_train_{i + 1:06d}.bin"), tokens)
    val = rng.integers(0, 50257, val_length, dtype=np.uint16)
    write_llmc_shard(os.path.join(folder, "fineweb_val_000000.bin"), val)
    return np.concatenate(train), val


def test_llmc_shards_read_back_exactly_as_one_stream(tmp_path):
    train, val = write_shards(tmp_path / "fw")
    for location in (str(tmp_path / "fw"), str(tmp_path / "fw" / "fineweb_*.bin")):
        ds = open_dataset(location)
        assert (ds.meta["train_tokens"], ds.meta["val_tokens"], ds.meta["train_shards"]) == (1200, 300, 2)
        assert ds.meta["tokenizer"]["name"] == "gpt2" and ds.meta["format"] == "llm.c"
        assert np.array_equal(ds.train.read(0, 1200), train)
        assert np.array_equal(ds.train.read(690, 20), train[690:710])  # across the two shards
        assert np.array_equal(ds.val.read(0, 300), val)
        assert ds.note.startswith(f"note: {location}: llm.c shards, 2 train (1,200 tokens) and 1 val (300 tokens)")


def test_loader_over_shards_is_the_loader_over_their_concatenation(tmp_path):
    """The same exact-epoch, resumable batches as from one file holding the same tokens."""
    train, _ = write_shards(tmp_path / "fw", lengths=(333, 250, 417))
    train.tofile(tmp_path / "one.bin")
    sharded = open_dataset(str(tmp_path / "fw")).train
    dev = torch.device("cpu")

    def batches(file, n, state=None):
        loader = TrainLoader(file, 16, 4, 2, 0, 1, 7, "epoch", dev)
        if state:
            loader.load_state_dict(state)
        out = [loader.next_batch() for _ in range(n)]
        loader.close()
        return out, loader

    one, _ = batches(TokenFile(str(tmp_path / "one.bin"), "uint16"), 40)  # 40 x 4 windows: > 2 epochs of 62
    many, _ = batches(sharded, 40)
    for (x1, y1), (x2, y2) in zip(one, many):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # resumed after 10 iterations (20 micro-batches), it continues with the same batches
    first, loader = batches(sharded, 20)
    rest, _ = batches(sharded, 20, state=loader.state_dict())
    for (x1, _), (x2, _) in zip(many[20:], rest):
        assert torch.equal(x1, x2)
    assert np.array_equal(fixed_windows(sharded, 16, 5, 3), fixed_windows(TokenFile(str(tmp_path / "one.bin"), "uint16"), 16, 5, 3))


@pytest.mark.parametrize("damage, message", [
    (dict(magic=20240521), r"fineweb_val_000000.bin starts with 20240521, not the llm.c shard magic 20240520"),
    (dict(version=7), r"fineweb_val_000000.bin is llm.c shard version 7, not 1"),
    (dict(count=301), r"fineweb_val_000000.bin is 1624 bytes but its header says 301 tokens \(1626 bytes\)"),
    (dict(count=299), r"fineweb_val_000000.bin is 1624 bytes but its header says 299 tokens \(1622 bytes\)"),
    ("short", r"fineweb_val_000000.bin is 100 bytes, shorter than an llm.c shard's 1024-byte header"),
])
def test_a_bad_shard_header_is_one_line_naming_the_file(tmp_path, damage, message):
    write_shards(tmp_path)
    path = tmp_path / "fineweb_val_000000.bin"
    if damage == "short":
        path.write_bytes(path.read_bytes()[:100])
    else:
        write_llmc_shard(path, np.arange(300), **damage)
    with pytest.raises(UserError, match=message) as info:
        open_dataset(str(tmp_path))
    assert "\n" not in str(info.value)


def test_shards_of_one_split_only_are_one_line(tmp_path):
    write_shards(tmp_path)
    os.remove(tmp_path / "fineweb_val_000000.bin")
    with pytest.raises(UserError, match=r"has no val shard \(a .bin file named \*_val_\*"):
        open_dataset(str(tmp_path))


def test_our_own_folder_is_still_read_from_meta_json(tmp_path):
    np.arange(100, dtype=np.uint32).tofile(tmp_path / "train.bin")
    np.arange(50, dtype=np.uint32).tofile(tmp_path / "val.bin")
    meta = {"tokenizer": {"name": "byte", "vocab_size": 257, "eot_token": 256}, "dtype": "uint32",
            "train_tokens": 100, "val_tokens": 50}
    (tmp_path / "meta.json").write_text(__import__("json").dumps(meta))
    ds = open_dataset(str(tmp_path))
    assert ds.note is None and ds.meta == dict(meta, format="prepare.py")
    assert np.array_equal(ds.train.read(95, 5), np.arange(95, 100))


def test_opening_a_dataset_needs_no_torch():
    """diagnose/ never imports torch: the dataset facts must be readable without it."""
    code = "import sys, data_formats; assert 'torch' not in sys.modules, 'torch imported'"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
