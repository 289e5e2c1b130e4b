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
