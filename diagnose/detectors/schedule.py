"""LR schedule checks: peak LR for the model size, warmup share, lr_decay_iters vs max_iters,
min_lr ratio, beta2 for the tokens per iteration, and the logged LR against the planned one."""
import numpy as np

from diagnose.detectors.common import missing, num, params, planned_lr, schedule_known, train_series
from diagnose.findings import Finding
from diagnose.detectors.common import fmt_count
from diagnose.scaling import GPT3_LR, SMALL_LR_HIGH, SMALL_LR_LOW, gpt3_lr


def detect(run):
    c = run.config
    if not schedule_known(run):
        return [Finding("lr.schedule_unknown", "info", "LR schedule unknown",
                        "The schedule checks and the forecast need the config.", missing=missing("config"))] \
            + logged_peak(run) + logged_decay_beyond_end(run)
    out = []
    lr, min_lr = float(c["learning_rate"]), float(c["min_lr"])
    warm, decay, max_iters = int(c["warmup_iters"]), int(c["lr_decay_iters"]), int(c["max_iters"])
    sched = c.get("lr_schedule", "cosine")
    n = params(run)
    if n:
        out += peak_lr(lr, n)
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


def peak_lr(lr, n):
    """The peak LR against known-good values: GPT-3's table (Brown et al. 2020) inside its range
    (125M-175B params), a wide band below it, where the table says nothing."""
    ref = gpt3_lr(n)
    ev = {"learning_rate": lr, "gpt3_lr_for_size": num(ref, 8), "params": n}
    small = n < GPT3_LR[0][0]
    if small:
        low, high = SMALL_LR_LOW, SMALL_LR_HIGH
        basis = (f"Below 125M parameters GPT-3's table gives no value (its 125M model used {ref:.0e}, "
                 f"a floor for smaller models); small models train well from ~1e-3 (nanoGPT's "
                 f"shakespeare_char at 10M) to ~1e-2")
    else:
        low, high = ref / 5, 5 * ref
        basis = f"GPT-3's table (Brown et al. 2020) gives ~{ref:.2g} for {fmt_count(n)} parameters"
    ev["ok_range"] = [num(low, 8), num(high, 8)]
    where = (f"the ~{low:g}-{high:g} that models under 125M train with" if small else
             f"GPT-3's {ref:.2g} for {fmt_count(n)} params")
    if lr > high:
        fix = min(high, 10 * ref) if small else ref
        return [Finding("lr.peak_high", "notice",
                        f"peak LR {lr:g} is " + (f"above {where}" if small else f"{lr / ref:.1f}x {where}"),
                        f"{basis}; far above invites spikes and a high noise floor.",
                        evidence=ev, recommendations=[f"--learning_rate={fix:.0e}"])]
    if lr < low:
        fix = 1e-3 if small else ref
        return [Finding("lr.peak_low", "notice",
                        f"peak LR {lr:g} is " + (f"below {where}" if small else f"{ref / lr:.1f}x below {where}"),
                        f"{basis}; a much lower LR than that wastes steps.",
                        evidence=ev, recommendations=[f"--learning_rate={fix:.0e}"])]
    return []


UNDECAYED = 0.9     # the LR at the end still above this share of its peak: the decay has barely begun
CUT_OFF = 1.5       # a decay planned to end beyond this many times the run's end is cut off


def _logged_from_start(run):
    """(iters, logged LR) when the log covers the run from its start and the LR has passed its peak
    (so its maximum is the peak); else None. An excerpt from mid-run shows a decayed LR, not the peak."""
    it, lr = train_series(run, "lr")
    if len(lr) < 10 or not np.all(np.isfinite(lr)) or it[0] > 0.05 * max(it[-1], 1):
        return None
    if int(np.argmax(lr)) >= len(lr) - 5:
        return None
    return it, lr


def logged_peak(run):
    """Without the config: the peak of the logged LR against the model size, when the log says the size."""
    n, seen = params(run), _logged_from_start(run)
    if not n or seen is None:
        return []
    out = peak_lr(float(np.max(seen[1])), n)
    for f in out:
        f.evidence["source"] = "logged lr"
        f.missing = missing("config")
    return out


def logged_decay_beyond_end(run):
    """Without the config: a logged LR that has begun to fall after its peak (so it is a decaying
    schedule, not a constant one) but ends above UNDECAYED of the peak. Reading the fall as a cosine
    from the peak to min_lr gives the planned length of the decay; well beyond the run's end (max_iters
    when the log says it, else the last logged iteration) the final anneal never happens."""
    seen = _logged_from_start(run)
    if seen is None:
        return []   # only a log seen from its start shows the peak
    it, lr = seen
    k = int(np.argmax(lr))
    peak, end = float(lr[k]), float(np.median(lr[-3:]))
    ratio = end / peak if peak > 0 else 1.0
    if not (UNDECAYED < ratio < 0.999) or k >= len(lr) - 5 or np.any(np.diff(lr[k:]) > 1e-3 * peak):
        return []   # decayed, constant, still warming up, or not a monotone decay
    last = int(it[-1])
    planned_end = int(run.config["max_iters"]) if run.config.get("max_iters") else last
    # cosine to min_lr = m x peak: ratio = m + (1 - m) (1 + cos(pi x)) / 2, x = share of the decay done
    spans = {}
    for m in (0.0, 0.1):
        x = float(np.arccos(np.clip(2 * (ratio - m) / (1 - m) - 1, -1, 1)) / np.pi)
        spans[m] = int(it[k] + (last - it[k]) / max(x, 1e-9))
    decay_end = min(spans.values())
    if decay_end <= CUT_OFF * planned_end:
        return []
    at_end = "the run's planned end" if run.config.get("max_iters") else "the last logged iteration"
    return [Finding("lr.decay_beyond_end", "notice",
                    f"the logged LR is still {ratio:.0%} of its peak at iteration {last}: its decay is planned to "
                    f"end near iteration ~{decay_end}, far beyond {at_end} ({planned_end})",
                    f"The LR fell from {peak:.3g} (iteration {int(it[k])}) to {end:.3g} and falls every step, so "
                    f"the schedule decays; read as a cosine to min_lr = 0-10% of the peak, that fall is "
                    f"{1 - ratio:.1%} of the way down, which puts the decay's end at iterations {spans[0.1]}-"
                    f"{spans[0.0]}. A cosine cut off this early never gives the final anneal that buys the "
                    "last few hundredths of a nat.",
                    evidence={"lr_peak": num(peak, 8), "lr_end": num(end, 8), "lr_ratio": num(ratio),
                              "peak_iter": int(it[k]), "last_iter": last, "planned_end": planned_end,
                              "decay_end_estimate": [spans[0.1], spans[0.0]], "source": "logged lr"},
                    recommendations=[f"--lr_decay_iters={planned_end} (the decay ends with the run)"],
                    missing=missing("config"))]
