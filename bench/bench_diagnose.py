"""
Speed of diagnose on big logs (issue 4's figures):
  - parse a 1M-line nanoGPT text log            <= 2 s
  - parse a 1M-record metrics.jsonl             <= 2 s
  - full report with plots, 100k-iteration run  <= 5 s   (parse + detectors + terminal/md/json + PNGs)

    python bench/bench_diagnose.py [--lines 1000000] [--iters 100000] [--keep DIR]

The logs are generated first (not timed); each figure is the best of --repeat runs, in
this process after a warm-up (imports done), except the last row, a new process each time.
"""
import argparse
import contextlib
import io
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import facts  # noqa: E402
from diagnose.cli import main as diagnose_main  # noqa: E402
from diagnose.parse import load_run  # noqa: E402


def loss_at(i, rng):
    return 3.3 + 7.5 * math.exp(-i / 3000) + 0.3 * math.exp(-i / 40000) + rng.gauss(0, 0.03)


def write_nanogpt_log(path, n, eval_every=1000):
    rng = random.Random(0)
    with open(path, "w") as f:
        f.write("tokens per iteration will be: 524,288\nnumber of parameters: 123.59M\n")
        for i in range(n):
            if i % eval_every == 0:
                f.write(f"step {i}: train loss {loss_at(i, rng):.4f}, val loss {loss_at(i, rng) + 0.05:.4f}\n")
            f.write(f"iter {i}: loss {loss_at(i, rng):.4f}, time {100 + rng.random() * 5:.2f}ms, "
                    f"mfu {30 + rng.random():.2f}%\n")


def write_metrics(path, n, eval_every=1000):
    rng = random.Random(0)
    tpi, train_tokens = 524288, 9_000_000_000
    schedule = {"learning_rate": 0.0006, "min_lr": 6e-05, "warmup_iters": 700, "lr_decay_iters": n, "max_iters": n,
                "lr_schedule": "cosine"}
    config = ('{"batch_size": 16, "block_size": 1024, "gradient_accumulation_steps": 32, '
              f'"learning_rate": 0.0006, "min_lr": 6e-05, "warmup_iters": 700, "lr_decay_iters": {n}, '
              f'"max_iters": {n}, "lr_schedule": "cosine", "n_layer": 12, "n_head": 12, "n_embd": 768, '
              f'"eval_interval": {eval_every}, "grad_clip": 1.0}}')
    with open(path, "w") as f:
        f.write(f'{{"event": "run", "time": 0, "config": {config}, "model": {{"params": 124475904, '
                f'"non_embedding_params": 85054464, "flops_per_token": 764140032}}, "data": {{"train_tokens": '
                f'{train_tokens}, "val_tokens": 4500000, "tokenizer": {{"name": "gpt2", "vocab_size": 50257}}}}, '
                f'"system": {{"device_name": "NVIDIA H100", "peak_flops": 989e12, "dtype": "bfloat16"}}, '
                f'"resumed_from_iter": null}}\n')
        for i in range(n):
            tokens = (i + 1) * tpi
            lr = facts.lr_from_config(i, schedule)
            if i % eval_every == 0:
                f.write(f'{{"event": "eval", "time": {i}, "iter": {i}, "tokens": {tokens}, "epoch": '
                        f'{tokens / train_tokens:.6f}, "lr": {lr:.6g}, "train_loss": {loss_at(i, rng):.4f}, '
                        f'"val_loss": {loss_at(i, rng) + 0.05:.4f}, "train_loss_se": 0.004, "val_loss_se": 0.004}}\n')
            f.write(f'{{"event": "train", "time": {i}, "iter": {i}, "tokens": {tokens}, "epoch": '
                    f'{tokens / train_tokens:.6f}, "lr": {lr:.6g}, "loss": {loss_at(i, rng):.4f}, "grad_norm": '
                    f'{0.3 + rng.random() * 0.1:.4f}, "grad_scale": null, "dt_ms": 105.2, "tokens_per_sec": '
                    f'4983000.0, "mfu": 0.41}}\n')


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def live_observe_seconds():
    """What diagnose/live.py adds to each eval of a training run, on a 10k-iteration history."""
    import numpy as np
    from diagnose.live import LiveMonitor
    config = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=20000, max_iters=20000,
                  batch_size=16, block_size=1024, gradient_accumulation_steps=32)
    m = LiveMonitor(config, {}, {})
    rng = np.random.default_rng(0)
    for i in range(10000):
        m.observe({"event": "train", "iter": i, "loss": 3 + 5 / np.sqrt(i + 10) + rng.normal(0, 0.03)})
        if i % 250 == 0:
            m.observe({"event": "eval", "iter": i, "val_loss": 3 + 5 / np.sqrt(i + 10), "train_loss": 3.0,
                       "val_loss_se": 0.005, "train_loss_se": 0.005})
    t = time.perf_counter()
    m.observe({"event": "eval", "iter": 9999, "val_loss": 3.05, "train_loss": 3.0,
               "val_loss_se": 0.005, "train_loss_se": 0.005})
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines / records of the big logs")
    ap.add_argument("--iters", type=int, default=100_000, help="iterations of the full-report run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="write the generated logs and outputs here and keep them")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="bench_diagnose_")
    os.makedirs(work, exist_ok=True)
    try:
        text_log = os.path.join(work, "nanogpt_1M.log")
        jsonl = os.path.join(work, "metrics_1M.jsonl")
        run_dir = os.path.join(work, "run_100k")
        os.makedirs(run_dir, exist_ok=True)
        t0 = time.perf_counter()
        write_nanogpt_log(text_log, args.lines)
        write_metrics(jsonl, args.lines)
        write_metrics(os.path.join(run_dir, "metrics.jsonl"), args.iters, eval_every=500)
        print(f"generated the logs in {time.perf_counter() - t0:.1f} s (not timed) in {work}")
        load_run(text_log)  # warm: imports, page cache

        rows = []
        t, run = best_of(args.repeat, lambda: load_run(text_log))
        rows.append((f"parse nanoGPT text log, {len(run.train['iter']):,} iters + {len(run.eval['iter']):,} evals "
                     f"({os.path.getsize(text_log) / 1e6:.0f} MB)", t, 2.0))
        t, run = best_of(args.repeat, lambda: load_run(jsonl))
        rows.append((f"parse metrics.jsonl, {len(run.train['iter']):,} train + {len(run.eval['iter']):,} eval records "
                     f"({os.path.getsize(jsonl) / 1e6:.0f} MB)", t, 2.0))
        out = os.path.join(work, "report")

        def full_report():
            with contextlib.redirect_stdout(io.StringIO()) as buf:
                diagnose_main([run_dir, "--plot", out, "--md", os.path.join(out, "report.md"),
                               "--json", os.path.join(out, "report.json")])
            return buf.getvalue()

        t, text = best_of(args.repeat, full_report)
        rows.append((f"full report + plots, {args.iters:,}-iteration run ({text.count(chr(10))} report lines)", t, 5.0))
        cmd = [sys.executable, "-m", "diagnose", run_dir, "--plot", out, "--quiet"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        t, _ = best_of(args.repeat, lambda: subprocess.run(cmd, cwd=root, check=True))
        rows.append(("  the same as a new process (python -m diagnose, imports included)", t, 5.0))

        rows.append(("live monitor: one eval record on a 10k-iteration history (train.py, each eval)",
                     live_observe_seconds(), 0.05))

        width = max(len(r[0]) for r in rows)
        print(f"{'figure'.ljust(width)}  {'seconds':>8}  {'goal':>6}")
        for name, secs, goal in rows:
            print(f"{name.ljust(width)}  {secs:8.2f}  {goal:6.2f}  {'ok' if secs <= goal else 'SLOW'}")
        print(f"(best of {args.repeat}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
