"""The ground-truth zoo (bench/zoo, fixtures in tests/fixtures/zoo): every rendering parses back to
the exact numbers of the run's metrics.jsonl, every label is what the generator's checks find in
the committed metrics, and the excerpt cutter is deterministic. No training here: the fixtures
were made by `python -m bench.zoo.generate`."""
import functools
import json
import math
import os

import numpy as np
import pytest

from bench.zoo import checks, configs, excerpts, render, series
from zoo_fixture import LABELS, ZOO, plain

with open(os.path.join(ZOO, "excerpts.json")) as _f:
    CUTS = json.load(_f)["excerpts"]
SPECS = {r["name"]: r for r in configs.ALL_RUNS}
TRAIN_PY = sorted(n for n, lab in LABELS.items() if lab["trainer"] == "train.py")
NANOGPT = sorted(n for n, lab in LABELS.items() if lab["trainer"] == "nanoGPT")


@functools.lru_cache(maxsize=None)
def load(name):
    """The run's Series from the committed fixture, as the generator read it."""
    lab = LABELS[name]
    if lab["trainer"] == "train.py":
        return series.read_metrics(os.path.join(ZOO, name, "metrics.jsonl.gz"))
    data = {"train_tokens": lab["facts"]["train_tokens"], "tokenizer": {"vocab_size": lab["facts"]["vocab_size"]}}
    with series.open_text(os.path.join(ZOO, name, "nanogpt.txt.gz")) as f:
        return series.read_nanogpt_stdout(f.read(), SPECS[name]["config"], data)


def interval_ends(s, interval):
    """(last record, mean loss) of each logging interval, as HF Trainer and Megatron log them."""
    train, out = s["train"], []
    ends = list(range(interval - 1, len(train), interval))
    if len(train) % interval:
        ends.append(len(train) - 1)
    start = 0
    for end in ends:
        chunk = [r["loss"] for r in train[start:end + 1]]
        out.append((train[end], sum(chunk) / len(chunk)))
        start = end + 1
    return out


def expected(fmt, s):
    """(train iters, train losses, eval iters, val losses, absolute tolerance) a parser must give back,
    from the source metrics and what the format means (see bench/zoo/render.py)."""
    tr, ev = s["train"], s["eval"]
    it, loss = [r["iter"] for r in tr], [r["loss"] for r in tr]
    eit, val = [e["iter"] for e in ev], [e["val_loss"] for e in ev]
    if fmt in ("metrics.jsonl", "wandb-csv"):
        return it, loss, eit, val, 1e-12
    if fmt == "nanogpt":
        return it, loss, eit, val, 5e-5
    if fmt == "llmc":  # prints step N = iter + 1; its parser gives the iteration back
        return it, loss, eit, val, 5e-7
    if fmt == "build-nanogpt":
        return it, loss, eit, val, 5e-5
    if fmt == "modded-nanogpt":  # step:N after N steps
        return [i + 1 for i in it], loss, eit, val, 5e-5
    ends = interval_ends(s, render.HF_INTERVAL if fmt == "hf-trainer" else render.MEGATRON_INTERVAL)
    after = [e for e in ev if e["iter"] > 0]  # no eval before training in either
    tol = 5e-5 if fmt == "hf-trainer" else 5e-6 * 10  # HF rounds to 4 decimals; Megatron prints 7 digits
    return ([r["iter"] + 1 for r, _ in ends], [m for _, m in ends], [e["iter"] for e in after],
            [e["val_loss"] for e in after], tol)


XFAIL = {}  # (format, part, run or '*') -> why the current parser cannot give the numbers back
XFAIL_VALUES = {}
# HF's example scripts log their TrainingArguments at start-up; the rendering holds only the dicts,
# so the test gives the parser the line that says the logging interval (without it: the next test)
HF_ECHO = "Training/evaluation parameters TrainingArguments(\neval_steps={},\nlogging_steps=%d,\n)\n" % render.HF_INTERVAL


def _case(fmt, part, name):
    reason = XFAIL.get((fmt, part, name)) or XFAIL.get((fmt, part, "*"))
    marks = pytest.mark.xfail(strict=False, reason=reason) if reason else ()
    return pytest.param(fmt, part, name, marks=marks, id=f"{fmt}-{part}-{name}")


CASES = [_case(fmt, part, name) for name in TRAIN_PY for fmt in ["metrics.jsonl", *render.FORMATS]
         for part in ("train", "eval")]


@pytest.mark.parametrize("fmt,part,name", CASES)
def test_renderings_parse_back_to_the_run(tmp_path, fmt, part, name):
    from diagnose.parse import load_run
    s = load(name)
    it, loss, eit, val, tol = expected(fmt, s)
    path = plain(tmp_path, name, fmt)
    if fmt == "hf-trainer":
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(HF_ECHO.format(SPECS[name]["config"]["eval_interval"]) + text)
    run = load_run(path)
    if part == "train":
        got_it, got, want_it, want = run.train["iter"], run.train["loss"], it, loss
    else:
        got_it, got, want_it, want = run.eval["iter"], run.eval["val_loss"], eit, val
    assert list(got_it) == want_it, f"{name} {fmt}: iterations"
    np.testing.assert_allclose(got, want, rtol=0, atol=tol, equal_nan=True, err_msg=f"{name} {fmt}")


def test_every_kind_of_run_is_in_the_zoo():
    assert {"healthy", "overfitting", "repeat", "divergence", "spikes", "leakage"} <= {
        lab["verdict"] for lab in LABELS.values()}
    assert len(TRAIN_PY) >= 8 and NANOGPT


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=False, reason=XFAIL_VALUES[n]))
                                  if n in XFAIL_VALUES else n for n in TRAIN_PY])
def test_hf_trainer_losses_are_the_interval_means(tmp_path, name):
    """The values (not the step numbers) of HF Trainer dicts: each loss is its logging interval's mean."""
    from diagnose.parse import load_run
    s = load(name)
    _, loss, _, val, tol = expected("hf-trainer", s)
    run = load_run(plain(tmp_path, name, "hf-trainer"))
    np.testing.assert_allclose(run.train["loss"], loss, rtol=0, atol=tol, equal_nan=True)
    np.testing.assert_allclose(run.train["epoch"], [round(r["epoch"], 2) for r, _ in
                                                    interval_ends(s, render.HF_INTERVAL)], atol=1e-12)
    np.testing.assert_allclose(run.eval["val_loss"], val, rtol=0, atol=1e-12, equal_nan=True)
    # no logging_steps in the log: the iterations are the records' index, and the run says so
    want_it, _, want_eit, _, _ = expected("hf-trainer", s)
    assert list(run.train["iter"]) == list(range(len(loss)))
    assert list(run.eval["iter"]) == [it // render.HF_INTERVAL - 1 for it in want_eit]
    assert any("no logging_steps in the log" in n for n in run.notes)


def test_nanogpt_stdout_parses_to_its_own_numbers(tmp_path):
    """Unmodified nanoGPT's stdout (4 micro-batches: the iter loss is the last one's) read by diagnose
    and by the zoo's own regexes agree."""
    from diagnose.parse import load_run
    assert NANOGPT, "no nanoGPT runs in the zoo fixtures"
    for name in NANOGPT:
        s = load(name)
        assert SPECS[name]["config"]["gradient_accumulation_steps"] > 1
        run = load_run(plain(tmp_path, name, "nanogpt"))
        assert list(run.train["iter"]) == [r["iter"] for r in s["train"]]
        np.testing.assert_allclose(run.train["loss"], [r["loss"] for r in s["train"]], atol=0, equal_nan=True)
        np.testing.assert_allclose(run.eval["val_loss"], [e["val_loss"] for e in s["eval"]], atol=0)


def test_every_label_is_what_the_checks_find_in_the_committed_metrics():
    reference = load("healthy_cosine")
    assert len(LABELS) >= 8
    for name, lab in LABELS.items():
        ok, evidence = checks.check(lab["verdict"], load(name), reference)
        assert ok, f"{name} does not show {lab['verdict']}: {evidence}"
        assert json.loads(json.dumps(evidence)) == lab["evidence"], name
        assert [lab["expect"], lab["forbid"]] == [list(x) for x in checks.VERDICTS[lab["verdict"]]]
        if "built_for" in lab:  # relabelled: what it was built for is really not there
            assert not checks.check(lab["built_for"], load(name), reference)[0], name
            assert lab["verdict"] in SPECS[name]["fallback"]


@pytest.mark.parametrize("verdict,other", [("healthy", "overfitting"), ("overfitting", "healthy"),
                                           ("healthy", "divergence"), ("divergence", "healthy"),
                                           ("not_learning", "healthy"), ("healthy", "leakage")])
def test_the_checks_tell_verdicts_apart(verdict, other):
    """A check that passed on every run would label nothing: each fails on runs of another verdict."""
    names = [n for n, lab in LABELS.items() if lab["verdict"] == verdict]
    assert names
    for name in names:
        assert not checks.check(other, load(name), load("healthy_cosine"))[0], f"{name} passes '{other}'"


def test_overfit_label_numbers():
    """Each overfitting run's evidence: val min then a rise beyond 3 SE while train keeps falling."""
    names = [n for n, lab in LABELS.items() if lab["verdict"] == "overfitting"]
    assert names
    for name in names:
        ev = LABELS[name]["evidence"]
        assert ev["best_iter"] < ev["last_iter"] and ev["rise"] > 3 * ev["se"] > 0
        assert ev["train_at_last"] < ev["train_at_best"]
        vals = [e["val_loss"] for e in load(name)["eval"]]
        assert min(vals) == pytest.approx(ev["best_val"], abs=5e-5)
        assert vals[-1] == pytest.approx(ev["last_val"], abs=5e-5)


def test_spike_check_tells_a_spike_from_a_blip():
    base = [3.0 + 0.01 * (i % 3) for i in range(40)]
    blip = base[:30] + [6.0] + base[31:]
    spike = base[:30] + [6.0, 5.0, 4.0] + base[33:]
    mk = lambda losses: {"train": [{"iter": i, "loss": v} for i, v in enumerate(losses)]}  # noqa: E731
    assert checks.spikes(mk(blip)) == (False, {"spike_iters": [], "blip_iters": [30]})
    assert checks.spikes(mk(spike)) == (True, {"spike_iters": [30], "blip_iters": []})
    assert checks.spikes(mk(base))[0] is False


def test_noise_floor_ignores_a_smooth_fall():
    """The SE floor from second differences: a straight fall adds nothing, alternating noise does."""
    smooth = [{"val_loss": 3.0 - 0.1 * i} for i in range(8)]
    noisy = [{"val_loss": 3.0 + (0.05 if i % 2 else -0.05)} for i in range(8)]
    assert checks._se(smooth) == checks.MIN_SE
    assert checks._se(noisy) == pytest.approx(1.4826 * 0.2 / math.sqrt(6))


def test_cutter_is_deterministic_and_matches_the_committed_cuts():
    by_file = {}
    for c in CUTS:
        if not c["whole"]:
            by_file.setdefault(c["file"], []).append((c["start"], c["length"]))
    assert by_file
    for file, spans in by_file.items():
        n = next(c["length"] for c in CUTS if c["file"] == file and c["whole"])
        again = excerpts.cut_spans(file, n, len(spans))
        assert sorted(again) == sorted(spans) and excerpts.cut_spans(file, n, len(spans)) == again
        assert all(excerpts.MIN_LINES <= ln <= excerpts.MAX_LINES or ln == n for _, ln in spans)
        assert again[0][0] + again[0][1] == n  # the first cut is the tail


def test_excerpt_labels_follow_what_the_cut_shows():
    """Recomputed from the fixture, each cut's labels are the committed ones; an expected category
    is only kept where the cut shows it (e.g. an overfitting run's early cut does not expect it)."""
    cache = {}
    for c in CUTS:
        name = c["run"]
        if name not in cache:
            s = load(name)
            cache[name] = (s, {fmt: excerpts.refs_of(fmt, os.path.join(ZOO, name, file + ".gz"), s)[1]
                               for fmt, file in LABELS[name]["files"].items()})
        s, refs = cache[name]
        lab = excerpts.label_cut(LABELS[name], c["format"], s, refs[c["format"]][c["start"]:c["start"] + c["length"]],
                                 c["whole"])
        assert (lab["expect"], lab["forbid"], lab["open"]) == (c["expect"], c["forbid"], c["open"]), c
    early = [c for c in CUTS if c["verdict"] == "overfitting" and not c["whole"] and c["iters"][1] is not None
             and c["iters"][1] <= LABELS[c["run"]]["evidence"]["best_iter"]]
    assert all("overfitting" not in c["expect"] for c in early)


def test_cut_text_keeps_the_csv_header():
    c = next(c for c in CUTS if c["format"] == "wandb-csv" and not c["whole"] and c["start"] > 0)
    text = excerpts.cut_text(os.path.join(ZOO, c["file"] + ".gz"), c["start"], c["length"], c["format"])
    lines = text.splitlines()
    assert lines[0].startswith("_step,") and len(lines) == c["length"] + 1


def test_fixtures_stay_small():
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ZOO) for f in fs)
    assert total < 3 * 2 ** 20, f"tests/fixtures/zoo is {total / 2 ** 20:.1f} MiB"



@pytest.mark.parametrize("fmt", ["nanogpt", "hf-trainer", "megatron", "wandb-csv"])
def test_frozen_weights_are_not_learning_whatever_the_train_noise(tmp_path, fmt):
    """lr_frozen (LR ~1e-9): the train batches' noise hides it, the evals (a fixed val set) do not move."""
    from diagnose.detectors import sanity
    from diagnose.parse import load_run
    run = load_run(plain(tmp_path, "lr_frozen", fmt))
    found = sanity.not_learning(run)
    assert [f.id for f in found] == ["sanity.not_learning"]
    assert "evals" in found[0].explanation and found[0].evidence["level"] == pytest.approx(5.6897, abs=1e-4)


def test_evals_that_move_by_more_than_the_frozen_range_are_learning(tmp_path):
    from diagnose.detectors import sanity
    from diagnose.parse import load_run
    for name in ("healthy_short", "plateau_width_8", "overfit_tiny_const"):
        run = load_run(plain(tmp_path, name, "metrics.jsonl"))
        assert sanity.not_learning(run) == [], name
    lines = "".join(f"step {i * 25}: train loss 3.5000, val loss {3.6 - 0.0004 * i:.4f}\n" for i in range(6))
    path = tmp_path / "moving.txt"
    path.write_text(lines)  # val falls 0.002 over 6 evals: slow, not frozen
    assert sanity.not_learning(load_run(str(path))) == []
    path.write_text("".join(f"step {i * 25}: train loss 3.5000, val loss {3.6 - 0.0001 * (i % 2):.4f}\n"
                            for i in range(6)))  # within 1e-4: frozen
    assert [f.id for f in sanity.not_learning(load_run(str(path)))] == ["sanity.not_learning"]
