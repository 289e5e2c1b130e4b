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
    run = Run(source="synthetic", format="metrics.jsonl", config=cfg,
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
    """A run still improving under a cosine schedule: nothing above info should fire."""
    rng = np.random.default_rng(seed)
    it = np.arange(n)
    clean = power_law(it)
    train = clean + rng.normal(0, noise, n)
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
