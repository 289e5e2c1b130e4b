"""LiveMonitor as train.py uses it: records in, new warnings out once, early stop on confirmed overfitting."""

import numpy as np

import curves
from diagnose.live import LiveMonitor


def records_of(run, eval_every=250):
    recs = [{"event": "run", "time": 0, "config": run.config, "data": run.data, "model": {}}]
    ev = {int(i): k for k, i in enumerate(run.eval["iter"])}
    for i, loss in zip(run.train["iter"], run.train["loss"]):
        recs.append({"event": "train", "iter": int(i), "loss": float(loss), "lr": 1e-3})
        if int(i) in ev:
            k = ev[int(i)]
            recs.append({"event": "eval", "iter": int(i), "train_loss": float(run.eval["train_loss"][k]),
                         "val_loss": float(run.eval["val_loss"][k]),
                         "train_loss_se": float(run.eval["train_loss_se"][k]),
                         "val_loss_se": float(run.eval["val_loss_se"][k])})
    return recs


def feed(monitor, recs):
    got = []
    for r in recs:
        got += monitor.observe(r)
        if monitor.stop_reason:
            return got, r
    return got, None


def test_early_stop_on_confirmed_overfitting_and_ids_once():
    run = curves.overfitting(0, onset=2500)
    m = LiveMonitor(dict(run.config, early_stop=True), run.data, {})
    got, stopped_at = feed(m, records_of(run))
    ids = [g["id"] for g in got]
    assert "overfit.confirmed" in ids and len(ids) == len(set(ids))
    assert all(set(g) == {"id", "message"} and "\n" not in g["message"] for g in got)
    assert m.stop_reason and "\n" not in m.stop_reason
    assert 2500 < stopped_at["iter"] <= 5000


def test_no_stop_without_early_stop_and_healthy_is_quiet():
    run = curves.overfitting(0, onset=2500)
    m = LiveMonitor(run.config, run.data, {})
    feed(m, records_of(run))
    assert m.stop_reason is None
    h = curves.healthy(1)
    m = LiveMonitor(dict(h.config, early_stop=True), h.data, {})
    got, _ = feed(m, records_of(h))
    assert got == [] and m.stop_reason is None
