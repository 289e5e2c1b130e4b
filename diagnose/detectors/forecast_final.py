"""The forecast as a finding: val loss at the planned end, with an 80% interval and what-ifs."""
import numpy as np

from diagnose.detectors.common import eval_series, missing, num, schedule_known, train_series
from diagnose.detectors.instability import diverged
from diagnose.findings import Finding
from diagnose.forecast import forecast, lr_per_step, predict_with
from diagnose.noise import eval_se


def detect(run):
    if not schedule_known(run):
        return [Finding("forecast.final", "info", "no forecast: the LR schedule is unknown",
                        "The forecast fits loss against the LR schedule, so it needs the config.",
                        missing=missing("config"))]
    why = diverged(run)
    if why:
        return [Finding("forecast.final", "info", "no forecast: the run diverged",
                        f"The forecast fits a converging loss curve; this one diverged ({why}), so "
                        "there is nothing to extrapolate: fix the divergence first.")]
    from facts import lr_from_config
    c = dict(run.config)
    end = int(c["max_iters"])
    iv, vv = eval_series(run)
    name = "val loss"
    se, _ = eval_se(run, "val")
    if len(vv) < 8:
        iv, vv = train_series(run)
        name, se = "train loss", 0.0
    if len(vv) < 8:
        return []
    lr = lr_per_step(lambda i: lr_from_config(i, c), max(end, int(iv[-1])))
    f = forecast(iv, vv, lr, end, se=se if np.isfinite(se) else 0.0)
    if f is None:
        return []
    law = f.pop("_law")
    whatif = {}
    c2 = dict(c, max_iters=2 * end, lr_decay_iters=2 * int(c["lr_decay_iters"]))
    lr2 = lr_per_step(lambda i: lr_from_config(i, c2), 2 * end)
    whatif["max_iters_x2"] = {"max_iters": 2 * end, "predicted": num(predict_with(law, lr2, 2 * end))}
    if c["min_lr"] > 0:
        c3 = dict(c, min_lr=float(c["min_lr"]) / 10)
        lr3 = lr_per_step(lambda i: lr_from_config(i, c3), end)
        whatif["min_lr_div10"] = {"min_lr": c3["min_lr"], "predicted": num(predict_with(law, lr3, end))}
    ev = {k: f[k] for k in ("predicted", "lo80", "hi80", "final_iter", "last_seen_iter", "decay_seen",
                            "backtest_error_per_span", "fit_sigma", "law")}
    ev = {k: (num(v, 6) if isinstance(v, float) else v) for k, v in ev.items()}
    ev["law"] = {k: num(v, 8) for k, v in ev["law"].items()}
    ev["curve"] = {k: [num(x, 5) if k != "iter" else x for x in vals] for k, vals in f["curve"].items()}
    ev["fitted_on"] = name
    ev["what_if"] = whatif
    done = f["last_seen_iter"] >= end
    gain = float(np.median(vv[-3:])) - f["predicted"]
    title = (f"forecast: {name} {f['predicted']:.3f} at iteration {end} "
             f"(80% interval {f['lo80']:.3f}-{f['hi80']:.3f})")
    expl = (f"Fitted on {name} with the LR-annealing law L = L0 + A*S1^-alpha - C*S2 (Tissue et al. 2024) "
            f"over the config's schedule; the interval is widened by the fit's own backtest error. ")
    if not done:
        expl += f"From here the remaining {end - f['last_seen_iter']} iterations should buy {gain:.3f} nats. "
    expl += (f"What-if: --max_iters={2 * end} -> {whatif['max_iters_x2']['predicted']:.3f}"
             + (f"; --min_lr={whatif['min_lr_div10']['min_lr']:.1e} -> {whatif['min_lr_div10']['predicted']:.3f}"
                if "min_lr_div10" in whatif else "") + ".")
    if f["note"]:
        expl += " Note: " + f["note"] + "."
    recs = []
    if whatif["max_iters_x2"]["predicted"] is not None and f["predicted"] - whatif["max_iters_x2"]["predicted"] > (f["hi80"] - f["lo80"]) / 2:
        recs.append(f"--max_iters={2 * end}")
    return [Finding("forecast.final", "info", title, expl, evidence=ev,
                    iters=(f["last_seen_iter"], end), recommendations=recs)]
