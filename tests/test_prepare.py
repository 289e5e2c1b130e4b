"""data/fineweb_single/prepare.py on generated FineWeb-schema parquet files (CPU, offline)."""
import collections
import concurrent.futures
import gc
import hashlib
import json
import multiprocessing
import os
import pickle
import platform
import pstats
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import allocator
import tokenizer
from data.fineweb_single import output, prepare, sources, speedups, tokenize_worker
from errors import UserError
from facts import read_dataset_meta
from prepare_fixtures import FIXTURE_SPECIALS, fixture_texts, write_fineweb_parquet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_gpt2 = pytest.mark.skipif(tokenizer.cached_gpt2_ranks() is None,
                                reason="GPT-2 BPE ranks not cached here; run .ci/seed_tiktoken.sh to test them")
TEXTS = fixture_texts()
KEPT = [t for t in TEXTS if t and not t.isspace()]  # in input order, duplicates included


@pytest.fixture(scope="module")
def fixture_parquet(tmp_path_factory):
    return str(write_fineweb_parquet(str(tmp_path_factory.mktemp("src") / "000_00000.parquet"), TEXTS))


def run(inp, out_dir, *extra, workers=0, val_fraction="0.2"):
    argv = ["--input", *([inp] if isinstance(inp, str) else inp), "--out-dir", str(out_dir),
            "--workers", str(workers), *extra]
    if "--val-docs" not in extra:
        argv += ["--val-fraction", val_fraction]
    if "--tokenizer" not in extra:
        argv += ["--tokenizer", "byte"]
    prepare.main(argv)
    return read_dataset_meta(str(out_dir))


def documents(out_dir, split, tok=None, dtype=np.uint16):
    """Decode a .bin back into its documents (each starts with end-of-text)."""
    tok = tok or tokenizer.load_tokenizer("byte")
    ids = np.fromfile(os.path.join(out_dir, f"{split}.bin"), dtype=dtype)
    assert ids.size == 0 or ids[0] == tok.eot_token
    starts = np.flatnonzero(ids == tok.eot_token)
    return [tok.decode(ids[a + 1:b]) for a, b in zip(starts, list(starts[1:]) + [ids.size])]


def in_val(text, fraction):
    """The split rule, restated: blake2b-64 of the UTF-8 text below fraction * 2**64."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h < int(fraction * 2.0 ** 64)


# -----------------------------------------------------------------------------
# what the dataset holds

def test_bins_decode_back_to_the_documents_split_by_hash(fixture_parquet, tmp_path):
    meta = run(fixture_parquet, tmp_path)
    train, val = documents(tmp_path, "train"), documents(tmp_path, "val")
    assert train == [t for t in KEPT if not in_val(t, 0.2)]
    assert val == [t for t in KEPT if in_val(t, 0.2)]
    assert 20 < len(val) < 80 and not set(train) & set(val)  # identical texts share a split
    assert meta["train_docs"] == len(train) and meta["val_docs"] == len(val)
    assert meta["train_tokens"] == sum(len(t.encode()) + 1 for t in train)
    assert meta["val_tokens"] == sum(len(t.encode()) + 1 for t in val)
    assert meta["skipped"] == {"empty": FIXTURE_SPECIALS["empty"], "null": FIXTURE_SPECIALS["null"],
                               "duplicate": 0}
    assert meta["duplicates_found"] == FIXTURE_SPECIALS["duplicates"]
    assert meta["dedup"] is False and meta["dtype"] == "uint16" and meta["eot_position"] == "prepend"
    assert meta["tokenizer"] == {"name": "byte", "vocab_size": 257, "eot_token": 256, "eot_position": "prepend"}
    with open(fixture_parquet, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert meta["source"]["files"][0] | {"path": None} == {
        "name": "000_00000.parquet", "path": None, "kind": "parquet",
        "size": os.path.getsize(fixture_parquet), "sha256": sha}
    assert meta["source"]["text_column"] == "text" and meta["source"]["rows"] == len(TEXTS)
    assert meta["val_fraction"] == 0.2 and meta["split"]["method"] == "hash"
    # the rule meta.json states, followed to the letter, gives the same split
    rule = re.fullmatch(r"val when (.+) < threshold \(val_fraction \* 2\*\*64\)", meta["split"]["rule"])
    in_val_by_rule = [eval(rule[1], {"hashlib": hashlib, "text": t}) < meta["split"]["threshold"] for t in KEPT]
    assert [t for t, v in zip(KEPT, in_val_by_rule) if v] == val
    assert meta["prepare_version"] == 1 and meta["created"].endswith("+00:00")
    assert sorted(os.listdir(tmp_path)) == ["meta.json", "train.bin", "val.bin"]


def test_dedup_drops_exact_duplicates(fixture_parquet, tmp_path):
    meta = run(fixture_parquet, tmp_path, "--dedup")
    docs = documents(tmp_path, "train") + documents(tmp_path, "val")
    assert sorted(docs) == sorted(set(KEPT))
    assert meta["skipped"]["duplicate"] == meta["duplicates_found"] == FIXTURE_SPECIALS["duplicates"]
    assert meta["train_docs"] + meta["val_docs"] == len(KEPT) - FIXTURE_SPECIALS["duplicates"]


def test_seen_hashes_finds_exactly_the_repeats(monkeypatch):
    monkeypatch.setattr(prepare.SeenHashes, "merge_at", 50)  # exercise the merging too
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 400, 3000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    seen, marked = prepare.SeenHashes(), []
    for batch in np.array_split(stream, 37):
        marked += seen.check(batch).tolist()
    reference, first = [], set()
    for h in stream.tolist():
        reference.append(h in first)
        first.add(h)
    assert marked == reference and sum(reference) == 3000 - len(first)


def test_output_is_independent_of_workers_and_batch_size(fixture_parquet, tmp_path):
    outputs = []
    for workers, batch_rows in ((0, 1000), (1, 7), (3, 16)):
        out = tmp_path / f"w{workers}"
        run(fixture_parquet, out, "--batch-rows", str(batch_rows), workers=workers)
        # the workers are joined before prepare returns: `time` and wait4 count their CPU
        assert multiprocessing.active_children() == []
        outputs.append([(out / f"{s}.bin").read_bytes() for s in ("train", "val")])
    assert outputs[0] == outputs[1] == outputs[2]


def test_forked_workers_return_tokens_through_shared_slots(fixture_parquet, tmp_path, monkeypatch):
    # each batch's tokens come back in a slot of shared memory, not pickled; many more batches
    # than slots (5 for 2 workers), so a slot reused too early would corrupt the output
    returned = []
    real_get = speedups.TokenSlots.get
    monkeypatch.setattr(speedups.TokenSlots, "get",
                        lambda self, tokens: returned.append(type(tokens)) or real_get(self, tokens))
    expected = {}
    for dtype in ("uint16", "uint32"):
        run(fixture_parquet, tmp_path / f"w0_{dtype}", "--dtype", dtype)
        expected[dtype] = [(tmp_path / f"w0_{dtype}" / f"{s}.bin").read_bytes() for s in ("train", "val")]
    assert returned == []  # no slots without worker processes

    def prepared(name, slot_bytes, dtype="uint16"):
        returned.clear()
        monkeypatch.setattr(speedups.TokenSlots, "slot_bytes", slot_bytes)
        run(fixture_parquet, tmp_path / name, "--batch-rows", "5", "--dtype", dtype, workers=2)
        assert [(tmp_path / name / f"{s}.bin").read_bytes() for s in ("train", "val")] == expected[dtype]
        assert speedups._token_slots is None  # not left shared for later forks
        return collections.Counter(t.__name__ for t in returned)

    assert prepared("slots", 8 << 20) == {"InSlot": 54}
    assert prepared("slots_u4", 8 << 20, "uint32") == {"InSlot": 54}
    # batches too large for their slot come back pickled, in their place among the others
    mixed = prepared("mixed", 2048)
    assert mixed["InSlot"] > 10 and mixed["ndarray"] > 10 and sum(mixed.values()) == 54

    def no_shared_memory(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(speedups.mmap, "mmap", no_shared_memory)
    assert prepared("no_slots", 8 << 20) == {}  # all pickled, the same output


def test_parquet_tasks_name_small_row_groups_and_stream_large_ones(fixture_parquet, tmp_path):
    # row groups of 5, 130, 40, 40, 40 and 1 rows: with --batch-rows 100, consecutive groups
    # of up to 100 rows in all go to a worker by number; the 130-row group is read here, in batches
    path = str(tmp_path / "mixed.parquet")
    sizes = [5, 130, 40, 40, 40, 1]
    assert sum(sizes) == len(TEXTS)
    with pq.ParquetWriter(path, pq.read_schema(fixture_parquet)) as writer:
        start = 0
        for n in sizes:
            writer.write_table(pq.read_table(fixture_parquet).slice(start, n))
            start += n
    tasks = [(first, type(texts).__name__, len(texts), getattr(texts, "groups", None))
             for first, texts in prepare.Source(path, "text").batches(100)]
    assert tasks == [(0, "ParquetRows", 5, [0]), (5, "StringArray", 100, None), (105, "StringArray", 30, None),
                     (135, "ParquetRows", 80, [2, 3]), (215, "ParquetRows", 41, [4, 5])]
    # the last batches are cut in halves (so that the workers finish together): the same rows,
    # and a part of an Arrow array is sent with its own rows only, not its parent's
    source = prepare.Source(path, "text")
    parts = list(prepare.batch_tasks([source], 100, split_last=3))
    assert [(first, type(texts).__name__, len(texts)) for texts, (_, first) in parts] == [
        (0, "ParquetRows", 5), (5, "StringArray", 100), (105, "StringArray", 15), (120, "StringArray", 15),
        (135, "ParquetRows", 40), (175, "ParquetRows", 40), (215, "ParquetRows", 21), (236, "ParquetRows", 20)]
    rows = [text for texts, (_, first) in parts for text in sources.texts_of(texts, path, first)]
    assert rows == pq.read_table(path).column("text").to_pylist()
    whole = list(prepare.Source(path, "text").batches(100))[2][1]
    assert len(pickle.dumps(parts[2][0])) < 0.7 * len(pickle.dumps(whole))
    reference = tmp_path / "reference"
    run(fixture_parquet, reference)
    for workers, batch_rows in ((0, 100), (2, 100), (2, 1024)):
        out = tmp_path / f"w{workers}b{batch_rows}"
        run(path, out, "--batch-rows", str(batch_rows), workers=workers)
        for split in ("train", "val"):
            assert (out / f"{split}.bin").read_bytes() == (reference / f"{split}.bin").read_bytes()


def test_uint32_output(fixture_parquet, tmp_path):
    meta = run(fixture_parquet, tmp_path, "--dtype", "uint32")
    assert meta["dtype"] == "uint32"
    assert os.path.getsize(tmp_path / "train.bin") == 4 * meta["train_tokens"]
    assert documents(tmp_path, "train", dtype="<u4") == [t for t in KEPT if not in_val(t, 0.2)]
    assert prepare.token_dtype(100_000) == np.dtype("<u4") and prepare.token_dtype(65_536) == np.dtype("<u2")
    with pytest.raises(UserError, match="--dtype uint16 cannot hold the 100000 token ids"):
        prepare.token_dtype(100_000, "uint16")


def text_hash(text):
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def test_val_docs_gives_exactly_that_many_distinct_texts(fixture_parquet, tmp_path):
    distinct = sorted(set(KEPT), key=text_hash)
    for workers, dedup in ((0, "--dedup"), (2, "--dedup"), (2, "--batch-rows=7")):
        out = tmp_path / f"{workers}{dedup}"
        meta = run(fixture_parquet, out, "--val-docs", "50", dedup, workers=workers)
        val = documents(out, "val")
        assert sorted(set(val)) == sorted(distinct[:50])  # the 50 smallest hashes, the rule restated
        assert meta["split"]["threshold"] == text_hash(distinct[50]) and meta["val_docs_requested"] == 50
        assert meta["val_docs"] == len(val) == (50 if dedup == "--dedup" else len([t for t in KEPT if t in val]))
        assert set(documents(out, "train")) == set(distinct[50:])
    # without --dedup the copies of a val text are in val too: so more than 50 documents here
    copies = [t for t in KEPT if text_hash(t) < text_hash(distinct[50])]
    assert meta["val_docs"] == len(copies) >= 50


def test_a_val_docs_too_large_fails_before_an_old_dataset_is_touched(fixture_parquet, tmp_path):
    run(fixture_parquet, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("meta.json", "train.bin", "val.bin")}
    n = len(set(KEPT))
    with pytest.raises(UserError, match=f"--val-docs {n} but the input has only {n} distinct non-empty "
                                        f"documents, and training needs some; ask for fewer"):
        run(fixture_parquet, tmp_path, "--val-docs", str(n), "--force")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert read_dataset_meta(str(tmp_path))["val_fraction"] == 0.2


@needs_gpt2
def test_gpt2_tokens_are_the_ordinary_encoding_of_each_document(fixture_parquet, tmp_path):
    meta = run(fixture_parquet, tmp_path, "--tokenizer", "gpt2", workers=2)
    tok = tokenizer.load_tokenizer(meta["tokenizer"])
    assert meta["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256, "eot_position": "prepend"}
    train = [t for t in KEPT if not in_val(t, 0.2)]
    expected = np.concatenate([[50256] + tok.encode(t) for t in train]).astype(np.uint16)
    assert np.array_equal(np.fromfile(tmp_path / "train.bin", dtype=np.uint16), expected)
    assert documents(tmp_path, "val", tok) == [t for t in KEPT if in_val(t, 0.2)]


def test_text_and_jsonl_inputs_and_folders(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first document\nwith two lines\n<|endoftext|>\nsecond\n<|endoftext|>\n\n")
    (src / "b.jsonl").write_text('{"text": "from json \\u00e9"}\n\n{"text": null}\n{"text": "again"}\n')
    (src / "notes.md").write_text("ignored: not an input type")
    meta = run(str(src), tmp_path / "out", val_fraction="0.5")
    docs = documents(tmp_path / "out", "train") + documents(tmp_path / "out", "val")
    assert sorted(docs) == sorted(["first document\nwith two lines", "second", "from json é", "again"])
    assert meta["skipped"] == {"empty": 1, "null": 1, "duplicate": 0}
    assert [f["name"] for f in meta["source"]["files"]] == ["a.txt", "b.jsonl"]


def test_demo_builds_from_pythons_docs_and_reruns_quickly(tmp_path, capsys):
    out = tmp_path / "demo"
    prepare.main(["--demo", "--out-dir", str(out), "--workers", "0"])
    meta = read_dataset_meta(str(out))
    assert meta["tokenizer"]["name"] == "byte" and meta["source"]["files"][0]["name"] == "pydoc_topics.parquet"
    assert pq.read_schema(out / "source" / "pydoc_topics.parquet").names == [
        "text", "id", "dump", "url", "date", "file_path", "language", "language_score", "token_count"]
    assert meta["train_tokens"] > 400_000 and meta["val_docs"] >= 10 and meta["val_tokens"] > 10_000
    stamp = os.path.getmtime(out / "meta.json")
    prepare.main(["--demo", "--out-dir", str(out)])
    assert "already prepared" in capsys.readouterr().out and os.path.getmtime(out / "meta.json") == stamp


# -----------------------------------------------------------------------------
# never a half-written dataset

KILL_AT_THIRD_WRITE = """
import os, signal, sys
sys.path.insert(0, {root!r})
from data.fineweb_single import prepare
calls = []
real_write, real_init = prepare.DatasetWriter.write, prepare.init_worker

def write(self, split, tokens):
    calls.append(split)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(self, split, tokens)

def init_worker(*args, **kwargs):
    open(os.path.join({pid_dir!r}, str(os.getpid())), "w").close()
    real_init(*args, **kwargs)

prepare.DatasetWriter.write, prepare.init_worker = write, init_worker
prepare.main({argv!r})
"""


def kill_midway(argv, pid_dir):
    """Run prepare.main(argv) in a fresh Python that SIGKILLs itself at its 3rd write; its
    worker processes, if any, leave their pids in pid_dir. Returns the exit code."""
    script = KILL_AT_THIRD_WRITE.format(root=ROOT, pid_dir=str(pid_dir), argv=argv)
    # no pipes: workers left behind would hold them open, and run() would wait for them
    return subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=120).returncode


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"  # a zombie has exited
    except OSError:
        return False


def test_killed_run_leaves_no_meta_and_a_rerun_starts_clean(fixture_parquet, tmp_path):
    reference = tmp_path / "reference"
    run(fixture_parquet, reference, "--batch-rows", "16")
    out = tmp_path / "out"
    argv = ["--input", fixture_parquet, "--out-dir", str(out), "--tokenizer", "byte", "--workers", "0",
            "--val-fraction", "0.2", "--batch-rows", "16"]
    assert kill_midway(argv, tmp_path) == -signal.SIGKILL
    assert not (out / "meta.json").exists() and (out / "train.bin.tmp").exists()
    with pytest.raises(UserError, match="preparation did not finish"):
        read_dataset_meta(str(out))
    run(fixture_parquet, out, "--batch-rows", "16")
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]
    assert (out / "train.bin").read_bytes() == (reference / "train.bin").read_bytes()
    # --force on a complete dataset: meta.json goes first, so a killed rebuild is unfinished too;
    # and the worker processes of a killed run do not linger
    pids = tmp_path / "pids"
    pids.mkdir()
    assert kill_midway(argv + ["--force", "--workers", "2"], pids) == -signal.SIGKILL
    assert not (out / "meta.json").exists()
    workers = [int(p) for p in os.listdir(pids)]
    assert len(workers) == 2
    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    lingering = [p for p in workers if alive(p)]
    for pid in lingering:  # do not leave them to the machine
        os.kill(pid, signal.SIGKILL)
    assert not lingering


def test_complete_dataset_is_kept_unless_forced(fixture_parquet, tmp_path, capsys):
    run(fixture_parquet, tmp_path)
    stamp = os.path.getmtime(tmp_path / "meta.json")
    run(fixture_parquet, tmp_path)  # same input and settings: nothing to do
    assert "already prepared from the same input" in capsys.readouterr().out
    assert os.path.getmtime(tmp_path / "meta.json") == stamp
    with pytest.raises(UserError, match="holds a dataset prepared from other input or settings; pass --force"):
        run(fixture_parquet, tmp_path, "--dedup")
    assert run(fixture_parquet, tmp_path, "--dedup", "--force")["dedup"] is True
    # a meta.json that does not match its .bin files makes the folder unfinished again
    with open(tmp_path / "val.bin", "ab") as f:
        f.write(b"\0\0")
    capsys.readouterr()
    assert run(fixture_parquet, tmp_path, "--dedup")["dedup"] is True
    assert "val.bin has" in capsys.readouterr().err.split("preparing the dataset again")[0]


def test_at_most_a_window_of_batches_is_read_ahead(fixture_parquet):
    prepare.init_worker("byte", None, ignore_sigint=False)
    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield [f"doc {i}"], ("x", i), np.dtype("<u2")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = prepare.ordered_results(pool, tasks(), workers=2)  # a window of 5
        next(results)
        assert len(pulled) == 5
        assert [r[1][0].tolist() for r in results][-1] == [256] + list(b"doc 39")


# -----------------------------------------------------------------------------
# bad input: one line naming the problem and the fix, and no dataset marked complete

def invalid_utf8_parquet(path):
    data, offsets = b"fine" + b"caf\xe9" + b"ok", np.array([0, 4, 8, 10], dtype=np.int32)
    column = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
    pq.write_table(pa.table({"text": column}), path)


def bad_inputs(tmp_path, good):
    with open(good, "rb") as f:
        data = f.read()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "csv.parquet").write_text("text,id\nhello,1\n")
    (tmp_path / "corrupt.parquet").write_bytes(data[:4] + b"\xff" * 200 + data[204:])
    invalid_utf8_parquet(str(tmp_path / "latin1.parquet"))
    (tmp_path / "latin1.txt").write_bytes(b"line one\ncaf\xe9\n")
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"text": "unterminated\n')
    (tmp_path / "fields.jsonl").write_text('{"content": "x", "url": "u"}\n')
    (tmp_path / "data.csv").write_text("text\nhello\n")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "tiny.parquet").write_bytes(b"")
    write_fineweb_parquet(str(tmp_path / "tiny.parquet"), ["one", "two", "three"])
    return [
        ([str(tmp_path / "missing.parquet")], r"missing\.parquet not found; give an existing .parquet"),
        ([str(tmp_path / "truncated.parquet")], r"truncated\.parquet is not a readable parquet file, or it "
                                                r"is truncated \(Parquet magic bytes not found in footer\)"),
        ([str(tmp_path / "csv.parquet")], r"csv\.parquet is not a readable parquet file"),
        ([str(tmp_path / "corrupt.parquet")], r"corrupt\.parquet is corrupt near row 0 \(.*\); download it again"),
        ([good, "--text-column", "content"], r"has no column 'content'; its columns are text, id, dump, url, "
                                             r"date, file_path, language, language_score, token_count; "
                                             r"pass --text-column NAME"),
        ([good, "--text-column", "language_score"], r"column 'language_score' of .* holds double, not text"),
        ([str(tmp_path / "latin1.parquet")], r"latin1\.parquet row 1: the text is not valid UTF-8"),
        ([str(tmp_path / "latin1.txt")], r"latin1\.txt line 2: invalid UTF-8 \(byte 0xe9\); convert the file"),
        ([str(tmp_path / "broken.jsonl")], r"broken\.jsonl line 2 is not JSON"),
        ([str(tmp_path / "fields.jsonl")], r"fields\.jsonl line 1 has no field 'text'; its fields are "
                                           r"content, url; pass --text-column NAME"),
        ([str(tmp_path / "data.csv")], r"data\.csv: unsupported file type; give \.parquet"),
        ([str(tmp_path / "empty_dir")], r"no \.parquet, \.jsonl or \.txt files in the folder"),
        ([str(tmp_path / "nothing*.parquet")], r"no file matches .*nothing\*\.parquet"),
        ([str(tmp_path / "tiny.parquet"), "--val-fraction", "0.0005"],
         r"--val-fraction 0\.0005 of 3 documents leaves the validation split empty"),
        ([str(tmp_path / "tiny.parquet"), "--val-docs", "3"],
         r"--val-docs 3 but the input has only 3 distinct non-empty documents"),
    ]


def test_bad_inputs_get_one_line_errors_and_no_dataset(fixture_parquet, tmp_path):
    for i, (args, pattern) in enumerate(bad_inputs(tmp_path, fixture_parquet)):
        out = tmp_path / f"out{i}"
        argv = ["--input", *args, "--out-dir", str(out), "--workers", "0", "--tokenizer", "byte"]
        if "--val-fraction" not in args and "--val-docs" not in args:
            argv += ["--val-fraction", "0.5"]
        with pytest.raises(UserError, match=pattern) as info:
            prepare.main(argv)
        assert "\n" not in str(info.value), args
        assert not (out / "meta.json").exists() and not list(out.glob("*.tmp")) if out.exists() else True


def test_an_out_dir_that_is_a_file_or_holds_folders_by_the_dataset_names_is_refused(fixture_parquet, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match=r"--out-dir .*a_file is a file, not a folder"):
        prepare.main(["--demo", "--out-dir", str(tmp_path / "a_file")])
    for name in ("train.bin", "val.bin.tmp", "meta.json"):
        out = tmp_path / name.replace(".", "_")
        (out / name).mkdir(parents=True)
        for argv in (["--demo"], ["--input", fixture_parquet, "--tokenizer", "byte", "--workers", "0"]):
            with pytest.raises(UserError, match=f"{re.escape(name)} is a folder, where the dataset writes a file; "
                                                "move it away or give another --out-dir"):
                prepare.main(argv + ["--out-dir", str(out)])
        assert sorted(os.listdir(out)) == [name]  # nothing written


def test_bad_command_lines_are_one_line_user_errors():
    for argv, pattern in (([], "nothing to prepare: give --input PATH"),
                          (["--demo", "--input", "x.parquet"], "give --input or --demo, not both"),
                          (["--demo", "--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
                          (["--demo", "--bogus"], "unrecognized arguments: --bogus; see python .*--help")):
        with pytest.raises(UserError, match=pattern):
            prepare.main(argv)


def test_bad_text_found_by_a_worker_aborts_cleanly(fixture_parquet, tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "lone \\ud800 surrogate"}\n')
    with pytest.raises(UserError, match=r"surrogate\.jsonl row 1: the text is not valid UTF-8"):
        run(str(path), tmp_path / "out", workers=1, val_fraction="0.5")
    assert os.listdir(tmp_path / "out") == []
    # parquet row groups are read by the workers themselves: damage is reported all the same,
    # whether a worker reads the row group or the main process streams it (--batch-rows 16)
    data = open(fixture_parquet, "rb").read()
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(data[:4] + b"\xff" * 200 + data[204:])
    for batch_rows in ("1024", "16"):
        with pytest.raises(UserError, match=r"corrupt\.parquet is corrupt near row 0 \(.*\); download it again"):
            run(str(corrupt), tmp_path / "out2", "--batch-rows", batch_rows, workers=1)
        assert os.listdir(tmp_path / "out2") == []


def test_command_line_error_is_one_line_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "data", "fineweb_single", "prepare.py"),
                          "--input", str(tmp_path / "nope.parquet"), "--out-dir", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


def as_jsonl_and_txt(tmp_path, texts):
    """The same documents as a .jsonl and a .txt file (the .txt cannot hold null or blank ones)."""
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    kept = [t for t in texts if t and not t.isspace() and "<|endoftext|>" not in t]
    (tmp_path / "docs.txt").write_text("\n<|endoftext|>\n".join(t.strip("\r\n") for t in kept) + "\n")
    return str(tmp_path / "docs.jsonl"), str(tmp_path / "docs.txt")


def test_progress_bar_shows_documents_per_second_tokens_per_second_and_eta(fixture_parquet, tmp_path):
    jsonl, txt = as_jsonl_and_txt(tmp_path, TEXTS)
    for path in (fixture_parquet, jsonl, txt):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "data", "fineweb_single", "prepare.py"),
                              "--input", path, "--out-dir", str(tmp_path / "o"), "--tokenizer", "byte",
                              "--workers", "1", "--val-fraction", "0.2", "--batch-rows", "16", "--force"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        final = out.stderr.replace("\r", "\n").strip().splitlines()[-1]  # the bar as left at the end
        # e.g. "tokenizing: 100%|██████████| 230/230 [00:00<00:00, 1.15kdoc/s, 127k tok/s]"
        rows = read_dataset_meta(str(tmp_path / "o"))["source"]["rows"]
        assert re.fullmatch(rf"tokenizing: 100%\|\S+\| {rows}/{rows} \[\d\d:\d\d<00:00, +[\d.]+k?doc/s, "
                            rf"[\d.]+[kM]? tok/s\]", final.strip()), (path, final)


def test_progress_total_is_estimated_from_the_bytes_read_when_rows_are_unknown(tmp_path, monkeypatch):
    texts = [f"document {i} " + "word " * (i % 50) for i in range(2000)]
    jsonl, _ = as_jsonl_and_txt(tmp_path, texts)
    totals, closed = [], []

    class Bar(prepare.tqdm):
        def update(self, n=1):
            totals.append(self.total)
            return super().update(n)

        def close(self):
            closed.append((self.n, self.total))
            return super().close()
    monkeypatch.setattr(prepare, "tqdm", Bar)
    run(jsonl, tmp_path / "o", "--batch-rows", "100")
    # estimated from the first batch on (so the bar has an ETA), within the spread of the
    # documents' lengths, and exact at the end
    assert len(totals) == 20 and all(abs(t - 2000) <= 50 for t in totals), totals
    assert totals[0] != 2000 and closed[0] == (2000, 2000)


def test_workers_run_under_a_profiler_and_with_spawn(fixture_parquet, tmp_path, monkeypatch):
    """The pool pickles its functions by an importable name, whatever started prepare.py: under
    cProfile the script's own module is not __main__ (a worker used to wait forever), and spawn
    (macOS, Windows) starts each worker from scratch."""
    reference = run(fixture_parquet, tmp_path / "reference")
    out = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "prof"),
                          os.path.join(ROOT, "data", "fineweb_single", "prepare.py"), "--input", fixture_parquet,
                          "--out-dir", str(tmp_path / "profiled"), "--tokenizer", "byte", "--workers", "2",
                          "--val-fraction", "0.2", "--batch-rows", "16"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the profile is written (prepare.py ends with os._exit, except under a profiler)
    assert "write_batch" in {name for _, _, name in pstats.Stats(str(tmp_path / "prof")).stats}
    monkeypatch.setattr(prepare, "start_method", lambda: "spawn")
    run(fixture_parquet, tmp_path / "spawned", "--batch-rows", "16", workers=2)
    for name in ("profiled", "spawned"):
        assert (tmp_path / name / "train.bin").read_bytes() == (tmp_path / "reference" / "train.bin").read_bytes()
        assert read_dataset_meta(str(tmp_path / name))["train_tokens"] == reference["train_tokens"]


def test_workers_keep_freed_memory_for_reuse_under_glibc(monkeypatch):
    # prepare.py sets glibc's malloc to reuse freed batch buffers (fewer page faults); on
    # other C libraries the call is a no-op that says so
    glibc = platform.libc_ver()[0] == "glibc"
    assert speedups.tune_allocator() is glibc
    assert (pa.default_memory_pool().backend_name == "system") is glibc  # Arrow's reads reuse it too

    # elsewhere it changes nothing and says so: no mallopt (macOS), no CDLL(None) (Windows)
    for libc in (lambda name: object(), lambda name: (_ for _ in ()).throw(TypeError("expected str"))):
        monkeypatch.setattr(allocator.ctypes, "CDLL", libc)
        monkeypatch.setattr(speedups.pa, "set_memory_pool", lambda pool: pytest.fail("pool changed"))
        assert speedups.tune_allocator() is False


def test_worker_processes_freeze_what_they_inherit(monkeypatch):
    # a worker's garbage collections skip the tokenizer and modules inherited from the main process
    with prepare.worker_pool(1, "byte", None) as pool:
        assert pool.submit(gc.get_freeze_count).result() > 10_000
    assert gc.get_freeze_count() == 0  # not this process
    monkeypatch.setattr(speedups, "ON", False)
    with prepare.worker_pool(1, "byte", None) as pool:
        assert pool.submit(gc.get_freeze_count).result() == 0


PLAIN_CHILD = """
import os, sys
sys.path.insert(0, {root!r})
from data.fineweb_single import speedups, prepare
prepare.main({argv!r})
print("tricks", speedups.ON, "tail_splits", speedups.tail_splits(2), "allocator", speedups.tune_allocator(),
      "slots", speedups.token_slots(5, "uint16", forked=True) is not None)
"""


@pytest.mark.parametrize("plain", ["--plain", "PREPARE_PLAIN=1"])
def test_the_plain_pipeline_writes_the_same_bytes_without_any_speed_trick(fixture_parquet, tmp_path, plain):
    """--plain and PREPARE_PLAIN=1 switch every trick of speedups.py off; the output is the same."""
    def prepared(name, *extra, env=None):
        argv = ["--input", fixture_parquet, "--out-dir", str(tmp_path / name), "--tokenizer", "byte",
                "--workers", "2", "--val-fraction", "0.2", "--batch-rows", "16", *extra]
        p = subprocess.run([sys.executable, "-c", PLAIN_CHILD.format(root=ROOT, argv=argv)], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, **(env or {})))
        assert p.returncode == 0, p.stderr
        return [(tmp_path / name / f"{s}.bin").read_bytes() for s in ("train", "val")], p.stdout.splitlines()[-1]

    fast, tricks = prepared("fast")
    slow, none = (prepared("plain", "--plain") if plain == "--plain" else
                  prepared("plain", env={"PREPARE_PLAIN": "1"}))
    assert fast == slow and len(fast[0]) > 10_000
    assert tricks == f"tricks True tail_splits 2 allocator {platform.libc_ver()[0] == 'glibc'} slots True"
    assert none == "tricks False tail_splits 0 allocator False slots False"


def test_writer_syncs_as_it_writes_and_deletes_the_replaced_dataset_before_renaming(tmp_path, monkeypatch):
    # the data goes to disk every sync_every bytes while tokenizing, in a thread, and the old
    # dataset's files are deleted in another; finish() waits for both before its renames
    for split in output.SPLITS:
        (tmp_path / f"{split}.bin").write_bytes(b"old")
    synced, real_fsync, real_remove = [], os.fsync, os.remove

    def fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    def slow_remove(path):
        time.sleep(0.3)  # still deleting when finish() starts: it must wait
        real_remove(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "remove", slow_remove)
    writer = output.DatasetWriter(str(tmp_path))
    writer.sync_every = 1000
    writer.discard_replaced()
    tokens = np.arange(600, dtype=np.uint16)  # 1200 bytes: a sync after each write
    for _ in range(3):
        writer.write("train", tokens)
        writer.threads["sync"].join()  # so that the next write starts one more
    writer.write("val", tokens[:10])
    assert synced == [os.stat(tmp_path / "train.bin.tmp").st_ino] * 3  # before finish(), train only
    writer.finish({"done": True})
    writer.join_threads()  # had a deletion been left running, it would now have hit the new files
    assert (tmp_path / "train.bin").read_bytes() == np.tile(tokens, 3).tobytes()
    assert (tmp_path / "val.bin").read_bytes() == tokens[:10].tobytes()
    assert sorted(os.listdir(tmp_path)) == ["meta.json", "train.bin", "val.bin"]

    # an aborted run waits for its threads too, and leaves no temporaries
    writer = output.DatasetWriter(str(tmp_path))
    writer.discard_replaced()
    writer.abort()
    assert sorted(os.listdir(tmp_path)) == ["meta.json"]


# -----------------------------------------------------------------------------
# a full disk: one line, nothing left behind, an existing dataset untouched

FILE_SIZE_LIMITED = """
import resource, signal, sys
sys.path.insert(0, {root!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from errors import exit_on_user_error
from data.fineweb_single import prepare
exit_on_user_error(lambda: prepare.main({argv!r}))
"""


def test_a_file_size_limit_mid_write_is_one_line_and_leaves_no_dataset(fixture_parquet, tmp_path):
    full = run(fixture_parquet, tmp_path / "full", "--batch-rows", "16")
    out = tmp_path / "out"
    argv = ["--input", fixture_parquet, "--out-dir", str(out), "--tokenizer", "byte", "--workers", "0",
            "--val-fraction", "0.2", "--batch-rows", "16"]
    limit = full["train_tokens"]  # bytes: half of train.bin's 2 bytes per token
    p = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED.format(root=ROOT, limit=limit, argv=argv)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith("tokenizing")]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert re.fullmatch(rf"error: writing {re.escape(str(out))}/train.bin.tmp failed \(File too large\) after "
                        r"[\d.]+ kB: the dataset needs about ([\d.]+) kB and [\d,.]+ [kMG]B is free; free some "
                        r"space or give another --out-dir \(nothing was kept\)", lines[0]), lines[0]
    needed = float(re.search(r"needs about ([\d.]+) kB", lines[0]).group(1)) * 1e3
    actual = 2 * (full["train_tokens"] + full["val_tokens"])
    assert 0.7 * actual < needed < 1.3 * actual  # extrapolated from the share of the input read
    assert os.listdir(out) == []  # no meta.json, no temporaries


def test_a_full_filesystem_is_one_line_and_an_existing_dataset_stays(fixture_parquet, tmp_path, small_filesystem):
    full = run(fixture_parquet, tmp_path / "full", "--batch-rows", "16")
    actual = 2 * (full["train_tokens"] + full["val_tokens"])
    least = 2 * os.path.getsize(fixture_parquet)  # output.least_output_bytes for byte tokens of a parquet
    assert least < actual  # the text is larger than its compressed parquet
    # room for the lower-bound estimate but not for the dataset: the disk fills while writing
    fs = small_filesystem((least + actual) // 2 // 4096 * 4096)
    with pytest.raises(UserError, match=r"writing .*\.bin\.tmp failed \(No space left on device\) after .* "
                                        r"the dataset needs about") as info:
        run(fixture_parquet, fs / "out", "--batch-rows", "16")
    assert "\n" not in str(info.value) and os.listdir(fs / "out") == []
    # too small even by the estimate: refused before anything is touched, the old dataset kept
    fs = small_filesystem(least // 2 // 4096 * 4096)
    small_text = tmp_path / "small.txt"
    small_text.write_text("".join(f"document {i}, a few words\n<|endoftext|>\n" for i in range(50)))
    run(str(small_text), fs / "data", val_fraction="0.5")
    before = {name: (fs / "data" / name).read_bytes() for name in os.listdir(fs / "data")}
    with pytest.raises(UserError, match=rf"{re.escape(str(fs / 'data'))} has [\d.]+ kB free \(\+[\d.]+ kB of the "
                                        r"dataset replaced\) but the dataset needs at least [\d.]+ kB; free some "
                                        r"space or give another --out-dir"):
        run(fixture_parquet, fs / "data", "--force")
    assert {name: (fs / "data" / name).read_bytes() for name in os.listdir(fs / "data")} == before
