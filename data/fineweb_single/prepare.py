"""
Prepare one FineWeb parquet file (or several, or your own .jsonl / .txt) for training:

    python data/fineweb_single/prepare.py --input 000_00000.parquet      # -> data/fineweb_single/
    python data/fineweb_single/prepare.py --demo                         # embedded corpus -> data/demo/

writes train.bin and val.bin (token ids, little-endian uint16, or uint32 when the vocabulary
needs it; each document after an end-of-text token) and meta.json, which says what was made.

How it works: the input is cut into tasks of at most --batch-rows documents (never the whole
file in memory); a pool of --workers processes tokenizes them, and the main process writes the
results in input order, so the output does not depend on the number of workers. A parquet
task names whole row groups (FineWeb's hold 1000 rows), which the worker reads and decodes
itself: the text never passes through the main process, which only routes and writes tokens
(which forked workers put in shared memory rather than pickle). The speed tricks live in
speedups.py, behind one switch: --plain (or PREPARE_PLAIN=1) turns them all off, same output.
A document goes to the validation split when the 64-bit blake2b hash of its text falls below a
threshold: val_fraction * 2^64, or with --val-docs N the hash that comes after the N smallest (a
first pass hashes every document, so val.bin gets exactly N distinct texts). The split is the
same on every rerun and whatever the worker count, and identical texts always land in the same split. Exact duplicates (same hash) are counted, and dropped with --dedup.
The .bin files are written under temporary names and renamed at the end, meta.json last, so
a folder without meta.json is an unfinished preparation. A dataset being replaced (--force)
stops being one once the input has been checked: its meta.json goes first, and its .bin
files are deleted while the new ones are written.
"""
import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# no BLAS here: numpy's OpenBLAS would start a thread per core that spins for ~0.1 s, taking
# the CPU the tokenizing workers start on
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.fineweb_single import demo_corpus  # noqa: E402
from data.fineweb_single.output import (  # noqa: E402
    DatasetWriter, check_free_space, check_out_dir, dataset_meta, least_output_bytes, token_dtype)
from data.fineweb_single.sources import FileHasher, Source, find_input_files  # noqa: E402
from data.fineweb_single import speedups  # noqa: E402
from data.fineweb_single.tokenize_worker import hash_batch, init_worker, tokenize_batch  # noqa: E402
from cpu_load import usable_cores  # noqa: E402
from errors import UserError, exit_on_user_error  # noqa: E402
from facts import read_dataset_meta  # noqa: E402
from tokenizer import TOKENIZERS, GPT2RanksError, load_tokenizer  # noqa: E402

# no tqdm monitor thread: worker processes are forked, and forking a process while another of
# its threads holds a lock can deadlock the child
tqdm.monitor_interval = 0

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_DIR = os.path.join(ROOT, "data", "demo")
DEMO_VAL_FRACTION = 0.08  # ~20 of the demo's ~340 documents, ~5% of its text: a steady val loss


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other user error
        raise UserError(f"{message}; see python {os.path.relpath(__file__)} --help")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", metavar="PATH",
                   help="parquet file(s) (FineWeb), .jsonl or .txt files, folders or globs")
    p.add_argument("--demo", action="store_true",
                   help="prepare the embedded corpus (CPython's documentation) into data/demo/, offline")
    p.add_argument("--out-dir", help="dataset folder (default: this script's folder; data/demo/ with --demo)")
    p.add_argument("--text-column", default="text", help="column (or JSON field) holding the text")
    p.add_argument("--tokenizer", choices=TOKENIZERS, help="gpt2 (default) or byte (offline, default with --demo)")
    p.add_argument("--bpe-file", metavar="PATH", help="a local GPT-2 ranks file (gpt2.tiktoken / r50k_base.tiktoken)")
    p.add_argument("--workers", type=int, default=usable_cores(),
                   help="tokenizing processes (default: all cores; 0 = in this process)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, help="share of documents in val.bin (default 0.0005)")
    split.add_argument("--val-docs", type=int,
                       help="exactly this many distinct documents in val.bin instead (one more pass to hash them)")
    p.add_argument("--dedup", action="store_true", help="drop exact duplicate documents (always counted)")
    p.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto",
                   help="token id type in the .bin files (auto: uint16 when the vocabulary fits)")
    p.add_argument("--batch-rows", type=int, default=1024,
                   help="documents per tokenizing task, at most (parquet row groups up to this size "
                        "are read by the workers themselves)")
    p.add_argument("--plain", action="store_true",
                   help="without the speed tricks of speedups.py (the same output, a few %% slower)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing complete dataset (deleted once the input has been checked)")
    args = p.parse_args(argv)
    if args.demo and args.input:
        p.error("give --input or --demo, not both")
    if not args.demo and not args.input:
        p.error("nothing to prepare: give --input PATH (a FineWeb parquet file, say) or --demo")
    if args.workers < 0 or args.batch_rows < 1:
        p.error("--workers must be >= 0 and --batch-rows >= 1")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1 (exclusive)")
    if args.val_docs is not None and args.val_docs < 1:
        p.error("--val-docs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.plain:
        speedups.set_plain(True)
    args.out_dir = args.out_dir or (DEMO_DIR if args.demo else HERE)
    check_out_dir(args.out_dir)
    if args.demo:
        args.tokenizer = args.tokenizer or "byte"
        if args.val_fraction is None and args.val_docs is None:
            args.val_fraction = DEMO_VAL_FRACTION
        if existing_meta(args.out_dir) is not None and not args.force:  # a quick rerun
            print(f"{args.out_dir} is already prepared (use --force to rebuild it)")
            return
        source = os.path.join(args.out_dir, "source", "pydoc_topics.parquet")
        n = demo_corpus.write_demo_parquet(source)
        print(f"wrote the demo corpus ({n} documents of CPython's documentation) to {source}")
        args.input = [source]
    args.tokenizer = args.tokenizer or "gpt2"
    if args.val_fraction is None and args.val_docs is None:
        args.val_fraction = 0.0005

    # everything that can be wrong with the input is checked before any output is touched
    sources = [Source(path, args.text_column) for path in find_input_files(args.input)]
    try:
        tok = load_tokenizer(args.tokenizer, args.bpe_file)
    except GPT2RanksError as e:  # the library's message is neutral: name this script's flags
        raise UserError(f"{e}; pass it with --bpe-file PATH, or use --tokenizer byte") from None
    dtype = token_dtype(tok.n_vocab, args.dtype)
    request = {"files": [[os.path.basename(s.path), s.size] for s in sources],
               "text_column": args.text_column, "tokenizer": tok.name, "dtype": str(dtype), "dedup": args.dedup,
               **({"val_docs": args.val_docs} if args.val_docs is not None else {"val_fraction": args.val_fraction})}
    meta = existing_meta(args.out_dir)
    if meta is not None and not args.force:
        if meta.get("request") == request:
            print(f"{args.out_dir} is already prepared from the same input (use --force to rebuild it)")
            return
        raise UserError(f"{args.out_dir} holds a dataset prepared from other input or settings; "
                        f"pass --force to replace it, or --out-dir to write elsewhere")
    # before the old dataset is touched: too little space, or a --val-docs too large for the input
    replaced = sum(os.path.getsize(p) for p in (os.path.join(args.out_dir, f"{split}.bin") for split in ("train", "val"))
                   if os.path.isfile(p))
    check_free_space(args.out_dir, least_output_bytes(sources, tok.name, dtype), replaced)
    if args.val_docs is not None:
        threshold = val_docs_threshold(sources, args.val_docs, workers=args.workers, tokenizer_info=tok.info(),
                                       bpe_file=args.bpe_file, batch_rows=args.batch_rows)
    else:
        threshold = val_fraction_threshold(sources, args.val_fraction)
    if meta is not None:  # --force: unfinished from here on
        os.remove(os.path.join(args.out_dir, "meta.json"))

    counts = prepare(sources, tok, args.out_dir, dtype=dtype, workers=args.workers,
                     bpe_file=args.bpe_file, dedup=args.dedup, val_threshold=threshold,
                     batch_rows=args.batch_rows,
                     extra_meta={"request": request, "val_docs_requested": args.val_docs})
    print(summary(args.out_dir, counts, args.dedup))


def val_fraction_threshold(sources, val_fraction):
    """The hash threshold for --val-fraction, checked to leave the validation split a document."""
    rows = known_rows(sources)
    if rows == 0:
        raise no_documents(sources, "0 rows")
    if rows is not None and rows * val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction:g} of {rows} documents leaves the validation "
                        f"split empty; use a larger --val-fraction or --val-docs N")
    return min(int(val_fraction * 2.0 ** 64), 2 ** 64 - 1)


def val_docs_threshold(sources, val_docs, *, workers, tokenizer_info, bpe_file=None, batch_rows=1024):
    """The hash threshold that puts exactly val_docs distinct texts in val: one pass hashes every
    document (reading and hashing cost ~10% of tokenizing), and the threshold is the hash just
    above the val_docs smallest distinct ones."""
    hashes = []
    with worker_pool(workers, tokenizer_info, bpe_file) as pool:
        with tqdm(total=known_rows(sources), unit="doc", unit_scale=True, desc="hashing for --val-docs",
                  mininterval=0.5) as bar:
            for n_rows, batch_hashes in ordered_results(pool, batch_tasks(sources, batch_rows), workers, hash_batch):
                hashes.append(batch_hashes)
                bar.update(n_rows)
    distinct = np.unique(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint64)
    if len(distinct) == 0:
        raise no_documents(sources, "only null or blank texts")
    if val_docs >= len(distinct):
        raise UserError(f"--val-docs {val_docs} but the input has only {len(distinct)} distinct non-empty "
                        f"documents, and training needs some; ask for fewer")
    return int(distinct[val_docs])


def known_rows(sources):
    """The number of documents in all the inputs when their footers say it (parquet), else None."""
    return sum(s.rows for s in sources) if all(s.rows is not None for s in sources) else None


def batch_tasks(sources, batch_rows, *extra, read_upto=None, split_last=0):
    """(texts, (path, first row), *extra) for each batch of every input, in order; the last
    split_last batches in halves (speedups.split_tail). With read_upto (a deque), the input
    bytes read up to the end of each task are appended to it."""
    for texts, path, first, read in speedups.split_tail(input_batches(sources, batch_rows), split_last):
        if read_upto is not None:
            read_upto.append(read)
        yield (texts, (path, first), *extra)


def input_batches(sources, batch_rows):
    """(texts, path, first row, input bytes read up to the batch's end) of every input, in order."""
    before = 0
    for s in sources:
        for first, texts in s.batches(batch_rows):
            yield texts, s.path, first, before + s.bytes_read
        before += s.size


def no_documents(sources, why):
    names = ", ".join(os.path.basename(s.path) for s in sources)
    return UserError(f"the input has no documents ({names}: {why}); give a file with text in it")


def existing_meta(out_dir):
    """meta.json of a complete dataset in out_dir, or None. A meta.json that does not match its
    .bin files is removed, so that the folder counts as unfinished and is prepared again."""
    if not os.path.exists(os.path.join(out_dir, "meta.json")):
        return None
    try:
        return read_dataset_meta(out_dir)
    except UserError as e:
        print(f"note: {str(e).split('; ')[0]}: preparing the dataset again", file=sys.stderr)
        os.remove(os.path.join(out_dir, "meta.json"))
        return None


# -----------------------------------------------------------------------------
# the pipeline


@dataclasses.dataclass
class Counts:
    rows: int = 0
    null: int = 0
    empty: int = 0
    duplicates_found: int = 0  # documents whose exact text came earlier
    duplicates_dropped: int = 0
    train_docs: int = 0
    val_docs: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    seconds: float = 0.0  # tokenizing and writing, from the start of the worker pool

    def add(self, split, docs, tokens):
        setattr(self, f"{split}_docs", getattr(self, f"{split}_docs") + docs)
        setattr(self, f"{split}_tokens", getattr(self, f"{split}_tokens") + tokens)


def prepare(sources, tok, out_dir, *, dtype, workers, val_threshold, bpe_file=None, dedup=False,
            batch_rows=1024, extra_meta=None):
    """Tokenize `sources` into out_dir/{train,val}.bin and write meta.json; return the Counts.
    A document goes to val when its text hash is below val_threshold."""
    counts = Counts()
    seen = SeenHashes()
    val_below = np.uint64(val_threshold)
    # the progress bar counts documents; when their number is not known up front (.jsonl, .txt)
    # the total is estimated from the share of the input read, so the bar still has an ETA
    total_rows = known_rows(sources)
    input_bytes, read_upto = sum(s.size for s in sources), collections.deque()
    tasks = batch_tasks(sources, batch_rows, dtype, read_upto=read_upto, split_last=speedups.tail_splits(workers))
    slots = speedups.token_slots(tasks_in_flight(workers), dtype, forked=workers > 0 and start_method() == "fork")
    if slots:
        tasks = ((*task, i % slots.count) for i, task in enumerate(tasks))  # task i's slot
    writer = DatasetWriter(out_dir, least_bytes=least_output_bytes(sources, tok.name, dtype))
    start = time.perf_counter()
    try:
        with slots.shared() if slots else contextlib.nullcontext(), \
                worker_pool(workers, tok.info(), bpe_file) as pool:
            # threads from here on, now that the workers are forked: the inputs' sha256, and the
            # deletion of the dataset this one replaces
            hashes = FileHasher([s.path for s in sources])
            writer.discard_replaced()
            with tqdm(total=total_rows, unit="doc", unit_scale=True, desc="tokenizing",
                      smoothing=0.05, mininterval=0.5) as bar:
                for n_rows, result in ordered_results(pool, tasks, workers):
                    read = read_upto.popleft()
                    writer.input_share = read / max(input_bytes, 1)  # for the estimate if a write fails
                    write_batch(result, slots, seen, dedup, val_below, writer, counts)
                    counts.rows += n_rows
                    if total_rows is None and read:
                        bar.total = max(counts.rows, round(counts.rows * input_bytes / read))
                    bar.update(n_rows)
                    rate = (counts.train_tokens + counts.val_tokens) / max(bar.format_dict["elapsed"], 1e-9)
                    bar.set_postfix_str(f"{tqdm.format_sizeof(rate)} tok/s", refresh=False)
                bar.total = counts.rows  # the estimate, if any, made exact
            if counts.val_docs == 0 or counts.train_docs == 0:
                empty_split = "validation" if counts.val_docs == 0 else "training"
                raise UserError(f"the {empty_split} split got no documents ({counts.train_docs + counts.val_docs} "
                                f"kept in all); adjust --val-fraction / --val-docs or give more text")
            digests = hashes.result()
            counts.seconds = time.perf_counter() - start
            meta = dataset_meta(sources, digests, tok, dtype, counts, dedup, val_threshold)
            meta.update(extra_meta or {})
            writer.finish(meta)
    except BaseException:
        writer.abort()
        raise
    return counts


def write_batch(result, slots, seen, dedup, val_below, writer, counts):
    """Route one tokenized batch: count duplicates, drop them with dedup, split by hash, write."""
    tokens, lengths, hashes, n_null, n_empty = result
    tokens = slots.get(tokens) if slots else tokens
    counts.null += n_null
    counts.empty += n_empty
    duplicate = seen.check(hashes)
    counts.duplicates_found += int(duplicate.sum())
    keep = ~duplicate if dedup else np.ones(len(hashes), dtype=bool)
    counts.duplicates_dropped += int(len(hashes) - keep.sum())
    is_val = hashes < val_below
    for split, docs in (("train", keep & ~is_val), ("val", keep & is_val)):
        n_docs = int(docs.sum())
        if n_docs == 0:
            continue
        chosen = tokens if n_docs == len(docs) else tokens[np.repeat(docs, lengths)]
        writer.write(split, chosen)
        counts.add(split, n_docs, len(chosen))


class SeenHashes:
    """The text hashes of the documents so far, in 8 bytes each (a Python set takes ~100, which
    would grow the memory with the file): a large sorted array, and a small one for the recent
    batches that is merged into it as it grows."""
    merge_at = 1 << 16

    def __init__(self):
        self.old = np.empty(0, dtype=np.uint64)
        self.recent = np.empty(0, dtype=np.uint64)

    def check(self, hashes):
        """Which hashes came before (in earlier batches or earlier in this one); remember them all."""
        before = contains(self.old, hashes) | contains(self.recent, hashes)
        order = np.argsort(hashes, kind="stable")  # equal hashes stay in input order: the first is kept
        in_order = hashes[order]
        repeated = np.zeros(len(hashes), dtype=bool)
        repeated[order[1:]] = in_order[1:] == in_order[:-1]
        self.recent = merge_sorted(self.recent, in_order)
        if len(self.recent) > self.merge_at:
            self.old, self.recent = merge_sorted(self.old, self.recent), self.recent[:0]
        return before | repeated


def merge_sorted(a, b):
    """The sorted union (repeats kept) of two sorted arrays. numpy's stable sort is a timsort,
    which merges two sorted runs in linear time (np.union1d sorts from scratch: ~100x slower)."""
    return np.sort(np.concatenate([a, b]), kind="stable")


def contains(sorted_values, values):
    """For each of `values`, whether it is in the sorted array `sorted_values`."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), dtype=bool)
    i = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[i] == values


@contextlib.contextmanager
def worker_pool(workers, tokenizer_info, bpe_file):
    """A pool of tokenizing processes, or None to tokenize in this process (workers=0)."""
    if workers == 0:
        init_worker(tokenizer_info, bpe_file, ignore_sigint=False)
        yield None
        return
    speedups.tune_allocator()  # this process too: it receives every batch's tokens (workers: in init_worker)
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, multiprocessing.get_context(start_method()), init_worker, (tokenizer_info, bpe_file))
    try:
        pool.submit(int).result()  # start the workers now, before this process has other threads
        yield pool
    except concurrent.futures.process.BrokenProcessPool:
        raise UserError("a tokenizing worker process died (out of memory, or killed); "
                        "rerun, with fewer --workers if memory is short")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def start_method():
    """fork on Linux: the workers share the tokenizer already loaded here; spawn elsewhere
    (macOS, Windows), where each worker loads it."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def tasks_in_flight(workers):
    """2 tasks per worker and one more: every worker always has its next task queued."""
    return 2 * max(workers, 1) + 1


def ordered_results(pool, tasks, workers, work=None):
    """(rows, work(*task)) for each task (by default tokenize_batch), in task order, with at most
    tasks_in_flight(workers) tasks handed out and not yet consumed: memory stays bounded however
    large the input (Pool.imap would read it all), and task i + tasks_in_flight is handed out
    only after the caller is done with task i's result (TokenSlots relies on that)."""
    work = work or tokenize_batch
    window = tasks_in_flight(workers)
    if pool is None:
        for task in tasks:
            yield len(task[0]), work(*task)
        return
    pending = collections.deque()
    for task in tasks:
        pending.append((len(task[0]), pool.submit(work, *task)))
        if len(pending) >= window:
            rows, future = pending.popleft()
            yield rows, future.result()
    while pending:
        rows, future = pending.popleft()
        yield rows, future.result()


def summary(out_dir, counts, dedup):
    tokens = counts.train_tokens + counts.val_tokens
    lines = [f"wrote {out_dir}: train {counts.train_tokens:,} tokens ({counts.train_docs:,} documents), "
             f"val {counts.val_tokens:,} tokens ({counts.val_docs:,} documents), "
             f"in {counts.seconds:.1f} s ({tokens / max(counts.seconds, 1e-9) / 1e6:.2f} M tokens/s)"]
    skipped = [f"{n:,} {what}" for n, what in ((counts.null, "null"), (counts.empty, "empty"),
                                              (counts.duplicates_dropped, "duplicate")) if n]
    if skipped:
        lines.append(f"skipped {', '.join(skipped)} documents")
    if counts.duplicates_found and not dedup:
        lines.append(f"kept {counts.duplicates_found:,} exact duplicate documents (--dedup drops them)")
    return "\n".join(lines)


if __name__ == "__main__":
    exit_on_user_error(main)
    speedups.skip_teardown()  # all written, synced and closed
