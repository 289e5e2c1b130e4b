"""Overfitting and memorisation, noise-aware, from eval-mode train and val losses only.

- overfitting: val above its minimum by more than noise for several evals while train falls;
- memorisation: the val-train gap grows beyond noise (val may still be falling).
"""
import math

import numpy as np

from diagnose import words
from diagnose.detectors.common import eval_series, fmt_tokens, num
from diagnose.analysis import analysis_of
from diagnose.findings import SEVERITIES, Finding
from diagnose.noise import min_detectable_change

CONFIRM_Z = 4.0     # rise above the best in units of one eval's SE (about 2.8 sigma of a difference)
MIN_AFTER = 3       # evals after the best needed to call it


GAP_NATS = 0.5      # val - train beyond this: held-out tokens get under e^-0.5 = 61% of the probability
                    # the training tokens get; generalisation gaps of LM runs under a few epochs stay near 0.1-0.2
GAP_Z = 4.0         # and beyond this many SE of a difference of two evals


def detect(run):
    iv, vv = eval_series(run, "val_loss")
    se, source = analysis_of(run).val_se
    if len(vv) < 2 or not np.isfinite(se):
        return answer(run, [], se)
    out = decisive_gap(run, iv, vv, se, source) if len(vv) < 4 else []
    if len(vv) < 4:
        return out or answer(run, out, se)
    out += trend(run, iv, vv, se, source)
    if not any(f.id == "overfit.confirmed" for f in out):
        out += decisive_gap(run, iv, vv, se, source)
    return out + answer(run, out, se)


def trend(run, iv, vv, se, source):
    out = []
    k = int(np.argmin(vv))
    best_iter, best = int(iv[k]), float(vv[k])
    after = iv > best_iter
    n_after = int(after.sum())
    tail = vv[after][-MIN_AFTER:] if n_after else np.array([])
    rise = float(np.mean(tail) - best) if n_after else 0.0
    it_tr, tr = eval_series(run, "train_loss")
    train_fall = None
    if len(tr) >= 2 and n_after:
        at_best = float(np.interp(best_iter, it_tr, tr))
        train_fall = at_best - float(np.mean(tr[-min(MIN_AFTER, len(tr)):]))
    tpi = run.tokens_per_iter()
    last = int(iv[-1])
    ev = {"best_iter": best_iter, "best_val": num(best), "last_val": num(vv[-1]), "rise": num(rise),
          "rise_in_se": num(rise / se), "se": num(se), "se_source": source, "evals_after_best": n_after,
          "train_fall_since_best": num(train_fall),
          "tokens_since_best": int((last - best_iter) * tpi) if tpi else None}
    falling = train_fall is None or train_fall > 2 * se
    if n_after >= MIN_AFTER and rise > CONFIRM_Z * se and falling:
        spent = f", {fmt_tokens(ev['tokens_since_best'])} tokens" if tpi else ""
        expl = (f"The val loss reached its minimum {best:.4f} at iteration {best_iter} and the last "
                f"{len(tail)} evals average {rise:.4f} nats above it, {rise / se:.1f} times the standard "
                f"error of one eval ({source}): not noise. ")
        expl += (f"Meanwhile the eval-mode train loss fell {train_fall:.4f}: the model is fitting its "
                 "training data at the expense of held-out data." if train_fall is not None else
                 "The train loss is not in the log, so this rests on the val loss alone.")
        expl += f" Everything after iteration {best_iter} ({last - best_iter} iterations{spent}) made the model worse."
        recs = [f"--max_iters={best_iter}", "--early_stop=True", "--dropout=0.1",
                "--weight_decay=0.1", "more unique data (more documents in prepare.py)"]
        out.append(Finding("overfit.confirmed", "warning",
                           f"overfitting since iteration {best_iter}: val {best:.4f} -> {vv[-1]:.4f} "
                           f"(+{rise:.3f}, {rise / se:.1f} SE)" + (" while train falls" if train_fall is not None else ""),
                           expl, evidence=ev, iters=(best_iter, last), recommendations=recs))
    elif n_after >= 2 and rise > 2 * se and falling:
        out.append(Finding("overfit.possible", "notice",
                           f"val above its best ({best:.4f} at {best_iter}) by {rise:.4f}, {rise / se:.1f} SE: "
                           f"not yet beyond noise",
                           "The val loss has not improved since its best eval, but the rise is still "
                           "within what eval noise can produce; watch the next evals.",
                           evidence=ev, iters=(best_iter, last), recommendations=["--early_stop=True"]))
    out += memorisation(run, iv, vv, it_tr, tr, se, ev, out)
    return out


def decisive_gap(run, iv, vv, se, source):
    """Few evals can still be decisive: a val loss far above the train loss at the same eval,
    beyond GAP_NATS and GAP_Z SE of a difference, with val not falling, is memorisation."""
    it_tr, tr = eval_series(run, "train_loss")
    common, a, b = np.intersect1d(iv, it_tr, return_indices=True)
    if len(common) == 0:
        return []
    gap = float(vv[a[-1]] - tr[b[-1]])
    gap_se = se * math.sqrt(2.0)
    rising = len(vv) >= 2 and float(vv[-1] - vv[-2]) > -min_detectable_change(se) and not still_falling(vv)
    if not (gap > GAP_NATS and gap > GAP_Z * gap_se):
        return []
    ev = {"gap": num(gap), "gap_se": num(gap_se), "gap_in_se": num(gap / gap_se), "val": num(vv[a[-1]]),
          "train": num(tr[b[-1]]), "iter": int(common[-1]), "evals": int(len(vv)), "val_not_falling": bool(rising),
          "se_source": source, "test": f"gap > {GAP_NATS} nats and > {GAP_Z} SE of a difference (false alarm "
                                       "< 1e-4 for noise alone)"}
    return [Finding("overfit.gap", "warning" if rising else "notice",
                    words.title("overfit.gap", **ev), words.explain("overfit.gap", rising=rising, **ev),
                    evidence=ev, iters=(int(common[-1]), int(common[-1])),
                    recommendations=["--early_stop=True", "--dropout=0.1", "more unique data",
                                     "fewer epochs (--max_iters)"] if rising else [])]


TREND_EVALS = 4   # the last evals whose order says 'still falling' when one difference cannot


def still_falling(vv):
    """Lower at each of the last TREND_EVALS evals: under flat exchangeable noise that order has chance
    1/4! (4%), whatever the SE says; one difference between two evals is too noisy to say so. A val
    loss still falling eval after eval is still generalising better: a gap then is not damage yet."""
    return bool(len(vv) >= TREND_EVALS and np.all(np.diff(vv[-TREND_EVALS:]) < 0))


def answer(run, found, se):
    """The 'am I overfitting?' question answered when nothing above says yes."""
    if any(f.rank() >= SEVERITIES.index("notice") for f in found):
        return []
    iv, vv = eval_series(run, "val_loss")
    if len(vv) < 2 or not np.isfinite(se):
        return []
    it_tr, tr = eval_series(run, "train_loss")
    common, a, b = np.intersect1d(iv, it_tr, return_indices=True)
    k = min(5, len(common))
    ev = {"evals": int(len(vv)), "best_val": num(np.min(vv)), "last_val": num(vv[-1]), "se": num(se)}
    if k:
        gap = vv[a[-k:]] - tr[b[-k:]]
        ev.update(gap=num(np.mean(gap)), gap_se=num(se * math.sqrt(2.0 / k)), gap_evals=int(k))
    return [Finding("overfit.none", "ok", words.title("overfit.none", **ev), words.explain("overfit.none", **ev),
                    evidence=ev)]


def memorisation(run, iv, vv, it_tr, tr, se, ev, found):
    common, a, b = np.intersect1d(iv, it_tr, return_indices=True)
    if len(common) < 4:
        return []
    gap = vv[a] - tr[b]
    h = len(gap) // 2
    early, late = float(np.mean(gap[:max(1, h // 2)])), float(np.mean(gap[-max(2, h // 2):]))
    growth = late - early
    # the gap is a difference of two evals: its SE is se * sqrt(2); averaged over a few evals
    if growth <= 3 * se * math.sqrt(2) or late <= 0.05:
        return []
    val_improving = float(np.mean(vv[-3:])) < float(np.mean(vv[-6:-3])) - se if len(vv) >= 6 else True
    confirmed = any(f.id == "overfit.confirmed" for f in found)
    sev = "info" if val_improving else ("notice" if not confirmed else "info")
    ev2 = {"gap_early": num(early), "gap_late": num(late), "gap_growth": num(growth),
           "best_iter": ev["best_iter"], "best_val": ev["best_val"], "val_still_improving": bool(val_improving)}
    return [Finding("overfit.memorization", sev,
                    f"train-val gap grew {early:.3f} -> {late:.3f} nats"
                    + (" while val still falls: memorisation starting, not overfitting" if val_improving else ""),
                    "The eval-mode train loss falls faster than the val loss: the model learns things "
                    "specific to its training tokens. " + ("As long as val still improves this costs "
                                                          "nothing yet." if val_improving else
                                                          "With val no longer improving, more steps buy "
                                                          "only memorisation."),
                    evidence=ev2, iters=(int(common[0]), int(common[-1])),
                    recommendations=[] if val_improving else ["--dropout=0.1", "--early_stop=True"])]
