"""The forecast as a finding.

A run still going: 'forecast.final', the loss at the planned end with an 80% interval (val loss
when there are enough evals, else train loss), and what-ifs. A finished run has no end left to
forecast: 'forecast.whatif', what a longer schedule or a lower min_lr would have given, from the
same fit.
"""
import numpy as np

from diagnose.detectors.common import (eval_series, finished, iters_done, missing, num, schedule_known,
                                       train_series)
from diagnose.analysis import analysis_of
from diagnose.findings import Finding
from diagnose.forecast import forecast, lr_per_step, predict_with, what_if

MIN_POINTS = 8      # evals (or logged train steps) needed to fit the law on that series
LAW = "L = L0 + A*S1^-alpha - C*S2 (Tissue et al. 2024)"


def detect(run):
    if not schedule_known(run):
        return [Finding("forecast.final", "info", "no forecast: the LR schedule is unknown",
                        "The forecast fits loss against the LR schedule, so it needs the config.",
                        missing=missing("config"))]
    why = analysis_of(run).diverged
    if why:
        return [Finding("forecast.final", "info", "no forecast: the run diverged",
                        f"The forecast fits a converging loss curve; this one diverged ({why}), so "
                        "there is nothing to extrapolate: fix the divergence first.")]
    from facts import lr_from_config
    c = dict(run.config)
    end = int(c["max_iters"])
    iv, vv = eval_series(run)
    name = "val loss"
    se, _ = analysis_of(run).val_se
    if len(vv) < MIN_POINTS:
        iv, vv = train_series(run)
        name, se = "train loss", 0.0
    if len(vv) < MIN_POINTS:
        return []
    lr = lr_per_step(lambda i: lr_from_config(i, c), max(end, int(iv[-1])))
    f = forecast(iv, vv, lr, end, se=se if np.isfinite(se) else 0.0)
    if f is None:
        return []
    law = f.pop("_law")
    whatif = whatifs(c, f, law, lr)
    ev = {k: f[k] for k in ("predicted", "lo80", "hi80", "final_iter", "last_seen_iter", "decay_seen",
                            "backtest_error_per_span", "fit_sigma", "law")}
    ev = {k: (num(v, 6) if isinstance(v, float) else v) for k, v in ev.items()}
    ev["law"] = {k: num(v, 8) for k, v in ev["law"].items()}
    ev["fitted_on"] = name
    ev["what_if"] = whatif
    if finished(run):
        return [finished_finding(run, name, f, ev, whatif, vv)]
    ev["curve"] = {k: [num(x, 5) if k != "iter" else x for x in vals] for k, vals in f["curve"].items()}
    now = float(np.median(vv[-3:]))
    gain = now - f["predicted"]
    title = (f"forecast: {name} {f['predicted']:.3f} at iteration {end} "
             f"(80% interval {f['lo80']:.3f}-{f['hi80']:.3f}), now {now:.3f}")
    expl = (f"Fitted on the {name} ({len(vv)} points) with the LR-annealing law {LAW} over the config's "
            f"schedule; the 80% interval combines the fit's noise, its own backtest error and the law's "
            f"model error, scaled to hold the truth 80% of the time on real curves. The remaining "
            f"{end - (iters_done(run) or f['last_seen_iter'])} iterations should buy {gain:.3f} nats, most of it from the LR "
            f"decay still to come. " + whatif_text(whatif, "would give") + ".")
    if f["note"]:
        expl += " Note: " + f["note"] + "."
    recs = []
    x2 = whatif["max_iters_x2"]
    if x2["predicted"] is not None and f["predicted"] - x2["predicted"] > (f["hi80"] - f["lo80"]) / 2:
        recs.append(f"--max_iters={x2['max_iters']} --lr_decay_iters={x2['lr_decay_iters']}")
    return [Finding("forecast.final", "info", title, expl, evidence=ev,
                    iters=(f["last_seen_iter"], end), recommendations=recs)]


def whatifs(c, f, law, lr):
    """The same fit under two other schedules: twice the iterations, a tenth of min_lr."""
    from facts import lr_from_config
    end = int(c["max_iters"])
    out = {}
    c2 = dict(c, max_iters=2 * end, lr_decay_iters=2 * int(c["lr_decay_iters"]))
    lr2 = lr_per_step(lambda i: lr_from_config(i, c2), 2 * end)
    p, lo, hi = what_if(f, law, lr2, 2 * end, lr)
    out["max_iters_x2"] = {"max_iters": 2 * end, "lr_decay_iters": c2["lr_decay_iters"],
                           "predicted": num(p), "lo80": num(lo), "hi80": num(hi)}
    if c["min_lr"] > 0:
        c3 = dict(c, min_lr=float(c["min_lr"]) / 10)
        lr3 = lr_per_step(lambda i: lr_from_config(i, c3), end)
        p, lo, hi = what_if(f, law, lr3, end, lr)
        out["min_lr_div10"] = {"min_lr": c3["min_lr"], "predicted": num(p), "lo80": num(lo), "hi80": num(hi)}
    out["this_schedule"] = {"max_iters": end, "predicted": num(predict_with(law, lr, end))}
    return out


def whatif_text(whatif, verb):
    x2 = whatif["max_iters_x2"]
    text = (f"What-if: --max_iters={x2['max_iters']} --lr_decay_iters={x2['lr_decay_iters']} {verb} "
            f"{x2['predicted']:.3f} ({x2['lo80']:.3f}-{x2['hi80']:.3f})")
    if "min_lr_div10" in whatif:
        m = whatif["min_lr_div10"]
        text += f"; --min_lr={m['min_lr']:.1e} {verb} {m['predicted']:.3f} ({m['lo80']:.3f}-{m['hi80']:.3f})"
    return text


def finished_finding(run, name, f, ev, whatif, vv):
    """A finished run: no end to forecast, only what other schedules would have given."""
    for k in ("predicted", "lo80", "hi80"):
        ev.pop(k)      # no forecast: the plots draw nothing for this finding
    end = f["final_iter"]
    base = whatif["this_schedule"]["predicted"]
    x2 = whatif["max_iters_x2"]
    gain = base - x2["predicted"]
    ev["final_observed"] = num(float(np.median(vv[-3:])))
    title = (f"what-if: twice the iterations (--max_iters={x2['max_iters']}) would have reached {name} "
             f"~{x2['predicted']:.3f} (80% {x2['lo80']:.3f}-{x2['hi80']:.3f}), {gain:.3f} below this run's end")
    expl = (f"The run finished its schedule at iteration {end}, so there is no end left to forecast. "
            f"Fitted on the {name} with the LR-annealing law {LAW}, the same fit gives {base:.3f} at "
            f"iteration {end} under the schedule that ran (observed: {ev['final_observed']:.3f}). "
            + whatif_text(whatif, "would have given") + ".")
    recs = []
    half = (x2["hi80"] - x2["lo80"]) / 2
    if gain > half:
        recs.append(f"--max_iters={x2['max_iters']} --lr_decay_iters={x2['lr_decay_iters']}")
    m = whatif.get("min_lr_div10")
    if m and base - m["predicted"] > (m["hi80"] - m["lo80"]) / 2:
        recs.append(f"--min_lr={m['min_lr']:.1e}")
    return Finding("forecast.whatif", "info", title, expl, evidence=ev, iters=None, recommendations=recs)
