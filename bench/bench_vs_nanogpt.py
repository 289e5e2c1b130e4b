"""
Our train.py beside the unmodified nanoGPT (../shared/anchors/nanoGPT, or --nanogpt=DIR), on the
same config and the same tokens, alternating over several rounds, quiet and with one CPU-bound
busy loop beside them. Prints steady-state ms/iter of each, the ratio nanoGPT / ours (above 1:
ours is faster) as the median over rounds with its min-max, the ratio of each program's fastest
round, our data loader's share of a step, and how our OpenMP threads waited (cpu_load.py:
passively when the cores were busy at start-up).

Two figures, because a shared VM drifts 10-20% between runs of a few seconds: the median of the
rounds' paired ratios shows the spread; the ratio of the fastest rounds is the steadier estimate,
since interference only ever adds time (the reason timeit reports the minimum).

$ python data/fineweb_single/prepare.py --demo      # the byte-level demo corpus, data/demo/
$ python bench/bench_vs_nanogpt.py                  # both configs, quiet and busy, 5 rounds
$ python bench/bench_vs_nanogpt.py --configs=small --loads=quiet --rounds=3 --iters=40
$ python bench/bench_vs_nanogpt.py --configs=ref --loads=quiet --rounds=2 --data_dir=DIR --set device=cuda \
      --set dtype=bfloat16 --set compile=True --set gradient_accumulation_steps=4     (a GPU; gpu_check.sh)

Configs ('ref' is config/train_fineweb_4070.py's shape, for a GPU): 'small' is 4 layers x 128, block 128, batch 16, gradient_accumulation_steps 1, fp32,
no compile; 'demo' is config/train_demo_cpu.py (nanoGPT gets its keys as flags, and its
cpu_threads as OMP_NUM_THREADS, since nanoGPT has no such key). Both programs see the same
data/demo tokens; nanoGPT's copy gets a meta.pkl with our padded vocabulary, so the two models
have the same shapes.

How it is timed, the same way for both: the arrival time of each `iter N:` line on the pipe
(stdout unbuffered), from line --skip to the last one; no evaluation falls in that window
(eval_interval is set past max_iters; the iteration-0 eval comes before it). The CPU time of each
process over the same lines is shown too (on a shared machine the steadier figure). The figure each
program prints itself (`time X ms`) is shown too, but ours times the step alone while nanoGPT's
includes its logging, so only the arrival times are compared.
"""
import argparse
import ast
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT_DEFAULT = os.path.join(ROOT, "..", "shared", "anchors", "nanoGPT")
ITER_LINE = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms")

SMALL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=16, gradient_accumulation_steps=1,
             dropout=0.0, bias=False, dtype="float32", compile=False, device="cpu")
# keys nanoGPT's train.py knows (it refuses any other)
NANOGPT_KEYS = ("gradient_accumulation_steps", "batch_size", "block_size", "n_layer", "n_head", "n_embd",
                "dropout", "bias", "learning_rate", "max_iters", "weight_decay", "beta1", "beta2", "grad_clip",
                "decay_lr", "warmup_iters", "lr_decay_iters", "min_lr", "device", "dtype", "compile")


def read_config_file(path):
    keys = {}
    exec(open(path).read(), {}, keys)
    return {k: v for k, v in keys.items() if not k.startswith("_")}


def config_named(name):
    if name == "small":
        return dict(SMALL)
    if name == "demo":
        return read_config_file(os.path.join(ROOT, "config", "train_demo_cpu.py"))
    if name == "ref":  # the reference run's shape, for a GPU (bench/gpu_check.sh)
        cfg = read_config_file(os.path.join(ROOT, "config", "train_fineweb_4070.py"))
        return {k: v for k, v in cfg.items() if k in NANOGPT_KEYS}
    raise SystemExit(f"error: unknown config {name!r}; use small, demo or ref")


def parse_sets(items):
    """--set KEY=VALUE overrides, valued as train.py's configurator does (a literal, else a string)."""
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def flag(k, v):
    return f"--{k}={v!r}" if isinstance(v, str) else f"--{k}={v}"


def setup_nanogpt(nanogpt_dir, data_dir, scratch):
    """A scratch copy of nanoGPT (outside the repository) with data/demo holding our tokens."""
    for name in ("train.py", "model.py", "configurator.py"):
        src = os.path.join(nanogpt_dir, name)
        if not os.path.exists(src):
            raise SystemExit(f"error: {src} not found; pass --nanogpt=DIR with nanoGPT's files")
        shutil.copy(src, scratch)
    ddir = os.path.join(scratch, "data", "demo")
    os.makedirs(ddir)
    for split in ("train", "val"):
        os.symlink(os.path.abspath(os.path.join(data_dir, f"{split}.bin")), os.path.join(ddir, f"{split}.bin"))
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = json.load(f)
    if meta["dtype"] != "uint16":
        raise SystemExit(f"error: nanoGPT reads uint16 tokens; {data_dir} has {meta['dtype']}")
    vocab = meta["tokenizer"]["vocab_size"]
    with open(os.path.join(ddir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": ((vocab + 63) // 64) * 64}, f)  # facts.padded_vocab_size, as ours


def commands(cfg, iters, scratch, data_dir):
    """(ours, nanoGPT): (argv, cwd, env) each, for the same config."""
    common = {"max_iters": iters, "eval_interval": iters + 1000, "eval_iters": 2, "log_interval": 1,
              "always_save_checkpoint": False}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ours_out = os.path.join(scratch, "out-ours")
    ours = [sys.executable, "train.py", *(flag(k, v) for k, v in {**cfg, **common}.items()),
            flag("data_dir", data_dir), flag("out_dir", ours_out), "--init_from='scratch'", "--wandb_log=False"]
    theirs_cfg = {k: v for k, v in {**cfg, **common}.items() if k in NANOGPT_KEYS or k in common}
    theirs = [sys.executable, "train.py", *(flag(k, v) for k, v in theirs_cfg.items()),
              "--dataset='demo'", flag("out_dir", os.path.join(scratch, "out-nanogpt")), "--wandb_log=False"]
    theirs_env = dict(env)
    if cfg.get("cpu_threads"):
        theirs_env["OMP_NUM_THREADS"] = str(cfg["cpu_threads"])
    return (ours, ROOT, env), (theirs, scratch, theirs_env), ours_out


def cpu_seconds(pid):
    """User + system CPU time of a running process (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def timed_run(argv, cwd, env, skip):
    """(wall ms/iter, CPU ms/iter, the program's own median `time X ms`) over the `iter N:` lines after
    the first `skip`: wall from their arrival times, CPU from the process's CPU time at those lines
    (on a shared machine the CPU time is the steadier figure)."""
    marks, own = [], []
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in p.stdout:
        now = time.perf_counter()
        tail = (tail + [line])[-20:]
        m = ITER_LINE.match(line)
        if m:
            marks.append((int(m.group(1)), now, cpu_seconds(p.pid)))
            own.append(float(m.group(2)))
    if p.wait() != 0:
        raise SystemExit(f"error: {' '.join(argv[:2])} in {cwd} failed:\n{''.join(tail)}")
    timed = marks[skip:]
    if len(timed) < 2:
        raise SystemExit(f"error: only {len(marks)} iteration lines; raise --iters above --skip")
    (i0, t0, c0), (i1, t1, c1) = timed[0], timed[-1]
    cpu = 1000 * (c1 - c0) / (i1 - i0) if c0 is not None and c1 is not None else float("nan")
    return 1000 * (t1 - t0) / (i1 - i0), cpu, statistics.median(own[skip:])


def our_run_facts(out_dir):
    """From our metrics.jsonl: the data loader's share of step time (the end record) and the OpenMP
    wait policy train.py chose at start-up (the run record; cpu_load.py)."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    stats = records[-1]["stats"]
    policy = next(r for r in records if r["event"] == "run")["system"].get("omp_wait_policy")
    return stats["data_wait_s"] / stats["step_s"], policy or "spin"


class BusyLoop:
    """One CPU-bound process beside the bench, started and stopped by it."""

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def spread(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def bench(name, load, args, scratch):
    cfg = {**config_named(name), **parse_sets(args.set)}
    (ours, ours_cwd, ours_env), (theirs, th_cwd, th_env), ours_out = commands(cfg, args.iters, scratch, args.data_dir)
    ratios, cpu_ratios, ours_ms, theirs_ms, shares, loads, policies = [], [], [], [], [], [], []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        order = ("ours", "nanogpt") if r % 2 == 0 else ("nanogpt", "ours")  # alternate who goes first
        got = {}
        for who in order:
            if who == "ours":
                got[who] = timed_run(ours, ours_cwd, ours_env, args.skip)
                share, policy = our_run_facts(ours_out)
                shares.append(share)
                policies.append(policy)
            else:
                got[who] = timed_run(theirs, th_cwd, th_env, args.skip)
        ours_ms.append(got["ours"][0])
        theirs_ms.append(got["nanogpt"][0])
        ratios.append(got["nanogpt"][0] / got["ours"][0])
        cpu_ratios.append(got["nanogpt"][1] / got["ours"][1])
        print(f"  {name:5s} {load:5s} round {r + 1}: ours {got['ours'][0]:7.2f} ms/iter (CPU {got['ours'][1]:.1f}, "
              f"own {got['ours'][2]:.2f}), nanoGPT {got['nanogpt'][0]:7.2f} ms/iter (CPU {got['nanogpt'][1]:.1f}, "
              f"own {got['nanogpt'][2]:.2f}), ratio {ratios[-1]:.3f}, CPU ratio {cpu_ratios[-1]:.3f}, "
              f"load avg {loads[-1]:.2f}, our threads wait: {policies[-1]}", flush=True)
    tokens = cfg["batch_size"] * cfg["block_size"] * cfg["gradient_accumulation_steps"]
    return dict(config=name, load=load, ratio=ratios, cpu_ratio=cpu_ratios, ours=ours_ms, nanogpt=theirs_ms, share=shares, loadavg=loads,
                tokens=tokens, cfg=cfg, policies=policies)


def policy_counts(policies):
    return ", ".join(f"{p} x{policies.count(p)}" for p in sorted(set(policies)))


def mfu_line(r):
    """MFU of each against the device's real peak (facts.PEAK_FLOPS), on CUDA only."""
    import torch
    sys.path.insert(0, ROOT)
    import facts
    cfg = r["cfg"]
    name = torch.cuda.get_device_name()
    peak = facts.peak_flops_for(name, cfg.get("dtype"))
    if peak is None:
        return f"MFU n/a ({name} is not in facts.PEAK_FLOPS)"
    fpt = facts.flops_per_token(cfg["n_layer"], cfg["n_embd"], 50304, cfg["block_size"], cfg.get("bias", False))
    mfu = {who: fpt * r["tokens"] / (statistics.median(r[who]) / 1000) / peak for who in ("ours", "nanogpt")}
    return (f"MFU ours {100 * mfu['ours']:.1f}%, nanoGPT {100 * mfu['nanogpt']:.1f}% of {name}'s "
            f"{peak / 1e12:.0f} TFLOP/s ({cfg.get('dtype')})")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--configs", default="small,demo")
    p.add_argument("--loads", default="quiet,busy", help="quiet, busy (one busy-loop process beside), or both")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=40, help="iterations per run")
    p.add_argument("--skip", type=int, default=8, help="first iteration lines not timed (start-up, warm-up)")
    p.add_argument("--nanogpt", default=NANOGPT_DEFAULT)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data", "demo"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for both programs, e.g. --set dtype=bfloat16")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.data_dir, "meta.json")):
        raise SystemExit(f"error: no dataset in {args.data_dir}; run python data/fineweb_single/prepare.py --demo")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_vs_nanogpt_") as scratch:
        setup_nanogpt(args.nanogpt, args.data_dir, scratch)
        print(f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.iters} iterations, first {args.skip} "
              f"not timed; nanoGPT from {os.path.abspath(args.nanogpt)}", flush=True)
        for name in args.configs.split(","):
            for load in args.loads.split(","):
                if load == "busy":
                    with BusyLoop():
                        results.append(bench(name, load, args, scratch))
                elif load == "quiet":
                    results.append(bench(name, load, args, scratch))
                else:
                    raise SystemExit(f"error: unknown load {load!r}; use quiet or busy")
    print("\nconfig load   ours ms/iter (tok/s)   nanoGPT ms/iter (tok/s)   ratio nanoGPT/ours median (min-max)"
          "   fastest rounds   CPU-time ratio (min-max)   data loader share   load avg   our threads wait")
    for r in results:
        ours, theirs = statistics.median(r["ours"]), statistics.median(r["nanogpt"])
        print(f"{r['config']:6s} {r['load']:5s}  {ours:8.2f} ({r['tokens'] / ours * 1000:,.0f})   "
              f"{theirs:8.2f} ({r['tokens'] / theirs * 1000:,.0f})     {spread(r['ratio']):28s}"
              f"          {min(r['nanogpt']) / min(r['ours']):.3f}"
              f"        {spread(r['cpu_ratio']):24s}   {100 * statistics.median(r['share']):.2f}%           "
              f"{min(r['loadavg']):.2f}-{max(r['loadavg']):.2f}   {policy_counts(r['policies'])}")
        if str(r["cfg"].get("device", "")).startswith("cuda"):
            print(f"       {mfu_line(r)}")


if __name__ == "__main__":
    main(sys.argv[1:])
