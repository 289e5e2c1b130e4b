"""Small helpers the detectors share: series, facts and how to ask for a missing one."""
import math

import numpy as np

from diagnose.noise import finite_series

HOW_TO_GIVE = {
    "tokens_per_iter": "tokens per iteration (give --config FILE.py or --tokens-per-iter N)",
    "train_tokens": "train_tokens, the dataset size in tokens (give --data DIR or --train-tokens N)",
    "params": "the parameter count (give --config FILE.py or --params N)",
    "device": "the GPU (give --gpu NAME)",
    "config": "the LR schedule and max_iters (give --config FILE.py)",
    "vocab_size": "the vocabulary size (give --data DIR or --config FILE.py)",
}


def missing(*facts):
    return [HOW_TO_GIVE[f] for f in facts]


def train_series(run, col="loss"):
    return finite_series(run.train["iter"], run.train[col])


def eval_series(run, col="val_loss"):
    return finite_series(run.eval["iter"], run.eval[col])


def params(run):
    p = run.model.get("params") or run.config.get("params")
    if p:
        return int(p)
    c = run.config
    v = run.vocab_size()
    if all(c.get(k) for k in ("n_layer", "n_embd", "block_size")) and v:
        from facts import padded_vocab_size, param_counts
        return param_counts(int(c["n_layer"]), int(c["n_embd"]), padded_vocab_size(v),
                            int(c["block_size"]), bool(c.get("bias", False)))["params"]
    return None


def schedule_known(run):
    c = run.config
    return all(c.get(k) is not None for k in ("learning_rate", "min_lr", "warmup_iters",
                                              "lr_decay_iters", "max_iters"))


def planned_lr(run, it):
    from facts import lr_from_config
    return lr_from_config(int(it), run.config)


def lr_now_and_peak(run, it):
    """(lr at `it`, peak lr): from the logged schedule multiplier (train.py's lr_mult: the same for
    every optimizer group, where Muon and AdamW have LRs of their own), else the config when known,
    else the logged LR column."""
    i, mult = train_series(run, "lr_mult")
    if len(mult) == 0:
        i, mult = eval_series(run, "lr_mult")
    if len(mult) and np.max(mult) > 0:
        k = max(0, int(np.searchsorted(i, it, side="right")) - 1)
        peak = float(run.config["learning_rate"]) if run.config.get("learning_rate") else 1.0
        return peak * float(mult[k]), peak * float(np.max(mult))
    if schedule_known(run):
        peak = float(run.config["learning_rate"])
        return planned_lr(run, it), peak
    i, lr = train_series(run, "lr")
    if len(lr) == 0:
        i, lr = eval_series(run, "lr")
    if len(lr) == 0:
        return None, None
    k = int(np.searchsorted(i, it, side="right")) - 1
    return float(lr[max(0, k)]), float(np.max(lr))


# eval line shapes of trainers that evaluate *after* the step they label (rasbt's LLMs-from-scratch
# increments global_step after optimizer.step() and then evaluates: its "Step N" has N + 1 steps done)
EVAL_AFTER_STEP = ("Ep E (Step N)",)


def eval_offset(run):
    """Steps done at an eval of iteration N, minus N: 0 for train.py and nanoGPT, 1 for EVAL_AFTER_STEP."""
    return 1 if any(shape in run.format for shape in EVAL_AFTER_STEP) else 0


def iters_done(run):
    """Iterations completed by the end of the log. A train record of iteration N is written
    after step N (N + 1 done); an eval of iteration N runs before step N (N done)."""
    ends = []
    for table, extra in ((run.train, 1), (run.eval, eval_offset(run))):
        it = np.asarray(table["iter"], float)
        it = it[np.isfinite(it)]
        if len(it):
            ends.append(int(it.max()) + extra)
    return max(ends) if ends else None


def tokens_seen(run):
    """(tokens seen by the end of the log, where the number comes from) or (None, None):
    the logged count of the latest record that has one (plus tokens per iteration for any
    iterations logged after it), else iterations completed x tokens per iteration."""
    done, tpi = iters_done(run), run.tokens_per_iter()
    best = None   # (iterations done at that record, tokens)
    for table, extra in ((run.train, 1), (run.eval, eval_offset(run))):
        it, tok = finite_series(table["iter"], table["tokens"])
        if len(tok) and (best is None or it[-1] + extra > best[0]):
            best = (int(it[-1]) + extra, float(tok[-1]))
    if best is not None and (best[0] == done or not tpi):
        return best[1], "logged"
    if best is not None:
        return best[1] + (done - best[0]) * tpi, "logged"
    if tpi and done is not None:
        return float(done * tpi), "iterations x tokens per iteration"
    return None, None


def epochs_seen(run):
    """Epochs over the training data by the end of the log: the larger of tokens seen /
    train_tokens and the logged epoch column; None when neither is known."""
    seen, _ = tokens_seen(run)
    tt = run.train_tokens()
    counted = seen / tt if seen is not None and tt else None
    ends = []
    for table in (run.train, run.eval):
        it, ep = finite_series(table["iter"], table["epoch"])
        if len(ep):
            ends.append((it[-1], float(ep[-1])))
    logged = max(ends)[1] if ends else None
    # the larger: a logged whole-epoch index undercounts by < 1, and a log whose numbering counts
    # log lines rather than steps (HF Trainer dicts) undercounts the tokens; the trainer's own
    # epoch count is a fact of the run
    known = [x for x in (counted, logged) if x is not None]
    return max(known) if known else None


def planned_iters(run):
    """max_iters from the config, or None."""
    m = run.config.get("max_iters")
    return int(m) if m else None


def finished(run):
    """Did the run reach its planned end (or stop for good)? An 'end' record with reason
    max_iters (train.py), or as many iterations done as max_iters."""
    ends = [e.get("reason") for e in run.events if e.get("event") == "end"]
    if ends and ends[-1] == "max_iters":
        return True
    m, done = planned_iters(run), iters_done(run)
    return bool(m and done is not None and done >= m)


def num(x, digits=4):
    """A JSON-safe float (None for NaN/inf), rounded for reading."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(round(x, digits)) if abs(x) >= 1e-3 or x == 0 else float(f"{x:.4g}")


def fmt_count(n):
    """A count as people say it, 4 significant digits: 950, 172.8k, 40.95M, 1.2B, 3.5T."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.4g}{unit}"
    return f"{n:.0f}"


def fmt_tokens(n):
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"
