"""Short pasted excerpts (a few to EXCERPT_MAX logged train steps, as people paste them into an
issue): what the lines themselves show, with no history and no noise model fitted on a long run.

  instability.spike_excerpt  the loss climbs a quarter or more above its level within three
                             logged steps and stays up, far beyond the excerpt's own step-to-step
                             spread (a spike heading for divergence; worse when the grad norm grows too)
  instability.gradnorm_jump  one grad norm 100x or more above both neighbours, and far beyond every
                             other change of the grad norm in the excerpt, while the loss looks normal
  sanity.cannot_learn        learning rate exactly 0, or grad norm exactly 0, on every line: no update
  instability.worse_than_uniform  the excerpt's median loss far above ln(vocabulary), the loss of a
                             uniform guess (which a fresh model starts at): a run inside its divergence

Longer logs are left to the history-based detectors (instability, sanity), which model the noise.
"""
import numpy as np
from scipy.stats import t as student_t

from diagnose.detectors.common import num
from diagnose.findings import Finding

EXCERPT_MAX = 50       # logged train steps: above this the history-based detectors have enough to model noise
MIN_LINES = 3
WITHIN = 3             # logged steps: how fast a climb must be to be a spike rather than a drift
MIN_CLIMB = 0.25       # of the loss level: a schedule or data change drifts by percents over hundreds of steps
FALSE_ALARM = 1e-3     # per excerpt, Bonferroni over the windows tried, under Gaussian step noise
SIGMA_FLOOR = 0.005    # of the median loss: a floor on the step noise (printed digits, any real batch varies)
GROW = 4.0             # grad-norm growth over the climb that says the update itself is blowing up
JUMP = 100.0           # grad norm over its larger neighbour: two decades
JUMP_SPREAD = 5.0      # ... and this many times the largest other step-to-step change (in log10)


def detect(run):
    it, loss = run.train["iter"], run.train["loss"]
    n = len(it)
    if n < MIN_LINES or n > EXCERPT_MAX:
        return []
    out = cannot_learn(run)
    out += worse_than_uniform(run)
    spike = spike_climb(run)
    out += spike
    out += gradnorm_jump(run, skip=set(spike[0].evidence["window_iters"]) if spike else set())
    return out


def _step_sigma(loss, exclude):
    """(sd of one step-to-step change, its degrees of freedom, their mean: the trend per step), from
    the changes outside `exclude` (a slice of indices into the differences); None with fewer than 3.
    The sample sd, not a
    robust one: with so few changes the MAD is erratic, and with the sd the ratio below follows
    Student's t exactly under Gaussian noise (another outlier only widens it: fewer alarms)."""
    d = np.diff(loss)
    keep = np.ones(len(d), bool)
    keep[exclude] = False
    d = d[keep & np.isfinite(d)]
    if len(d) < 3:
        return None, 0, 0.0
    return float(np.std(d, ddof=1)), len(d) - 1, float(np.mean(d))


def _start_level(run, i):
    """The loss level a climb from point i starts at: the larger of the point and the median of
    up to 3 points before it (a climb out of a one-step dip is no climb). The first line of an
    excerpt has no level before it unless it is the start of training (the initial loss); None then."""
    loss = run.train["loss"]
    if i == 0:
        return float(loss[0]) if run.train["iter"][0] <= 1 else None
    before = loss[max(0, i - 3):i]
    before = before[np.isfinite(before)]
    return max(float(loss[i]), float(np.median(before))) if len(before) else float(loss[i])


def _back_at(loss, start, j):
    """Index of the first point after the climb's top j that is half way back down to `start`
    (or j): the changes up to it are the event itself, not the excerpt's noise."""
    half = start + 0.5 * (loss[j] - start)
    after = np.flatnonzero(loss[j + 1:] <= half)
    return j + 1 + int(after[0]) if len(after) else j


def spike_climb(run):
    """The most significant climb of the loss within WITHIN logged steps that does not fall back
    inside the window (a one-step blip that recovers at once is not one)."""
    loss = run.train["loss"]
    n = len(loss)
    med = float(np.nanmedian(loss)) if np.isfinite(loss).any() else float("nan")
    if not np.isfinite(med) or med <= 0:
        return []
    best = None
    windows = sum(min(WITHIN, n - 1 - i) - 1 for i in range(n - 2))  # the (start, end) pairs tried
    for i in range(n - 2):
        start = _start_level(run, i)
        if start is None or not np.isfinite(start):
            continue
        for j in range(i + 2, min(i + WITHIN, n - 1) + 1):
            seg = loss[i + 1:j + 1]
            if not np.isfinite(seg).all():
                continue
            rise = seg[-1] - start
            held = seg.min() - start  # no point of the climb falls back near the start: not a blip
            if rise < MIN_CLIMB * start or held < 0.25 * rise:
                continue
            sigma, dof, trend = _step_sigma(loss, slice(i, _back_at(loss, start, j)))
            if sigma is None:
                continue
            sigma = max(sigma, SIGMA_FLOOR * med)
            # step losses are white noise around a trend: L[j] - L[i] less the trend over j - i steps
            # has the sd of one step-to-step change, whatever j - i is
            z = (rise - (j - i) * trend) / sigma
            if z < 3 or (best is not None and z <= best[2]):  # every threshold below is above 3
                continue
            crit = float(student_t.ppf(1 - FALSE_ALARM / max(windows, 1), dof))
            if z >= crit:
                best = (i, j, z, crit, sigma, start)
    if best is None:
        return []
    return [_spike_finding(run, *best)]


def _loss_spans_interval(run):
    """Is one logged loss a mean over several steps while the grad norm is one step's? HF Trainer logs
    the mean loss since its last log; logs whose lines are more than one iteration apart (Megatron's
    --log-interval) average the interval too."""
    it = run.train["iter"]
    spaced = len(it) > 1 and float(np.median(np.diff(it))) > 1
    return "HF Trainer" in run.format or (spaced and run.train_loss_kind != "last_microbatch")


def _spike_finding(run, i, j, z, crit, sigma, start):
    it, loss, gn, lr = (run.train[c] for c in ("iter", "loss", "grad_norm", "lr"))
    growth = float(gn[j] / gn[i]) if np.isfinite(gn[[i, j]]).all() and gn[i] > 0 else None
    after = loss[j + 1:]
    back = np.flatnonzero(np.isfinite(after) & (after <= start + 3 * sigma))
    recovered = int(it[j + 1 + back[0]]) if len(back) else None
    # a flat grad norm clears the update only when it saw the steps the loss was high on: beside a loss
    # averaged over each logging interval, one step's grad norm per line (HF Trainer, Megatron) can miss
    # a spike that is back within a few lines; a climb still up at the end was sampled while high
    grad_flat = growth is not None and growth < 2.0 and (recovered is None or not _loss_spans_interval(run))
    severity = "notice" if grad_flat else "warning"
    where = f"{start:.4g} -> {loss[j]:.4g} between iterations {int(it[i])} and {int(it[j])}"
    grad = (f", grad norm x{growth:.3g}" if growth is not None else "")
    fate = (f"; back to {after[back[0]]:.4g} by iteration {recovered}" if recovered is not None
            else "; still up at the end of the excerpt")
    lr_peak = float(lr[j]) if np.isfinite(lr[j]) else None
    explanation = (f"The loss rose {loss[j] - start:.3g} nats ({(loss[j] / start - 1):.0%}) in {j - i} logged "
                   f"steps and stayed up: {z:.1f} times the sd of one step-to-step change elsewhere in the "
                   f"excerpt ({sigma:.3g}), beyond chance (Student's t threshold {crit:.1f}: one false alarm "
                   f"in 1000 excerpts of Gaussian noise). ")
    if grad_flat:
        explanation += ("The grad norm did not grow with it, so the update is not blowing up: look at the "
                        "data of those steps (a bad shard, a change of data) first.")
    else:
        explanation += ("A loss that climbs this fast " + ("with a growing grad norm " if growth else "")
                        + "is the update overshooting: a spike that leads to divergence unless the LR or the "
                          "gradient is tamed." + (" It came back this time, but the next one may not." if recovered
                                                  is not None else ""))
    if lr_peak is not None:
        explanation += f" The LR at the top was {lr_peak:.3g}."
    return Finding("instability.spike_excerpt", severity, f"loss spike {where}{grad}{fate}", explanation,
                   evidence={"start_iter": int(it[i]), "peak_iter": int(it[j]), "start_loss": num(start),
                             "peak_loss": num(loss[j]), "rise": num(loss[j] - start), "z": num(z, 3),
                             "z_threshold": num(crit, 3), "step_sigma": num(sigma), "grad_norm_growth": num(growth, 3),
                             "lr_at_peak": num(lr_peak, 6), "recovered_iter": recovered,
                             "window_iters": [int(x) for x in it[i:j + 1]],
                             "spike_iters": [int(it[j])], "end_iters": [recovered]},
                   iters=(int(it[i]), int(it[j])),
                   recommendations=[] if grad_flat else
                   ["--learning_rate=<half of now>", "--grad_clip=1.0", "--warmup_iters=<longer>"])


def gradnorm_jump(run, skip=()):
    """A grad norm two decades above both neighbours while the loss stays at its level."""
    it, loss, gn = run.train["iter"], run.train["loss"], run.train["grad_norm"]
    ok = np.isfinite(gn) & (gn > 0)
    if ok.sum() < MIN_LINES:
        return []
    lg = np.where(ok, np.log10(np.where(ok, gn, 1.0)), np.nan)
    steps = np.abs(np.diff(lg))
    med_loss = float(np.nanmedian(loss)) if np.isfinite(loss).any() else float("nan")
    out = []
    for k in range(1, len(gn)):  # not the first line: a large grad norm at the start of training is normal
        if not ok[k] or int(it[k]) in skip:
            continue
        nbrs = [gn[m] for m in (k - 1, k + 1) if 0 <= m < len(gn) and ok[m]]
        if not nbrs:
            continue
        ratio = gn[k] / max(nbrs)
        others = np.delete(steps, [m for m in (k - 1, k) if m < len(steps)])
        others = others[np.isfinite(others)]
        spread = float(others.max()) if len(others) else 0.0
        if ratio < JUMP or np.log10(ratio) < JUMP_SPREAD * spread:
            continue
        if np.isfinite(loss[k]) and np.isfinite(med_loss) and abs(loss[k] - med_loss) > MIN_CLIMB * med_loss:
            continue  # the loss moved too: a spike, not a lone grad norm
        out.append(Finding(
            "instability.gradnorm_jump", "warning",
            f"grad norm {gn[k]:.4g} at iteration {int(it[k])}: x{ratio:.3g} its neighbours, on a normal loss",
            f"The grad norm jumped {ratio:.3g}-fold over the larger of its neighbours ({max(nbrs):.4g}); every other "
            f"change of the grad norm in the excerpt is at most x{10 ** spread:.3g}. The loss ({loss[k]:.4g}) "
            "did not react yet, but a gradient this large is an overflow, a bad batch or the start of a spike: "
            "unclipped, one such update can throw the weights far off.",
            evidence={"iter": int(it[k]), "grad_norm": num(gn[k]), "neighbour_grad_norm": num(max(nbrs)),
                      "ratio": num(ratio, 3), "largest_other_ratio": num(10 ** spread, 3), "loss": num(loss[k]),
                      "median_loss": num(med_loss)},
            iters=(int(it[k]), int(it[k])),
            recommendations=["--grad_clip=1.0", "check the batch of that step and the dtype (fp16 overflow)"]))
    return out[:3]


def _schedule_ended(run):
    """The excerpt lies where a schedule that decays to 0 has reached it (its last 5%, or past
    lr_decay_iters): an LR printed as 0 there is the plan, not a bug."""
    c = run.config
    end = c.get("lr_decay_iters") or c.get("max_iters")
    return bool(end) and len(run.train["iter"]) > 0 and run.train["iter"][0] >= 0.95 * float(end)


LARGEST_VOCAB = 262144  # Gemma's 256k: no tokenizer in common use is larger, so ln of it bounds a uniform guess
ABOVE_UNIFORM = 1.25    # times ln(V): a fresh model starts within a few percent of ln(V)


def worse_than_uniform(run):
    """A cross-entropy above ln(V) is worse than guessing every token uniformly, which is where a freshly
    initialised model starts; a median far above it over the whole excerpt is a model thrown out by its
    updates, with no history needed. Without the vocabulary, ln(LARGEST_VOCAB) bounds ln(V)."""
    import math
    v = run.train["loss"]
    v = v[np.isfinite(v)]
    if len(v) < MIN_LINES:
        return []
    vocab = run.vocab_size()
    ceiling = math.log(vocab) if vocab else math.log(LARGEST_VOCAB)
    level = float(np.median(v))
    if level <= ABOVE_UNIFORM * ceiling:
        return []
    it = run.train["iter"]
    basis = f"ln({vocab}) = {ceiling:.2f}" if vocab else f"ln({LARGEST_VOCAB}) = {ceiling:.2f}, above any common vocabulary's"
    return [Finding("instability.worse_than_uniform", "critical",
                    f"loss {level:.3g} (median of {len(v)} lines) is {level / ceiling:.1f}x the loss of a uniform "
                    f"guess ({ceiling:.2f}): the run has diverged",
                    f"A model that guessed every token uniformly would score {basis}; a fresh model starts "
                    "there. A loss far above it means the updates have thrown the model to confident wrong "
                    "predictions: a divergence, whatever came before this excerpt (or the log prints a sum "
                    "over tokens, not a mean).",
                    evidence={"median_loss": num(level), "ln_vocab_bound": num(ceiling), "vocab_size": vocab,
                              "ratio": num(level / ceiling), "lines": int(len(v)),
                              "test": f"median loss > {ABOVE_UNIFORM} x ln(vocab)"},
                    iters=(int(it[0]), int(it[-1])),
                    recommendations=["--learning_rate=<a tenth of now>", "--grad_clip=1.0",
                                     "resume from a checkpoint before the loss rose"])]


def cannot_learn(run):
    """LR exactly 0 or grad norm exactly 0 on every line that logs it: the weights cannot move."""
    it = run.train["iter"]
    said, rounded = [], []
    for col, what in (("lr", "learning rate"), ("grad_norm", "grad norm")):
        v = run.train[col]
        v = v[np.isfinite(v)]
        if len(v) >= MIN_LINES and (v == 0).all() and not (col == "lr" and _schedule_ended(run)):
            # '0.000000' is a value under half its last digit (the end of a decay to 0 prints so), not a 0
            (rounded if col in run.rounded_zero else said).append((col, what, len(v)))
    if not said:
        return [below_print(run, col, what, k) for col, what, k in rounded]
    names = " and ".join(f"{what} 0" for _, what, _ in said)
    why = {"lr": "with a learning rate of 0 the optimizer's step is 0 whatever the gradient (a schedule "
                 "or config bug: warmup from 0 that never starts, a resumed scheduler, lr multiplied by 0)",
           "grad_norm": "a grad norm of exactly 0 means no gradient reaches the trained weights (frozen or "
                        "detached parameters, a loss that does not depend on them, all labels masked)"}
    return [Finding("sanity.cannot_learn", "warning", f"{names} on every line: this run cannot learn",
                    "; ".join(why[c] for c, _, _ in said).capitalize() + ". Any change of the loss here is "
                    "noise of the batches, not learning.",
                    evidence={f"{c}_zero_lines": k for c, _, k in said} | {"lines": int(len(it))},
                    iters=(int(it[0]), int(it[-1])),
                    recommendations=["check learning_rate, the LR scheduler and which parameters require grad"])]


def below_print(run, col, what, lines):
    """Every line prints the value as a rounded zero: it is under half the print's last digit, which a
    schedule decaying to 0 reaches at its end; the print cannot tell that from an exact 0."""
    res = run.rounded_zero[col]
    it = run.train["iter"]
    return Finding(f"sanity.{col}_below_print", "info",
                   f"{what} printed as 0 to {res:g} on every line: below {res / 2:g}, not known to be 0",
                   f"A fixed-point print rounds anything under {res / 2:g} to zero: at the end of a schedule that "
                   f"decays to 0 (a cosine to min_lr 0) the {what} is that small by plan. Only an exact 0 ('0', "
                   "'0.0') or the run's schedule would say the run cannot learn.",
                   evidence={f"{col}_rounded_zero_lines": lines, "print_resolution": res, "lines": int(len(it))},
                   iters=(int(it[0]), int(it[-1])))
