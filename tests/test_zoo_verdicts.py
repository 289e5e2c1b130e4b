"""Verdicts of the diagnosis on the ground-truth zoo (tests/fixtures/zoo, made by real training runs with
bench/zoo/generate.py), each by its mechanism: what the run was built to show and what it must not raise."""
import os

import pytest

from diagnose.detect import run_all
from diagnose.parse import load_run

from bench.zoo import series
from bench.zoo.excerpts import cut_text
from zoo_fixture import LABELS, ZOO, plain


def excerpt(tmp_path, name, fmt, start, length):
    file = LABELS[name]["files"][fmt]
    path = tmp_path / f"cut_{start}_{file}"
    path.write_text(cut_text(os.path.join(ZOO, name, file + ".gz"), start, length, fmt))
    return str(path)


def findings(path, name):
    facts = {k: v for k, v in LABELS[name]["facts"].items() if k in ("tokens_per_iter", "train_tokens")}
    return {f.id: f for f in run_all(load_run(path, **facts))}


@pytest.mark.parametrize("fmt,fid", [("metrics.jsonl", "plateau.at_peak_lr"), ("llmc", "plateau.at_peak_lr"),
                                     ("wandb-csv", "plateau.at_peak_lr"), ("build-nanogpt", "plateau.flat"),
                                     ("modded-nanogpt", "plateau.flat")])  # these two log no LR
def test_flat_at_a_constant_lr_for_half_the_run_is_a_plateau(tmp_path, fmt, fid):
    """plateau_width_8: 2k params at a constant LR, at its capacity from ~250 of 600 iterations. The LR
    never decays, so 'flat at a high LR' is this run's plateau (a warning), not a cooldown still to come."""
    found = findings(plain(tmp_path, "plateau_width_8", fmt), "plateau_width_8")
    f = found.get(fid)
    assert f is not None and f.severity == "warning", sorted(found)
    assert f.evidence["onset_iter"] <= 300 and f.evidence["lr_ratio"] in (1.0, None)
    assert "plateau.lr_high" not in found


@pytest.mark.parametrize("name", ["healthy_short", "spikes_lr_edge_b", "cosine_stopped_early"])
def test_a_falling_run_at_a_high_lr_is_no_plateau(tmp_path, name):
    for fmt in ("metrics.jsonl", "llmc", "hf-trainer"):
        found = findings(plain(tmp_path, name, fmt), name)
        assert "plateau.at_peak_lr" not in found, (name, fmt)


def test_a_late_excerpt_flat_within_noise_is_no_plateau(tmp_path):
    """40 iterations late in a still-improving run are flat within noise whatever the run does: half of
    the excerpt is not half of the run."""
    for name, fmt in (("healthy_wsd", "llmc"), ("spikes_lr_edge_b", "metrics.jsonl"),
                      ("cosine_stopped_early", "llmc")):
        n = sum(1 for _ in series.open_text(os.path.join(ZOO, name, LABELS[name]["files"][fmt] + ".gz")))
        for start in range(n // 2, n - 40, 40):
            found = findings(excerpt(tmp_path, name, fmt, start, 40), name)
            assert not any(i.startswith("plateau.") and found[i].severity == "warning" for i in found), \
                (name, fmt, start, sorted(found))


@pytest.mark.parametrize("fmt", ["llmc", "megatron", "wandb-csv", "hf-trainer"])
def test_a_cosine_cut_off_early_is_read_from_the_logged_lr(tmp_path, fmt):
    """cosine_stopped_early: a cosine planned over 4000 iterations, stopped at 400. These formats carry no
    config, only the logged LR: its fall from the peak (2%) read as a cosine puts the decay's end ~10x later."""
    found = findings(plain(tmp_path, "cosine_stopped_early", fmt), "cosine_stopped_early")
    f = found["lr.decay_beyond_end"]
    low, high = f.evidence["decay_end_estimate"]
    last = f.evidence["last_iter"]  # the log's own units (HF: logging steps of 10 iterations)
    assert 9 * last <= low <= 4000 / 400 * last * 1.05 <= high * 1.05 and f.evidence["lr_ratio"] > 0.97


@pytest.mark.parametrize("name", ["healthy_cosine", "healthy_wsd", "healthy_short", "plateau_width_8", "lr_too_low"])
def test_a_decayed_or_constant_logged_lr_is_not_cut_off(tmp_path, name):
    for fmt in ("llmc", "megatron", "wandb-csv", "hf-trainer"):
        assert "lr.decay_beyond_end" not in findings(plain(tmp_path, name, fmt), name), (name, fmt)


PINK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "logs",
                    "SY-Xuan__Pink__issue6-loss-0-grad-norm-nan.txt")


@pytest.mark.skipif(not os.path.exists(PINK), reason="../shared/logs not present")
def test_a_grad_norm_nan_on_every_line_is_a_warning():
    """SY-Xuan/Pink issue 6: HF Trainer prints 'grad_norm': nan on all 13 lines (the loss a 0.0
    placeholder): the norm has no finite value at all, yet it was logged, and that is a finding."""
    run = load_run(PINK)
    assert run.nonfinite_printed == {"grad_norm": 13}
    f = {f.id: f for f in run_all(run)}["sanity.nonfinite_grad_norm"]
    assert f.severity == "warning" and f.evidence["count"] == 13 and f.evidence["every_step"] is True


def test_one_nan_grad_norm_line_in_a_healthy_run_is_no_alarm(tmp_path):
    """healthy_cosine's HF Trainer log with one line's grad_norm printed as nan (a skipped step)."""
    path = plain(tmp_path, "healthy_cosine", "hf-trainer")
    lines = open(path).read().splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if "'grad_norm'" in line][20]
    lines[k] = lines[k].replace("'grad_norm': ", "'grad_norm': nan, 'was': ", 1)
    open(path, "w").write("".join(lines))
    run = load_run(path)
    assert run.nonfinite_printed == {"grad_norm": 1}
    found = run_all(run)
    f = [x for x in found if x.id == "sanity.nonfinite_grad_norm"]
    assert [(x.severity, x.evidence["count"]) for x in f] == [("notice", 1)]
    assert not [x.id for x in found if x.severity in ("warning", "critical")]
    # the same line with absent grad_norm is not a printed nan
    path2 = tmp_path / "absent_hf_trainer.txt"
    path2.write_text("".join(lines).replace("'grad_norm': nan, 'was': ", "'was': ", 1))
    assert load_run(str(path2)).nonfinite_printed == {}


LLMC_MAIN = os.path.join(os.path.dirname(PINK), "KellerJordan__modded-nanogpt__llmc-gpt2-124M-main-log.txt")


@pytest.mark.skipif(not os.path.exists(LLMC_MAIN), reason="../shared/logs not present")
def test_the_tail_of_a_cosine_to_zero_printed_as_lr_0_000000_can_learn(tmp_path):
    """The last lines of llm.c's GPT-2 124M main.log (its cosine ends at 0, printed lr:0.000000)."""
    lines = open(LLMC_MAIN).read().splitlines()
    tail = [line for line in lines if " trl:" in line][-12:]
    path = tmp_path / "tail.txt"
    path.write_text("\n".join(tail) + "\n")
    found = {f.id: f for f in run_all(load_run(str(path)))}
    assert "sanity.cannot_learn" not in found and found["sanity.lr_below_print"].severity == "info"


@pytest.mark.parametrize("fmt", ["metrics.jsonl", "nanogpt", "wandb-csv"])
def test_a_gap_while_val_still_falls_at_every_eval_is_not_overfitting(tmp_path, fmt):
    """overfit_tiny_const: 11 epochs, val 0.5 nats above train, but val lower at each of its last evals
    (2.40, 2.38, 2.36, 2.31): it still generalises better each eval, so the gap is a notice, not a warning."""
    found = findings(plain(tmp_path, "overfit_tiny_const", fmt), "overfit_tiny_const")
    assert found["overfit.gap"].severity == "notice" and found["overfit.gap"].evidence["gap"] > 0.4
    assert not [i for i, f in found.items() if i.startswith("overfit.") and f.severity == "warning"]


@pytest.mark.parametrize("name", ["overfit_nano", "overfit_micro", "nanogpt_overfit"])
def test_val_rising_after_its_best_is_still_overfitting(tmp_path, name):
    fmt = "nanogpt" if name.startswith("nanogpt") else "metrics.jsonl"
    found = findings(plain(tmp_path, name, fmt), name)
    assert [i for i, f in found.items() if i.startswith("overfit.") and f.severity == "warning"], sorted(found)


@pytest.mark.parametrize("fmt", ["metrics.jsonl", "wandb-csv"])
def test_the_tail_of_a_finished_cooldown_is_no_plateau(tmp_path, fmt):
    """The last ~40 iterations of healthy_wsd: flat at the LR floor for the whole excerpt, which is
    under a tenth of the run: convergence at the end of the decay, not a plateau."""
    n = sum(1 for _ in series.open_text(os.path.join(ZOO, "healthy_wsd", LABELS["healthy_wsd"]["files"][fmt] + ".gz")))
    found = findings(excerpt(tmp_path, "healthy_wsd", fmt, n - 38, 38), "healthy_wsd")
    assert not [i for i, f in found.items() if i.startswith("plateau.") and f.severity == "warning"], sorted(found)


FORMATS = ["metrics.jsonl", "nanogpt", "llmc", "build-nanogpt", "modded-nanogpt", "hf-trainer", "megatron", "wandb-csv"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_loss_printed_nan_from_early_on_is_nonfinite_in_every_format(tmp_path, fmt):
    """loss_scale_fp16: float16 at lr 2.0 without clipping, the loss NaN from ~iteration 28 to the end
    (122 of 150 steps). NaN on most rows is 'not logged' only when the log did not print it."""
    found = findings(plain(tmp_path, "loss_scale_fp16", fmt), "loss_scale_fp16")
    f = [x for x in found.values() if x.id.startswith("sanity.nonfinite") or x.id == "instability.loss_scale"]
    assert any(x.severity in ("warning", "critical") for x in f), sorted(found)
    if "sanity.nonfinite" in found and found["sanity.nonfinite"].evidence["series"] == "train loss":
        per_line = 10 if fmt == "hf-trainer" else 1  # HF without logging_steps: iteration = record index
        assert 20 <= per_line * found["sanity.nonfinite"].evidence["first_iter"] <= 40
        assert found["sanity.nonfinite"].evidence["recovered"] is False


@pytest.mark.parametrize("name", ["healthy_cosine", "healthy_wsd", "plateau_width_8"])
def test_columns_left_empty_are_not_nan(tmp_path, name):
    for fmt in FORMATS:
        found = findings(plain(tmp_path, name, fmt), name)
        assert not [i for i in found if i.startswith("sanity.nonfinite")], (name, fmt)


@pytest.mark.parametrize("fmt,start,length", [("metrics.jsonl", 178, 19), ("metrics.jsonl", 231, 36),
                                               ("llmc", 238, 28), ("build-nanogpt", 98, 28), ("nanogpt", 274, 10)])
def test_an_excerpt_inside_a_divergence_is_a_divergence(tmp_path, fmt, start, length):
    """diverge_lr_high (lr 2.0, no clipping) after it blew up: losses of 20-100 nats on a 257-token
    vocabulary, with no history in the excerpt (no config, no vocabulary)."""
    found = findings(excerpt(tmp_path, "diverge_lr_high", fmt, start, length), "diverge_lr_high")
    f = found["instability.worse_than_uniform"]
    assert f.severity == "critical" and f.evidence["median_loss"] > 20 and f.evidence["ratio"] > 1.25


@pytest.mark.parametrize("name", ["healthy_cosine", "healthy_short", "lr_frozen", "spikes_lr_edge"])
def test_an_excerpt_from_the_start_of_training_is_at_most_uniform(tmp_path, name):
    """The first lines of a run sit at ln(V), the uniform guess: not worse than it."""
    for fmt in ("metrics.jsonl", "llmc", "build-nanogpt"):
        found = findings(excerpt(tmp_path, name, fmt, 0, 30), name)
        assert "instability.worse_than_uniform" not in found, (name, fmt)


@pytest.mark.parametrize("fmt", ["hf-trainer", "megatron"])
def test_a_spike_inside_a_logging_interval_is_a_warning_whatever_one_steps_grad_norm(tmp_path, fmt):
    """spikes_lr_edge (lr 0.3, no clipping) in formats that log the loss as a mean over 10 iterations beside
    the last step's grad norm: the spike 3.5 -> 6.6 at ~200 comes back within 3 lines, between samples
    of the norm, so the flat sampled norm does not make it a data problem."""
    f = findings(plain(tmp_path, "spikes_lr_edge", fmt), "spikes_lr_edge")["instability.spike_excerpt"]
    assert f.severity == "warning" and f.evidence["peak_loss"] == pytest.approx(6.5725, abs=1e-3)
    assert f.evidence["grad_norm_growth"] < 2 and f.evidence["recovered_iter"] is not None


def test_llmc_says_its_size_and_the_logged_peak_lr_is_judged_by_it(tmp_path):
    """lr_too_low in llm.c's stdout: its start-up table says num_parameters 123200, its lines the LR
    (peak 5e-5): far below what models under 125M train with. healthy_cosine (3e-3) is in range."""
    run = load_run(plain(tmp_path, "lr_too_low", "llmc"))
    assert run.model["params"] == 123200
    f = {f.id: f for f in run_all(run)}["lr.peak_low"]
    assert f.evidence["learning_rate"] == pytest.approx(5e-5) and f.evidence["source"] == "logged lr"
    found = findings(plain(tmp_path, "healthy_cosine", "llmc"), "healthy_cosine")
    assert not [i for i in found if i.startswith("lr.peak")]
