"""Data repetition: epochs, what repeated tokens are worth, coverage, and the signatures
of a loader that replays the same batches (a staircase at epoch boundaries, periodicity)."""
import math

import numpy as np

from diagnose.detectors.common import (epochs_seen, finished, fmt_count, missing, num, planned_iters,
                                       tokens_seen, train_series)
from diagnose.findings import Finding
from diagnose.noise import train_noise
from diagnose.scaling import R_D_STAR, effective_tokens


NEARLY_NEW = 4      # epochs: up to here repeats are nearly as good as new data (Muennighoff et al.)
WASTEFUL = 8        # epochs: beyond this repeats are worth < ~83% of new tokens: a warning


def value_of(epochs):
    """What a repeated token is worth relative to a new one, averaged over `epochs` passes."""
    return effective_tokens(1.0, epochs) / epochs if epochs > 1 else 1.0


def detect(run):
    last = run.last_iter()
    if last is None:
        return []
    tpi, tt = run.tokens_per_iter(), run.train_tokens()
    epochs = epochs_seen(run)
    if epochs is None:
        lacks = ([] if tpi else missing("tokens_per_iter")) + ([] if tt else missing("train_tokens"))
        return [Finding("data.repetition", "info", "epochs unknown",
                        "How many times the data was repeated needs tokens per iteration and the "
                        "dataset size.", evidence={"epoch_boundary_iters": []}, missing=lacks)]
    seen = tokens_seen(run)[0]
    if seen is None and tt:
        seen = epochs * tt
    # what the plan will reach: a run still going is judged by where it is headed
    max_iters = planned_iters(run)
    planned = max_iters * tpi / tt if (max_iters and tpi and tt and not finished(run)) else None
    if planned is not None and planned <= epochs:
        planned = None
    worst = max(epochs, planned or 0.0)
    value = value_of(epochs)
    coverage = 1.0 - math.exp(-epochs)
    per_epoch = tt / tpi if (tt and tpi) else None
    bounds = [int(round(k * per_epoch)) for k in range(1, int(epochs) + 1)] if per_epoch else []
    bounds = [b for b in bounds if b <= last]
    ev = {"epochs": num(epochs), "value_of_tokens": num(value), "coverage_iid": num(coverage),
          "iters_per_epoch": num(per_epoch), "epoch_boundary_iters": bounds[:1000],
          "tokens_seen": seen, "train_tokens": tt}
    if planned is not None:
        ev.update({"planned_epochs": num(planned), "planned_iters": max_iters,
                   "planned_value_of_tokens": num(value_of(planned)),
                   "planned_tokens_worth": num(effective_tokens(tt, planned * tt), 0)})
    period = periodicity(run, per_epoch)
    ev.update(period or {})
    stair = staircase(run, bounds)
    ev.update(stair or {})
    if worst <= NEARLY_NEW:
        sev = "info"
    elif worst <= WASTEFUL:
        sev = "notice"
    else:
        sev = "warning"
    if planned is not None:
        title = (f"{epochs:.3g} epochs over the training data so far, {planned:.3g} by the planned end "
                 f"(iteration {max_iters}): repeated tokens worth {value_of(planned):.0%} of new ones")
    else:
        title = (f"{epochs:.3g} epochs over the training data" +
                 (f": repeated tokens worth {value:.0%} of new ones" if epochs > 1 else " (no token seen twice on average)"))
    expl = (f"Tokens seen / train tokens = {epochs:.3g}"
            + (f" ({fmt_count(seen)} / {fmt_count(tt)})" if seen and tt else "") + ". "
            f"By the data-constrained scaling law (Muennighoff et al. 2023, R_D* = {R_D_STAR}) up to "
            f"~{NEARLY_NEW} epochs are nearly as good as new data and 16 lose about a third; here the "
            f"tokens are worth {value:.0%} of unique ones" + (" so far." if planned is not None else "."))
    if planned is not None:
        worth = effective_tokens(tt, planned * tt)
        expl += (f" At the planned end the run will have seen the data {planned:.3g} times: its "
                 f"{fmt_count(planned * tt)} tokens will be worth {fmt_count(worth)} new ones "
                 f"({value_of(planned):.0%}), so ~{1 - value_of(planned):.0%} of the compute buys nothing "
                 "that new data would not buy better.")
    expl += f" A random-offset loader covers 1 - e^-epochs = {coverage:.0%} of the data."
    if period and period.get("period_corr", 0) > 0.3:
        expl += (f" The detrended loss repeats with a period of {period['period_steps']} steps "
                 f"(autocorrelation {period['period_corr']:.2f}): the same batches come back each epoch.")
        sev = max(sev, "notice", key=["info", "notice", "warning"].index)
    if stair and stair.get("staircase_drop", 0) > 0:
        expl += (f" The loss drops by {stair['staircase_drop']:.3f} at epoch boundaries: "
                 "the model has seen those batches before.")
    recs = []
    if worst > NEARLY_NEW:
        more = max(2, math.ceil(worst / NEARLY_NEW))
        recs = [f"more unique data, ~{more}x this dataset (FineWeb: pass more parquet files, "
                "python data/fineweb_single/prepare.py --input FILE1.parquet FILE2.parquet ...)"]
        if per_epoch:
            fewer = int(NEARLY_NEW * per_epoch)
            recs.append(f"or fewer iterations: --max_iters={fewer} --lr_decay_iters={fewer} "
                        f"({NEARLY_NEW} epochs), or a bigger model on fewer tokens (see capacity)")
        if not run.config.get("dropout"):
            recs.append("--dropout=0.1")
    out = [Finding("data.repetition", sev, title, expl, evidence=ev,
                   iters=(bounds[0], last) if bounds else None, recommendations=recs)]
    out += memorised(run, epochs)
    return out


def periodicity(run, per_epoch):
    """Autocorrelation of the detrended train loss around the epoch period (in logged steps)."""
    it, v = train_series(run)
    if len(v) < 60 or not per_epoch:
        return None
    step = float(np.median(np.diff(it)))
    lag0 = per_epoch / step
    if not 2 <= lag0 <= len(v) / 4:
        return None
    y = np.log(np.maximum(v, 1e-6))
    tn = train_noise(it, y)
    r = tn["resid"][len(tn["resid"]) // 4:]
    r = r - r.mean()
    denom = float(np.dot(r, r))
    if denom <= 0:
        return None
    best = None
    for lag in sorted({int(math.floor(lag0)), int(math.ceil(lag0))}):
        if lag < 1 or lag >= len(r):
            continue
        c = float(np.dot(r[:-lag], r[lag:]) / denom)
        if best is None or c > best[1]:
            best = (lag, c)
    if best is None:
        return None
    return {"period_steps": int(round(best[0] * step)), "period_corr": num(best[1])}


def staircase(run, bounds):
    """Mean drop of the loss across epoch boundaries, beyond its local trend."""
    if not bounds:
        return None
    it, v = train_series(run)
    tn = train_noise(it, v)
    if tn is None:
        return None
    drops = []
    for b in bounds[:200]:
        before = (it < b) & (it >= b - 5 * tn["window"])
        after = (it >= b) & (it < b + 5 * tn["window"])
        if before.sum() >= 3 and after.sum() >= 3:
            drops.append(float(np.median(v[before]) - np.median(v[after])))
    if not drops:
        return None
    d = float(np.median(drops))
    # a staircase is a drop beyond what the trend alone gives between two such windows
    return {"staircase_drop": num(d) if d > 3 * tn["sigma"] else 0.0}


def memorised(run, epochs):
    it, v = train_series(run)
    if len(v) < 10 or epochs < 10:
        return []
    level = float(np.median(v[-max(3, len(v) // 20):]))
    if level > 0.1:
        return []
    return [Finding("data.memorization", "warning",
                    f"train loss {level:.4f} after {epochs:.3g} epochs: the model has memorised its data",
                    "A loss this close to zero on natural text means the model reproduces its "
                    "training tokens; it says nothing about held-out text.",
                    evidence={"train_loss": num(level), "epochs": num(epochs)},
                    iters=(int(it[0]), int(it[-1])),
                    recommendations=["more unique data", "--dropout=0.1", "a smaller --max_iters"])]
