"""Real runs of train.py on the CPU in chosen conditions, and the verdict diagnose reaches on each:

- overfit:  2k tokens of text, 50 epochs, no dropout  -> overfitting, repetition, a live warning;
            the same run with --early_stop=True stops at the first confirmed eval, best.pt kept;
- healthy:  200k tokens, < 1 epoch                    -> nothing about overfitting or instability;
- diverge:  learning_rate 1 / 10 / 1000, grad_clip=0  -> divergence or non-finite, warning or worse;
- leak:     the overfit run with val.bin a copy of train.bin -> 'val is not held out', not praise.

Each run is made once per module (about 40 s for all on one core).
"""
import os

import numpy as np
import pytest

import real_run_helpers as h

# 64 tokens x 8 sequences = 512 tokens per iteration
TOKENS_PER_ITER = 512
MODEL = ["--n_embd=64", "--n_head=4"]
OVERFIT = MODEL + ["--max_iters=200", "--eval_interval=20", "--eval_iters=24", "--learning_rate=2e-3",
                   "--lr_schedule=constant", "--warmup_iters=20", "--grad_clip=1.0"]
HEALTHY = MODEL + ["--max_iters=300", "--eval_interval=25", "--eval_iters=24", "--learning_rate=2e-3",
                   "--min_lr=2e-4", "--lr_decay_iters=300", "--warmup_iters=20", "--grad_clip=1.0"]
DIVERGE = {  # learning rate -> schedule; all with grad_clip=0
    1.0: ["--max_iters=150", "--lr_decay_iters=150", "--min_lr=0.1", "--warmup_iters=10"],
    10.0: ["--max_iters=100", "--lr_schedule=constant", "--warmup_iters=5"],
    1000.0: ["--max_iters=100", "--lr_schedule=constant", "--warmup_iters=0"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    small, large = str(root / "small"), str(root / "large")
    h.make_text_dataset(small, train_tokens=2048, val_tokens=16384)
    h.make_text_dataset(large, train_tokens=200_000, val_tokens=16384)
    return {"small": small, "large": large}


def _run(tmp_path_factory, data_dir, args):
    out = str(tmp_path_factory.mktemp("run"))
    p, records = h.train(out, data_dir, *args)
    return {"out": out, "proc": p, "records": records, "findings": h.diagnose(out)}


def _finished_run(tmp_path_factory, data_dir, args):
    """_run for a run that must end normally (exit 0)."""
    r = _run(tmp_path_factory, data_dir, args)
    assert r["proc"].returncode == 0, r["proc"].stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def leaked(tmp_path_factory, data):
    """The small data set with its val split replaced by the train split: label leakage by construction."""
    import json
    import shutil
    root = str(tmp_path_factory.mktemp("leak"))
    for name in ("train.bin", "meta.json"):
        shutil.copy(os.path.join(data["small"], name), root)
    shutil.copy(os.path.join(root, "train.bin"), os.path.join(root, "val.bin"))
    with open(os.path.join(root, "meta.json")) as f:
        meta = json.load(f)
    meta["val_tokens"] = meta["train_tokens"]
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump(meta, f)
    return root


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, data):
    return _finished_run(tmp_path_factory, data["small"], OVERFIT)


@pytest.fixture(scope="module")
def early(tmp_path_factory, data):
    return _finished_run(tmp_path_factory, data["small"], OVERFIT + ["--early_stop=True"])


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, data):
    return _finished_run(tmp_path_factory, data["large"], HEALTHY)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, data):
    runs = {}

    def get(lr):
        if lr not in runs:
            runs[lr] = _run(tmp_path_factory, data["large"],
                            MODEL + DIVERGE[lr] + [f"--learning_rate={lr}", "--grad_clip=0.0", "--eval_interval=25",
                                                   "--eval_iters=8"])
        return runs[lr]
    return get


# --- overfitting ---

def test_overfit_run_overfits_and_is_diagnosed(overfit):
    evals = h.events(overfit["records"], "eval")
    val = [e["val_loss"] for e in evals]
    best = min(range(len(val)), key=val.__getitem__)
    # the condition itself: val falls, then rises far above its best while train keeps falling
    assert 0 < best < len(val) - 3 and val[-1] > val[best] + 0.5
    assert evals[-1]["train_loss"] < evals[best]["train_loss"] - 0.5
    found = h.at_least(overfit["findings"], "warning", "overfit")
    assert [f.id for f in found] == ["overfit.confirmed"], h.summary(overfit["findings"])
    ev = found[0].evidence
    assert ev["best_iter"] == evals[best]["iter"] < evals[-1]["iter"] == 200
    assert ev["best_val"] == pytest.approx(val[best], abs=1e-4)
    assert ev["tokens_since_best"] == (200 - ev["best_iter"]) * TOKENS_PER_ITER


def test_overfit_run_repetition_finding(overfit):
    rep = [f for f in overfit["findings"] if f.id == "data.repetition"]
    assert len(rep) == 1 and rep[0].severity == "warning", h.summary(overfit["findings"])
    assert rep[0].evidence["train_tokens"] == 2048
    assert rep[0].evidence["iters_per_epoch"] == 2048 / TOKENS_PER_ITER
    assert rep[0].evidence["epochs"] > 1


def test_overfit_run_epochs_are_tokens_seen_over_train_tokens(overfit):
    end = h.events(overfit["records"], "eval")[-1]
    assert end["tokens"] == 200 * TOKENS_PER_ITER and end["epoch"] == 50.0
    rep = [f for f in overfit["findings"] if f.id == "data.repetition"][0]
    assert rep.evidence["tokens_seen"] == end["tokens"]
    assert rep.evidence["epochs"] == end["tokens"] / 2048


def test_overfit_run_warned_live(overfit):
    warned = [w for w in h.events(overfit["records"], "warning") if w["id"] == "overfit.confirmed"]
    assert len(warned) == 1, h.events(overfit["records"], "warning")
    assert warned[0]["message"].startswith("warning: overfitting since iteration ")
    assert "overfitting since iteration" in overfit["proc"].stdout
    # warned at an eval, after the best one and before the end
    eval_iters = [e["iter"] for e in h.events(overfit["records"], "eval")]
    assert warned[0]["iter"] in eval_iters and 0 < warned[0]["iter"] < 200


def test_early_stop_stops_at_the_live_warning_and_keeps_best(overfit, early):
    import torch
    full_warned = [w for w in h.events(overfit["records"], "warning") if w["id"] == "overfit.confirmed"][0]
    stop_at = full_warned["iter"]
    end = h.events(early["records"], "end")
    assert len(end) == 1 and end[0]["reason"] == "early_stop" and end[0]["iter"] == stop_at < 200
    assert "early stop: overfitting since iteration" in early["proc"].stdout
    # the same training up to the stop: early_stop only decides when to end
    full = [(e["iter"], e["val_loss"]) for e in h.events(overfit["records"], "eval") if e["iter"] <= stop_at]
    assert [(e["iter"], e["val_loss"]) for e in h.events(early["records"], "eval")] == full
    best_iter, best_val = min(full, key=lambda t: t[1])
    assert end[0]["best_val_loss"] == best_val
    ckpt = torch.load(os.path.join(early["out"], "best.pt"), map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == best_iter < stop_at and ckpt["best_val_loss"] == best_val
    last = torch.load(os.path.join(early["out"], "ckpt.pt"), map_location="cpu", weights_only=True)
    assert last["iter_num"] == stop_at


# --- healthy ---

ALARMS = ("overfit", "instability", "sanity.nonfinite", "data.memorization")


def test_healthy_run_is_not_called_overfit_or_unstable(healthy):
    evals = h.events(healthy["records"], "eval")
    assert evals[-1]["epoch"] < 1 and evals[-1]["val_loss"] < evals[0]["val_loss"] - 2
    assert min(e["val_loss"] for e in evals) == evals[-1]["val_loss"]   # still improving at the end
    loud = [f for f in h.at_least(healthy["findings"], "warning") if f.id.startswith(ALARMS)]
    assert loud == [], h.summary(healthy["findings"])
    rep = [f for f in healthy["findings"] if f.id == "data.repetition"][0]
    assert rep.severity == "info" and rep.evidence["epochs"] < 1
    warned = [w["id"] for w in h.events(healthy["records"], "warning")]
    assert not [w for w in warned if w and w.startswith(ALARMS + ("nonfinite",))], warned


# --- divergence ---

def _divergence_alarms(findings):
    return [f for f in h.at_least(findings, "warning") if f.id.startswith(("instability", "sanity.nonfinite"))]


@pytest.mark.parametrize("lr", [1.0, 10.0, 1000.0])
def test_divergence_is_diagnosed(diverged, lr):
    r = diverged(lr)
    assert _divergence_alarms(r["findings"]), h.summary(r["findings"])


@pytest.mark.parametrize("lr", [1.0, 10.0, 1000.0])
def test_divergence_warned_live(diverged, lr):
    r = diverged(lr)
    losses = [t["loss"] for t in h.events(r["records"], "train")]
    assert max(losses) > 3 * losses[0]          # the condition itself: the loss blew up
    warned = [w for w in h.events(r["records"], "warning")
              if (w["id"] or "").startswith(("instability", "nonfinite"))]
    assert warned, h.events(r["records"], "warning")
    if lr == 1000.0:   # train.py stops on 10 non-finite steps in a row, with a one-line error
        assert r["proc"].returncode != 0 and h.events(r["records"], "end")[0]["reason"] == "nonfinite"
        assert r["proc"].stderr.strip().count("\n") == 0 and r["proc"].stderr.startswith("error: ")


# --- too good to be true ---

def test_val_that_is_the_train_set_is_flagged_not_praised(tmp_path_factory, leaked, overfit, healthy):
    r = _finished_run(tmp_path_factory, leaked, OVERFIT)
    evals = h.events(r["records"], "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 3       # the condition: val 'improves' with train
    f = [f for f in r["findings"] if f.id == "sanity.val_not_held_out"]
    assert len(f) == 1 and f[0].severity == "critical" and f[0].evidence["identical"], h.summary(r["findings"])
    assert not h.at_least(r["findings"], "notice", "overfit")
    # a val split inside the train set but sampled at other positions: not identical, still memorised
    from diagnose.detect import run_all
    from diagnose.parse import load_run
    run = load_run(r["out"])
    run.eval["val_loss"] = run.eval["val_loss"] + np.random.default_rng(0).normal(0, 0.5, len(run.eval["val_loss"])) \
        * run.eval["val_loss_se"]
    f = [f for f in run_all(run) if f.id == "sanity.val_not_held_out"]
    assert len(f) == 1 and not f[0].evidence["identical"] and f[0].evidence["epochs"] == 50
    for real in (overfit, healthy):                               # true held-out splits are not flagged
        assert not [f for f in real["findings"] if f.id == "sanity.val_not_held_out"]
