"""
Faults at defined points, in this process (no new interpreter): a SIGTERM at a chosen step
(fault_hooks) saves that iteration and resumes bit for bit; a torn last metrics.jsonl line never
swallows the next record; non-finite steps are skipped, counted, and stop the run in one line
with the last good checkpoint; a crash between the best.pt and ckpt.pt writes leaves no stale
best.pt; a killed writer's temporaries are removed. (The faults that need a real process, kill
-9 and Ctrl-C, are in test_faults.py.)
"""
import json
import os

import pytest

import fault_helpers as fh
import train_helpers

MAX_ITERS, EVAL_INTERVAL = 40, 10


@pytest.fixture(scope="module")
def stopped(fault_lab):
    """A run stopped by SIGTERM (the fault hook sends it before iter 17), then a power cut tears
    the last 40 bytes of its metrics.jsonl, then it is resumed to the end."""
    out = str(fault_lab["root"] / "sigterm")
    args = fh.tiny_train_args(fault_lab["data"], out, MAX_ITERS, EVAL_INTERVAL)
    first, resumed, records, ckpt_iter = fh.torn_line_trial(args, out, stop_at=17, cut=40)
    return {"out": out, "first": first, "records": records, "ckpt_iter": ckpt_iter, "resumed": resumed}


def test_sigterm_saves_the_current_iteration_and_resumes_exactly(fault_lab, stopped):
    p = stopped["first"]
    assert p["rc"] == 0 and not fh.has_traceback(p["stderr"]), p["stderr"][-2000:]
    assert "stopped by SIGTERM at iter 18; resume with --init_from=resume" in p["stdout"]
    assert stopped["ckpt_iter"] == 18
    ends = [r for r in stopped["records"] if r["event"] == "end"]
    assert [e["reason"] for e in ends] == ["signal"] and ends[0]["iter"] == 18
    p = stopped["resumed"]
    lines = [ln for ln in p["stdout"].splitlines() if not ln.startswith("memory: ")]  # the estimate comes first
    assert p["rc"] == 0 and lines[0].startswith("resuming at iter 18"), p["stderr"][-2000:]
    for name in ("ckpt.pt", "best.pt"):
        got = fh.load_checkpoint(os.path.join(stopped["out"], name))
        assert fh.state_differences(got, fault_lab["ref"][name]) == []


def test_a_torn_last_metrics_line_does_not_swallow_the_resumed_runs_record(stopped):
    records = []
    for line in open(os.path.join(stopped["out"], "metrics.jsonl")):
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    assert [r["resumed_from_iter"] for r in records if r["event"] == "run"] == [None, 18]
    assert fh.metrics_problems(stopped["out"]) == []


def test_metrics_log_drops_a_torn_last_record_before_appending(tmp_path):
    from metrics_log import MetricsLog
    path = str(tmp_path / "metrics.jsonl")
    log = MetricsLog(path, master=True)
    for i in range(3):
        log.write({"event": "train", "iter": i, "loss": 2.0})
    log.close()
    with open(path, "r+b") as f:  # a power cut in the middle of the last record
        f.truncate(os.path.getsize(path) - 10)
    log = MetricsLog(path, master=True)
    log.write({"event": "run", "resumed_from_iter": 2})
    log.close()
    with open(path) as f:
        records = [json.loads(line) for line in f]  # every line whole
    assert [(r["event"], r.get("iter")) for r in records] == [("train", 0), ("train", 1), ("run", None)]


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(fault_lab):
    out = str(fault_lab["root"] / "nan")
    r = fh.nonfinite_trial(fault_lab["data"], out, "loss@12,grad@15,grad@25-39", max_bad_steps=3,
                           max_iters=MAX_ITERS, eval_interval=EVAL_INTERVAL)
    assert r["warned_iters"] == [12, 15, 25, 26, 27]
    assert r["bad_steps"] == 5 and r["reason"] == "nonfinite"
    assert r["ckpt_iter"] == 20 and r["checkpoint_iters"] == [0, 10, 20]  # the last good one, kept
    assert r["problems"] == [] and r["tracebacks"] == 0   # every checkpoint finite and loadable
    assert r["rc"] != 0 and fh.error_problems(r["rc"], "", r["stderr"], ["non-finite", "--learning_rate"]) == []


class Crash(BaseException):
    """The process dying at a chosen point (what kill -9 does there, but for the temporary it leaves)."""


def test_a_crash_between_the_best_pt_and_ckpt_pt_writes_leaves_no_stale_best(tmp_path, monkeypatch):
    import checkpoint
    from fault_hooks import FaultHooks
    from train_step import train_step
    data = train_helpers.make_dataset(str(tmp_path / "data"), train_tokens=1200, val_tokens=600)
    out = str(tmp_path / "out")
    with train_helpers.tiny_run(data, out) as r:
        assert r.state.record_eval(4.5)  # iter 0: the first best
        r.saver.save(r.t, r.state, best=True)
        for it in range(3):
            train_step(r.t, r.rt, it, 1.0, r.stop, FaultHooks())
        r.state.iter_num = 3
        assert r.state.record_eval(4.0)

        def crash(*args):
            raise Crash

        monkeypatch.setattr(checkpoint, "copy_atomic", crash)  # after best.pt is renamed into place
        with pytest.raises(Crash):
            r.saver.save(r.t, r.state, best=True)
    best, ckpt = (fh.load_checkpoint(os.path.join(out, n)) for n in ("best.pt", "ckpt.pt"))
    assert (best["iter_num"], ckpt["iter_num"], ckpt["best_iter"]) == (3, 0, 0)  # best.pt ahead, never stale
    assert fh.checkpoint_problems(out) == []
    # the resume from ckpt.pt (iter 0) knows of the newer best: a worse val will not replace it
    assert checkpoint.keep_better_best(out, ckpt["best_val_loss"], ckpt["best_iter"]) == (4.0, 3)


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    import checkpoint
    for name in ("ckpt.pt.tmp12345", "best.pt.tmp7", "ckpt.pt", "notes.tmp3", f"ckpt.pt.tmp{os.getpid()}"):
        (tmp_path / name).write_bytes(b"x")
    checkpoint.remove_stale_temporaries(str(tmp_path))
    # a kill mid-write leaves PID-named temporaries; only those of dead writers go, nothing else
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.pt", "notes.tmp3", f"ckpt.pt.tmp{os.getpid()}"])
