"""Data repetition: epochs, what repeated tokens are worth, coverage, and the signatures
of a loader that replays the same batches (a staircase at epoch boundaries, periodicity)."""
import math

import numpy as np

from diagnose.detectors.common import epochs_seen, missing, num, tokens_seen, train_series
from diagnose.findings import Finding
from diagnose.noise import train_noise
from diagnose.scaling import R_D_STAR, effective_tokens


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
    value = effective_tokens(1.0, epochs) / epochs if epochs > 1 else 1.0
    coverage = 1.0 - math.exp(-epochs)
    per_epoch = tt / tpi if (tt and tpi) else None
    bounds = [int(round(k * per_epoch)) for k in range(1, int(epochs) + 1)] if per_epoch else []
    bounds = [b for b in bounds if b <= last]
    ev = {"epochs": num(epochs), "value_of_tokens": num(value), "coverage_iid": num(coverage),
          "iters_per_epoch": num(per_epoch), "epoch_boundary_iters": bounds[:1000],
          "tokens_seen": seen, "train_tokens": tt}
    period = periodicity(run, per_epoch)
    ev.update(period or {})
    stair = staircase(run, bounds)
    ev.update(stair or {})
    if epochs <= 1:
        sev = "info"
    elif epochs <= 4:
        sev = "info"
    elif epochs <= 16:
        sev = "notice"
    else:
        sev = "warning"
    title = (f"{epochs:.3g} epochs over the training data" +
             (f": repeated tokens worth {value:.0%} of new ones" if epochs > 1 else " (no token seen twice on average)"))
    expl = (f"Tokens seen / train tokens = {epochs:.3g}. By the data-constrained scaling law "
            f"(Muennighoff et al. 2023, R_D* = {R_D_STAR}) up to ~4 epochs are nearly as good as new "
            f"data and 16 lose about a third; here the tokens are worth {value:.0%} of unique ones. "
            f"A random-offset loader covers 1 - e^-epochs = {coverage:.0%} of the data.")
    if period and period.get("period_corr", 0) > 0.3:
        expl += (f" The detrended loss repeats with a period of {period['period_steps']} steps "
                 f"(autocorrelation {period['period_corr']:.2f}): the same batches come back each epoch.")
        sev = max(sev, "notice", key=["info", "notice", "warning"].index)
    if stair and stair.get("staircase_drop", 0) > 0:
        expl += (f" The loss drops by {stair['staircase_drop']:.3f} at epoch boundaries: "
                 "the model has seen those batches before.")
    recs = []
    if epochs > 4:
        recs = ["more unique data (a second parquet file in data/<name>/prepare.py)",
                f"--max_iters={int(4 * per_epoch)}" if per_epoch else "fewer iterations",
                "--dropout=0.1"]
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
