"""The schedule-aware forecast: exact recovery on its own law, and a backtest on real curves."""
import os
import sys

import numpy as np
import pytest

import curves
from diagnose.detectors import forecast_final
from diagnose.forecast import areas, forecast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVES = os.path.join(ROOT, "..", "shared", "curves")


def cosine(n, peak=1e-3, floor=1e-4, warm=100):
    s = np.arange(n + 1)
    lr = floor + 0.5 * (peak - floor) * (1 + np.cos(np.pi * np.clip((s - warm) / (n - warm), 0, 1)))
    lr[s < warm] = peak * (s[s < warm] + 1) / (warm + 1)
    return lr


def test_recovers_its_own_law_from_half_a_cosine_run():
    lr = cosine(10000)
    s1, s2 = areas(lr, 0.995)
    truth = 3.0 + 5.0 * np.maximum(s1, 1e-9) ** -0.5 - 2e-4 * s2
    it = np.arange(200, 5001, 50)
    rng = np.random.default_rng(0)
    f = forecast(it, truth[it] + rng.normal(0, 0.003, len(it)), lr, 10000, se=0.003)
    assert f["decay_seen"]
    assert f["predicted"] == pytest.approx(truth[10000], abs=0.02)
    assert f["lo80"] <= truth[10000] <= f["hi80"]


def test_constant_prefix_says_the_decay_is_a_prior():
    lr = np.full(10001, 1e-3)
    lr[8000:] = np.linspace(1e-3, 1e-4, 2001)
    it = np.arange(500, 5001, 100)
    f = forecast(it, 3.0 + 5.0 * (it * 1.0) ** -0.5, lr, 10000)
    assert not f["decay_seen"] and "prior" in f["note"]
    assert f["predicted"] < 3.0 + 5.0 * 10000 ** -0.5   # the decay is expected to buy something


def test_forecast_finding_contract():
    fs = forecast_final.detect(curves.healthy(0))
    f = fs[0]
    assert f.id == "forecast.final"
    ev = f.evidence
    assert set(ev["curve"]) == {"iter", "mid", "lo", "hi"}
    assert ev["lo80"] <= ev["predicted"] <= ev["hi80"] and ev["final_iter"] == 5000
    assert "max_iters_x2" in ev["what_if"] and "min_lr_div10" in ev["what_if"]
    assert ev["what_if"]["max_iters_x2"]["predicted"] < ev["predicted"]


@pytest.mark.skipif(not os.path.isdir(CURVES), reason="../shared/curves not present")
def test_backtest_on_real_curves_fast_subset():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench_forecast import backtest
    names = ["25/cosine_24000.csv", "100/constant_24000.csv", "100/wsd_20000_24000.csv", "25/wsdcon_9.csv"]
    rows = [backtest(os.path.join(CURVES, n)) for n in names]
    assert np.mean([abs(r["error"]) for r in rows]) < 0.02
    assert all(r["covered"] for r in rows)
