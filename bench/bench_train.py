"""
Training throughput of a config: tokens/s, MFU, peak memory and the data loader's share
of step time, from a short run of train.py (eval and checkpoint time excluded).

$ python bench/bench_train.py config/train_demo_cpu.py --iters=30
$ python bench/bench_train.py config/train_fineweb_4070.py --data_dir=/tmp/synth --dtype=bfloat16 --iters=50

Arguments: config files and --key=value overrides as for train.py, plus --iters=N
(iterations to run, default 30). The first 3 iterations (compilation, warm-up) are not counted.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = 3  # warm-up iterations left out of the figures


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    iters = 30
    args = []
    for a in argv:
        if a.startswith("--iters="):
            iters = int(a.split("=", 1)[1])
        else:
            args.append(a)
    if iters <= SKIP:
        sys.exit(f"error: --iters={iters} must be more than the {SKIP} warm-up iterations")
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, "train.py", *args, f"--max_iters={iters}", f"--out_dir={out_dir}",
               "--log_interval=1", "--eval_iters=2", f"--eval_interval={iters + 1}", "--always_save_checkpoint=False",
               "--wandb_log=False", "--init_from=scratch", "--live_diagnose=False"]
        print("$", " ".join(cmd[1:]), flush=True)
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"train.py failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    run = records[0]
    train = [r for r in records if r["event"] == "train" and r["iter"] >= SKIP]
    end = records[-1]
    tps = statistics.median(r["tokens_per_sec"] for r in train)
    dt = statistics.median(r["dt_ms"] for r in train)
    mfus = [r["mfu"] for r in train if r["mfu"] is not None]
    stats = end["stats"]
    data_share = stats["data_wait_s"] / stats["step_s"] if stats["step_s"] else float("nan")
    sysinfo, model, cfg = run["system"], run["model"], run["config"]
    warnings = [r["message"] for r in records if r["event"] == "warning"]
    print(f"device        {sysinfo['device_name']} x{sysinfo['world_size']}, {sysinfo['dtype']}, "
          f"compile {sysinfo['compile']}, fused AdamW {sysinfo.get('fused_adamw')}, torch {sysinfo['torch']}")
    print(f"model         {model['params'] / 1e6:.2f}M params, {model['flops_per_token'] / 1e6:.1f} MFLOP/token; "
          f"{cfg['batch_size']} x {cfg['block_size']} x {cfg['gradient_accumulation_steps']} tokens/iter")
    print(f"iterations    {len(train)} timed (of {iters}; first {SKIP} skipped)")
    print(f"step time     {dt:.1f} ms (median)")
    print(f"tokens/s      {tps:,.0f} (median)")
    if mfus:
        print(f"MFU           {100 * statistics.median(mfus):.1f}% of {sysinfo['peak_flops'] / 1e12:.1f} TFLOP/s")
    else:
        print("MFU           n/a (no peak FLOP/s known for this device; pass --peak_flops=...)")
    mem = stats.get("peak_memory_bytes")
    kind = "GPU max allocated" if str(cfg.get("device", "")).startswith("cuda") else "process max RSS"
    print(f"peak memory   {mem / 2**20:,.0f} MiB ({kind})" if mem else "peak memory   n/a")
    print(f"data loader   {100 * data_share:.2f}% of step time")
    grad_scales = [r["grad_scale"] for r in train if r["grad_scale"] is not None]
    if grad_scales:
        print(f"grad scale    {grad_scales[0]:g} -> {grad_scales[-1]:g} (fp16 GradScaler)")
    print(f"loss          {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}")
    for w in warnings:
        print(f"warning       {w}")


if __name__ == "__main__":
    main(sys.argv[1:])
