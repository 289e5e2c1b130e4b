"""
Bad input over every program gets one clear line, never a traceback: the table of cases in
bad_inputs.py (train.py, sample.py and diagnose run in this process, prepare.py as processes);
damaged files are refused and left as they were; a checkpoint crafted to run code on load
never runs it.

Cases marked xfail(strict=True) are bugs found by this suite (the reason says where the fix
belongs): they flip to failures, on purpose, once fixed, so the mark is removed with the fix.
"""
import os

import pytest

import bad_inputs as bi
import fault_helpers as fh

BUGS = {}  # case id -> where the fix belongs, for bad-input cases found failing (none open)


@pytest.fixture(scope="module")
def table(fault_lab):
    ws = str(fault_lab["root"] / "ws")
    bi.build_workspace(ws, os.path.join(fault_lab["ref_dir"], "ckpt.pt"))
    cases = bi.bad_input_cases(ws)
    before = bi.snapshot(ws)
    results = bi.run_cases([bi.case_to_run(c, ws) for c in cases])
    return {"ws": ws, "before": before, "after": bi.snapshot(ws),
            "results": {c["id"]: (c, r) for c, r in zip(cases, results)}}


def _case_params():
    ids = [c["id"] for c in bi.bad_input_cases("/ws")]
    return [pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=BUGS[cid])) if cid in BUGS else cid
            for cid in ids]


def test_there_are_at_least_60_bad_input_cases_over_the_three_programs():
    cases = bi.bad_input_cases("/ws")
    by_program = {p: sum(c["program"] == p for c in cases) for p in ("train", "prepare", "diagnose")}
    assert len(cases) >= 60 and min(by_program.values()) >= 10, by_program
    assert len({c["id"] for c in cases}) == len(cases)


@pytest.mark.parametrize("cid", _case_params())
def test_bad_input_gets_one_clear_line(table, cid):
    case, r = table["results"][cid]
    assert bi.case_problems(case, r) == [], r["stderr"][-800:]


def test_damaged_files_are_refused_and_left_as_they_were(table):
    assert bi.changed_files(table["before"], table["after"]) == []
    assert not os.path.exists(os.path.join(table["ws"], "run_trunc60", "metrics.jsonl"))
    assert not os.path.exists(os.path.join(table["ws"], "data_badsize", "train.bin.tmp"))
    # a run refused for its dataset wrote nothing, not even its run folder
    assert [n for n in os.listdir(table["ws"]) if n.startswith("out_data")] == []


def test_a_checkpoint_crafted_to_run_code_never_runs_it(table):
    # train.py --init_from=resume, sample.py and diagnose all met run_evil/{ckpt,best}.pt
    for cid in ("train-resume-malicious", "sample-malicious", "diagnose-malicious"):
        case, r = table["results"][cid]
        assert r["rc"] != 0 and not fh.has_traceback(r["stderr"]), r["stderr"][-800:]
    for cid in ("train-resume-malicious", "sample-malicious"):  # loaded with weights_only=True, refused
        case, r = table["results"][cid]
        assert r["rc"] == 2 and "cannot be read" in r["stderr"]
    assert not os.path.exists(os.path.join(table["ws"], "PWNED"))
    # and the payload is real: a plain unpickling does run it
    import torch
    marker = os.path.join(table["ws"], "PWNED-control")
    torch.load(bi.craft_malicious_checkpoint(os.path.join(table["ws"], "control.pt"), marker), weights_only=False)
    assert os.path.exists(marker)
