"""Synthetic loss curves with known ground truth, as Runs, for the detector tests."""
import math

import numpy as np

from diagnose.run import EVAL_COLUMNS, TRAIN_COLUMNS, Run

BASE_CONFIG = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000,
                   max_iters=5000, lr_schedule="cosine", batch_size=16, block_size=1024,
                   gradient_accumulation_steps=32, eval_iters=200, eval_interval=250,
                   n_layer=12, n_head=12, n_embd=384, beta2=0.95, grad_clip=1.0)


def power_law(it, L0=3.0, A=8.0, alpha=0.4):
    return L0 + A * (np.asarray(it, float) + 50.0) ** (-alpha)


def make_run(train_loss, eval_iters_at=None, val=None, train_eval=None, val_se=None, config=None,
             data=None, lr=None, grad_norm=None):
    cfg = dict(BASE_CONFIG, **(config or {}))
    run = Run(source="synthetic", format="metrics.jsonl", config=cfg, train_loss_kind="iteration_mean",
              grad_accum=cfg.get("gradient_accumulation_steps"),
              data=dict({"train_tokens": 10**10, "tokenizer": {"vocab_size": 100}}, **(data or {})))
    n = len(train_loss)
    it = np.arange(n, dtype=float)
    t = {c: np.full(n, np.nan) for c in TRAIN_COLUMNS}
    t["iter"], t["loss"] = it, np.asarray(train_loss, float)
    if lr is not None:
        t["lr"] = np.asarray(lr, float)
    if grad_norm is not None:
        t["grad_norm"] = np.asarray(grad_norm, float)
    run.train = t
    if eval_iters_at is not None:
        m = len(eval_iters_at)
        e = {c: np.full(m, np.nan) for c in EVAL_COLUMNS}
        e["iter"] = np.asarray(eval_iters_at, float)
        e["val_loss"] = np.asarray(val, float)
        if train_eval is not None:
            e["train_loss"] = np.asarray(train_eval, float)
        if val_se is not None:
            e["val_loss_se"] = np.full(m, float(val_se))
            e["train_loss_se"] = np.full(m, float(val_se))
        run.eval = e
    return run


def healthy(seed, n=5000, noise=0.03, eval_every=250, se=0.005):
    """A run still improving under a cosine schedule, one step before its planned end (so it is
    still going and the forecast has an end to predict): nothing above info should fire."""
    rng = np.random.default_rng(seed)
    it = np.arange(n - 1)
    clean = power_law(it)
    train = clean + rng.normal(0, noise, n - 1)
    ev = np.arange(0, n, eval_every)
    val = power_law(ev) + 0.02 + rng.normal(0, se, len(ev))
    tr = power_law(ev) + rng.normal(0, se, len(ev))
    cfg = {"max_iters": n, "lr_decay_iters": n, "gradient_accumulation_steps": 4}  # ~15 tokens/param
    return make_run(train, ev, val, tr, val_se=se, config=cfg)


def overfitting(seed, onset=2500, n=5000, se=0.005, slope=4e-5):
    """Val falls until `onset`, then rises linearly while train keeps falling."""
    rng = np.random.default_rng(seed)
    it = np.arange(n)
    train = power_law(it, L0=2.5) + rng.normal(0, 0.03, n)
    ev = np.arange(0, n, 250)
    base = power_law(ev)
    val = np.where(ev <= onset, base, power_law(onset) + slope * (ev - onset)) + rng.normal(0, se, len(ev))
    tr = power_law(ev, L0=2.5) + rng.normal(0, se, len(ev))
    return make_run(train, ev, val, tr, val_se=se, config={"max_iters": n, "lr_decay_iters": n})


def plateau(seed, onset=3000, n=6000, se=0.004, schedule="cosine"):
    """Falls until `onset`, then exactly flat (plus noise)."""
    rng = np.random.default_rng(seed)
    ev = np.arange(0, n + 1, 100)
    level = power_law(ev, L0=3.0, A=40.0, alpha=0.8)
    flat = power_law(onset, L0=3.0, A=40.0, alpha=0.8)
    val = np.where(ev <= onset, level, flat) + rng.normal(0, se, len(ev))
    it = np.arange(n + 1)
    train = np.where(it <= onset, power_law(it, L0=3.0, A=40.0, alpha=0.8), flat) + rng.normal(0, 0.03, n + 1)
    cfg = {"max_iters": n, "lr_decay_iters": n, "lr_schedule": schedule}
    return make_run(train, ev, val, val - 0.01, val_se=se, config=cfg)


def with_spikes(seed, spike_at=(1500, 3000), blip_at=(1000, 2000, 4000), n=5000, noise=0.03):
    """Spikes that decay over ~100 steps, and one-step blips that recover at once."""
    rng = np.random.default_rng(seed)
    it = np.arange(n)
    loss = power_law(it) + rng.normal(0, noise, n)
    for s in spike_at:
        k = np.arange(s, min(n, s + 300))
        loss[k] += 1.0 * np.exp(-(k - s) / 60.0)
    for b in blip_at:
        loss[b] += 0.8
    return make_run(loss)


def repeated(seed, period=20, n=3000, amp=0.05):
    """The same batches every `period` steps: a periodic component in the loss."""
    rng = np.random.default_rng(seed)
    it = np.arange(n)
    pattern = rng.normal(0, amp, period)
    loss = power_law(it, L0=1.0) + pattern[it % period] + rng.normal(0, amp / 4, n)
    return make_run(loss, config={"batch_size": 4, "block_size": 256, "gradient_accumulation_steps": 1},
                    data={"train_tokens": 1024 * period})


# --- the reference user's run: config/train_fineweb_4070.py on one FineWeb parquet, seen at 14500 ---

REFERENCE = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=500, lr_decay_iters=20000, max_iters=20000)
REFERENCE_LAW = dict(L0=3.1744, A=42.845, alpha=0.5, C=4.3153e-5, lam=0.999)  # val 4.20 @2k, 3.63 @10k, 3.545 @20k
REFERENCE_BUMPS = {6000: 0.04, 9500: 0.05, 13000: 0.03}   # transient val bumps the user saw


def reference_truth(iters):
    """The noiseless val loss of the reference run: the LR-annealing law (Tissue et al. 2024) over
    the config's cosine schedule, capped at the initial loss ln(50257) + 0.05 = 10.87."""
    from diagnose.forecast import areas
    from facts import lr_at
    lr = np.array([lr_at(i, lr_schedule="cosine", **REFERENCE) for i in range(REFERENCE["max_iters"] + 1)])
    p = REFERENCE_LAW
    s1, s2 = areas(lr, p["lam"])
    it = np.asarray(iters, dtype=int)
    law = p["L0"] + p["A"] * np.maximum(s1[it], 1e-9) ** -p["alpha"] - p["C"] * s2[it]
    return np.minimum(law, math.log(50257) + 0.05)


def reference_log(seed, upto=14500, eval_interval=500, log_interval=10, train_noise=0.03, val_se=0.012):
    """train.py's stdout for the reference run up to `upto` (still going): 'iter N: loss ...' every
    log_interval and 'step N: train loss X, val loss Y' every eval_interval. Val sits 0.06 below the
    eval-mode train loss (as the user's did), the logged train loss 0.07 above val with per-step noise;
    val_se 0.012 is what eval_iters=200 gives for that noise (0.03 x sqrt(32 / 200))."""
    rng = np.random.default_rng(seed)
    lines = ["training from scratch: 40.95M parameters (21.24M non-embedding), 524,288 tokens per iteration, "
             "1 rank(s), NVIDIA GeForce RTX 4070, float16, compile True, fused AdamW True"]
    truth = reference_truth(np.arange(upto + 1))
    for it in range(0, upto + 1):
        if it % eval_interval == 0:
            v = truth[it] + REFERENCE_BUMPS.get(it, 0.0) + rng.normal(0, val_se)
            t = truth[it] + 0.06 + rng.normal(0, val_se)
            lines.append(f"step {it}: train loss {t:.4f}, val loss {v:.4f}")
        if it % log_interval == 0:
            loss = truth[it] + 0.07 + rng.normal(0, train_noise)
            lines.append(f"iter {it}: loss {loss:.4f}, time {7000 + rng.normal(0, 30):.2f}ms, mfu 38.47%, "
                         f"74,898 tok/s, eta {(20000 - it) * 7 / 3600:.1f}h")
    return "\n".join(lines) + "\n"
