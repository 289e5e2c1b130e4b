"""
The faults that need a real process boundary, end to end (bench/faults.py runs many more and
counts): a train.py killed -9 in a step or inside a checkpoint write resumes to the same weights
bit for bit and loses at most the iterations since its last checkpoint; Ctrl-C during start-up
gives one line, never a traceback; a prepare.py killed -9 never leaves meta.json beside
unfinished data (nor its worker processes: tests/test_prepare.py). The faults that a defined point in this process can
cause are in test_fault_stages.py; bad input and damaged files in test_bad_input.py.
"""
import signal
import time

import numpy as np
import pytest

import fault_helpers as fh
import prepare_kill as pk

MAX_ITERS, EVAL_INTERVAL = 40, 10


@pytest.mark.parametrize("phase, seed", [("checkpoint", 3), ("train", 5)])
def test_kill9_then_resume_matches_an_uninterrupted_run(fault_lab, phase, seed):
    r = fh.kill_trial(fault_lab["data"], str(fault_lab["root"] / f"kill-{phase}"), fault_lab["ref"],
                      np.random.default_rng(seed), phase, MAX_ITERS, EVAL_INTERVAL)
    assert r["problems"] == [] and r["inconsistent"] == [] and r["tracebacks"] == 0, r
    assert r["lost"] <= EVAL_INTERVAL
    if phase == "checkpoint":
        assert r["landed"] in ("ckpt.pt write", "best.pt write"), r  # it did land inside a write


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_ctrl_c_during_startup_gives_one_line_and_no_traceback(fault_lab, delay):
    # once train.py's first lines put its handler in place: at once, and inside `import torch` (1-3 s)
    w = fh.Watched([fh.PY, "train.py"] + fh.tiny_train_args(fault_lab["data"], str(fault_lab["root"] / "ctrl-c")))
    assert fh.wait_for_handler(w.proc.pid)
    time.sleep(delay)
    w.signal(signal.SIGINT)
    rc = w.finish()
    assert not fh.has_traceback(w.stderr), w.stderr[-300:]
    assert rc == 130 and w.stderr == "interrupted by SIGINT before training started\n", w.stderr[-300:]


# -----------------------------------------------------------------------------
# preparation under kill -9


@pytest.fixture(scope="module")
def prep(fault_lab):
    root = fault_lab["root"]
    parquet = pk.write_parquet(str(root / "docs.parquet"), pk.generated_texts(8000, seed=1))
    ref = str(root / "prep-ref")
    assert fh.run([fh.PY] + pk.prepare_args(parquet, ref)).returncode == 0
    return parquet, ref


def test_killed_preparation_leaves_no_meta_and_reruns_byte_for_byte(prep, fault_lab):
    parquet, ref = prep
    r = pk.prepare_kill_trial(parquet, str(fault_lab["root"] / "prep-kill"), ref, np.random.default_rng(0),
                              1.0, aim="finish")
    assert r["inconsistent"] == [] and r["problems"] == [] and r["tracebacks"] == 0, r
