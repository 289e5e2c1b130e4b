"""Detectors against synthetic curves with known ground truth (tests/curves.py), several seeds."""
import json
import math

import numpy as np
import pytest

import curves
from diagnose.detect import run_all
from diagnose.detectors import instability, overfit, plateau, repetition, sanity
from diagnose.findings import SEVERITIES


def above_info(findings, prefix=""):
    return [f for f in findings if f.rank() > 0 and f.id.startswith(prefix)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_healthy_run_gets_nothing_above_info(seed):
    fs = run_all(curves.healthy(seed))
    assert above_info(fs) == [], [(f.id, f.title) for f in above_info(fs)]
    assert not [f for f in fs if f.id.startswith("internal")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overfitting_onset_found(seed):
    fs = overfit.detect(curves.overfitting(seed, onset=2500))
    conf = [f for f in fs if f.id == "overfit.confirmed"]
    assert len(conf) == 1
    assert abs(conf[0].evidence["best_iter"] - 2500) <= 250
    assert conf[0].evidence["rise_in_se"] > 4
    assert "--early_stop=True" in conf[0].recommendations


@pytest.mark.parametrize("seed", [0, 1])
def test_flat_at_low_lr_is_true_plateau_with_onset(seed):
    fs = plateau.detect(curves.plateau(seed, onset=3000))
    assert [f.id for f in fs] == ["plateau.true"]
    assert abs(fs[0].iters[0] - 3000) <= 600 and fs[0].iters[1] == 6000


def test_flat_at_peak_lr_is_not_a_plateau():
    fs = plateau.detect(curves.plateau(0, onset=3000, schedule="constant"))
    assert [f.id for f in fs] == ["plateau.lr_high"]
    assert "--lr_schedule=wsd" in fs[0].recommendations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spikes_and_blips_are_told_apart(seed):
    fs = instability.detect(curves.with_spikes(seed))
    spike = [f for f in fs if f.id.startswith("instability.spike")]
    blips = [f for f in fs if f.id == "instability.blips"]
    assert len(spike) == 1 and spike[0].evidence["spike_iters"] == [1500, 3000]
    assert blips and blips[0].severity == "info"
    assert blips[0].evidence["blip_iters"] == [1000, 2000, 4000]


def test_epochs_and_periodicity():
    fs = repetition.detect(curves.repeated(0, period=20, n=3000))
    rep = [f for f in fs if f.id == "data.repetition"][0]
    assert rep.evidence["epochs"] == pytest.approx(3000 * 1024 / (1024 * 20))
    assert rep.evidence["period_steps"] == 20 and rep.evidence["period_corr"] > 0.5
    assert rep.evidence["epoch_boundary_iters"][:3] == [20, 40, 60]
    assert rep.severity == "warning"


def test_muennighoff_value_of_repeated_tokens():
    from diagnose.scaling import effective_tokens
    assert effective_tokens(1, 4) / 4 == pytest.approx(0.93, abs=0.01)
    assert effective_tokens(1, 16) / 16 == pytest.approx(0.66, abs=0.01)   # "lose about a third"


def test_missing_facts_are_named_not_guessed():
    run = curves.healthy(0)
    run.data = {}
    run.config = {}
    fs = run_all(run)
    rep = [f for f in fs if f.id == "data.repetition"][0]
    assert any("--train-tokens" in m for m in rep.missing)
    fc = [f for f in fs if f.id == "forecast.final"][0]
    assert any("--config" in m for m in fc.missing)


def test_not_learning_and_nan():
    run = curves.make_run(np.full(50, math.log(100)))
    assert [f.id for f in sanity.not_learning(run)] == ["sanity.not_learning"]
    loss = curves.power_law(np.arange(100))
    loss[60:] = np.nan
    f = sanity.nonfinite(curves.make_run(loss))
    assert f[0].id == "sanity.nonfinite" and f[0].evidence["first_iter"] == 60


def test_evidence_is_json_and_sorted_by_severity():
    for run in (curves.healthy(0), curves.overfitting(0), curves.with_spikes(0), curves.repeated(0)):
        fs = run_all(run)
        json.dumps([f.to_dict() for f in fs], allow_nan=False)
        ranks = [SEVERITIES.index(f.severity) for f in fs]
        assert ranks == sorted(ranks, reverse=True)
