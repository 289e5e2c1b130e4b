"""
The fault-injection suite, counted: kill -9 training at random (seeded) moments, in a step,
in an eval, in a checkpoint write; SIGTERM / SIGINT; non-finite loss and gradients; kill -9
preparation; damaged checkpoints and datasets; a checkpoint crafted to run code on load; and
bad input over train.py, prepare.py, sample.py and diagnose. Prints one table:

    python bench/faults.py                  # the full suite (~10 min on 2 busy cores)
    python bench/faults.py --quick          # a few trials of each, to try it out
    python bench/faults.py --real-processes # bad input as separate `python ...` processes
                                            # (default: train, sample, diagnose cases in this process)

Columns: trials; survived (resumed or rerun to the same bytes, every file on disk consistent,
the answer one clear line); redone (iterations done before the kill that the resume had to
redo, max; it must stay <= eval_interval, the checkpoint interval); beyond (iterations lost
beyond the checkpoint interval, summed); inconsistent files; tracebacks; left behind (temporary
files and orphan processes a kill leaves; not counted as a failure). Exit status 1 when any
trial failed. Details of every failure follow the table.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import bad_inputs as bi  # noqa: E402
import fault_helpers as fh  # noqa: E402
import prepare_kill as pk  # noqa: E402

MAX_ITERS, EVAL_INTERVAL = 40, 10
EVAL_ITERS = 40  # an eval of ~0.1 s, so that the kills aimed at it land inside it


class Table:
    def __init__(self):
        self.rows = []
        self.failures = []

    def add(self, fault, trials):
        """trials: dicts with survived, and optionally lost, inconsistent, tracebacks, left, why."""
        lost = [t.get("lost") for t in trials if t.get("lost") is not None]
        row = {
            "fault": fault, "trials": len(trials), "survived": sum(t["survived"] for t in trials),
            "redone": max(lost) if lost else None,
            "beyond": sum(max(0, x - EVAL_INTERVAL) for x in lost) if lost else None,
            "inconsistent": sum(len(t.get("inconsistent") or []) for t in trials),
            "tracebacks": sum(t.get("tracebacks", 0) for t in trials),
            "left": sum(t.get("left", 0) for t in trials),
        }
        self.rows.append(row)
        for t in trials:
            if not t["survived"]:
                self.failures.append((fault, t.get("why") or "; ".join(
                    (t.get("problems") or []) + (t.get("inconsistent") or [])
                    + (["traceback"] if t.get("tracebacks") else []))))
        print(f"  {fault}: {row['survived']}/{row['trials']} survived", flush=True)

    def print(self):
        head = ["fault", "trials", "survived", "redone", "beyond", "inconsistent", "tracebacks", "left behind"]
        keys = ["fault", "trials", "survived", "redone", "beyond", "inconsistent", "tracebacks", "left"]
        cells = [[("-" if r[k] is None else str(r[k])) for k in keys] for r in self.rows]
        total = {k: sum(r[k] or 0 for r in self.rows) for k in keys[1:]}
        total["redone"] = max((r["redone"] or 0) for r in self.rows)
        cells.append(["TOTAL"] + [str(total[k]) for k in keys[1:]])
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        line = lambda row: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                             for i, (c, w) in enumerate(zip(row, widths))) + " |"
        print(line(head))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for c in cells:
            print(line(c))
        if self.failures:
            print(f"\n{len(self.failures)} failed trial(s):")
            for fault, why in self.failures:
                print(f"- [{fault}] {why}")


def left_behind(t):
    return len(t.get("temps_left") or []) + t.get("orphans", 0)


def training_faults(table, work, data, ref, rng, n):
    def trials(phase, count, **kw):
        out = []
        for i in range(count):
            t = fh.kill_trial(data, os.path.join(work, "run"), ref, rng, phase, MAX_ITERS, EVAL_INTERVAL,
                              EVAL_ITERS, **kw)
            t["left"] = left_behind(t)
            out.append(t)
        return out

    # kill -9, aimed by watching stdout and the folder; where each kill landed is observed, not assumed
    killed = []
    for phase, count in (("train", n), ("eval", n // 2), ("checkpoint", n // 2), ("best", n // 4),
                         ("startup", max(1, n // 8))):
        killed += trials(phase, count)
    for where in ("train", "eval", "ckpt.pt write", "best.pt write", "just after an eval or a write", "startup"):
        group = [t for t in killed if t["landed"] == where]
        if group:
            table.add(f"kill -9 in {where}" if where != "just after an eval or a write" else f"kill -9 {where}",
                      group)
    m = max(2, n // 4)
    table.add("SIGTERM at a random step", trials("train", m, sig=signal.SIGTERM))
    table.add("SIGINT at a random step", trials("train", m, sig=signal.SIGINT))
    table.add("SIGINT during eval", trials("eval", max(1, m // 2), sig=signal.SIGINT))
    table.add("SIGINT twice (impatient Ctrl-C)", trials("train", max(1, m // 2), sig=signal.SIGINT, twice=True))
    table.add("SIGINT during startup (imports)", trials("startup", max(1, m // 2), sig=signal.SIGINT))
    table.add("power cut: torn last metrics line", [torn_line_trial(work, data, ref, rng)
                                                    for _ in range(max(1, n // 12))])


def torn_line_trial(work, data, ref, rng):
    """A stop at a random step, the last metrics.jsonl record cut in half (what a power cut can
    leave), then a resume: the resumed run's records must all stay readable."""
    out = os.path.join(work, "torn")
    args = fh.tiny_train_args(data, out, MAX_ITERS, EVAL_INTERVAL, EVAL_ITERS)
    p, r, _, _ = fh.torn_line_trial(args, out, int(rng.integers(5, MAX_ITERS - 5)), int(rng.integers(10, 40)))
    problems = fh.metrics_problems(out)
    if p["rc"] or r["rc"]:
        problems.append(f"exit {p['rc']}/{r['rc']}: {fh.first_error_line(r['stderr'])}")
    elif fh.state_differences(fh.load_checkpoint(os.path.join(out, "ckpt.pt")), ref["ckpt.pt"]):
        problems.append("the resumed weights differ from the uninterrupted run")
    return {"survived": not problems, "inconsistent": problems, "lost": 0,
            "tracebacks": int(fh.has_traceback(p["stderr"] + r["stderr"]))}


def nonfinite_faults(table, work, data, rng, n):
    def check(spec, expect_bad, expect_stop, max_bad_steps=10):
        r = fh.nonfinite_trial(data, os.path.join(work, "nan"), spec, max_bad_steps, MAX_ITERS, EVAL_INTERVAL)
        why = list(r["problems"])
        if r["bad_steps"] != expect_bad:
            why.append(f"{spec}: {r['bad_steps']} bad steps counted, expected {expect_bad}")
        if expect_stop:
            if r["reason"] != "nonfinite" or r["rc"] == 0:
                why.append(f"{spec}: did not stop after max_bad_steps={max_bad_steps}")
            why += [f"{spec}: {p}" for p in fh.error_problems(r["rc"], "", r["stderr"], ["non-finite"])]
            # the stop: max_bad_steps in a row from the first bad step; ckpt.pt is the last one saved
            # before it (an eval inside the streak saves the unchanged, good weights: updates are skipped)
            stop = int(spec.split("@")[1].split("-")[0]) + max_bad_steps
            if r["ckpt_iter"] > stop or (r["checkpoint_iters"] and r["checkpoint_iters"][-1] > stop):
                why.append(f"{spec}: a checkpoint of iter {r['checkpoint_iters'][-1]} after the stop at {stop}")
        elif r["rc"] != 0 or r["reason"] != "max_iters":
            why.append(f"{spec}: the run did not finish ({r['rc']}, {r['reason']})")
        return {"survived": not why and not r["tracebacks"], "why": "; ".join(why), "tracebacks": r["tracebacks"],
                "inconsistent": r["problems"]}

    its = lambda: int(rng.integers(1, MAX_ITERS - 1))  # noqa: E731
    table.add("NaN loss at a random step", [check(f"loss@{its()}", 1, False) for _ in range(n)])
    table.add("NaN gradients at a random step", [check(f"grad@{its()}", 1, False) for _ in range(n)])
    stops = []
    for _ in range(n):
        first, k = int(rng.integers(1, 30)), int(rng.integers(1, 5))
        kind = "loss" if rng.integers(0, 2) else "grad"
        stops.append(check(f"{kind}@{first}-{MAX_ITERS}", k, True, max_bad_steps=k))
    table.add("non-finite run to max_bad_steps", stops)


def prepare_faults(table, work, rng, n, n_docs):
    parquet = pk.write_parquet(os.path.join(work, "docs.parquet"), pk.generated_texts(n_docs, seed=1))
    ref = os.path.join(work, "prep-ref")
    t0 = time.time()
    assert fh.run([fh.PY] + pk.prepare_args(parquet, ref)).returncode == 0
    duration = time.time() - t0
    print(f"  (the uninterrupted preparation of {os.path.getsize(parquet) / 1e6:.0f} MB of parquet "
          f"takes {duration:.1f} s)", flush=True)
    trials = [pk.prepare_kill_trial(parquet, os.path.join(work, "prep"), ref, rng, duration * 1.1)
              for _ in range(n)]
    trials += [pk.prepare_kill_trial(parquet, os.path.join(work, "prep"), ref, rng, duration, aim="finish")
               for _ in range(max(2, n // 3))]
    for t in trials:
        t["left"] = t["orphans"]
    for where in sorted({t["landed"] for t in trials}):
        table.add(f"prepare kill -9: {where}", [t for t in trials if t["landed"] == where])


def row_of(case):
    """The table row of a bad-input case."""
    if case["id"].startswith("train-resume-damaged-"):
        return "damaged ckpt.pt, resumed"
    if case["id"].endswith("-malicious"):
        return "checkpoint crafted to run code on load"
    return f"bad input: {case['program']}"


def bad_input(table, work, ref_dir, real):
    """The bad-input table (tests/bad_inputs.py): one line naming the problem and the fix, every
    damaged file left as it was, a crafted checkpoint's code never run."""
    ws = os.path.join(work, "ws")
    shutil.rmtree(ws, ignore_errors=True)
    bi.build_workspace(ws, os.path.join(ref_dir, "ckpt.pt"))
    cases = bi.bad_input_cases(ws)
    before = bi.snapshot(ws)
    results = bi.run_cases([bi.case_to_run(c, ws) for c in cases], real_processes=real)
    rows = {}
    for c, r in zip(cases, results):
        problems = bi.case_problems(c, r)
        rows.setdefault(row_of(c), []).append(
            {"survived": not problems, "tracebacks": int(fh.has_traceback(r["stderr"])),
             "why": f"{c['id']}: {', '.join(problems)} -- {fh.first_error_line(r['stderr'])[:160]}"})
    marker = os.path.join(ws, "PWNED")
    if os.path.exists(marker):
        rows["checkpoint crafted to run code on load"].append({"survived": False, "why": "THE PAYLOAD RAN"})
    import torch
    torch.load(os.path.join(ws, "run_evil", "ckpt.pt"), weights_only=False)  # the control: the payload is real
    assert os.path.exists(marker), "the crafted checkpoint does not run its payload when unpickled"
    changed = bi.changed_files(before, bi.snapshot(ws))
    for name, trials in rows.items():
        table.add(name, trials)
    table.add("damaged files left as they were", [{"survived": not changed, "why": f"changed: {', '.join(changed)}"}])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-trials", type=int, default=16, help="kill -9 in a step (and half as many in eval, "
                                                               "in checkpoint writes, ...)")
    p.add_argument("--prepare-trials", type=int, default=12, help="kill -9 of prepare.py at random moments")
    p.add_argument("--nonfinite-trials", type=int, default=3)
    p.add_argument("--prepare-docs", type=int, default=60000, help="documents in the generated parquet")
    p.add_argument("--quick", action="store_true", help="a few trials of each kind")
    p.add_argument("--real-processes", action="store_true", help="bad input as separate python processes")
    p.add_argument("--workdir", help="keep the trials' files here (default: a temporary folder)")
    args = p.parse_args()
    if args.quick:
        args.kill_trials, args.prepare_trials, args.nonfinite_trials, args.prepare_docs = 4, 3, 1, 20000
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    work = args.workdir or tempfile.mkdtemp(prefix="faults-")
    os.makedirs(work, exist_ok=True)
    table = Table()
    data = fh.make_dataset(os.path.join(work, "data"))
    ref_dir = os.path.join(work, "ref")
    ref = fh.reference_run(data, ref_dir, max_iters=MAX_ITERS, eval_interval=EVAL_INTERVAL, eval_iters=EVAL_ITERS)
    print(f"tiny runs: {MAX_ITERS} iterations, a checkpoint every {EVAL_INTERVAL}, seed {args.seed}; "
          f"work in {work}", flush=True)
    training_faults(table, work, data, ref, rng, args.kill_trials)
    nonfinite_faults(table, work, data, rng, args.nonfinite_trials)
    prepare_faults(table, work, rng, args.prepare_trials, args.prepare_docs)
    bad_input(table, work, ref_dir, args.real_processes)
    print()
    table.print()
    print(f"\n{time.time() - t0:.0f} s in all")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if table.failures else 0)


if __name__ == "__main__":
    main()
