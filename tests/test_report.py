"""Report rendering (terminal, markdown, JSON) and plots, from hand-made findings."""
import json
import math
import os

import numpy as np
import pytest

import curves
from diagnose import report
from diagnose.findings import Finding
from diagnose.parse_jsonl import run_from_records


def make_run(n=200, nan_from=None):
    recs = [{"event": "run", "config": {"batch_size": 4, "block_size": 8, "gradient_accumulation_steps": 1},
             "data": {"train_tokens": 3200}, "model": {"params": 1000}, "system": {"device_name": "RTX 4070"}}]
    for i in range(n):
        loss = 4.0 + 6.0 * math.exp(-i / 30) + 0.05 * math.sin(i)
        if nan_from is not None and i >= nan_from:
            loss = float("nan")
        recs.append({"event": "train", "iter": i, "loss": loss, "lr": 1e-3 * min(1, (i + 1) / 20)})
        if i % 20 == 0:
            recs.append({"event": "eval", "iter": i, "train_loss": loss, "val_loss": loss + 0.1 + i / 2000,
                         "train_loss_se": 0.01, "val_loss_se": 0.02})
    return run_from_records(recs, "out/metrics.jsonl")


def findings():
    return [
        Finding("plateau.true", "notice", "flat since 120", "The loss stopped falling.", iters=(120, 199)),
        Finding("overfit.confirmed", "warning", "overfitting since 100", "Val rises.",
                evidence={"best_iter": 100, "best_val": np.float64(4.2), "curve": {"a": [1, 2]},
                          "nan_value": float("nan"), "long": list(range(50))},
                iters=(100, 199), recommendations=["--max_iters=100", "more unique data"]),
        Finding("instability.spike", "critical", "2 spikes", "Spikes.", evidence={"spike_iters": [50, 150]}),
        Finding("data.repetition", "info", "4 epochs", "Repeats.",
                evidence={"epoch_boundary_iters": [100, 200, 300]}, missing=["train_tokens (give --data DIR)"]),
        Finding("forecast.final", "info", "final val 4.1", "Forecast.",
                evidence={"curve": {"iter": [150, 200, 250], "mid": [4.3, 4.2, 4.1], "lo": [4.2, 4.1, 4.0],
                                    "hi": [4.4, 4.3, 4.2]},
                          "predicted": 4.1, "lo80": 4.0, "hi80": 4.2, "final_iter": 250}),
    ]


def test_terminal_sorted_by_severity_with_evidence_and_fixes():
    text = report.render_terminal(make_run(), findings(), colour=False, width=100)
    order = [text.index(s) for s in ("CRITICAL", "WARNING", "NOTICE", "INFO")]
    assert order == sorted(order)
    assert "iterations 0..199: 200 train points, 10 evals" in text
    assert "tokens/iter 32" in text and "dataset 3200 train tokens" in text
    assert "try: --max_iters=100" in text and "missing: train_tokens (give --data DIR)" in text
    assert "best_iter=100" in text and "best_val=4.2" in text and "long=[50 values]" in text
    assert "curve" not in text  # curves are for plots, not for reading
    assert "\x1b[" not in text
    assert "\x1b[1;31mCRITICAL" in report.render_terminal(make_run(), findings(), colour=True)


def test_json_is_strict_and_stable():
    doc = json.loads(report.render_json(make_run(nan_from=190), findings(), plots=["p/loss.png"]))
    assert doc["schema"] == "diagnose.report/1"
    assert list(doc) == ["schema", "source", "format", "run", "facts", "worst_severity", "counts", "findings",
                         "events", "notes", "plots", "answers"]  # keys are only ever added, at the end
    assert doc["worst_severity"] == "critical"
    assert doc["counts"] == {"ok": 0, "info": 2, "notice": 1, "warning": 1, "critical": 1}
    assert [f["severity"] for f in doc["findings"]] == ["critical", "warning", "notice", "info", "info"]
    f = doc["findings"][1]
    assert set(f) == {"id", "severity", "title", "explanation", "evidence", "iters", "recommendations", "missing"}
    assert f["iters"] == [100, 199] and f["evidence"]["nan_value"] is None and f["evidence"]["best_val"] == 4.2
    run = doc["run"]
    assert run["last_iter"] == 199 and run["tokens_per_iter"] == 32 and run["nonfinite_train_losses"] == 10
    assert run["best_val_iter"] == 180 and run["segments"] == [0]
    assert doc["facts"]["system"]["device_name"] == "RTX 4070" and doc["plots"] == ["p/loss.png"]


def test_markdown_has_table_findings_and_plot():
    md = report.render_markdown(make_run(), findings(), plots=["loss.png"])
    assert md.startswith("# Diagnosis of `out/metrics.jsonl`")
    assert "| critical | 1 |" in md and "![loss.png](loss.png)" in md
    assert "## WARNING: overfitting since 100 (iters 100–199)" in md
    assert "- `--max_iters=100`" in md and "- more unique data" in md


def test_write_atomic_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "r.md"
    report.write_atomic(str(path), "hello")
    assert path.read_text() == "hello" and os.listdir(tmp_path / "sub") == ["r.md"]


def test_plot_draws_every_evidence_key(tmp_path):
    pytest.importorskip("matplotlib")
    from diagnose import plots
    paths = plots.plot_run(make_run(nan_from=190), findings(), str(tmp_path))
    assert paths == [str(tmp_path / "loss.png")]
    assert os.listdir(tmp_path) == ["loss.png"]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_findings_or_train_series(tmp_path):
    from diagnose import plots
    recs = [{"event": "eval", "iter": i, "val_loss": 3 - i / 1000} for i in range(0, 500, 100)]
    paths = plots.plot_run(run_from_records(recs, "x"), [], str(tmp_path))
    assert os.path.getsize(paths[0]) > 1000


def test_envelope_keeps_spikes_and_smooth_ignores_nan():
    from diagnose import plots
    x = np.arange(10000, dtype=float)
    y = np.ones(10000)
    y[5003] = 9.0
    bx, lo, hi = plots.envelope(x, y, max_points=100)
    assert len(bx) == 100 and hi.max() == 9.0 and lo.min() == 1.0
    y = np.full(20, 2.0)
    y[10], y[15] = np.nan, np.inf
    assert (plots.smooth(y, 5) == 2.0).all()  # non-finite values neither spread nor leave holes
    s = plots.smooth(np.arange(20.0), 5)
    assert s[0] == 0.0 and s[3] == 3.0 and s[12] == 12.0  # narrow at the start, centered after


def test_all_nan_log_says_nothing_usable():
    run = make_run(n=40, nan_from=0)
    text = report.render_terminal(run, [], width=200)
    assert "no finite loss anywhere in the log (42 values" in text
    assert report.to_json(run, [])["run"]["no_finite_loss"] is True
    assert report.to_json(make_run(), [])["run"]["no_finite_loss"] is False


def test_perplexity_beside_loss():
    run = make_run()
    s = report.summary(run)
    assert s["last_train_ppl"] == pytest.approx(math.exp(s["last_train_loss"]))
    assert s["best_val_ppl"] == pytest.approx(math.exp(s["best_val_loss"]))
    text = report.render_terminal(run, [], width=300)
    assert (f"last train loss {report.fmt_num(s['last_train_loss'])} "
            f"(perplexity {report.fmt_num(math.exp(s['last_train_loss']))})") in text
    assert report.perplexity(800.0) is None and report.perplexity(None) is None
    assert s["train_loss_kind"] == "iteration_mean" and s["grad_accum"] == 1
    assert "the logged train loss is the mean over each iteration (1 micro-batches per iteration)" in text


def answered(findings_):
    return {a["key"]: a for a in report.answers(findings_)}


def test_every_question_answered_no_included():
    fs = findings() + [Finding("overfit.none", "ok", "not overfitting: val - train = -0.070 +- 0.010 over the "
                                                     "last 5 evals", "Held-out cost.",
                               evidence={"gap": -0.07, "gap_se": 0.01, "gap_evals": 5})]
    a = answered(fs)
    assert list(a) == ["overfitting", "epochs", "plateau", "bump", "forecast", "change"]
    assert a["overfitting"]["finding_id"] == "overfit.confirmed"  # the most severe answer wins
    assert answered(fs[-1:])["overfitting"]["answer"].startswith("not overfitting: val - train = -0.070")
    assert answered(fs[-1:])["overfitting"]["evidence"] == ["gap=-0.07", "gap_se=0.01", "gap_evals=5"]
    assert (a["epochs"]["answer"], a["plateau"]["finding_id"], a["bump"]["answer"]) == \
           ("4 epochs", "plateau.true", "2 spikes")
    assert a["forecast"]["evidence"][:2] == ["predicted=4.1", "lo80=4"]
    assert a["change"]["answer"] == "--max_iters=100; more unique data"
    text = report.render_terminal(make_run(), fs, width=400)
    block = text.split("answers:\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert len(block) == 6  # one line per question
    assert block[0] == ("  Am I overfitting? overfitting since 100 (best_iter=100, best_val=4.2, "
                        "nan_value=nan, long=[50 values]) [overfit.confirmed]")
    md = report.render_markdown(make_run(), fs[-1:])
    assert "- **Am I overfitting?** not overfitting: val - train = -0.070" in md
    assert json.loads(report.render_json(make_run(), fs))["answers"][5]["answer"] == "--max_iters=100; more unique data"


def test_questions_without_findings_say_so():
    a = answered([Finding("facts.summary", "info", "200 iterations", "")])
    assert a["overfitting"]["answer"].startswith("not assessed") and a["overfitting"]["finding_id"] is None
    assert a["bump"]["answer"] == "no bump beyond the noise was found"
    assert a["change"]["answer"] == "nothing: no finding asks for a change"


def test_bits_per_byte_is_not_a_loss():
    recs = [{"event": "train", "iter": i, "loss": 3.0 - i / 100} for i in range(5)]
    run = run_from_records(recs, "x")
    run.eval = {c: np.array([0.0, 4.0]) if c == "iter" else np.array([1.2, 0.9]) if c == "val_bpb"
                else np.full(2, np.nan) for c in run.eval}
    s = report.summary(run)
    assert s["last_val_bpb"] == 0.9 and s["last_val_loss"] is None and s["last_val_ppl"] is None
    assert "last val 0.9 bits per byte" in report.render_terminal(run, [], width=300)


def test_plot_marks_from_the_series_when_findings_lack_them(tmp_path):
    from diagnose import plots
    recs = []
    for i in range(60):
        recs.append({"event": "train", "iter": i, "loss": 3 - i / 100, "epoch": i / 25})
    recs += [{"event": "eval", "iter": i, "val_loss": v} for i, v in ((10, 2.9), (30, 2.7), (50, 2.8))]
    run = run_from_records(recs, "x")
    assert plots.epoch_boundaries(run, []) == [25.0, 50.0]
    assert plots.epoch_boundaries(run, findings()) == [100, 200, 300]  # the finding's own, when it has them
    assert plots._best_val(run, []) == (30.0, 2.7)
    assert plots._best_val(run, findings()) == (100, 4.2)
    spike = Finding("instability.spike_excerpt", "warning", "spike", "", evidence={"spike_iters": [20],
                                                                                   "end_iters": [None]})
    recovered = Finding("instability.spike", "warning", "spike", "", evidence={"spike_iters": [40], "end_iters": [45]})
    onset = Finding("plateau.true", "notice", "flat", "", iters=(45, 59))
    paths = plots.plot_run(run, [spike, recovered, onset], str(tmp_path))
    assert os.path.getsize(paths[0]) > 1000


# -----------------------------------------------------------------------------
# issue 12/13: the recipe (optimizer, model options), the schedule multiplier, bits per byte

def _modern_metrics(path, optimizer="muon", options=None, tokenizer=("gpt2", 50304), bpb_scale=0.33, n=40):
    """A metrics.jsonl as train.py writes it for a run with two LR groups: `lr` is one group's raw LR
    (AdamW's, constant here), `lr_mult` the schedule multiplier both groups share (decaying)."""
    cfg = dict(optimizer=optimizer, learning_rate=6e-4, muon_lr=3e-3, **(options or {}))
    recs = [{"event": "run", "config": cfg, "model": {"params": 40_000_000},
             "data": {"tokenizer": {"name": tokenizer[0], "vocab_size": tokenizer[1]}, "train_tokens": 10**9}}]
    for i in range(n):
        mult = 1.0 if i < n // 2 else 1.0 - (i - n // 2) / (n // 2) * 0.9
        recs.append({"event": "train", "iter": i, "loss": 5.0 - 0.02 * i, "lr": 6e-4, "lr_mult": mult})
        if i % 10 == 9:
            val = 5.1 - 0.02 * i
            recs.append({"event": "eval", "iter": i, "val_loss": val, "val_bpb": val * bpb_scale, "lr_mult": mult})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def test_the_schedule_multiplier_not_one_groups_raw_lr(tmp_path):
    from diagnose.detectors.common import lr_now_and_peak
    from diagnose.parse import load_run
    run = load_run(_modern_metrics(tmp_path / "metrics.jsonl"))
    assert run.train["lr_mult"][-1] == pytest.approx(1.0 - 19 / 20 * 0.9)
    now, peak = lr_now_and_peak(run, 39)
    assert peak == pytest.approx(6e-4) and now / peak == pytest.approx(1.0 - 19 / 20 * 0.9)  # not 6e-4 / 6e-4


def test_report_names_the_optimizer_options_and_bits_per_byte(tmp_path):
    from diagnose.detect import run_all
    from diagnose.parse import load_run
    run = load_run(_modern_metrics(tmp_path / "metrics.jsonl", options=dict(rope=True, norm="rmsnorm", mlp_act="gelu")))
    text = report.render_terminal(run, run_all(run))
    assert "optimizer muon (muon_lr 0.003), model options rope=True, norm=rmsnorm" in text
    assert "last val loss 4.32 (perplexity 75.19) = 1.426 bits per" in text  # beside the val loss
    s = report.summary(run)
    assert s["optimizer"] == "muon" and s["model_options"] == {"rope": True, "norm": "rmsnorm"}
    run = load_run(_modern_metrics(tmp_path / "m2.jsonl", optimizer="adamw"))
    assert "optimizer adamw, GPT-2 model (learned positions, LayerNorm, GELU, tied head)" in \
        report.render_terminal(run, run_all(run))


def test_a_gpt2_recipe_plateau_recommends_the_modern_config():
    from diagnose.detectors import plateau
    run = curves.plateau(0, onset=3000)
    assert not any("modern" in r for f in plateau.detect(run) for r in f.recommendations)  # no run record
    run.config["optimizer"] = "adamw"
    (f,) = plateau.detect(run)
    assert f.id == "plateau.true"
    assert any(r.startswith("python train.py config/train_fineweb_4070_modern.py  (") for r in f.recommendations)
    run.config["optimizer"] = "muon"
    assert not any("modern" in r for r in plateau.detect(run)[0].recommendations)
    run.config.update(optimizer="adamw", rope=True)
    assert not any("modern" in r for r in plateau.detect(run)[0].recommendations)


def test_compare_on_bits_per_byte_when_the_tokenizers_differ(tmp_path):
    from diagnose import compare
    from diagnose.parse import load_run
    a = load_run(_modern_metrics(tmp_path / "a.jsonl", tokenizer=("gpt2", 50304), bpb_scale=0.33))
    b = load_run(_modern_metrics(tmp_path / "b.jsonl", tokenizer=("byte", 256), bpb_scale=0.30))
    rows = compare.table_rows([a, b], [[], []])
    assert compare.on_bpb(rows) and "compared on val bits per byte (the tokenizers differ: byte (256), gpt2 (50304))" \
        in compare.render_table(rows)
    assert "a.jsonl 1.426, b.jsonl 1.296; lowest: b.jsonl\n" in compare.render_table(rows)
    same = compare.table_rows([a, a], [[], []])
    assert not compare.on_bpb(same) and "bits per byte" not in compare.render_table(same)
