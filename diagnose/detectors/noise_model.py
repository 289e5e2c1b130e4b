"""The noise model as a finding: how far apart two evals must be to mean anything."""
import numpy as np

from diagnose.detectors.common import eval_series, num
from diagnose.findings import Finding
from diagnose.analysis import analysis_of
from diagnose.noise import (MAX_EVAL_ITERS_FACTOR, READABLE_CHANGE, eval_iters_for,
                            min_detectable_change)


def detect(run):
    a = analysis_of(run)
    tn = a.train_noise
    se, source = a.val_se
    ev = {"train_sigma": num(tn["sigma"]) if tn else None, "train_window": tn["window"] if tn else None,
          "val_se": num(se), "val_se_source": source}
    if not np.isfinite(se):
        if tn is None:
            return []
        return [Finding("noise.model", "info", f"train loss noise {tn['sigma']:.4f} per logged step",
                        "Robust spread of the train loss around its rolling median; no evals to measure.",
                        evidence=ev)]
    mdc = min_detectable_change(se)
    ev["min_detectable_change"] = num(mdc)
    eval_iters = run.config.get("eval_iters")
    need = eval_iters_for(se, eval_iters) if eval_iters else None
    ev["eval_iters"] = eval_iters
    ev["eval_iters_needed"] = need
    title = (f"val loss standard error {se:.4f} ({source}); changes under {mdc:.4f} nats between "
             f"two evals are noise")
    expl = (f"Each eval averages a finite sample of batches, so the val loss moves by about {se:.4f} "
            f"nats by chance; two evals must differ by more than {mdc:.4f} (2 sigma of a difference) "
            "before a rise or fall means anything. All thresholds below use this.")
    recs = []
    sev = "info"
    iv, vv = eval_series(run)
    why = a.diverged
    if why and need and eval_iters and need > eval_iters:
        ev["eval_iters_needed"] = None
        expl += (f" The run diverged ({why}): its eval noise is the divergence, not sampling, "
                 "so no eval_iters advice.")
    elif need and eval_iters and need > eval_iters and mdc > READABLE_CHANGE:
        cap = MAX_EVAL_ITERS_FACTOR * int(eval_iters)
        if need <= cap:
            recs.append(f"--eval_iters={need}")
            expl += (f" To see a {READABLE_CHANGE} nat change, evals need eval_iters={need} "
                     f"(SE falls as 1/sqrt(eval_iters)).")
        else:
            recs.append(f"--eval_iters={cap}")
            expl += (f" A {READABLE_CHANGE} nat change would need eval_iters={need}, more than "
                     f"{MAX_EVAL_ITERS_FACTOR}x now: more eval batches cannot beat noise this large at a "
                     f"sane cost. --eval_iters={cap} brings the detectable change down to "
                     f"{mdc / MAX_EVAL_ITERS_FACTOR ** 0.5:.4f}; judge progress over several evals "
                     "(a fitted trend), not between two.")
        # noisy enough to hide the recent progress: worth a notice
        if len(vv) >= 4 and abs(vv[-1] - vv[len(vv) * 3 // 4]) < mdc:
            sev = "notice"
    return [Finding("noise.model", sev, title, expl, evidence=ev, recommendations=recs)]
