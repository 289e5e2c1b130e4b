"""
The fault-injection promise, in a fast subset (bench/faults.py runs the full suite and counts):
a killed or signalled run resumes to the same weights bit for bit and loses at most the
iterations since its last checkpoint; non-finite steps are skipped, counted and stop the run
with the last good checkpoint; a killed preparation never leaves meta.json beside unfinished
data; damaged files get one clear error and are left as they were; a checkpoint crafted to run
code on load never runs it; and bad input, over every program, gets one line, never a traceback.

Cases marked xfail(strict=True) are bugs found by this suite (the reason says where the fix
belongs): they flip to failures, on purpose, once fixed, so the mark is removed with the fix.
"""
import hashlib
import json
import os
import shutil
import signal
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fault_helpers as fh  # noqa: E402

MAX_ITERS, EVAL_INTERVAL = 40, 10


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A dataset, an uninterrupted reference run, and the workspace of damaged files."""
    root = tmp_path_factory.mktemp("faults")
    data = fh.make_dataset(str(root / "data"))
    ref_dir = str(root / "ref")
    ref = fh.reference_run(data, ref_dir, max_iters=MAX_ITERS, eval_interval=EVAL_INTERVAL)
    return {"root": root, "data": data, "ref": ref, "ref_dir": ref_dir}


# -----------------------------------------------------------------------------
# training: kill -9, SIGTERM, non-finite values


@pytest.mark.parametrize("phase, seed", [("checkpoint", 3), ("train", 5)])
def test_kill9_then_resume_matches_an_uninterrupted_run(lab, phase, seed):
    r = fh.kill_trial(lab["data"], str(lab["root"] / f"kill-{phase}"), lab["ref"],
                      np.random.default_rng(seed), phase, MAX_ITERS, EVAL_INTERVAL)
    assert r["problems"] == [] and r["inconsistent"] == [] and r["tracebacks"] == 0, r
    assert r["lost"] <= EVAL_INTERVAL
    if phase == "checkpoint":
        assert r["landed"] in ("ckpt.pt write", "best.pt write"), r  # it did land inside a write


@pytest.fixture(scope="module")
def stopped(lab):
    """A run stopped by SIGTERM (the test hook sends it at iter 17), then a power cut tears the
    last line of its metrics.jsonl, then it is resumed to the end."""
    out = str(lab["root"] / "sigterm")
    args = fh.tiny_train_args(lab["data"], out, MAX_ITERS, EVAL_INTERVAL)
    first = fh.train(args + ["--fault_inject=sigterm@17"])
    path = os.path.join(out, "metrics.jsonl")
    records = [json.loads(ln) for ln in open(path)]
    ckpt_iter = fh.load_checkpoint(os.path.join(out, "ckpt.pt"))["iter_num"]
    with open(path, "r+b") as f:  # the power cut: half of the `end` record
        f.truncate(os.path.getsize(path) - 40)
    resumed = fh.train(args + ["--init_from=resume"])
    return {"out": out, "first": first, "records": records, "ckpt_iter": ckpt_iter, "resumed": resumed}


def test_sigterm_saves_the_current_iteration_and_resumes_exactly(lab, stopped):
    p = stopped["first"]
    assert p.returncode == 0 and not fh.has_traceback(p.stderr)
    assert "stopped by SIGTERM at iter 18; resume with --init_from=resume" in p.stdout
    assert stopped["ckpt_iter"] == 18
    ends = [r for r in stopped["records"] if r["event"] == "end"]
    assert [e["reason"] for e in ends] == ["signal"] and ends[0]["iter"] == 18
    p = stopped["resumed"]
    lines = [ln for ln in p.stdout.splitlines() if not ln.startswith("memory: ")]  # the estimate comes first
    assert p.returncode == 0 and lines[0].startswith("resuming at iter 18")
    for name in ("ckpt.pt", "best.pt"):
        got = fh.load_checkpoint(os.path.join(stopped["out"], name))
        assert fh.state_differences(got, lab["ref"][name]) == []


def test_a_torn_last_metrics_line_does_not_swallow_the_resumed_runs_record(stopped):
    records = []
    for line in open(os.path.join(stopped["out"], "metrics.jsonl")):
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    assert [r["resumed_from_iter"] for r in records if r["event"] == "run"] == [None, 18]
    assert fh.metrics_problems(stopped["out"]) == []


def test_ctrl_c_during_startup_gives_no_traceback(lab):
    w = fh.Watched([fh.PY, "train.py"] + fh.tiny_train_args(lab["data"], str(lab["root"] / "ctrl-c")))
    time.sleep(0.3)  # inside `import torch` (1-3 s), after Python installed its own SIGINT handler
    w.signal(signal.SIGINT)
    w.finish()
    assert not fh.has_traceback(w.stderr), w.stderr[-300:]


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(lab):
    out = str(lab["root"] / "nan")
    r = fh.nonfinite_trial(lab["data"], out, "loss@12,grad@15,grad@25-39", max_bad_steps=3,
                           max_iters=MAX_ITERS, eval_interval=EVAL_INTERVAL)
    assert r["warned_iters"] == [12, 15, 25, 26, 27]
    assert r["bad_steps"] == 5 and r["reason"] == "nonfinite"
    assert r["ckpt_iter"] == 20 and r["checkpoint_iters"] == [0, 10, 20]  # the last good one, kept
    assert r["problems"] == [] and r["tracebacks"] == 0   # every checkpoint finite and loadable
    assert r["rc"] != 0 and fh.error_problems(r["rc"], "", r["stderr"], ["non-finite", "--learning_rate"]) == []


def test_a_kill_while_best_pt_is_written_leaves_no_stale_best(lab):
    r = fh.kill_trial(lab["data"], str(lab["root"] / "kill-best"), lab["ref"], np.random.default_rng(0), "best",
                      MAX_ITERS, EVAL_INTERVAL)
    assert r["problems"] == [] and r["tracebacks"] == 0, r  # the resume repairs best.pt and matches
    if r["landed"] != "best.pt write":
        pytest.skip(f"the kill landed in {r['landed']}, not in the best.pt write")
    assert r["inconsistent"] == [], r


# -----------------------------------------------------------------------------
# preparation under kill -9


@pytest.fixture(scope="module")
def prep(lab):
    root = lab["root"]
    parquet = fh.write_parquet(str(root / "docs.parquet"), fh.generated_texts(8000, seed=1))
    ref = str(root / "prep-ref")
    assert fh.run([fh.PY] + fh.prepare_args(parquet, ref)).returncode == 0
    return parquet, ref


def test_killed_preparation_leaves_no_meta_and_reruns_byte_for_byte(prep, lab):
    parquet, ref = prep
    r = fh.prepare_kill_trial(parquet, str(lab["root"] / "prep-kill"), ref, np.random.default_rng(0),
                              1.0, aim="finish")
    assert r["inconsistent"] == [] and r["problems"] == [] and r["tracebacks"] == 0, r


def test_killed_preparation_leaves_no_worker_processes(prep, lab):
    parquet, _ = prep
    out = str(lab["root"] / "prep-orphans")
    import subprocess
    proc = subprocess.Popen([fh.PY] + fh.prepare_args(parquet, out), cwd=fh.ROOT, env=fh.ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = os.path.join(out, "train.bin.tmp")
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and not (os.path.exists(tmp) and os.path.getsize(tmp)):
        pass
    workers = fh.children_of(proc.pid)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not workers:
        pytest.skip("the kill did not land while the workers were running")
    deadline = time.time() + 5  # they look for their parent once a second
    while time.time() < deadline and any(fh.alive(p) for p in workers):
        time.sleep(0.05)
    left = [p for p in workers if fh.alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert left == []


# -----------------------------------------------------------------------------
# bad input and damaged files, every case a command line (most run in this process)

BUGS = {}  # case id -> where the fix belongs, for bad-input cases found failing (none open)
# damaged files whose content the programs may change (the resume that should have refused them)
MAY_CHANGE = ("out_train", "out_train_fsize", "run_fsize", "out_prepare", "out_prepare_fsize", "run_flip_data", "run_good", "run_nanogpt")


def _snapshot(ws):
    sums = {}
    for folder, _, files in os.walk(ws):
        if os.path.relpath(folder, ws).split(os.sep)[0] in MAY_CHANGE:
            continue
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                sums[os.path.relpath(os.path.join(folder, name), ws)] = hashlib.sha256(f.read()).hexdigest()
    return sums


@pytest.fixture(scope="module")
def table(lab):
    ws = str(lab["root"] / "ws")
    fh.build_workspace(ws, os.path.join(lab["ref_dir"], "ckpt.pt"))
    cases = fh.bad_input_cases(ws)
    before = _snapshot(ws)
    results = fh.run_cases([fh.case_to_run(c, ws) for c in cases])
    return {"ws": ws, "before": before, "after": _snapshot(ws),
            "results": {c["id"]: (c, r) for c, r in zip(cases, results)}}


def _case_params():
    ids = [c["id"] for c in fh.bad_input_cases("/ws")]
    return [pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=BUGS[cid])) if cid in BUGS else cid
            for cid in ids]


def test_there_are_at_least_60_bad_input_cases_over_the_three_programs():
    cases = fh.bad_input_cases("/ws")
    by_program = {p: sum(c["program"] == p for c in cases) for p in ("train", "prepare", "diagnose")}
    assert len(cases) >= 60 and min(by_program.values()) >= 10, by_program


@pytest.mark.parametrize("cid", _case_params())
def test_bad_input_gets_one_clear_line(table, cid):
    case, r = table["results"][cid]
    if case["program"] == "diagnose" and not os.path.exists(os.path.join(fh.ROOT, "diagnose", "__main__.py")):
        pytest.skip("python -m diagnose has no __main__.py yet")
    assert fh.case_problems(case, r) == [], r["stderr"][-800:]


def test_damaged_files_are_refused_and_left_as_they_were(table):
    changed = [k for k in table["before"] if table["after"].get(k) != table["before"][k]]
    assert changed == []
    assert not os.path.exists(os.path.join(table["ws"], "run_trunc", "metrics.jsonl"))
    assert not os.path.exists(os.path.join(table["ws"], "data_badsize", "train.bin.tmp"))


def test_a_checkpoint_crafted_to_run_code_never_runs_it(table):
    # train.py --init_from=resume and sample.py both loaded run_evil/{ckpt,best}.pt (weights_only=True)
    for cid in ("train-resume-malicious", "sample-malicious"):
        case, r = table["results"][cid]
        assert r["rc"] == 2 and not fh.has_traceback(r["stderr"]) and "cannot be read" in r["stderr"]
    assert not os.path.exists(os.path.join(table["ws"], "PWNED"))
    # and the payload is real: a plain unpickling does run it
    import torch
    marker = os.path.join(table["ws"], "PWNED-control")
    torch.load(fh.craft_malicious_checkpoint(os.path.join(table["ws"], "control.pt"), marker), weights_only=False)
    assert os.path.exists(marker)


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    import checkpoint
    for name in ("ckpt.pt.tmp12345", "best.pt.tmp7", "ckpt.pt", "notes.tmp3", f"ckpt.pt.tmp{os.getpid()}"):
        (tmp_path / name).write_bytes(b"x")
    checkpoint.remove_stale_temporaries(str(tmp_path))
    # a kill mid-write leaves PID-named temporaries; only those of dead writers go, nothing else
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.pt", "notes.tmp3", f"ckpt.pt.tmp{os.getpid()}"])
