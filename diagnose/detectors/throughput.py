"""Throughput: MFU against the real GPU's peak (and nanoGPT's 312 TFLOPS figure), step-time
cliffs, eval overhead, ETA."""
import numpy as np

from diagnose.detectors.common import iters_done, missing, num, train_series
from diagnose.findings import Finding
from facts import NANOGPT_MFU_PEAK, peak_flops_for


def detect(run):
    out = []
    it, dt = train_series(run, "dt_ms")
    if len(dt) < 5:
        return out
    med = float(np.median(dt))
    out += mfu(run, med)
    slow = dt > 5 * med
    if slow.any() and len(dt) >= 50:
        # only every log_interval-th step is logged: the unlogged ones ran at the median time
        excess = float((dt[slow] - med).sum())
        share = excess / (med * max(1.0, float(it[-1] - it[0])) + excess)
        out.append(Finding("throughput.eval_overhead", "notice" if share > 0.1 else "info",
                           f"{int(slow.sum())} slow steps (evals, checkpoints) take {share:.0%} of the time",
                           "Steps many times the median are the ones with an eval or checkpoint in them.",
                           evidence={"slow_iters": [int(i) for i in it[slow]][:200], "share": num(share),
                                     "median_ms": num(med)},
                           recommendations=["--eval_interval=<2 x now>"] if share > 0.1 else []))
    normal = dt[~slow]
    if len(normal) >= 40:
        q = len(normal) // 4
        a, b = float(np.median(normal[:q])), float(np.median(normal[-q:]))
        if b > 1.3 * a:
            out.append(Finding("throughput.slowdown", "notice", f"steps slowed from {a:.0f} to {b:.0f} ms",
                               "A step-time cliff: thermal throttling, another process on the GPU, or "
                               "memory pressure.", evidence={"early_ms": num(a), "late_ms": num(b)}))
    max_iters = run.config.get("max_iters")
    done = iters_done(run)
    ended = [e.get("reason") for e in run.events if e.get("event") == "end"]
    over = bool(ended) and ended[-1] in ("max_iters", "early_stop", "nonfinite")   # not resumable by design
    if max_iters and done < max_iters and not over:
        left = (max_iters - done) * med / 1000.0
        out.append(Finding("throughput.eta", "info", f"ETA {left / 3600:.1f} h for {int(max_iters - done)} more iterations",
                           "At the median step time.", evidence={"eta_s": num(left), "median_ms": num(med)}))
    return out


# what train.py (platform.machine()) and others log as the device name of a CPU run
CPU_NAMES = ("cpu", "x86_64", "amd64", "i386", "i686", "aarch64", "arm64")


def on_cpu(run):
    """A CPU run: config device 'cpu', or a device name that is a CPU architecture and no peak FLOP/s."""
    if str(run.config.get("device") or "").lower().startswith("cpu"):
        return True
    name = str(run.system.get("device_name") or "").strip().lower()
    return name in CPU_NAMES and not run.system.get("peak_flops")


def cpu_throughput(run, med_ms):
    """MFU means nothing without a GPU's peak: say tokens per second instead."""
    tpi = run.tokens_per_iter()
    _, tps = train_series(run, "tokens_per_sec")
    rate = float(np.median(tps)) if len(tps) else (tpi / (med_ms / 1000.0) if tpi and med_ms > 0 else None)
    if rate is None:
        return []
    return [Finding("throughput.tokens_per_sec", "info", f"{rate:,.0f} tokens/s on the CPU ({med_ms:.0f} ms per iteration)",
                    "A CPU run has no tensor-core peak to measure MFU against, so tokens per second is "
                    "the figure to compare runs by (the median over the logged steps).",
                    evidence={"tokens_per_sec": num(rate), "median_ms": num(med_ms), "device": "cpu"})]


def mfu(run, med_ms):
    if on_cpu(run):
        return cpu_throughput(run, med_ms)
    it, logged = train_series(run, "mfu")
    device = run.system.get("device_name") or run.system.get("gpu")
    dtype = run.system.get("dtype") or run.config.get("dtype") or "bfloat16"
    peak = run.system.get("peak_flops") or peak_flops_for(device, dtype)
    fpt = run.model.get("flops_per_token")
    tpi = run.tokens_per_iter()
    achieved = None
    if fpt and tpi and med_ms > 0:
        achieved = float(fpt) * tpi / (med_ms / 1000.0)
    elif len(logged):
        m = float(np.median(logged))
        achieved = (m / 100.0 if m > 1 else m) * NANOGPT_MFU_PEAK
    if achieved is None:
        return []
    ev = {"achieved_flops": num(achieved), "mfu_vs_312tflops": num(achieved / NANOGPT_MFU_PEAK),
          "device": device, "peak_flops": peak}
    if not peak:
        return [Finding("throughput.mfu", "info",
                        f"MFU {achieved / NANOGPT_MFU_PEAK:.1%} of nanoGPT's 312 TFLOPS (A100) reference",
                        "nanoGPT divides by an A100's 312 TFLOPS whatever the GPU; the real MFU needs the GPU.",
                        evidence=ev, missing=missing("device"))]
    real = achieved / float(peak)
    ev["mfu_real"] = num(real)
    return [Finding("throughput.mfu", "notice" if real < 0.15 else "info",
                    f"MFU {real:.1%} of {device}'s peak ({achieved / NANOGPT_MFU_PEAK:.1%} as nanoGPT reports it)",
                    f"nanoGPT's mfu divides by 312 TFLOPS (an A100) whatever the GPU; against this GPU's "
                    f"{float(peak) / 1e12:.0f} TFLOPS the utilisation is {real:.1%}.",
                    evidence=ev,
                    recommendations=["--compile=True", "--dtype=bfloat16"] if real < 0.15 else [])]
