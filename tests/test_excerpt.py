"""Short pasted excerpts: a spike heading for divergence, a lone grad-norm jump and a run that
cannot learn, concluded from a few lines alone; and nothing on excerpts of healthy runs."""
import os

import numpy as np
import pytest

from diagnose.detect import run_all
from diagnose.detectors import excerpt
from diagnose.parse import load_run
from diagnose.run import TRAIN_COLUMNS, Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(ROOT, "..", "shared", "logs")
needs_logs = pytest.mark.skipif(not os.path.isdir(LOGS), reason="../shared/logs is absent")


def pasted(tmp_path, lines):
    p = tmp_path / "excerpt.txt"
    p.write_text("\n".join(lines) + "\n")
    return load_run(str(p))


def hf(loss, gn=None, lr=2e-5):
    out = []
    for k, l in enumerate(loss):
        g = f", 'grad_norm': {gn[k]}" if gn is not None else ""
        out.append(f"{{'loss': {l}{g}, 'learning_rate': {lr}, 'epoch': {0.01 * (k + 1):.2f}}}")
    return out


def ids(findings, at_least="warning"):
    rank = {"info": 0, "notice": 1, "warning": 2, "critical": 3}[at_least]
    return [f.id for f in findings if f.rank() >= rank]


def test_spike_heading_for_divergence(tmp_path):
    loss = [3.31, 3.29, 3.3, 3.28, 3.27, 3.26, 4.9, 6.1, 7.3]
    gn = [1.1, 1.0, 1.2, 1.0, 1.1, 1.0, 3.5, 8.0, 14.0]
    run = pasted(tmp_path, hf(loss, gn, lr=6e-4))
    (f,) = excerpt.detect(run)
    assert (f.id, f.severity) == ("instability.spike_excerpt", "warning")
    ev = f.evidence
    assert (ev["start_iter"], ev["peak_iter"], ev["start_loss"], ev["peak_loss"]) == (5, 8, 3.28, 7.3)  # the level before the climb
    assert ev["grad_norm_growth"] == 14.0 and ev["lr_at_peak"] == 6e-4 and ev["recovered_iter"] is None
    assert ev["z"] >= ev["z_threshold"]
    assert "still up at the end of the excerpt" in f.title
    assert "instability.spike_excerpt" in ids(run_all(run))  # registered with the other detectors


def test_climb_without_grad_growth_is_only_a_notice(tmp_path):
    loss = [3.31, 3.29, 3.3, 3.28, 3.27, 3.26, 4.9, 6.1, 7.3]
    (f,) = excerpt.detect(pasted(tmp_path, hf(loss, [1.0] * 9)))
    assert (f.id, f.severity) == ("instability.spike_excerpt", "notice")


def test_one_step_blip_that_recovers_is_not_a_spike(tmp_path):
    loss = [3.31, 3.29, 3.3, 5.6, 3.28, 3.27, 3.26, 3.27, 3.25]  # a 925M run's blips look like this
    assert excerpt.detect(pasted(tmp_path, hf(loss, [1.0, 1.1, 1.0, 2.0, 1.0, 1.1, 1.0, 1.0, 1.1]))) == []


def test_climb_out_of_a_dip_is_not_a_spike(tmp_path):
    # a 925M run's downward blip as the excerpt's first line: nothing says it is the loss's level
    loss = [3.2951, 4.207, 4.421, 4.271, 4.072, 4.1344, 4.1141, 4.1194, 4.2546, 3.8451, 4.046, 3.9725, 4.1729,
            4.1825, 3.9704, 4.0392, 3.9943]
    lines = [f"s:{4380 + 10 * k} trl:{v}" for k, v in enumerate(loss)]
    assert excerpt.detect(pasted(tmp_path, lines)) == []
    # the same climb from the first line of a run (the initial loss is a level) would be one
    lines = [f"s:{10 * k} trl:{v}" for k, v in enumerate(loss)]
    assert ids(excerpt.detect(pasted(tmp_path, lines)), "notice") == ["instability.spike_excerpt"]


def test_low_loss_memorisation_noise_is_not_a_spike(tmp_path):
    rng = np.random.default_rng(0)
    loss = np.round(0.25 * np.exp(rng.normal(0, 0.1, 20)), 4)  # step-to-step ratios up to ~1.3
    assert excerpt.detect(pasted(tmp_path, hf(list(loss)))) == []


def test_grad_norm_jump_on_a_normal_loss(tmp_path):
    loss = [1.53, 1.52, 1.52, 1.51, 1.51, 1.5]
    lines = hf(loss, [7.2, 7.5, 7.1, 11140.0, 7.3, 7.0])
    lines[3] = "{'loss': 1.51, 'grad_norm': 11140.0} <-- spike"  # annotated by hand
    (f,) = excerpt.detect(pasted(tmp_path, lines))
    assert (f.id, f.severity, f.iters) == ("instability.gradnorm_jump", "warning", (3, 3))
    assert f.evidence["grad_norm"] == 11140.0 and f.evidence["ratio"] == pytest.approx(11140 / 7.3, rel=1e-3)


def test_grad_norm_14x_is_no_jump(tmp_path):
    assert excerpt.detect(pasted(tmp_path, hf([3.3] * 6, [0.28, 0.3, 3.91, 0.29, 0.27, 0.3]))) == []


def test_lr_zero_on_every_line_cannot_learn(tmp_path):
    run = pasted(tmp_path, ["{'loss': 0.479, 'learning_rate': 0, 'epoch': 1.0}",
                            "{'loss': 0.5176, 'learning_rate': 0, 'epoch': 2.0}",
                            "{'loss': 0.3423, 'learning_rate': 0.0, 'epoch': 2.67}"])
    (f,) = excerpt.detect(run)
    assert (f.id, f.severity) == ("sanity.cannot_learn", "warning")
    assert f.evidence == {"lr_zero_lines": 3, "lines": 3} and "learning rate 0" in f.title


def test_grad_norm_zero_on_every_line_cannot_learn(tmp_path):
    (f,) = excerpt.detect(pasted(tmp_path, hf([2.1, 2.2, 2.1, 2.15], [0.0] * 4)))
    assert f.id == "sanity.cannot_learn" and f.evidence["grad_norm_zero_lines"] == 4


def test_lr_zero_at_the_end_of_a_decay_to_zero_is_the_plan(tmp_path):
    # llm.c prints lr:%.6f: '0.000000' is an LR under 5e-7, as at the end of its cosine to 0 (the
    # tail of KellerJordan/modded-nanogpt's llmc main.log): not an exact 0, not a run that cannot learn
    lines = [f"s:{i} trl:3.2{i % 7} lr:0.000000 norm:0.22" for i in range(19550, 19560)]
    run = pasted(tmp_path, lines)
    assert run.rounded_zero == {"lr": 1e-6}
    (f,) = excerpt.detect(run)
    assert (f.id, f.severity, f.evidence["lr_rounded_zero_lines"]) == ("sanity.lr_below_print", "info", 10)
    run.config["max_iters"] = 19560
    assert excerpt.detect(run) == []
    # the same lines printing an exact 0 ('lr:0') say nothing about where the run ends: cannot learn
    run = pasted(tmp_path, [line.replace("lr:0.000000", "lr:0") for line in lines])
    assert run.rounded_zero == {} and ids(excerpt.detect(run)) == ["sanity.cannot_learn"]


def test_long_logs_are_left_to_the_history_detectors():
    n = excerpt.EXCERPT_MAX + 1
    cols = {c: np.full(n, np.nan) for c in TRAIN_COLUMNS}
    cols["iter"], cols["loss"], cols["lr"] = np.arange(n, dtype=float), np.full(n, 3.0), np.zeros(n)
    assert excerpt.detect(Run(source="x", format="x", train=cols)) == []
    cols = {c: v[:-1] for c, v in cols.items()}
    assert ids(excerpt.detect(Run(source="x", format="x", train=cols))) == ["sanity.cannot_learn"]


@needs_logs
def test_torchtitan_warmup_spike_excerpt():
    run = load_run(os.path.join(LOGS, "auroraGPT-ANL__torchtitan__llama-1.5B-warmup-2-spikes-105-steps.txt"))
    cut = Run(source="x", format=run.format, train={c: v[:20] for c, v in run.train.items()})
    (f,) = excerpt.detect(cut)
    assert f.id == "instability.spike_excerpt" and f.severity == "warning"
    assert (f.evidence["start_loss"], f.evidence["peak_loss"], f.evidence["recovered_iter"]) == (10.8595, 15.2005, 4)
    assert f.evidence["grad_norm_growth"] == pytest.approx(66.6053 / 3.2105, rel=1e-3)


HEALTHY = ["logbob0401__build-nanogpt__gpt2-124M-fineweb-edu-10B-oct26.txt",
           "HectorFCardenas__llm.c__gpt2-124M-fineweb10B-to-step-14500.txt",
           "KellerJordan__modded-nanogpt__muon-record-2024-10-10.txt",
           "tnguyen21__camelid__925M-8ksteps.txt",
           "microsoft__Megatron-DeepSpeed__gpt3-125M-tokendrop-fp16-2k-iters.txt",
           "chirag9127__nanochat__d20-base-train-4gpu-to-step-15750.txt",
           "0Xero7__slm_training__lightning-csv-wikitext103-10-epochs.txt",
           "Lightning-AI__litgpt__issue1607-gpt2-124M-owt-epoch-34-tail.txt"]


@needs_logs
@pytest.mark.parametrize("name", HEALTHY)
def test_no_warning_on_excerpts_of_healthy_logs(name):
    run = load_run(os.path.join(LOGS, name))
    n = len(run.train["iter"])
    rng = np.random.default_rng(1)
    for _ in range(100):
        size = int(rng.integers(5, 41))
        start = int(rng.integers(0, max(1, n - size)))
        cut = Run(source="x", format=run.format, train={c: v[start:start + size] for c, v in run.train.items()})
        assert ids(excerpt.detect(cut)) == [], (name, start, size)
    assert ids(excerpt.detect(run)) == []
