"""
Does a run (or an excerpt of it) really show its verdict? One check per verdict, on the numbers.

Each check takes a Series (series.py), possibly cut to a window, and returns (ok, evidence):
evidence is a dict of the numbers the decision rests on, written into labels.json. The
generator keeps a run only when its verdict's check passes; tests rerun the same checks on the
committed metrics; excerpts.py runs them on the part a cut shows.

What a verdict means for the accuracy bench is in VERDICTS: the categories (the same words as
../shared/logs/labels_more.json) a diagnosis must raise ('expect') and must not raise ('forbid');
a category in neither is left open.
"""
import math
import statistics

from bench.zoo.series import column, finite, tokens_per_iter

CATEGORIES = ("healthy", "overfitting", "repeat", "plateau", "lr_limited", "instability", "not_learning",
              "leakage", "suspicious_low")
_ALL_BAD = ("overfitting", "repeat", "plateau", "instability", "not_learning", "leakage", "suspicious_low")

VERDICTS = {
    # verdict: (expect, forbid)
    "healthy": ((), _ALL_BAD),
    "overfitting": (("overfitting", "repeat"), ("instability", "not_learning", "leakage")),
    "repeat": (("repeat",), ("overfitting", "instability", "not_learning", "plateau")),
    "plateau": (("plateau",), ("overfitting", "repeat", "instability", "not_learning")),
    "lr_limited": (("lr_limited",), ("overfitting", "repeat", "instability", "not_learning", "plateau")),
    "divergence": (("instability",), ("overfitting", "repeat", "plateau")),
    "spikes": (("instability",), ("overfitting", "repeat", "not_learning")),
    "loss_scale": (("instability",), ("overfitting", "repeat")),
    "not_learning": (("not_learning",), ("overfitting", "repeat", "instability")),
    "leakage": (("leakage", "repeat"), ("overfitting", "instability", "not_learning")),
}

MIN_SE = 0.005  # a floor under an eval's standard error (nanoGPT prints none)


def _evals(series, key="val_loss"):
    return [e for e in series["eval"] if e.get(key) is not None and math.isfinite(e[key])]


def _se(evals):
    """The larger of the logged standard errors and the noise the curve itself shows (a run's SE can be
    optimistic; nanoGPT's random eval batches log none): the scatter of its second differences, which
    a smooth fall does not inflate (1.4826 MAD / sqrt(6) is the SD of white noise)."""
    logged = finite(column(evals, "val_loss_se"))
    v = [e["val_loss"] for e in evals]
    d2 = [abs(v[i + 1] - 2 * v[i] + v[i - 1]) for i in range(1, len(v) - 1)]
    swing = 1.4826 * statistics.median(d2) / math.sqrt(6) if len(d2) >= 3 else 0.0
    return max([MIN_SE, swing] + logged)


def epochs_at_end(series):
    last = max([r["iter"] for r in series["train"] + series["eval"]], default=0)
    return (last + 1) * tokens_per_iter(series) / series["data"]["train_tokens"]


def overfitting(series):
    """Val reaches its minimum and then rises by more than 3 SE while train keeps falling (train as shown:
    the train-split eval, else the train records near the eval)."""
    ev = _evals(series)
    if len(ev) < 3:
        return False, {"evals": len(ev)}
    best = min(range(len(ev)), key=lambda i: ev[i]["val_loss"])
    se = _se(ev)
    last = ev[-1]
    rise = last["val_loss"] - ev[best]["val_loss"]
    at_best, at_last = _train_near(series, ev[best]), _train_near(series, last)
    train_fell = at_best is not None and at_last is not None and at_last < at_best
    ok = best < len(ev) - 1 and rise > 3 * se and train_fell
    return ok, dict(best_iter=ev[best]["iter"], best_val=round(ev[best]["val_loss"], 4),
                    last_iter=last["iter"], last_val=round(last["val_loss"], 4), rise=round(rise, 4),
                    se=round(se, 4), train_at_best=_round(at_best), train_at_last=_round(at_last))


def _round(x):
    return round(x, 4) if x is not None else None


def _train_near(series, e, k=10):
    """The train loss at an eval: its own train-split eval, else the mean of the last k train records
    up to its iteration (formats that print only val at evals); None when neither is shown."""
    if e.get("train_loss") is not None and math.isfinite(e["train_loss"]):
        return e["train_loss"]
    before = [r["loss"] for r in series["train"] if r["iter"] <= e["iter"] and math.isfinite(r["loss"])][-k:]
    return statistics.fmean(before) if before else None


def still_improving(series):
    """Val still falls: the least-squares slope over the last half of the evals is below zero by more
    than 2 of its standard errors (from the eval SE), and the last eval is within 2 SE of the best."""
    ev = _evals(series)
    if len(ev) < 6:
        return False, {"evals": len(ev)}
    half = ev[len(ev) // 2:]
    se = _se(ev)
    xs, ys = [e["iter"] for e in half], [e["val_loss"] for e in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    slope_se = se / math.sqrt(sxx)
    best = min(e["val_loss"] for e in ev)
    ok = slope < -2 * slope_se and ev[-1]["val_loss"] <= best + 2 * se
    span = xs[-1] - xs[0]
    return ok, dict(from_iter=xs[0], last_iter=xs[-1], last_val=round(ys[-1], 4),
                    fall_fitted=round(-slope * span, 4), fall_fitted_se=round(slope_se * span, 4), se=round(se, 4))


def healthy(series):
    """Under one epoch, val still improving, every loss finite, no spikes (one-step blips allowed)."""
    improving, ev = still_improving(series)
    epochs = epochs_at_end(series)
    losses = column(series["train"], "loss")
    spiky, sp = spikes(series)
    ok = improving and epochs < 1 and len(finite(losses)) == len(losses) and not sp["spike_iters"]
    return ok, dict(ev, epochs=round(epochs, 3), spike_iters=sp["spike_iters"])


def repeat(series):
    """At least two epochs, and val at the end within 2 SE of its minimum (repetition without damage)."""
    ev = _evals(series)
    epochs = epochs_at_end(series)
    if len(ev) < 3:
        return False, {"evals": len(ev), "epochs": round(epochs, 3)}
    se = _se(ev)
    best = min(e["val_loss"] for e in ev)
    ok = epochs >= 2 and ev[-1]["val_loss"] <= best + 2 * se
    return ok, dict(epochs=round(epochs, 3), best_val=round(best, 4), last_val=round(ev[-1]["val_loss"], 4),
                    se=round(se, 4))


def plateau(series):
    """Over the second half of the evals val changes by less than 3 SE and by less than 3% of what it
    fell in the first half (a slow fall that noise hides is not called flat)."""
    ev = _evals(series)
    if len(ev) < 6:
        return False, {"evals": len(ev)}
    mid = len(ev) // 2
    se = _se(ev)
    first = ev[0]["val_loss"] - ev[mid]["val_loss"]
    second = ev[mid]["val_loss"] - ev[-1]["val_loss"]
    ok = abs(second) < 3 * se and abs(second) < 0.03 * first
    return ok, dict(mid_iter=ev[mid]["iter"], fall_first_half=round(first, 4), fall_second_half=round(second, 4),
                    se=round(se, 4))


def lr_limited(series, reference=None):
    """The LR never decays (last LR >= 90% of the peak on a decaying schedule), or the LR is so low
    that val ends far (> 0.5 nats) above the same model's at a working LR while still falling."""
    lrs = finite(column(series["train"], "lr"))
    cfg = series["config"]
    ev = _evals(series)
    out = dict(peak_lr=cfg.get("learning_rate"), last_lr=lrs[-1] if lrs else None)
    undecayed = bool(lrs) and cfg.get("decay_lr", True) and cfg.get("learning_rate", 0) > 0 and \
        lrs[-1] >= 0.9 * cfg["learning_rate"]
    improving, imp = still_improving(series)
    too_low = False
    if reference is not None and ev:
        ref_val = _evals(reference)[-1]["val_loss"]
        out.update(reference_val=round(ref_val, 4), last_val=round(ev[-1]["val_loss"], 4))
        too_low = ev[-1]["val_loss"] > ref_val + 0.5 and improving
    out.update(undecayed=undecayed, too_low=too_low, still_falling=improving, fall_fitted=imp.get("fall_fitted"))
    return undecayed or too_low, out


def spikes(series, window=20, min_jump=0.5):
    """Spikes that recover: a train loss that jumps above the median of the `window` before it by more
    than max(min_jump, 6 MADs), stays above median + 3 MADs for at least one more step (a single
    point back in line at once is a blip, benign) and comes back under it within `window` steps."""
    loss = column(series["train"], "loss")
    iters = [r["iter"] for r in series["train"]]
    found, blips = [], []
    for i in range(window, len(loss) - 1):
        prev = [v for v in loss[i - window:i] if math.isfinite(v)]
        if len(prev) < window // 2 or not math.isfinite(loss[i]):
            continue
        med = statistics.median(prev)
        band = med + max(3 * statistics.median(abs(v - med) for v in prev), 0.1)
        if loss[i] - med <= max(min_jump, 6 * (band - med) / 3) or (found and iters[i] <= found[-1] + window):
            continue
        after = loss[i + 1:i + 1 + window]
        back = [k for k, v in enumerate(after) if math.isfinite(v) and v < band]
        if back and back[0] == 0:
            blips.append(iters[i])
        elif back:
            found.append(iters[i])
    return bool(found), dict(spike_iters=found, blip_iters=blips)


def divergence(series, k=10):
    """The train loss ends more than 1 nat above its lowest level (or non-finite) and stays there: the
    median of the last tenth is above the lowest median of k consecutive losses + 1 (medians, so one
    lucky micro-batch is not the level)."""
    loss = column(series["train"], "loss")
    fin = finite(loss)
    if len(loss) < 10:
        return False, {"points": len(loss)}
    tail = loss[-max(5, len(loss) // 10):]
    nonfinite_tail = not all(math.isfinite(v) for v in tail)
    lo = min(statistics.median(fin[i:i + k]) for i in range(max(1, len(fin) - k + 1))) if fin else float("nan")
    tail_med = statistics.median(finite(tail)) if finite(tail) else float("inf")
    ok = nonfinite_tail or tail_med > lo + 1.0
    return ok, dict(min_level=round(lo, 4), tail_median=round(tail_med, 4) if math.isfinite(tail_med) else None,
                    nonfinite_tail=nonfinite_tail, first_loss=round(fin[0], 4) if fin else None)


def not_learning(series):
    """The weights do not change: the val loss on the same fixed eval windows is the same to 1e-4 at every
    eval (train.py), or at least 5 logged learning rates are all exactly 0, or every train loss stays within
    0.05 of the uniform guess ln(vocab)."""
    vals = [e["val_loss"] for e in _evals(series)]
    vocab = series["data"].get("tokenizer", {}).get("vocab_size")
    loss = finite(column(series["train"], "loss"))
    lrs = finite(column(series["train"], "lr"))
    frozen = len(vals) >= 2 and max(vals) - min(vals) < 1e-4
    zero_lr = len(lrs) >= 5 and max(abs(v) for v in lrs) == 0
    uniform = bool(vocab) and len(loss) >= 5 and max(abs(v - math.log(vocab)) for v in loss) < 0.05
    return frozen or zero_lr or uniform, dict(
        val_range=round(max(vals) - min(vals), 9) if vals else None, lr_all_zero=zero_lr,
        ln_vocab=round(math.log(vocab), 4) if vocab else None,
        train_range=[round(min(loss), 4), round(max(loss), 4)] if loss else None)


def leakage(series):
    """Val equals the train-split eval to 1e-6 at every eval (val.bin holds the training data), over more
    than one epoch, where a real held-out split would have parted from train."""
    ev = [e for e in _evals(series) if e.get("train_loss") is not None]
    gaps = [abs(e["val_loss"] - e["train_loss"]) for e in ev]
    ok = len(ev) >= 3 and max(gaps) < 1e-6 and epochs_at_end(series) > 1
    return ok, dict(evals=len(ev), max_gap=max(gaps) if gaps else None, epochs=round(epochs_at_end(series), 3))


def loss_scale(series):
    """fp16 loss-scale trouble: the GradScaler's scale falls at least 64-fold below where it started
    (each fall is an overflow: a skipped step)."""
    scales = finite(column(series["train"], "grad_scale"))
    if not scales:
        return False, {"grad_scale": None}
    falls = sum(1 for a, b in zip(scales, scales[1:]) if b < a)
    return scales[0] / min(scales) >= 64, dict(first_scale=scales[0], min_scale=min(scales), falls=falls)


def check(verdict, series, reference=None):
    """(ok, evidence) for a verdict."""
    if verdict == "healthy":
        return healthy(series)
    if verdict == "overfitting":
        return overfitting(series)
    if verdict == "repeat":
        ok, ev = repeat(series)
        over, _ = overfitting(series)
        return ok and not over, dict(ev, overfitting=over)
    if verdict == "plateau":
        return plateau(series)
    if verdict == "lr_limited":
        return lr_limited(series, reference)
    if verdict == "divergence":
        return divergence(series)
    if verdict == "spikes":
        ok, ev = spikes(series)
        div, dv = divergence(series)
        return ok and not div, dict(ev, diverged=div)
    if verdict == "not_learning":
        return not_learning(series)
    if verdict == "leakage":
        return leakage(series)
    if verdict == "loss_scale":
        return loss_scale(series)
    raise ValueError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}")
