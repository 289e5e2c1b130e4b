"""Detectors against synthetic curves with known ground truth (tests/curves.py), several seeds."""
import json
import math
import os

import numpy as np
import pytest

import curves
from diagnose.detect import run_all
from diagnose.detectors import instability, overfit, plateau, repetition, sanity
from diagnose.findings import SEVERITIES

INFO = SEVERITIES.index("info")  # above it: a notice, warning or critical


def above_info(findings, prefix=""):
    return [f for f in findings if f.rank() > INFO and f.id.startswith(prefix)]


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
    fs = plateau.detect(curves.plateau(0, onset=4500, schedule="constant"))
    assert [f.id for f in fs] == ["plateau.lr_high"]
    assert "--lr_schedule=wsd" in fs[0].recommendations


def test_flat_for_half_the_run_at_a_constant_lr_is_a_plateau_whose_fix_is_a_cooldown():
    """Flat for half the run at an LR the schedule never decays: more steps do not pay (a warning), and
    the advice is still a cooldown, not a stop."""
    fs = plateau.detect(curves.plateau(0, onset=3000, schedule="constant"))
    assert [(f.id, f.severity) for f in fs] == [("plateau.at_peak_lr", "warning")]
    assert "--lr_schedule=wsd" in fs[0].recommendations and "--early_stop=True" not in fs[0].recommendations
    assert abs(fs[0].iters[0] - 3000) <= 600 and fs[0].iters[1] == 6000


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


# --- verdicts that real train.py runs got wrong (tests/test_real_runs.py), on synthetic curves ---

def _with_tokens(run, tpi):
    """The train/eval records' `tokens` as train.py logs them: after step N (train), before it (eval)."""
    run.train["tokens"] = (run.train["iter"] + 1) * tpi
    if len(run.eval["iter"]):
        run.eval["tokens"] = run.eval["iter"] * tpi
    return run


def test_epochs_count_iterations_completed_not_last_plus_one():
    from diagnose.detectors.common import iters_done, tokens_seen
    # train records 0..199 and a final eval at 200 (before step 200): 200 iterations done
    run = curves.make_run(np.full(200, 3.0), [0, 100, 200], [3.0, 3.0, 3.0],
                          config={"batch_size": 8, "block_size": 64, "gradient_accumulation_steps": 1},
                          data={"train_tokens": 2048})
    assert iters_done(run) == 200 and tokens_seen(run) == (200 * 512, "iterations x tokens per iteration")
    rep = [f for f in repetition.detect(run) if f.id == "data.repetition"][0]
    assert rep.evidence["epochs"] == 50.0 and rep.evidence["tokens_seen"] == 102400
    # the logged count wins over iterations x tokens per iteration
    _with_tokens(run, 256)
    assert tokens_seen(run) == (200 * 256, "logged")
    assert [f for f in repetition.detect(run) if f.id == "data.repetition"][0].evidence["epochs"] == 25.0
    fact = sanity.facts(run)
    assert fact.evidence["tokens_seen"] == 200 * 256 and fact.title.startswith("200 iterations")


def _diverging(seed, n=100, at=2, level=300.0, spread=150.0):
    """ln(vocab=100)-ish start, then from `at` on a loss of `level` +- `spread` for the rest of the run."""
    rng = np.random.default_rng(seed)
    loss = curves.power_law(np.arange(n), L0=2.0, A=20.0)
    loss[at:] = level + rng.normal(0, spread, n - at).clip(-0.9 * level)
    return curves.make_run(loss, lr=np.full(n, 10.0), config={"lr_schedule": "constant", "max_iters": n})


@pytest.mark.parametrize("seed", [0, 1])
def test_divergence_is_not_swallowed_by_the_noise_of_the_diverged_part(seed):
    run = _diverging(seed)
    fs = instability.detect(run)
    div = [f for f in fs if f.id == "instability.divergence"]
    assert len(div) == 1 and div[0].severity == "critical" and div[0].evidence["above_initial_loss"]
    assert div[0].evidence["min_iter"] == 0 and div[0].evidence["end_trend"] > 100
    # nothing downstream reads the diverged curve as a curve
    found = run_all(run)
    fc = [f for f in found if f.id == "forecast.final"][0]
    assert fc.title == "no forecast: the run diverged" and "predicted" not in fc.evidence
    assert not [f for f in found if f.id.startswith("plateau")]
    assert not [f for f in found if f.id == "instability.val_bump"]


def test_short_diverged_run_is_caught():
    loss = np.r_[4.6, 1e7, np.full(10, 1.7e9)]     # 12 logged steps, as lr=1000 gives
    div = [f for f in instability.detect(curves.make_run(loss)) if f.id == "instability.divergence"]
    assert len(div) == 1 and div[0].evidence["min_iter"] == 0


def _excursion(seed, n=150, start=5, length=25, height=10.0):
    rng = np.random.default_rng(seed)
    loss = curves.power_law(np.arange(n), L0=2.0, A=8.0) + rng.normal(0, 0.1, n)
    loss[start:start + length] += height + rng.normal(0, 2.0, length)
    return curves.make_run(loss, lr=np.full(n, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_excursion_that_recovers_is_a_spike_not_blips(seed):
    run = _excursion(seed)
    fs = instability.detect(run)
    spike = [f for f in fs if f.id == "instability.spike"]
    assert len(spike) == 1 and spike[0].severity == "warning", [(f.id, f.title) for f in fs]
    ev = spike[0].evidence
    assert ev["spike_iters"] == [pytest.approx(5, abs=3)] and ev["recovered"] == [True]
    assert 20 <= ev["recovery_steps"][0] <= 32 and ev["peaks"][0] > 12 and ev["above_initial_loss"] == [True]
    assert "diverged" in spike[0].title and "recovered" in spike[0].title
    assert not [f for f in fs if f.id == "instability.divergence"]
    blips = [f for f in fs if f.id == "instability.blips"]
    assert not blips or not [i for i in blips[0].evidence["blip_iters"] if 0 <= i <= 35]


def test_plateau_after_a_spike_is_routed_to_the_lr():
    run = _excursion(0)
    run.train["loss"][60:] = 3.3 + np.random.default_rng(0).normal(0, 0.1, 90)   # then stuck
    fs = plateau.detect(run)
    assert [f.id for f in fs] == ["plateau.after_instability"] and fs[0].severity == "notice"
    assert fs[0].recommendations[0] == "--learning_rate=<0.3 x now>"


def test_grad_norm_and_train_py_records_say_nonfinite():
    loss = np.r_[4.6, 1e7, np.full(10, 1.7e9)]
    grad = np.r_[1.4, 1e15, np.full(10, np.inf)]
    run = curves.make_run(loss, grad_norm=grad)
    run.events = ([{"event": "warning", "iter": i, "id": "nonfinite", "message": "..."} for i in range(2, 12)]
                  + [{"event": "end", "iter": 12, "reason": "nonfinite"}])
    f = sanity.nonfinite(run)
    assert len(f) == 1 and f[0].severity == "critical" and f[0].evidence["series"] == "grad norm"
    assert f[0].evidence["first_iter"] == 2 and f[0].evidence["count"] == 10
    assert f[0].evidence["skipped_updates"] == 10 and f[0].evidence["stopped_by_train"]
    assert f[0].evidence["last_finite_loss"] == 1e7
    # train.py's records alone (a log without grad norms) are enough
    run.train["grad_norm"][:] = np.nan
    assert sanity.nonfinite(run)[0].evidence["first_iter"] == 2
    # an fp16 overflow is the scaler's business, not divergence
    fp16 = curves.make_run(curves.power_law(np.arange(50)), grad_norm=np.r_[np.full(25, 1.0), np.inf, np.full(24, 1.0)])
    fp16.train["grad_scale"] = np.full(50, 65536.0)
    assert sanity.nonfinite(fp16) == []


def _converging(seed, flat_from, n=6000, se=0.003):
    """Val falls linearly until flat_from x n, then exactly flat; a cosine run that finished."""
    rng = np.random.default_rng(seed)
    ev = np.arange(0, n + 1, 100)
    shape = lambda x: 3.0 + 3e-4 * np.maximum(0, flat_from * n - x)  # noqa: E731
    val = shape(ev) + rng.normal(0, se, len(ev))
    train = shape(np.arange(n + 1)) + rng.normal(0, 0.03, n + 1)
    return curves.make_run(train, ev, val, val - 0.01, val_se=se, config={"max_iters": n, "lr_decay_iters": n})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flat_at_the_end_of_a_finished_decay_is_convergence_not_a_plateau(seed):
    fs = plateau.detect(_converging(seed, flat_from=0.75))
    assert [(f.id, f.severity) for f in fs] == [("plateau.converged", "info")]
    assert any("--max_iters" in r for r in fs[0].recommendations)
    # flat for most of the decay: compute wasted on a real plateau
    fs = plateau.detect(_converging(seed, flat_from=0.4))
    assert [(f.id, f.severity) for f in fs] == [("plateau.true", "warning")]


def test_eval_iters_advice_is_capped_and_skipped_on_a_diverged_run():
    from diagnose.detectors import noise_model
    run = curves.healthy(0, se=0.05)          # 0.01 nats would need 40000 eval batches
    f = noise_model.detect(run)[0]
    assert f.evidence["eval_iters_needed"] > 10 * 200 and f.recommendations == ["--eval_iters=2000"]
    assert "cannot beat" in f.explanation
    run = _diverging(0)
    run.eval = curves.healthy(0, se=5.0).eval
    f = noise_model.detect(run)[0]
    assert f.recommendations == [] and f.evidence["eval_iters_needed"] is None and "diverged" in f.explanation


def test_all_nan_log_is_critical():
    # a log whose every loss is NaN (diverged before the first logged step) must not read as 'not logged'
    run = curves.make_run(np.full(50, np.nan))
    f = sanity.nonfinite(run)
    assert [(x.id, x.severity, x.title) for x in f] == [
        ("sanity.nonfinite", "critical", "no finite loss anywhere in the log")]
    assert f[0].evidence == {"rows": 50 + len(run.eval["val_loss"])}


# --- verdicts polished on the CPU demo run (out-demo) and the reference run ---

def test_finished_run_gets_what_ifs_not_a_forecast_of_its_own_end():
    from diagnose.detectors import forecast_final
    run = curves.healthy(0)
    run.events = [{"event": "end", "iter": 5000, "reason": "max_iters"}]
    f = forecast_final.detect(run)[0]
    assert f.id == "forecast.whatif" and "predicted" not in f.evidence and "curve" not in f.evidence
    x2 = f.evidence["what_if"]["max_iters_x2"]
    assert x2["max_iters"] == 10000 and x2["lo80"] < x2["predicted"] < x2["hi80"]
    assert x2["predicted"] < f.evidence["what_if"]["this_schedule"]["predicted"]
    assert "remaining" not in f.explanation and f.evidence["fitted_on"] == "val loss"
    # one step before the end it is still going: a forecast of the end
    assert forecast_final.detect(curves.healthy(0))[0].id == "forecast.final"


def test_forecast_names_what_it_fitted():
    from diagnose.detectors import forecast_final
    run = curves.healthy(0)
    run.eval = curves.make_run([1.0]).eval          # no evals: train loss
    f = forecast_final.detect(run)[0]
    assert f.evidence["fitted_on"] == "train loss" and f.title.startswith("forecast: train loss")


def test_cpu_run_reports_tokens_per_second_not_mfu():
    from diagnose.detectors import throughput
    run = curves.healthy(0)
    run.train["dt_ms"][:] = 400.0
    run.config["device"] = "cpu"
    run.system = {"device_name": "x86_64", "peak_flops": None}
    fs = throughput.detect(run)
    assert not [f for f in fs if f.id == "throughput.mfu"]
    tps = [f for f in fs if f.id == "throughput.tokens_per_sec"][0]
    assert tps.evidence["tokens_per_sec"] == pytest.approx(16 * 1024 * 4 / 0.4)
    run.config["device"] = "cuda"
    run.system = {"device_name": "NVIDIA GeForce RTX 4070", "dtype": "bfloat16"}
    run.model["flops_per_token"] = 3e8
    assert [f.id for f in throughput.detect(run) if f.id.startswith("throughput.mfu")] == ["throughput.mfu"]


def test_peak_lr_is_judged_only_where_gpt3s_table_speaks():
    from diagnose.detectors.schedule import peak_lr
    from diagnose.scaling import gpt3_lr
    assert gpt3_lr(1e6) == pytest.approx(6e-4) and gpt3_lr(350e6) == pytest.approx(3e-4)
    assert peak_lr(2e-3, 844_928) == [] and peak_lr(1e-3, 40_953_216) == [] and peak_lr(1e-2, 10**7) == []
    assert [f.id for f in peak_lr(1e-4, 10**7)] == ["lr.peak_low"]
    assert [f.id for f in peak_lr(5e-2, 10**7)] == ["lr.peak_high"]
    assert peak_lr(6e-4, 124_000_000) == [] and peak_lr(2.9e-3, 125e6) == []
    high = peak_lr(3.1e-3, 125e6)
    assert [f.id for f in high] == ["lr.peak_high"] and high[0].recommendations == ["--learning_rate=6e-04"]


def test_capacity_suggests_a_coherent_shape_and_no_chinchilla_losses():
    from diagnose.detectors import capacity
    from facts import padded_vocab_size, param_counts
    # the CPU demo: 4 x 128, byte vocabulary, 300 x 4096 tokens
    run = curves.make_run(np.full(300, 3.0), config={"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128,
                                                     "batch_size": 16, "gradient_accumulation_steps": 2,
                                                     "max_iters": 300}, data={"tokenizer": {"vocab_size": 257},
                                                                              "train_tokens": 554_468})
    f = capacity.detect(run)[0]
    assert f.severity == "notice" and "844.9k params" in f.title and "172.8k parameters" in f.explanation
    assert not [k for k in f.evidence if k.startswith("chinchilla")]
    s = f.evidence["suggested"]
    assert s["n_embd"] < 128 and s["n_embd"] // s["n_head"] == 32 and s["n_embd"] % s["n_head"] == 0
    assert s["params"] == param_counts(s["n_layer"], s["n_embd"], padded_vocab_size(257), 128)["params"]
    assert f"--n_head={s['n_head']}" in f.recommendations


def test_fmt_count():
    from diagnose.detectors.common import fmt_count
    assert [fmt_count(x) for x in (950, 172_798, 40_953_216, 1.2e9)] == ["950", "172.8k", "40.95M", "1.2B"]


def test_flat_mid_cosine_is_not_a_plateau_and_flat_at_its_end_is():
    run = curves.plateau(0, onset=3000, n=6000)
    run.config.update(max_iters=12000, lr_decay_iters=12000)       # seen at 6000 of 12000: LR at ~55%
    fs = plateau.detect(run)
    assert [(f.id, f.severity) for f in fs] == [("plateau.lr_decaying", "info")]
    assert fs[0].evidence["lr_end_ratio"] == pytest.approx(0.1) and fs[0].evidence["iters_left"] == 6000 - 1


def test_one_val_bump_is_info_many_are_a_notice():
    rng = np.random.default_rng(0)
    ev = np.arange(0, 5000, 250)
    val = 3.5 + rng.normal(0, 0.002, len(ev))
    for k in (5,):
        val[k] += 0.05
    run = curves.make_run(np.full(5000, 3.6), ev, val, val + 0.05, val_se=0.005)
    assert [(f.id, f.severity) for f in instability.val_bumps(run)] == [("instability.val_bump", "info")]
    for k in (10, 15):
        val[k] += 0.05
    run = curves.make_run(np.full(5000, 3.6), ev, val, val + 0.05, val_se=0.005)
    assert [(f.id, f.severity) for f in instability.val_bumps(run)] == [("instability.val_bump", "notice")]


def test_a_trainer_that_evaluates_after_its_step_counts_one_more():
    from diagnose.detectors.common import iters_done
    run = curves.make_run([], [0, 5, 85], [9.9, 8.3, 6.4], config={"max_iters": None})
    assert iters_done(run) == 85
    run.format = "generic: Ep E (Step N): Train loss X, Val loss Y"
    assert iters_done(run) == 86


def test_two_evals_with_a_decisive_gap_are_overfitting():
    """A fine-tune with two evals: val 3.6 -> 3.8 while train is 1.0 -> 0.7. The gap alone says it."""
    rng = np.random.default_rng(0)
    train = np.linspace(1.6, 0.7, 600) + rng.normal(0, 0.05, 600)
    run = curves.make_run(train, [300, 599], [3.6, 3.8], [1.0, 0.7],
                          config={"eval_iters": 20, "max_iters": 600, "lr_decay_iters": 600})
    fs = overfit.detect(run)
    f = [f for f in fs if f.id == "overfit.gap"][0]
    assert f.severity == "warning" and f.evidence["gap"] == pytest.approx(3.1) and f.evidence["val_not_falling"]
    assert not [f for f in fs if f.id == "overfit.none"]
    run.eval["val_loss"] = np.array([1.1, 0.75])     # the same run with a healthy gap: answered 'no'
    assert [(f.id, f.severity) for f in overfit.detect(run)] == [("overfit.none", "ok")]


def test_a_rise_within_the_swings_of_few_evals_is_not_overfitting():
    """A 2-epoch fine-tune whose val jumps +-0.02 between neighbouring evals ends +0.028 above its
    best: the SE must come from those swings, not from a 0.003 fit, and the rise is noise."""
    ev = np.arange(0, 1200, 100)
    val = np.array([2.08, 1.95, 1.86, 1.84, 1.80, 1.82, 1.78, 1.82, 1.79, 1.81, 1.79, 1.82])
    run = curves.make_run(np.full(1200, 1.7), ev, val, 1.7 - 2e-4 * ev, val_se=0.003,
                          config={"eval_iters": 50, "max_iters": 1200, "lr_decay_iters": 1200})
    fs = overfit.detect(run)
    assert not [f for f in fs if f.id == "overfit.confirmed"]
    run.eval["val_loss_se"][:] = np.nan      # and from the curve alone
    assert not [f for f in overfit.detect(run) if f.id == "overfit.confirmed"]


def _ema(raw, beta=0.9):
    """nanochat's debiased EMA of the step losses."""
    out, m = np.empty(len(raw)), 0.0
    for i, x in enumerate(raw):
        m = beta * m + (1 - beta) * x
        out[i] = m / (1 - beta ** (i + 1))
    return out


def test_one_step_blips_smeared_by_an_ema_are_not_spikes():
    """A healthy run logged as an EMA: isolated one-batch blips of +1 nat decay over ~10 logged
    steps. They recovered at once in the raw loss, so they are not instability; a real shift is."""
    rng = np.random.default_rng(0)
    n = 6000
    raw = curves.power_law(np.arange(n)) + rng.normal(0, 0.05, n)
    raw[[900, 2100, 3300, 4700]] += 1.0
    run = curves.make_run(_ema(raw))
    run.train_loss_kind = "ema"
    assert not [f for f in instability.detect(run) if f.id in ("instability.spike", "instability.divergence")]
    raw[3000:3400] += 0.6        # the weights went somewhere worse for 400 steps
    run = curves.make_run(_ema(raw))
    assert [f.id for f in instability.detect(run) if f.rank() > INFO] == ["instability.spike"]


def test_memorising_small_model_at_low_loss_is_not_unstable():
    """A small model memorising 27k tokens: loss 0.2-0.3 with multiplicative batch noise, the
    same batches each epoch, step-to-step ratios up to ~1.25. Relative jumps at low loss are not spikes."""
    rng = np.random.default_rng(1)
    n, period = 3000, 13                      # an epoch every 13 steps
    level = 0.2 + 0.1 * np.exp(-np.arange(n) / 1500)
    batch = rng.normal(0, 0.06, period)       # each batch's own difficulty, repeating every epoch
    loss = level * np.exp(batch[np.arange(n) % period] + rng.normal(0, 0.04, n))
    ratios = loss[1:] / loss[:-1]
    assert ratios.max() > 1.2
    run = curves.make_run(loss, config={"max_iters": n, "lr_decay_iters": n})
    assert not [f for f in instability.detect(run) if f.rank() > INFO]


def test_warmup_spike_to_twice_the_initial_loss_is_instability_at_warmup():
    """Loss 10.8 -> 21 two steps into a 10-step warmup, back within two steps, then learning:
    instability at warmup, with the LR at that step, and not 'not learning'."""
    rng = np.random.default_rng(2)
    n = 400
    loss = 4.0 + 6.8 * np.exp(-np.arange(n) / 60.0) + rng.normal(0, 0.05, n)
    loss[2:4] = [21.0, 16.0]
    lr = np.minimum(1.0, (np.arange(n) + 1) / 10.0) * 8e-4
    run = curves.make_run(loss, lr=lr, config={"warmup_iters": 10, "max_iters": 1000, "lr_decay_iters": 1000,
                                                     "learning_rate": 8e-4})
    f = [f for f in instability.detect(run) if f.id == "instability.spike"][0]
    assert f.severity == "warning" and f.evidence["in_warmup"] and f.evidence["spike_iters"] == [2]
    assert f.evidence["lr_at_worst"] == pytest.approx(8e-4 * 3 / 11, rel=1e-3)   # nanoGPT's warmup at iter 2
    assert "instability at warmup (LR 0.000218, 27% of its peak)" in f.title
    assert not [f for f in sanity.detect(run) if f.id == "sanity.not_learning"]


def test_a_last_half_that_buys_0014_nats_is_a_plateau():
    """A long run whose val improves by 0.014 over its last half (~9 epochs of its data): beyond
    noise, but doubling the run bought 1.4% in perplexity. That is a plateau, not 'still improving'."""
    rng = np.random.default_rng(0)
    ev = np.arange(0, 20001, 500)
    val = 2.0 + 0.8 * np.exp(-ev / 1500.0) + 0.028 * (1 - ev / 20000.0) + rng.normal(0, 0.002, len(ev))
    run = curves.make_run(np.full(20001, 1.9), ev, val, val - 0.1, val_se=0.002,
                          config={"max_iters": None, "learning_rate": None}, data={"train_tokens": 20001 * 16384 / 18})
    f = plateau.detect(run)[0]
    assert (f.id, f.severity) == ("plateau.flat", "warning") and f.evidence["practically_flat"]
    assert f.evidence["drop_last_half"] == pytest.approx(0.014, abs=0.004)
    run.eval["val_loss"] = val - 0.2 * (ev / 20000.0)        # the same run buying 0.1 more per half
    assert [(f.id, f.severity) for f in plateau.detect(run)] == [("plateau.none", "ok")]


def test_loss_that_creeps_up_at_constant_lr_after_flattening_is_a_plateau():
    """A large model at a constant LR: the train loss flattens, then creeps up (+0.05 over 4000
    steps) with no spike. A plateau getting worse, answered with the LR, not silence."""
    rng = np.random.default_rng(1)
    n = 8000
    it = np.arange(n)
    loss = 2.6 + 3.0 * np.exp(-it / 800.0) + 0.05 * np.clip((it - 4000) / 4000.0, 0, None) + rng.normal(0, 0.03, n)
    run = curves.make_run(loss, lr=np.full(n, 3e-4), config={"lr_schedule": "constant", "learning_rate": None,
                                                            "max_iters": None})
    f = plateau.detect(run)[0]
    assert (f.id, f.severity) == ("plateau.creep", "warning") and f.evidence["lr_ratio"] == pytest.approx(1.0)
    assert f.evidence["rise"] == pytest.approx(0.0375, abs=0.01)     # the fitted rise over the last half
    assert not [f for f in instability.detect(run) if f.rank() > INFO]


def test_one_logged_step_above_the_initial_loss_then_back_on_trend_is_a_blip():
    """A bad batch can cost more than the initial loss for one step; wrecked weights would take far
    longer than one step to relearn (zoo healthy_cosine: 6.89 at iter 55, 3.37 at 56)."""
    rng = np.random.default_rng(0)
    n = 400
    base = curves.power_law(np.arange(n), L0=2.0, A=3.0) + rng.normal(0, 0.05, n)
    one = base.copy()
    one[200] = 6.0   # above the initial loss (ln 100 = 4.6 for this vocabulary) by more than ABOVE_INIT
    fs = instability.detect(curves.make_run(one, lr=np.full(n, 1.0)))
    assert not [f for f in fs if f.id == "instability.spike"], [(f.id, f.title) for f in fs]
    assert 200 in next(f for f in fs if f.id == "instability.blips").evidence["blip_iters"]
    back = base.copy()
    back[200], back[201] = 6.0, base[201] + 0.3  # zoo cosine_stopped_early: 7.29, then 3.43 (trend ~3.2)
    assert not [f for f in instability.detect(curves.make_run(back, lr=np.full(n, 1.0))) if f.id == "instability.spike"]
    two = base.copy()
    two[200:202] = 6.0   # two logged steps up there: the weights were moved, not one batch
    spike = [f for f in instability.detect(curves.make_run(two, lr=np.full(n, 1.0))) if f.id == "instability.spike"]
    assert len(spike) == 1 and spike[0].evidence["above_initial_loss"] == [True]


def test_val_lower_at_every_eval_of_the_window_is_still_improving(tmp_path):
    """zoo healthy_wsd: val 2.457 > 2.434 > 2.395 > 2.359 > 2.337 over the last quarter, each eval's SE
    0.055 (on a fixed val set, so the differences are far less noisy): the order alone rules out flat."""
    import gzip
    from diagnose.detectors import plateau
    from diagnose.parse import load_run
    path = tmp_path / "metrics.jsonl"
    with gzip.open(os.path.join(os.path.dirname(__file__), "fixtures", "zoo", "healthy_wsd", "metrics.jsonl.gz"),
                   "rt") as f:
        path.write_text(f.read())
    fs = plateau.detect(load_run(str(path)))
    assert [f.id for f in fs] == ["plateau.none"] and fs[0].evidence["falls_at_every_eval"] is True
    assert plateau.falls_at_every_eval(np.array([2.5, 2.4, 2.3, 2.2]))
    assert not plateau.falls_at_every_eval(np.array([2.5, 2.4, 2.41, 2.2]))
    assert not plateau.falls_at_every_eval(np.array([2.5, 2.4, 2.3]))   # 1/6: not rare enough
