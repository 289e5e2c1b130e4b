"""
Throughput and memory of data/fineweb_single/prepare.py, beside the limit and a naive baseline.

    python bench/bench_prepare.py                  # 200 MB and 800 MB of text, 1 and 2 workers
    python bench/bench_prepare.py --sizes-mb 50    # a quick look

For each generated parquet (English-like web text in FineWeb's schema, row groups of 1000
documents like FineWeb's files), it measures in one run:
- prepare.py with 1 and 2 workers: tokens/s, documents/s (timed runs, nothing else running),
  and peak RSS (all its processes together, sampled every 50 ms in one more run of its own:
  reading /proc that often takes ~5% of this 2-core machine, which would slow the timed runs);
- the limit: tiktoken's single-process encode_ordinary rate on the same texts (encoding time
  only; on at most the first 100 MB of text), times the number of workers. The machine's speed
  drifts (on a shared host, by 2x within a minute), so it is measured again right before each
  run, and the best of those measurements is the limit: the fastest run against the fastest
  encoding, both in the calmest moments;
- the ceiling: as many encode_ordinary processes as workers, on the same texts at the same
  time, with nothing else to do. On this 2-core machine two such processes run ~4-7% slower
  each than one alone (they share caches and the host), which the limit does not count;
- paired: each run against the mean of the limits sampled right before and right after it, the
  median of those ratios (the fairest figure on a machine whose speed drifts);
- tokens per CPU second (all processes, start-up included) over the limit's: the share of the
  CPU that goes to tokenizing, which a busy machine does not distort as much as wall time;
- a naive baseline: read the whole table, encode sequentially, np.concatenate (first file only:
  its memory grows with the file).
Needs GPT-2's ranks (.ci/seed_tiktoken.sh). Files go under --tmp and are deleted afterwards.
The machine may be shared: the load average before each file is printed with the figures.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import pyarrow.parquet as pq  # noqa: E402

import tokenizer  # noqa: E402
from prepare_fixtures import english_like_docs, write_text_batches  # noqa: E402

PREPARE = os.path.join(ROOT, "data", "fineweb_single", "prepare.py")
LIMIT_SAMPLE_BYTES = 100e6


def generate(path, text_mb, seed0):
    """A parquet with about text_mb MB of text, in chunks of 2000 documents."""
    state = {"bytes": 0, "docs": 0}

    def chunks():
        seed = seed0
        while state["bytes"] < text_mb * 1e6:
            docs = english_like_docs(2000, seed=seed)
            state["bytes"] += sum(len(d.encode()) for d in docs)
            state["docs"] += len(docs)
            seed += 1
            yield docs
    write_text_batches(path, chunks(), row_group_size=1000)
    return state


def tree_memory(pid):
    """(RSS, PSS) in bytes of a process and its descendants, and the process's own peak RSS
    (VmHWM), from /proc. Forked workers share pages with their parent: the RSS sum counts those
    once per process, PSS splits them. (Not wait4's ru_maxrss: it also counts the pages of the
    bench process that forked the command, before the command's exec.)"""
    rss = pss = main_peak = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                fields = dict(line.split()[:2] for line in f if line.split()[0] in ("Rss:", "Pss:"))
            rss += int(fields["Rss:"]) * 1024
            pss += int(fields["Pss:"]) * 1024
            if p == pid:
                with open(f"/proc/{p}/status") as f:
                    main_peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except (OSError, KeyError, ValueError, StopIteration):
            pass
    return rss, pss, main_peak


def measure(cmd, sample_memory=False):
    """Run cmd; return (wall seconds, peak tree RSS, peak tree PSS, main process peak RSS,
    CPU seconds, stdout). The memory figures, sampled every 50 ms, are None unless
    sample_memory (the sampling slows the run)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak, done = [0, 0, 0], threading.Event()

    def sample():  # not proc.poll(): it would reap the process before wait4 gets its rusage
        while not done.is_set():
            peak[:] = map(max, peak, tree_memory(proc.pid))
            time.sleep(0.05)
    if sample_memory:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sample_memory:
        sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    memory = peak if sample_memory else [None] * 3
    return (wall, *memory, usage.ru_utime + usage.ru_stime, out)


def sample_texts(path):
    """The file's first texts, LIMIT_SAMPLE_BYTES characters or a little more."""
    texts, seen = [], 0
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=1000, columns=["text"]):
        batch_texts = batch.column(0).to_pylist()
        texts += batch_texts
        seen += sum(map(len, batch_texts))
        if seen >= LIMIT_SAMPLE_BYTES:
            break
    return texts


def encode_all(texts):
    """Encode each text with tiktoken's encode_ordinary: (tokens, wall seconds, CPU seconds)."""
    enc = tokenizer.load_tokenizer("gpt2").encoding
    start, cpu_start = time.perf_counter(), time.process_time()
    tokens = sum(len(enc.encode_ordinary(text)) for text in texts)
    return tokens, time.perf_counter() - start, time.process_time() - cpu_start


def limit_rate(texts):
    """tiktoken's single-process encode_ordinary rate on the file's first texts (encoding time
    only): (tokens per second of wall time, tokens per CPU second)."""
    tokens, seconds, cpu_seconds = encode_all(texts)
    return tokens / seconds, tokens / cpu_seconds


CEILING = textwrap.dedent("""
    import sys
    sys.path.insert(0, {bench!r})
    from bench_prepare import encode_all, sample_texts
    texts = sample_texts({path!r})
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()  # start together
    tokens, seconds, _ = encode_all(texts)
    print(tokens, seconds)
""")


def ceiling_rate(path, processes):
    """Total encode_ordinary rate of `processes` processes encoding the same texts at once."""
    code = CEILING.format(bench=os.path.dirname(os.path.abspath(__file__)), path=path)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    rates = []
    for proc in procs:
        tokens, seconds = proc.communicate()[0].split()
        rates.append(int(tokens) / float(seconds))
    return sum(rates)


NAIVE = textwrap.dedent("""
    import sys, numpy as np, pyarrow.parquet as pq
    sys.path.insert(0, {root!r})
    import tokenizer
    enc = tokenizer.load_tokenizer("gpt2").encoding
    texts = pq.read_table({path!r}).column("text").to_pylist()
    ids = np.concatenate([np.array([enc.eot_token] + enc.encode_ordinary(t), dtype=np.uint16) for t in texts])
    ids.tofile({out!r})
    print(len(ids), len(texts))
""")


def marginal(best_runs, limits):
    """From the smallest and the largest file: the rate of the extra tokens (the steady rate, free
    of start-up and finishing) and the fixed cost per run, against the median and best limit."""
    for workers, runs in best_runs.items():
        if len(runs) < 2:
            continue
        (t0, w0), (t1, w1) = min(runs), max(runs)
        rate = (t1 - t0) / (w1 - w0)
        median, best = statistics.median(limits), max(limits)
        print(f"marginal, {workers} worker{'s' * (workers > 1)}: {rate / 1e6:.2f} M tokens/s = "
              f"{rate / (median * workers):.0%} of the median limit x {workers} ({rate / (best * workers):.0%} "
              f"of the best); fixed cost {w0 - t0 / rate:.2f} s per run")


def mb(n):
    return f"{n / 2**20:,.0f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[200, 800], help="MB of text per file")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=2, help="runs per setting; the fastest is reported")
    p.add_argument("--tmp", default=tempfile.gettempdir())
    args = p.parse_args()
    if tokenizer.cached_gpt2_ranks() is None:
        raise SystemExit("GPT-2 ranks not cached: run .ci/seed_tiktoken.sh first")
    work = tempfile.mkdtemp(prefix="bench_prepare_", dir=args.tmp)
    rows = []
    every_limit, best_runs = [], {}  # all limit samples; workers -> [(tokens, wall seconds)], one per file
    try:
        for i, size in enumerate(args.sizes_mb):
            path = os.path.join(work, f"text_{size:g}mb.parquet")
            t = time.perf_counter()
            gen = generate(path, size, seed0=i * 100_000)
            print(f"generated {path}: {gen['bytes'] / 1e6:,.0f} MB of text, {gen['docs']:,} documents, "
                  f"{mb(os.path.getsize(path))} on disk, in {time.perf_counter() - t:.0f} s", flush=True)
            load = os.getloadavg()[0]
            limits, runs = [], []  # (tokens/s, tokens per CPU s) samples; (workers, best run, ...)
            texts = sample_texts(path)  # read once: the limit is sampled around every run
            for workers in args.workers:
                best, paired, ceilings = None, [], []
                limits.append(limit_rate(texts))
                for _ in range(args.repeat):
                    if workers > 1:
                        ceilings.append(ceiling_rate(path, workers))
                    before = limits[-1][0]
                    out_dir = os.path.join(work, "out")
                    cmd = [sys.executable, PREPARE, "--input", path, "--out-dir", out_dir,
                           "--workers", str(workers), "--force"]
                    r = measure(cmd)
                    with open(os.path.join(out_dir, "meta.json")) as f:
                        r = (*r[:-1], json.load(f))  # the run's meta.json instead of its stdout
                    tokens = r[-1]["train_tokens"] + r[-1]["val_tokens"]
                    limits.append(limit_rate(texts))
                    around = (before + limits[-1][0]) / 2  # the machine's speed drifts: both sides of the run
                    paired.append(tokens / r[0] / (around * workers))
                    ceiling = f"; ceiling {ceilings[-1] / 1e6:.2f}" if ceilings else ""
                    print(f"  limit {before / 1e6:.2f} before, {limits[-1][0] / 1e6:.2f} after{ceiling}; prepare.py, "
                          f"{workers} workers: {r[0]:.1f} s, {tokens / r[0] / 1e6:.2f} M tokens/s ({paired[-1]:.0%} "
                          f"of the mean limit x {workers})", flush=True)
                    best = r if best is None or r[0] < best[0] else best
                memory = measure(cmd, sample_memory=True)  # a run of its own: sampling slows it
                best = (best[0], *memory[1:4], *best[4:])
                runs.append((workers, best, statistics.median(paired), max(ceilings, default=None)))
            limit, limit_cpu = max(x[0] for x in limits), max(x[1] for x in limits)
            print(f"  limit: encode_ordinary {limit / 1e6:.2f} M tokens/s in one process, {limit_cpu / 1e6:.2f} "
                  f"M tokens per CPU second (best of {len(limits)}; load average before: {load:.2f})", flush=True)
            every_limit += [x[0] for x in limits]
            for workers, (wall, peak, pss, main_rss, cpu, meta), paired, ceiling in runs:
                tokens = meta["train_tokens"] + meta["val_tokens"]
                best_runs.setdefault(workers, []).append((tokens, wall))
                if ceiling is not None:
                    print(f"  ceiling, {workers} processes encoding at once: {ceiling / 1e6:.2f} M tokens/s "
                          f"= {ceiling / (limit * workers):.0%} of the limit x {workers}", flush=True)
                rows.append((f"{size:g} MB", f"prepare.py, {workers} worker{'s' * (workers > 1)}",
                             tokens / wall, meta["source"]["rows"] / wall, peak, pss, main_rss, cpu,
                             tokens / wall / (limit * workers), paired,
                             tokens / meta["seconds"] / (limit * workers),
                             None if ceiling is None else tokens / wall / ceiling, tokens / cpu / limit_cpu))
            if i == 0:
                naive_out = os.path.join(work, "naive.bin")
                naive = [sys.executable, "-c", NAIVE.format(root=ROOT, path=path, out=naive_out)]
                wall, _, _, _, cpu, out = measure(naive)
                _, peak, pss, main_rss, _, _ = measure(naive, sample_memory=True)
                peak = max(peak, main_rss)  # one process: its exact peak (VmHWM) is the tree's
                tokens, docs = map(int, out.split())
                rows.append((f"{size:g} MB", "naive: read all, encode, concatenate", tokens / wall,
                             docs / wall, peak, pss, main_rss, cpu, tokens / wall / limit, None, None, None,
                             tokens / cpu / limit_cpu))
                print(f"  naive: {wall:.1f} s, peak RSS {mb(peak)}", flush=True)
            os.remove(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| text | program | M tokens/s | k docs/s | peak RSS, all processes | peak PSS, all | "
          "peak RSS, main | CPU s | of limit x workers | paired | without start-up | of ceiling | "
          "tokens per CPU s, of limit's |")
    print("| --- | --- |" + " ---: |" * 11)
    pct = lambda x: "" if x is None else f"{x:.0%}"  # noqa: E731
    for size, name, tps, dps, peak, pss, main_rss, cpu, share, paired, steady, of_ceiling, per_cpu in rows:
        print(f"| {size} | {name} | {tps / 1e6:.2f} | {dps / 1e3:.1f} | {mb(peak)} | {mb(pss)} | "
              f"{mb(main_rss)} | {cpu:.1f} | {share:.0%} | {pct(paired)} | {pct(steady)} | {pct(of_ceiling)} | "
              f"{per_cpu:.0%} |")
    marginal(best_runs, every_limit)
    print(f"\nmachine: {os.cpu_count()} cores, shared with other jobs (load average now "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
