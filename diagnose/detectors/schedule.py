"""LR schedule checks: peak LR for the model size, warmup share, lr_decay_iters vs max_iters,
min_lr ratio, beta2 for the tokens per iteration, and the logged LR against the planned one."""
import numpy as np

from diagnose.detectors.common import missing, num, params, planned_lr, schedule_known, train_series
from diagnose.findings import Finding
from diagnose.scaling import gpt3_lr


def detect(run):
    c = run.config
    if not schedule_known(run):
        return [Finding("lr.schedule_unknown", "info", "LR schedule unknown",
                        "The schedule checks and the forecast need the config.", missing=missing("config"))]
    out = []
    lr, min_lr = float(c["learning_rate"]), float(c["min_lr"])
    warm, decay, max_iters = int(c["warmup_iters"]), int(c["lr_decay_iters"]), int(c["max_iters"])
    sched = c.get("lr_schedule", "cosine")
    n = params(run)
    if n:
        ref = gpt3_lr(n)
        ev = {"learning_rate": lr, "gpt3_lr_for_size": num(ref, 8), "params": n}
        if lr > 3 * ref:
            out.append(Finding("lr.peak_high", "notice", f"peak LR {lr:g} is {lr / ref:.1f}x GPT-3's for {n / 1e6:.0f}M params",
                               "GPT-3's table (extrapolated to this size; small models tolerate more) "
                               f"suggests ~{ref:.2g}; far above invites spikes and a high noise floor.",
                               evidence=ev, recommendations=[f"--learning_rate={ref:.1e}"]))
        elif lr < ref / 5:
            out.append(Finding("lr.peak_low", "notice", f"peak LR {lr:g} is {ref / lr:.1f}x below GPT-3's for {n / 1e6:.0f}M params",
                               "A much lower LR than models of this size train with wastes steps.",
                               evidence=ev, recommendations=[f"--learning_rate={ref:.1e}"]))
    share = warm / max(1, max_iters)
    if c.get("decay_lr", True) and (share < 0.002 or share > 0.2):
        out.append(Finding("lr.warmup", "notice", f"warmup is {share:.1%} of the run ({warm} iterations)",
                           "Too short a warmup risks early spikes with Adam; too long wastes high-LR steps. "
                           "1-5% is usual.", evidence={"warmup_iters": warm, "share": num(share)},
                           recommendations=[f"--warmup_iters={max(100, int(0.02 * max_iters))}"]))
    if sched == "cosine" and c.get("decay_lr", True):
        if decay > 1.05 * max_iters:
            end_lr = planned_lr(run, max_iters)
            out.append(Finding("lr.decay_beyond_end", "notice",
                               f"lr_decay_iters={decay} > max_iters={max_iters}: the run ends at LR {end_lr:.2g}, not min_lr",
                               "The cosine is cut off before it finishes, so the final anneal that buys the "
                               "last few hundredths of a nat never happens.",
                               evidence={"lr_decay_iters": decay, "max_iters": max_iters, "lr_at_end": num(end_lr, 8)},
                               recommendations=[f"--lr_decay_iters={max_iters}"]))
        elif decay < 0.8 * max_iters:
            out.append(Finding("lr.decay_early", "info",
                               f"the LR reaches min_lr at {decay}, {max_iters - decay} iterations before the end",
                               "The tail at min_lr learns slowly; nanoGPT sets lr_decay_iters = max_iters.",
                               evidence={"lr_decay_iters": decay, "max_iters": max_iters},
                               recommendations=[f"--lr_decay_iters={max_iters}"]))
    if c.get("decay_lr", True) and sched != "constant":
        ratio = min_lr / lr if lr else 0
        if ratio > 0.3:
            out.append(Finding("lr.min_lr_high", "notice", f"min_lr is {ratio:.0%} of the peak",
                               "The decay is what buys the final loss; decaying only a little leaves most of it "
                               "on the table. min_lr = learning_rate/10 (Chinchilla) or lower is usual.",
                               evidence={"min_lr": min_lr, "ratio": num(ratio)},
                               recommendations=[f"--min_lr={lr / 10:.1e}"]))
    tpi = run.tokens_per_iter()
    beta2 = c.get("beta2")
    if tpi and beta2:
        if tpi >= 262144 and beta2 >= 0.99:
            out.append(Finding("lr.beta2", "info", f"beta2={beta2} with {tpi} tokens/iter",
                               "Large batches give low-noise gradients; GPT-3 used beta2=0.95 at 0.5M tokens, "
                               "which adapts faster and resists spikes.", evidence={"beta2": beta2, "tokens_per_iter": tpi},
                               recommendations=["--beta2=0.95"]))
        elif tpi < 65536 and beta2 <= 0.95:
            out.append(Finding("lr.beta2", "info", f"beta2={beta2} with {tpi} tokens/iter",
                               "Small batches give noisy gradients; nanoGPT's small configs use beta2=0.99 "
                               "to average the second moment over more steps.",
                               evidence={"beta2": beta2, "tokens_per_iter": tpi}, recommendations=["--beta2=0.99"]))
    it, logged = train_series(run, "lr")
    if len(logged) >= 5:
        planned = np.array([planned_lr(run, i) for i in it[:: max(1, len(it) // 200)]])
        got = logged[:: max(1, len(it) // 200)]
        rel = np.abs(got - planned) / np.maximum(planned, 1e-12)
        if np.median(rel) > 0.05:
            out.append(Finding("lr.mismatch", "notice", "the logged LR differs from the config's schedule",
                               f"Median relative difference {np.median(rel):.0%}: the config given is not the "
                               "one the run used (or the run was resumed with other settings).",
                               evidence={"median_rel_diff": num(float(np.median(rel)))},
                               missing=["the run's own config (give --config FILE.py)"]))
    return out
