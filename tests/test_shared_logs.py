"""The verdicts a careful reader reaches on real logs (../shared/logs/README.md), with the facts
that README gives passed as context, as a user would pass them on the command line."""
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(ROOT, "..", "shared", "logs")
pytestmark = pytest.mark.skipif(not os.path.isdir(LOGS), reason="../shared/logs not present")

load_run = pytest.importorskip("diagnose.parse").load_run
from diagnose.detect import run_all  # noqa: E402
from diagnose.findings import SEVERITIES  # noqa: E402

INFO = SEVERITIES.index("info")  # above it: a notice, warning or critical

LLMC = "KellerJordan__modded-nanogpt__llmc-gpt2-124M-main-log.txt"
MUON = "KellerJordan__modded-nanogpt__muon-record-2024-10-10.txt"
CAMELID = "tnguyen21__camelid__925M-8ksteps.txt"
SAURABH = "saurabhmangal__ERA_late_submissions__s21-tiny-gpt-shakespeare-char.txt"
RASBT = "rasbt__LLMs-from-scratch__ch05-gpt124M-verdict-10epochs.txt"
ISSUE211 = "karpathy__nanoGPT__issue211-nlayer12-shakespeare-char-val.txt"
AAKASH = "aakashvardhan__s21-gpt2__gpt2-124M-shakespeare-5000steps.txt"
PYTHIA = "Lightning-AI__litgpt__issue689-pythia70m-loss-constant.txt"
FP16 = "karpathy__nanoGPT__issue215-gpt2-fp16-nan.txt"

CONTEXT = {
    LLMC: dict(tokens_per_iter=524288, params=124_000_000),
    MUON: dict(tokens_per_iter=524288, max_iters=6200),
    CAMELID: dict(tokens_per_iter=32768, params=925_000_000),
    SAURABH: dict(tokens_per_iter=512, train_tokens=1_000_000, params=1_604_161),
    RASBT: dict(tokens_per_iter=512, train_tokens=4608, params=124_000_000),
    ISSUE211: dict(tokens_per_iter=16384, train_tokens=1_000_000),
    AAKASH: dict(tokens_per_iter=16384, train_tokens=338_025, params=124_000_000),
    PYTHIA: dict(),
    FP16: dict(),
}


def findings(name, **extra):
    return run_all(load_run(os.path.join(LOGS, name), **dict(CONTEXT[name], **extra)))


def by_id(fs, prefix):
    return [f for f in fs if f.id.startswith(prefix)]


def loud(fs, prefix):
    return [f.id for f in by_id(fs, prefix) if f.rank() > INFO]


@pytest.mark.parametrize("name", [LLMC, MUON, CAMELID])
def test_healthy_runs_raise_nothing_about_overfitting_or_spikes(name):
    fs = findings(name)
    assert loud(fs, "overfit") == [] and loud(fs, "instability") == [] and loud(fs, "plateau") == []
    assert not by_id(fs, "internal")


def test_llmc_two_blips_are_blips():
    fs = findings(LLMC)
    blips = by_id(fs, "instability.blips")[0]
    assert 7435 in blips.evidence["blip_iters"] and 9025 in blips.evidence["grad_norm_blip_iters"]
    assert not by_id(fs, "instability.spike")


def test_camelid_jumps_are_benign_blips():
    fs = findings(CAMELID)
    assert not by_id(fs, "instability.spike")
    assert len(by_id(fs, "instability.blips")[0].evidence["blip_iters"]) >= 5


def test_saurabh_still_improving_not_overfitting():
    fs = findings(SAURABH)
    assert by_id(fs, "plateau.none")
    assert loud(fs, "overfit") == []


def test_rasbt_overfits_from_step_50_over_10_epochs():
    fs = findings(RASBT)
    f = by_id(fs, "overfit.confirmed")[0]
    assert f.evidence["best_iter"] == 50 and f.evidence["best_val"] == pytest.approx(6.123)
    rep = by_id(fs, "data.repetition")[0]
    assert rep.evidence["epochs"] == pytest.approx(86 * 512 / 4608, rel=0.02)   # ~9.6, the 10th epoch


def test_issue211_overfits_from_1250():
    f = by_id(findings(ISSUE211), "overfit.confirmed")[0]
    assert f.evidence["best_iter"] == 1250


def test_aakash_repeats_242_epochs_with_period_20_and_memorises():
    fs = findings(AAKASH)
    rep = by_id(fs, "data.repetition")[0]
    assert rep.evidence["epochs"] == pytest.approx(242, rel=0.01)
    assert rep.evidence["period_steps"] == 20 and rep.evidence["period_corr"] > 0.5
    assert by_id(fs, "data.memorization")[0].severity == "warning"


def test_pythia_is_not_learning():
    f = by_id(findings(PYTHIA), "sanity.not_learning")[0]
    assert f.severity == "critical" and f.evidence["level"] == pytest.approx(np.log(50304), abs=1e-3)


def test_fp16_diverges_to_nan_at_3010():
    f = by_id(findings(FP16), "sanity.nonfinite")[0]
    assert f.severity == "critical" and f.evidence["first_iter"] == 3010 and not f.evidence["recovered"]


def test_muon_warmdown_is_the_schedule_not_a_new_regime(tmp_path):
    """Fitted before the warmdown's fast fall (<= 4400) with the schedule known, the forecast
    predicts the end: the faster fall is what the warmdown buys."""
    cfg = tmp_path / "muon.py"
    cfg.write_text("learning_rate = 0.0036\nmin_lr = 0.0\nwarmup_iters = 0\nlr_decay_iters = 6200\n"
                   "max_iters = 6200\nlr_schedule = 'wsd'\ndecay_frac = 1800 / 6200\n")
    run = load_run(os.path.join(LOGS, MUON), config=str(cfg), **CONTEXT[MUON])
    for table in (run.train, run.eval):
        keep = table["iter"] <= 4400
        for k in table:
            table[k] = table[k][keep]
    from diagnose.detectors import forecast_final
    f = forecast_final.detect(run)[0]
    assert f.evidence["lo80"] <= 3.2785 <= f.evidence["hi80"]
