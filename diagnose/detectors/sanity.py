"""Facts of the run and sanity checks: init loss, NaN/Inf, zero LR, not learning, a loss too good to be true."""
import math

import numpy as np

from diagnose.detectors.common import (epochs_seen, eval_series, fmt_count, fmt_tokens, iters_done, missing,
                                       num, params, tokens_seen, train_series)
from diagnose.findings import Finding
from diagnose.noise import train_noise


def detect(run):
    out = [facts(run)]
    bad = nonfinite(run)
    out += bad
    invalid = invalid_loss(run)
    out += invalid
    out += init_loss(run)
    out += zero_lr(run)
    if not invalid:              # a placeholder constant is not a loss that fails to fall
        out += not_learning(run)
    out += implausibly_low(run)
    return out


def invalid_loss(run):
    """A cross-entropy over a vocabulary is positive: exactly 0 needs probability 1 on every
    token, and below 0 is impossible. Logs where most losses are <= 0 carry a placeholder
    (torchtitan prints -1 on non-last pipeline ranks; HF Trainer logs 0.0 when every step was
    NaN), not a loss."""
    it, v = train_series(run)
    if len(v) == 0:
        it, v = eval_series(run)
    if len(v) < 2 or np.mean(v <= 0) < 0.5:
        return []
    ev = {"share_nonpositive": num(np.mean(v <= 0)), "values": sorted({num(x) for x in v[:50]})[:5]}
    return [Finding("sanity.invalid_loss", "critical",
                   f"no valid loss: {np.mean(v <= 0):.0%} of logged losses are <= 0 (e.g. {v[0]:g})",
                   "A cross-entropy cannot be negative and is exactly 0 only if every token gets probability 1. "
                   "The log carries a placeholder: a pipeline rank that is not the last prints -1, and "
                   "HF Trainer logs 0.0 when every step's loss was NaN. Nothing can be read about learning "
                   "or plateaus from it.",
                   evidence=ev, iters=(int(it[0]), int(it[-1])),
                   recommendations=["read the loss from the last pipeline stage's log" if np.any(v < 0) else
                                    "logging_nan_inf_filter=False to see the NaN, then --learning_rate=<a tenth>, "
                                    "--dtype=bfloat16"])]


def facts(run):
    last = run.last_iter() or 0
    done = iters_done(run) or 0
    tpi = run.tokens_per_iter()
    n = params(run)
    ev = {"last_iter": last, "iters_done": done, "tokens_per_iter": tpi, "params": n,
          "non_embedding_params": run.model.get("non_embedding_params"),
          "train_tokens": run.train_tokens()}
    lacks = []
    parts = [f"{done} iterations"]
    seen, how = tokens_seen(run)
    if seen is not None:
        ev["tokens_seen"], ev["tokens_seen_from"] = seen, how
    if tpi:
        parts.append(f"{fmt_tokens(tpi)} tokens/iter")
    else:
        lacks += missing("tokens_per_iter")
    if seen is not None:
        parts.append(f"{fmt_tokens(seen)} tokens seen")
        if tpi:
            parts[-2:] = [", ".join(parts[-2:])]
    if n:
        parts.append(f"{fmt_count(n)} params")
        if ev["non_embedding_params"]:
            parts[-1] += f" ({fmt_count(ev['non_embedding_params'])} non-embedding)"
    else:
        lacks += missing("params")
    fpt = run.model.get("flops_per_token") or (6 * n if n else None)
    if fpt and seen is not None:
        ev["compute_flops"] = float(fpt) * seen
        parts.append(f"{ev['compute_flops']:.3g} FLOPs")
    if run.train_tokens():
        parts.append(f"dataset {fmt_tokens(run.train_tokens())} train tokens")
    else:
        lacks += missing("train_tokens")
    return Finding("facts.summary", "info", "; ".join(parts),
                   "What the run is, from its log and the facts given; the other findings rest on these.",
                   evidence=ev, missing=lacks)


def nonfinite(run):
    """NaN/Inf in the loss (train, else val) or the grad norm, and what train.py said about it:
    'nonfinite' warnings (updates it skipped) and an 'end' record with reason 'nonfinite'."""
    fp16 = str(run.config.get("dtype") or run.system.get("dtype") or "") == "float16" \
        or np.isfinite(run.train["grad_scale"]).any()
    name = "train loss" if np.isfinite(run.train["loss"]).any() else "val loss"
    col = "loss" if name == "train loss" else "val_loss"
    loss = _first_nonfinite(*_raw(run.train if name == "train loss" else run.eval, col),
                            printed=run.nonfinite_printed.get(col, 0))
    # fp16 overflows give an infinite grad norm by design: the scaler skips those steps (see loss_scale)
    grad = None if fp16 else _first_nonfinite(*_raw(run.train, "grad_norm"),
                                              printed=run.nonfinite_printed.get("grad_norm", 0))
    skipped = [e for e in run.events if e.get("event") == "warning" and e.get("id") == "nonfinite"]
    ends = [e for e in run.events if e.get("event") == "end"]
    stopped = bool(ends) and ends[-1].get("reason") == "nonfinite"
    n_rows = len(run.train["loss"]) + len(run.eval["val_loss"])
    if n_rows and not (np.isfinite(run.train["loss"]).any() or np.isfinite(run.eval["val_loss"]).any()):
        # NaN before any finite value reads as 'not logged' above; with no finite loss at all
        # the run diverged before its first logged step (or the log carries no loss)
        return [Finding("sanity.nonfinite", "critical", "no finite loss anywhere in the log",
                        f"All {n_rows} logged losses are NaN/Inf or absent: the run diverged before its "
                        "first logged step, or the log does not carry the loss.",
                        evidence={"rows": n_rows}, iters=(int(np.nanmin(np.r_[run.train['iter'], run.eval['iter']])),
                                                          int(run.last_iter())),
                        recommendations=["--learning_rate=<a tenth of now>", "--grad_clip=1.0",
                                         "--dtype=bfloat16 (or float32) if it was float16"])]
    if loss is None and not skipped and not stopped:
        return nonfinite_grad_norm(run, fp16)   # the loss stayed finite: only the norm is not
    if loss is None and grad is not None:
        name = "grad norm"
    first, count, recovered, before, it = loss or grad or (None, 0, None, np.array([]), np.array([]))
    if first is None:   # only train.py's records say it
        its = [e["iter"] for e in skipped + ends if isinstance(e.get("iter"), (int, float))]
        first = int(min(its)) if its else None
        name = "the update"
    precursor = None
    if name == "train loss":
        tn = train_noise(it[:len(before)], before)
        if tn and np.isfinite(tn["sigma"]) and tn["sigma"] > 0:
            precursor = bool(np.max(tn["resid"][-5:] / tn["sigma"]) > 4)
    ev = {"first_iter": first, "series": name, "count": count, "recovered": recovered,
          "last_finite_loss": _last_finite_loss(run, first),
          "precursor": precursor, "skipped_updates": len(skipped), "stopped_by_train": stopped}
    if grad is not None:
        ev["grad_norm_first_iter"], ev["grad_norm_count"] = grad[0], grad[1]
    recs = ["--dtype=bfloat16" if fp16 else "--learning_rate=<half of now>",
            "--grad_clip=1.0", "resume from the last checkpoint before the NaN"]
    expl = (f"The {name} became NaN/Inf at iteration {first} ({count} non-finite values"
            f"{', never recovering' if recovered is False else ''}). " if count else
            f"train.py found non-finite values from iteration {first}. ")
    if grad is not None and name != "grad norm":
        expl += f"The grad norm was NaN/Inf on {grad[1]} logged steps from iteration {grad[0]}. "
    if skipped:
        expl += f"train.py skipped {len(skipped)} update(s) with a non-finite loss or grad norm. "
    if stopped:
        expl += "It stopped the run for it (end reason 'nonfinite'). "
    expl += (("The steps before it were within noise: no warning sign in the loss. " if precursor is False else "")
             + ("fp16 overflows where bf16 does not: " if fp16 else "")
             + ("this" if fp16 else "This") + " is divergence, not a logging glitch.")
    said = [f"{len(skipped)} updates skipped"] * bool(skipped) + ["run stopped"] * stopped
    title = (f"{name} is NaN/Inf from iteration {first}" if name != "the update" else
             f"non-finite steps from iteration {first}") + (f" ({', '.join(said)})" if said else "")
    last = run.last_iter()
    iters = (first, int(last if last is not None else first)) if first is not None else None
    return [Finding("sanity.nonfinite", "critical", title, expl, evidence=ev, iters=iters, recommendations=recs)]


MOSTLY = 0.5   # non-finite on at least this share of the logged steps: not an isolated skipped step


def nonfinite_grad_norm(run, fp16):
    """A grad norm that is NaN/Inf while the loss stays finite. An isolated one is a step the fp16 scaler
    (or the trainer) skipped: a notice, silent in fp16 where overflows are how the scaler probes. On most
    steps, or on every step to the end, nothing is learning: the norm overflows (fp16, or a reduction in
    half precision), or the clipping is applied to a non-finite norm, which turns every update into NaN or
    a skip. A norm printed as NaN on every line has no finite value at all: the parser's count says so."""
    it, g = _raw(run.train, "grad_norm")
    rows = len(run.train["loss"])
    found = _first_nonfinite(it, g)
    printed = run.nonfinite_printed.get("grad_norm", 0)
    if found is not None:
        first, count, recovered = found[0], found[1], found[2]
    elif rows and not np.isfinite(g).any() and printed >= 3:
        first, count, recovered = int(it[0]), printed, False
    else:
        return []
    share = count / max(rows, 1)
    tail = bool(len(g) >= 3 and not np.isfinite(g[-3:]).any())
    mostly = share >= MOSTLY or (tail and not recovered)
    if fp16 and not mostly:
        return []
    ev = {"first_iter": first, "count": count, "logged_steps": rows, "share": num(share),
          "recovered": recovered, "every_step": bool(count >= rows), "fp16": fp16,
          "test": f"grad norm NaN/Inf on >= {MOSTLY:.0%} of the logged steps, or on the last 3 without recovering"}
    if not mostly:
        return [Finding("sanity.nonfinite_grad_norm", "notice",
                        f"grad norm NaN/Inf on {count} of {rows} logged steps (from iteration {first}); the loss stayed finite",
                        "An isolated non-finite grad norm with a finite loss after it is a step whose update was "
                        "skipped (a loss scaler's overflow, a trainer's NaN guard): harmless once in a while.",
                        evidence=ev, iters=(first, first))]
    last = run.last_iter()
    return [Finding("sanity.nonfinite_grad_norm", "warning",
                    f"grad norm NaN/Inf on {count} of {rows} logged steps" +
                    (" (every one)" if count >= rows else f" from iteration {first}") + " while the loss is finite",
                    "A finite loss with a non-finite gradient norm on most steps means the backward pass "
                    "overflows: in float16 the norm (or a reduction done in half precision) exceeds 65504, and "
                    "a clip of a non-finite norm scales every gradient to NaN, so the updates are skipped or "
                    "poison the weights. Either way the steps are not training the model.",
                    evidence=ev, iters=(first, int(last if last is not None else first)),
                    recommendations=["--dtype=bfloat16 (or float32)", "--learning_rate=<a tenth of now>",
                                     "check the loss scaler: a scale that keeps halving never recovers"])]


def _last_finite_loss(run, first):
    it, v = train_series(run)
    if len(v) == 0:
        it, v = eval_series(run)
    keep = it < first if first is not None else np.ones(len(it), bool)
    return num(v[keep][-1]) if keep.any() else None


def _first_nonfinite(it, v, printed=0):
    """(first iter, count, recovered, finite values before it, iters) of NaN/Inf after the first
    finite value, or None. NaN before any finite value (or everywhere) means 'not logged', and
    so does NaN in a column logged on under half the rows, unless the log printed that many NaNs
    (`printed`, Run.nonfinite_printed: a run that went NaN early and stayed so); Inf is always real."""
    fin = np.isfinite(v)
    if len(v) == 0 or not fin.any():
        return None
    start = int(np.argmax(fin))
    real_nan = (~np.isnan(v)).mean() >= 0.5 or printed >= np.isnan(v[start:]).sum() > 0
    bad = np.isinf(v) | (np.isnan(v) if real_nan else False)
    bad[:start] = False
    if not bad.any():
        return None
    k = int(np.argmax(bad))
    return int(it[k]), int(bad.sum()), bool(fin[k:].any()), v[:k], it


def _raw(table, col):
    it = np.asarray(table["iter"], float)
    v = np.asarray(table[col], float)
    keep = np.isfinite(it)
    return it[keep], v[keep]


def init_loss(run):
    it, v = train_series(run)
    vocab = run.vocab_size()
    if len(v) == 0 or it[0] > 0:
        return []
    if not vocab:
        return []
    expected = math.log(vocab)
    first = float(v[0])
    if abs(first - expected) <= 1.0:
        return []
    sev = "warning" if first > expected + 1.0 else "notice"
    return [Finding("sanity.init_loss", sev,
                    f"loss at init {first:.2f} vs ln(vocab)={expected:.2f}",
                    "A freshly initialised model predicts nearly uniformly, so its loss is close to "
                    "ln(vocab_size). " + ("Far above means the initial logits are too large (init scale, "
                                          "a missing output scaling); " if first > expected else
                                          "Far below means the model is not fresh (resumed or pretrained) "
                                          "or the loss is computed over fewer classes; ")
                    + "check before trusting the rest of the curve.",
                    evidence={"init_loss": num(first), "ln_vocab": num(expected), "vocab_size": vocab},
                    iters=(int(it[0]), int(it[0])))]


def zero_lr(run):
    it, lr = train_series(run, "lr")
    if len(lr) < 4:
        return []
    after = it > (run.config.get("warmup_iters") or 0)
    zero = (lr == 0) & after
    if zero.sum() < max(3, 0.2 * after.sum()):
        return []
    first = int(it[np.argmax(zero)])
    return [Finding("sanity.zero_lr", "critical", f"learning rate is 0 on {int(zero.sum())} logged steps",
                    "A zero learning rate after warmup means no update at all: the schedule or the "
                    "config is wrong.", evidence={"first_iter": first, "count": int(zero.sum())},
                    iters=(first, int(it[-1])),
                    recommendations=["--min_lr=<learning_rate/10>", "check learning_rate and lr_decay_iters"])]


def not_learning(run):
    """Flat at the uniform-guess loss, or exactly constant: nothing is being learned."""
    it, v = train_series(run)
    if len(v) < 10:
        it, v = eval_series(run)
    frozen = _evals_frozen(run)
    if len(v) < 10 and frozen:
        it, v = frozen[0], frozen[1]
    elif len(v) < 10:
        return []
    q = max(2, len(v) // 4)
    drop = float(np.median(v[:q]) - np.median(v[-q:]))
    vocab = run.vocab_size()
    level = float(np.median(v[-q:]))
    at_uniform = vocab is not None and abs(level - math.log(vocab)) < 0.1
    constant = float(np.ptp(v[-q:])) < 1e-4 and float(np.ptp(v)) < 1e-3
    if frozen and drop <= 0.05 * max(level, 1e-9):
        it, v, level, constant = frozen[0], frozen[1], float(np.median(frozen[1])), True
        at_uniform = vocab is not None and abs(level - math.log(vocab)) < 0.1
    if drop > 0.05 * max(level, 1e-9) or not (at_uniform or constant):
        return []
    why = (f"the loss stays at {level:.4f}" + (f" = ln({vocab}) = {math.log(vocab):.4f}, the loss of a "
                                              f"uniform guess over the vocabulary" if at_uniform else
                                              ", exactly the same value at every step"))
    if frozen:
        why = (f"the val loss stays at {level:.4f} within {frozen[2]:.1e} over {len(frozen[1])} evals (a "
               "fixed val set at weights that do not change)")
    return [Finding("sanity.not_learning", "critical", f"not learning: loss constant at {level:.4f}",
                    f"Over {len(v)} logged steps {why}. The model's output does not depend on its "
                    "weights or the weights do not change: a zero or NaN-skipped update (fp16 scaler "
                    "skipping every step), a detached loss, frozen parameters, or labels that never match.",
                    evidence={"level": num(level), "drop": num(drop), "ln_vocab": num(math.log(vocab)) if vocab else None,
                              "points": int(len(v))},
                    iters=(int(it[0]), int(it[-1])),
                    recommendations=["--learning_rate=6e-4", "--dtype=bfloat16",
                                     "check that the optimizer steps (grad_norm > 0, loss.backward() reached)"],
                    missing=missing("vocab_size") if vocab is None else [])]


FROZEN_EVALS = 4       # evals needed to call the val loss unchanged
FROZEN_RANGE = 1e-3    # nats: any learning moves the val loss by more than this over a run's evals


def _evals_frozen(run):
    """(iters, val losses, range) when every eval gives the same val loss within FROZEN_RANGE: the
    weights do not change (LR ~0, frozen parameters), whatever the train batches' noise says."""
    it, v = eval_series(run)
    if len(v) < FROZEN_EVALS or not np.all(np.isfinite(v)):
        return None
    span = float(np.ptp(v))
    return (it, v, span) if span < FROZEN_RANGE else None


SAME_DATA = 0.1     # |val - train| under this share of a difference's SE at every eval: the same tokens
MEMORISE_EPOCHS = 10  # epochs after which a model larger than its data has memorised it


def not_held_out(run, ie, tr, iv, va):
    """A val set that is the train set, or inside it. Two tests, each against what a held-out set
    must show: (a) val equal to train at every eval far within the sampling noise of two
    independent estimates (the same batches); (b) after MEMORISE_EPOCHS epochs of a data set
    smaller than the model (which can store it), a val loss that falls with train, within noise:
    memorisation cannot carry over to text the model has not seen."""
    from diagnose.analysis import analysis_of
    common, a, b = np.intersect1d(ie, iv, return_indices=True)
    se, _ = analysis_of(run).val_se
    if len(common) < 3 or not np.isfinite(se) or se <= 0:
        return []
    gap = va[b] - tr[a]
    diff_se = se * math.sqrt(2.0)
    same = bool(np.all(np.abs(gap) < SAME_DATA * diff_se))
    epochs, p, tt = epochs_seen(run), params(run), run.train_tokens()
    k = max(3, len(gap) // 4)
    fell = float(tr[a][0] - np.mean(tr[a][-k:]))
    tracks = bool(epochs is not None and epochs >= MEMORISE_EPOCHS and p and tt and tt < p
                  and fell > 1.0 and float(np.mean(gap[-k:])) < 3 * diff_se / math.sqrt(k))
    if not (same or tracks):
        return []
    ev = {"median_abs_gap": num(np.median(np.abs(gap))), "gap_last": num(float(np.mean(gap[-k:]))),
          "diff_se": num(diff_se), "identical": same, "epochs": num(epochs), "params": p, "train_tokens": tt,
          "test": "(a) |val - train| < 0.1 SE of a difference at every eval, or (b) >= 10 epochs of data "
                  "smaller than the model, train fell > 1 nat, val - train within 3 SE"}
    why = ("val equals train at every eval, far within the noise two independent samples would show: they are "
           "the same tokens" if same else
           f"after {epochs:.0f} epochs of {tt} tokens a {p}-parameter model has memorised its data, yet val fell "
           "with train: the val tokens were memorised too")
    return [Finding("sanity.val_not_held_out", "critical",
                    "val is not held out: " + why.split(":")[0],
                    f"The val loss follows the train loss ({why}). A held-out loss cannot profit from "
                    "memorisation, so val.bin overlaps train.bin (or the val split is read from the train "
                    "file): every val number here, and every verdict on overfitting, is void.",
                    evidence=ev, iters=(int(common[0]), int(common[-1])),
                    recommendations=["re-split the data (prepare.py) so no document is in both",
                                     "check --data_dir points val at val.bin"])]


def implausibly_low(run):
    """Held-out loss far below train, or near zero in the first epoch: leakage or a broken causal mask."""
    out = []
    ie, tr = eval_series(run, "train_loss")
    iv, va = eval_series(run, "val_loss")
    if len(tr) >= 4 and len(va) >= 4:
        common, a, b = np.intersect1d(ie, iv, return_indices=True)
        if len(common) >= 4:
            h = len(common) // 2
            gap = tr[a][h:] - va[b][h:]
            if np.mean(gap > np.maximum(0.1, 0.1 * tr[a][h:])) >= 0.8:
                out.append(Finding(
                    "sanity.val_below_train", "warning",
                    f"val loss below eval-mode train loss by {np.median(gap):.3f} nats",
                    "Both losses are measured the same way (eval mode), so a held-out set that is "
                    "consistently much easier than the training set usually means it overlaps the "
                    "training data (leakage) or comes from a different, easier distribution.",
                    evidence={"median_gap": num(np.median(gap))}, iters=(int(common[h]), int(common[-1])),
                    recommendations=["re-split the data (prepare.py) and check val.bin does not overlap train.bin"]))
    out += not_held_out(run, ie, tr, iv, va)
    epochs = epochs_seen(run)
    vocab = run.vocab_size()
    if len(va) and epochs is not None and epochs <= 1.0 and vocab and vocab >= 1000 and float(np.min(va)) < 1.0:
        k = int(np.argmin(va))
        out.append(Finding(
            "sanity.loss_implausibly_low", "critical",
            f"val loss {va[k]:.3f} within the first epoch: too good for natural text",
            "Natural-language text at this vocabulary does not go below ~1.5 nats for models of "
            "this size after one pass; a loss this low on unseen data means the model sees the "
            "tokens it predicts: a broken causal attention mask or targets not shifted.",
            evidence={"min_val": num(va[k]), "iter": int(iv[k]), "epochs": num(epochs)},
            iters=(int(iv[k]), int(iv[k])),
            recommendations=["check the causal mask and that targets are inputs shifted by one"]))
    return out
