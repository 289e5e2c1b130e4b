import numpy as np
import pytest

import curves
from diagnose.noise import (curve_sigma, eval_iters_for, eval_se, min_detectable_change,
                            quantization, train_noise)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_train_noise_recovers_sigma_despite_trend_and_outliers(sigma):
    rng = np.random.default_rng(0)
    it = np.arange(4000)
    y = curves.power_law(it) + rng.normal(0, sigma, len(it))
    y[::97] += 2.0   # outliers must not inflate it
    assert train_noise(it, y)["sigma"] == pytest.approx(sigma, rel=0.15)


def test_eval_se_prefers_logged_then_estimates():
    run = curves.healthy(0, se=0.005)
    assert eval_se(run) == (pytest.approx(0.005), "logged")
    run.eval["val_loss_se"][:] = np.nan
    se, source = eval_se(run)
    assert source == "train noise and eval_iters"
    # 0.03 per iteration over 4 micro-batches, eval over 200 batches
    assert se == pytest.approx(0.03 * np.sqrt(4) / np.sqrt(200), rel=0.15)


def test_curve_sigma_and_rounding():
    rng = np.random.default_rng(1)
    v = curves.power_law(np.arange(0, 20000, 250)) + rng.normal(0, 0.01, 80)
    assert curve_sigma(v) == pytest.approx(0.01, rel=0.3)
    assert quantization([1.49, 1.5, 2.11]) == pytest.approx(0.01)


def test_detectable_change_and_eval_iters():
    assert min_detectable_change(0.01) == pytest.approx(2 * np.sqrt(2) * 0.01)
    # SE 0.01 at 200 iters -> SE 0.01/2.83 needs 8x the batches
    assert eval_iters_for(0.01, 200, change=0.01 * 2 * np.sqrt(2) / 2) == 800


def _nanogpt_shaped_run(kind, accum, eval_iters, sigma_batch, seed=0):
    """A run whose per-micro-batch loss noise is sigma_batch; its logged train loss is what `kind`
    says (one micro-batch, or the mean over `accum`), its evals average eval_iters batches."""
    rng = np.random.default_rng(seed)
    n = 3000
    clean = curves.power_law(np.arange(n))
    micro = clean[:, None] + rng.normal(0, sigma_batch, (n, accum))
    logged = micro[:, -1] if kind == "last_microbatch" else micro.mean(axis=1)
    ev = np.arange(0, n, 250)
    val = curves.power_law(ev) + rng.normal(0, sigma_batch / np.sqrt(eval_iters), len(ev))
    run = curves.make_run(logged, ev, val, config={"gradient_accumulation_steps": accum,
                                                   "eval_iters": eval_iters})
    run.train_loss_kind = kind
    return run


@pytest.mark.parametrize("kind", ["last_microbatch", "iteration_mean"])
def test_eval_se_follows_what_the_format_logs(kind):
    """nanoGPT's `iter N: loss X` is the last micro-batch's loss: for the 4070 config's shape (32
    micro-batches, eval_iters 200) the val SE is one batch's sigma / sqrt(200), not sqrt(32) x that."""
    run = _nanogpt_shaped_run(kind, accum=32, eval_iters=200, sigma_batch=0.27)
    se, source = eval_se(run)
    assert source == "train noise and eval_iters"
    assert se == pytest.approx(0.27 / np.sqrt(200), rel=0.15)


def test_smoothed_train_loss_gives_no_sampling_se():
    """An EMA's spread is not one batch's: the SE comes from the eval curve instead."""
    run = _nanogpt_shaped_run("last_microbatch", accum=8, eval_iters=200, sigma_batch=0.27)
    run.train_loss_kind = "ema"
    assert eval_se(run)[1] == "eval curve"
    run.train_loss_kind, run.grad_accum, run.config["gradient_accumulation_steps"] = "unknown", None, None
    assert eval_se(run)[1] == "eval curve"   # accumulation unknown: no guess


def test_sampling_se_gives_way_to_swings_the_curve_shows():
    """Few evals that jump +-0.02 between neighbours cannot have an SE of 0.003."""
    rng = np.random.default_rng(3)
    ev = np.arange(0, 2000, 200)
    val = 1.9 - 0.02 * np.log1p(ev / 200) + 0.02 * np.where(np.arange(len(ev)) % 2, 1, -1) \
        + rng.normal(0, 0.003, len(ev))
    run = curves.make_run(np.full(2000, 1.5), ev, val, val - 0.3, val_se=0.003)
    se, source = eval_se(run)
    assert source == "logged; floored by the eval curve's swings" and se > 0.012
    run.eval["val_loss"] = 1.9 - 0.02 * np.log1p(ev / 200) + rng.normal(0, 0.003, len(ev))
    assert eval_se(run) == (pytest.approx(0.003), "logged")   # consistent swings: the logged SE stands
