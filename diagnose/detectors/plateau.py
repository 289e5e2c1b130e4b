"""Plateau or still improving, aware of the LR schedule.

A curve flat within noise while the LR is still near its peak is not a plateau: the decay
still buys loss (suggest a cooldown, not a stop). Flat with the LR already low is a true
plateau, which routes to data (epochs) or capacity (tokens per parameter); flat only over the
last stretch of a finished decay is convergence, expected and info. A run that spiked or
diverged is flat because of its LR, so there the verdict routes to the LR instead.
"""
import numpy as np

from diagnose.detectors.common import (eval_series, finished, iters_done, lr_now_and_peak, num, planned_lr,
                                       schedule_known, train_series)
from diagnose.analysis import analysis_of
from diagnose.findings import Finding
from diagnose.noise import min_detectable_change
from diagnose.recipe import modern_recipe_advice

WINDOW = 0.25        # the last quarter of the iterations seen
LR_HIGH = 0.5        # LR above this share of its peak is 'still near peak'
SHORT = 0.3          # flat for less than this share of the iterations seen: only flattening
LR_FLOOR = 0.2       # LR at or below this share of its peak: the decay is (nearly) done
STILL_TO_DECAY = 0.1  # the planned LR still falls by more than this share of its peak: not a plateau yet
MATERIAL_GAIN = 0.02  # nats: a last half that bought less than this (2% in perplexity) is a plateau in practice


def curve(run):
    """(iters, values, se of one value, name): val evals when there are enough, else binned train loss."""
    iv, vv = eval_series(run)
    if len(vv) >= 6:
        se, _ = analysis_of(run).val_se
        if np.isfinite(se):
            return iv, vv, se, "val loss"
    it, v = train_series(run)
    if len(v) < 30:
        return None
    tn = analysis_of(run).train_noise
    if tn is None or not np.isfinite(tn["sigma"]):
        return None
    nb = min(60, len(v))
    edges = np.linspace(0, len(v), nb + 1).astype(int)
    bi = np.array([it[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    bv = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    per = max(1, len(v) // nb)
    # a smoothed log (an EMA) gives a bin fewer independent points than it has
    return bi, bv, tn["sigma"] * np.sqrt(min(tn["memory"], per) / per), "train loss"


def detect(run):
    c = curve(run)
    if c is None:
        return []
    it, v, se, name = c
    if len(v) < 6 or not se > 1e-6:   # an exactly constant loss is sanity.not_learning's
        return []
    if float(np.mean(v[-3:])) > float(np.min(v)) + min_detectable_change(se) and int(np.argmin(v)) < len(v) - 3:
        found = creep(run, it, v, se, name)  # rising again: a creep, else overfitting's or instability's
        if found is not None:
            return found
    span = it[-1] - it[0]
    w = it >= it[-1] - WINDOW * span
    if w.sum() < 4:
        w = np.zeros(len(it), bool)
        w[-4:] = True
    x, y = it[w], v[w]
    drop, drop_se, _ = fitted_drop(x, y, se)
    mdc = min_detectable_change(se)
    ev = {"curve": name, "window_iters": [int(x[0]), int(x[-1])], "drop_in_window": num(drop),
          "drop_se": num(drop_se), "min_detectable_change": num(mdc), "se": num(se)}
    lr_now, peak = lr_now_and_peak(run, it[-1])
    ratio = lr_now / peak if lr_now is not None and peak else None
    ev["lr_now"], ev["lr_peak"], ev["lr_ratio"] = num(lr_now, 8), num(peak, 8), num(ratio)
    h = it >= it[-1] - 0.5 * span
    drop_h, drop_h_se, _ = fitted_drop(it[h], v[h], se) if h.sum() >= 6 else (np.nan, np.nan, None)
    # practically flat: even the upper bound of what the last half bought is under MATERIAL_GAIN
    practical = bool(np.isfinite(drop_h) and drop_h + 2 * drop_h_se < MATERIAL_GAIN)
    ev.update(drop_last_half=num(drop_h), drop_last_half_se=num(drop_h_se), practically_flat=practical,
              test=f"fitted fall over the last quarter > 2 SE and > the min detectable change, and over the "
                   f"last half an upper bound (fall + 2 SE) of at least {MATERIAL_GAIN} nats")
    falling = falls_at_every_eval(y)
    ev["falls_at_every_eval"] = falling
    if (significant(drop, drop_se, mdc) or falling) and not practical:
        return [Finding("plateau.none", "ok",
                        f"still improving: {name} fell {drop:.3f} nats over iterations {int(x[0])}-{int(x[-1])}",
                        f"The fitted fall over the last quarter ({drop:.3f} nats) is {drop / max(drop_se, 1e-12):.1f} "
                        "times its standard error: not a plateau. Keep going; the forecast says where it ends.",
                        evidence=ev, iters=(int(x[0]), int(x[-1])))]
    onset = it[h][0] if practical else flat_since(it, v, se, plateau_onset(it, v, mdc))
    ev["onset_iter"] = int(onset)
    ev["flat_share"] = num((it[-1] - onset) / span) if span > 0 else None
    region = (int(onset), int(it[-1]))
    trouble = analysis_of(run).unstable
    if trouble:
        if any(f.id == "instability.divergence" for f in trouble):
            return []              # a diverged run has no plateau to read: the divergence says it all
        return [Finding(
            "plateau.after_instability", "notice",
            f"{name} flat within noise since ~{int(onset)}, after a loss spike: the LR, not data or capacity, is the limit",
            f"The loss stopped falling after the run spiked ({trouble[0].title}). The LR that caused it"
            + (f" is still {ratio:.0%} of its peak" if ratio is not None else " is still in force")
            + ": the flat stretch is most likely the optimizer bouncing at too high a step size rather "
            "than the model or the data running out. Lower the LR before reading anything into this level.",
            evidence=ev, iters=region,
            recommendations=["--learning_rate=<0.3 x now>", "--grad_clip=1.0", "--warmup_iters=<2 x now>"])]
    decay = decay_to_come(run, it[-1], lr_now, peak)
    if decay is not None:
        ev.update(decay)
        return [Finding(
            "plateau.lr_decaying", "info",
            f"{name} flat within noise since ~{int(onset)}, but the LR ({ratio:.0%} of peak) still decays to "
            f"{decay['lr_end_ratio']:.0%} by iteration {decay['max_iters']}: not a plateau",
            f"The fall over the last stretch is within eval noise (fitted {drop:.3f} +- {drop_se:.3f} nats), "
            f"but the schedule is not done: the LR is {lr_now:.2g} and falls to {decay['lr_end']:.2g} over the "
            f"remaining {decay['iters_left']} iterations. A falling LR lowers the noise floor the loss sits on "
            "and buys loss on its own (the annealing term of Tissue et al. 2024), so a curve that looks flat "
            "mid-decay is not a plateau; the forecast finding says how much the rest of the decay should buy. "
            "Keep going.",
            evidence=ev, iters=region)]
    # flat for half the run: half of the iterations done since iteration 0, not of the lines seen (an
    # excerpt of 40 iterations late in a run is flat within noise whatever the run does)
    run_share = (it[-1] - onset) / it[-1] if it[-1] > 0 else 0.0
    long_flat = practical or run_share >= 0.5
    # power: the fall before the onset must exceed the upper bound of what the flat half could hide
    # (with noise as large as the learning seen, 'flat within noise' says nothing)
    fall_before = float(v[0] - np.mean(v[it >= onset]))
    ev["fall_before_onset"] = num(fall_before)
    powered = bool(np.isfinite(drop_h) and fall_before > drop_h + 2 * drop_h_se)
    if ratio is not None and ratio >= LR_HIGH and long_flat and powered:
        return [at_peak_lr(name, onset, run_share, drop_h, drop_h_se, ratio, ev, region)]
    if ratio is not None and ratio >= LR_HIGH:
        return [Finding(
            "plateau.lr_high", "notice",
            f"{name} flat within noise since ~{int(onset)}, but the LR is still {ratio:.0%} of its peak: not a plateau",
            "At a high learning rate the loss sits on a noise floor set by the step size; it looks flat "
            "while the model is still improving underneath. Decaying the LR removes that floor and "
            "buys loss (typically several hundredths of a nat; see the forecast finding). "
            "Do not stop here: cool down instead.",
            evidence=ev, iters=region,
            recommendations=["--lr_schedule=wsd", "--decay_frac=0.2", "--min_lr=<learning_rate/10>"])]
    if it[-1] - onset < SHORT * max(span, it[-1]):  # of the run, not of an excerpt's lines
        done = not run.config.get("max_iters") or finished(run)
        if ratio is not None and ratio <= LR_FLOOR and done:
            return [Finding(
                "plateau.converged", "info",
                f"{name} converged at the LR floor: flat within noise for the last {int(it[-1] - onset)} "
                f"iterations, as the decay ended",
                "A loss that flattens while the LR decays to its floor at the end of the schedule is what "
                "convergence looks like, not a problem: this run got what its schedule could give. "
                "More loss needs a longer schedule (see forecast.final's what-if), more unique data "
                "(see data.repetition) or more capacity (see capacity.*).",
                evidence=ev, iters=region,
                recommendations=["a longer schedule: --max_iters=<2 x now> --lr_decay_iters=<2 x now>",
                                 "more unique data (--dataset=...)",
                                 "a larger model (--n_layer / --n_embd, see capacity)"])]
        return [Finding("plateau.flattening", "info",
                        f"{name} flattening since ~{int(onset)}: the last {int(it[-1] - onset)} iterations are within noise",
                        "A curve flattens as it converges; too short a stretch to call a plateau yet.",
                        evidence=ev, iters=region)]
    if ratio is None:
        return [Finding(
            "plateau.flat", "warning" if long_flat else "notice",
            f"{name} flat since ~{int(onset)}" + (f": the last half bought {drop_h:.3f} nats" if practical
                                                  else " within noise"),
            ("Half the run or more bought less than "
             f"{MATERIAL_GAIN} nats (2% in perplexity): whatever the LR does, these steps are not paying. "
             if long_flat else "The fall over the last quarter is within noise. ")
            + "Whether the LR can still help depends on it: at a high LR a decay still buys loss "
            "(a cooldown), at a low LR it is a true plateau of the data or the model.",
            evidence=ev, iters=region, missing=["the LR schedule (give --config FILE.py)"])]
    return [Finding(
        "plateau.true", "warning",
        f"plateau: {name} flat within noise since ~{int(onset)} with the LR down to {ratio:.0%} of peak",
        f"The loss has not fallen beyond noise for the last {int(it[-1] - onset)} iterations "
        f"({(it[-1] - onset) / span:.0%} of the run) while the LR decayed, so that compute bought "
        "little and more steps of this run will not buy much. What limits it is the data (see "
        "data.repetition: repeated epochs are worth less) or the model's capacity (see capacity.*).",
        evidence=ev, iters=region,
        recommendations=["--early_stop=True", "more unique data (--dataset=...)",
                         "a larger model (--n_layer / --n_embd, see capacity)"]
        + ([modern_recipe_advice(run)] if modern_recipe_advice(run) else []))]


def at_peak_lr(name, onset, share, drop_h, drop_h_se, ratio, ev, region):
    """Flat for half the run or more (or practically flat) at an LR the schedule is not going to decay:
    a plateau of this run as configured. A noise floor hides at most what a cooldown buys once."""
    return Finding(
        "plateau.at_peak_lr", "warning",
        f"plateau at {ratio:.0%} of the peak LR: {name} flat within noise since ~{int(onset)} ({share:.0%} of "
        f"the run), the last half bought {drop_h:.3f} +- {drop_h_se:.3f} nats",
        f"The loss has not fallen beyond noise for {share:.0%} of the run (or its last half bought under "
        f"{MATERIAL_GAIN} nats even at the upper bound), and the schedule does not decay the LR: more steps "
        "of this run as configured will not pay. A cooldown (decaying the LR) removes the step-size noise "
        "floor and buys a little once; beyond that the model's capacity or the data is the limit (see "
        "capacity.*, data.repetition).",
        evidence=ev, iters=region,
        recommendations=["--lr_schedule=wsd", "--decay_frac=0.2", "a larger model (--n_layer / --n_embd)",
                         "more unique data (--dataset=...)"])


def creep(run, it, v, se, name):
    """The loss stopped improving and now rises beyond noise, with train rising too (or only
    train logged) and no spike or divergence behind it: a plateau that is getting worse.
    None when the rise is within noise (the curve is then read as usual); [] when it is
    overfitting's or instability's to say."""
    k = int(np.argmin(v))
    # fitted over the last half, not from the minimum: a minimum picked from noise has a rise after it
    h = it >= it[-1] - 0.5 * (it[-1] - it[0])
    drop, drop_se, _ = fitted_drop(it[h], v[h], se) if h.sum() >= 4 else (0.0, np.inf, None)
    rise, rise_se = -drop, drop_se
    if not significant(rise, rise_se, min_detectable_change(se)):
        return None                # not beyond noise: read the curve as flat or falling
    if analysis_of(run).unstable:
        return []
    if name == "val loss" and train_falls_since(run, it[k], se):
        return []                  # train still falls while val rises: overfitting's question
    lr_now, peak = lr_now_and_peak(run, it[-1])
    ratio = lr_now / peak if lr_now is not None and peak else None
    ev = {"curve": name, "min_iter": int(it[k]), "min": num(v[k]), "rise": num(rise), "rise_se": num(rise_se),
          "lr_ratio": num(ratio), "test": "fitted rise over the last half > 2 SE and > the min detectable change"}
    lr_words = (f"the LR still {ratio:.0%} of its peak" if ratio is not None else "the LR not known")
    return [Finding(
        "plateau.creep", "warning",
        f"{name} stopped improving at ~{int(it[k])} and creeps up: {rise:+.3f} nats over the last half ({lr_words})",
        "The loss flattened and then got worse, beyond noise, without a spike: the steps since the "
        f"minimum at {int(it[k])} cost loss. Train and val rise together, so this is not overfitting. At a "
        "constant high LR the optimizer's noise floor wins once the curve is flat (decay the LR: a cooldown "
        "recovers it); after a resume a schedule that restarts or climbs (a cosine past its T_max) does the same.",
        evidence=ev, iters=(int(it[k]), int(it[-1])),
        recommendations=["--lr_schedule=wsd", "--decay_frac=0.2", "check the LR schedule after a resume",
                         f"--max_iters={int(it[k])} (the best point)"])]


def train_falls_since(run, start, se):
    """Does the train loss (eval-mode, else the logged train loss) fall after `start`?"""
    ti, tv = eval_series(run, "train_loss")
    if (ti >= start).sum() < 3:
        ti, tv = train_series(run)
    after = tv[ti >= start]
    if len(after) < 3:
        return False
    k = max(1, len(after) // 10)
    return float(np.mean(after[:k]) - np.mean(after[-k:])) > 2 * se


def decay_to_come(run, at, lr_now, peak):
    """What the planned schedule still has to decay after `at`, when that is more than
    STILL_TO_DECAY of the peak and the run is not over; else None."""
    if not schedule_known(run) or finished(run) or lr_now is None or not peak:
        return None
    max_iters = int(run.config["max_iters"])
    lr_end = planned_lr(run, max_iters - 1)
    if (lr_now - lr_end) / peak <= STILL_TO_DECAY:
        return None
    return {"lr_end": num(lr_end, 8), "lr_end_ratio": num(lr_end / peak), "max_iters": max_iters,
            "iters_left": int(max_iters - (iters_done(run) or at))}


def fitted_drop(x, y, se):
    """(fall of a fitted line over x, its standard error, x centred): noise is at least `se`."""
    xc = x - x.mean()
    slope = float(np.sum(xc * (y - y.mean())) / np.sum(xc ** 2))
    width = float(x[-1] - x[0])
    resid = y - (y.mean() + slope * xc)
    sigma = max(se, float(np.std(resid, ddof=2)) if len(y) > 3 else se)
    return -slope * width, sigma * width / np.sqrt(np.sum(xc ** 2)), xc


def falls_at_every_eval(y):
    """Lower at each of >= 4 evals in a row: under flat exchangeable noise that order has chance 1/m!
    (1/24 for 4), whatever the per-eval SE says. Evals on a fixed val set are correlated, so their
    differences are far less noisy than sqrt(2) x the SE of one eval; the order test needs no SE."""
    return bool(len(y) >= 4 and np.all(np.diff(y) < 0))


def significant(drop, drop_se, mdc):
    return drop > 2 * drop_se and drop > mdc


def flat_since(it, v, se, onset):
    """The first iteration from `onset` on after which a fitted line falls no more than noise:
    each eval may be within noise of the end while together they still fall beyond it."""
    mdc = min_detectable_change(se)
    for k in range(int(np.searchsorted(it, onset)), len(it) - 3):
        drop, drop_se, _ = fitted_drop(it[k:], v[k:], se)
        if not significant(drop, drop_se, mdc):
            return it[k]
    return it[max(0, len(it) - 4)]


def plateau_onset(it, v, tol):
    """First iteration after which the (smoothed) curve stays within tol of its final level."""
    k = max(1, len(v) // 20)
    smooth = np.convolve(v, np.ones(k) / k, mode="same") if k > 1 else v
    smooth[: k // 2] = v[: k // 2]
    end = float(np.median(v[-max(3, len(v) // 10):]))
    above = smooth > end + tol
    if not above.any():
        return it[0]
    last_above = int(np.flatnonzero(above)[-1])
    return it[min(last_above + 1, len(it) - 1)]
