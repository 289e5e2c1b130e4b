"""
Helpers for the fault suite (tests/test_faults.py, test_fault_stages.py, test_bad_input.py and
bench/faults.py): tiny training runs, here or as processes killed at chosen moments, and what a
fault may leave on disk, checked. The bad-input table and its damaged files are in
bad_inputs.py; prepare.py under kill -9 in prepare_kill.py.
"""
import contextlib
import io
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_helpers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# tiny: 2 layers x 32 wide, context 32, byte vocabulary; a step takes ~5 ms. One torch thread, so
# that a run here and a run in a process give the same bits (a kill here, its resume there)
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--device=cpu", "--dtype=float32", "--compile=False",
        "--log_interval=1", "--warmup_iters=5", "--learning_rate=1e-2", "--min_lr=1e-3",
        "--dropout=0.1", "--live_diagnose=False", "--cpu_threads=1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
           PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1")
load_checkpoint = train_helpers.load_ckpt  # as train.py loads it (weights_only=True); raises on a damaged file


def tiny_train_args(data_dir, out_dir, max_iters=40, eval_interval=10, eval_iters=10, extra=()):
    return TINY + [f"--data_dir={data_dir}", f"--out_dir={out_dir}", f"--max_iters={max_iters}",
                   f"--lr_decay_iters={max_iters}", f"--eval_interval={eval_interval}",
                   f"--eval_iters={eval_iters}"] + list(extra)


def make_dataset(data_dir, train_tokens=40000, val_tokens=6000, seed=0):
    """A byte-vocabulary dataset folder (train.bin, val.bin, meta.json) as prepare.py lays it out."""
    return train_helpers.make_dataset(data_dir, train_tokens=train_tokens, val_tokens=val_tokens, seed=seed)


# -----------------------------------------------------------------------------
# programs, here or as processes: {rc, stdout, stderr}


def run_in_process(case):
    """`python ARGV` run here (case: {argv, cwd}) as the interpreter would run it: runpy, sys.argv,
    the exit status, a traceback printed for an uncaught exception; torch's thread count kept."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    argv, out, err = case["argv"], io.StringIO(), io.StringIO()
    with train_helpers.saved_process_state(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.chdir(case.get("cwd", ROOT))
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1]] + argv[2:]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(argv)
                runpy.run_path(argv[0], run_name="__main__")
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = 1
    if threads:
        sys.modules["torch"].set_num_threads(threads)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def train_here(args):
    return run_in_process({"argv": ["train.py"] + list(args)})


def run(argv, cwd=ROOT, timeout=300, env=None, preexec_fn=None):
    """A command line run to the end as a process; CompletedProcess with text output."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, preexec_fn=preexec_fn)


def run_case_subprocess(case, timeout=300):
    """A case {argv, cwd, env, fsize} as a real `python ...` process."""
    kw = {"preexec_fn": file_size_limit(case["fsize"])} if case.get("fsize") else {}
    p = run([PY] + case["argv"], cwd=case.get("cwd", ROOT), timeout=timeout,
            env=dict(ENV, **(case.get("env") or {})), **kw)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def file_size_limit(limit):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored), as on a full disk."""
    def limit_writes():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


class Watched:
    """A process whose stdout lines a thread collects, so that a caller can wait for a line and
    then signal it; stderr goes to a file, read once it ended."""

    def __init__(self, argv):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, bufsize=1)
        self.lines, self.stderr = [], ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=120):
        """The first stdout line matching the regex (a match), or None once the process ended."""
        rx, seen, deadline = re.compile(pattern), 0, time.time() + timeout
        while time.time() < deadline:
            ended = not self._reader.is_alive()  # before looking: no line is missed
            for line in self.lines[seen:]:
                if rx.search(line):
                    return rx.search(line)
            seen = len(self.lines)
            if ended:
                return None
            time.sleep(0.0005)
        return None

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def finish(self, timeout=300):
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self._err.seek(0)
        self.stderr = self._err.read().decode("utf-8", "replace")
        self._err.close()
        return rc

    def last_iter(self):
        """The last iteration train.py printed an `iter N:` line for (None if none)."""
        its = [int(m.group(1)) for m in (re.match(r"iter (\d+):", ln) for ln in self.lines) if m]
        return its[-1] if its else None


def wait_for_handler(pid, sig=signal.SIGTERM, timeout=60):
    """Until process pid catches sig (SigCgt in /proc): train.py's start-up handler is in place.
    (A Ctrl-C in the interpreter's own start-up, before a script runs, is a traceback in any script.)"""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                caught = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return False
        if caught & (1 << (sig - 1)):
            return True
        time.sleep(0.001)
    return False


# -----------------------------------------------------------------------------
# what a fault may leave: the checks


def has_traceback(text):
    return "Traceback (most recent call last)" in text


def error_problems(rc, stdout, stderr, must_name=()):
    """What is wrong with a failed run's answer to bad input; [] when it is one clear line: a
    non-zero exit, no traceback, exactly one error line on stderr (argparse's usage lines before
    its `error:` line accepted), naming each of `must_name` (the key or file, and the fix)."""
    problems = ["exit status 0"] if rc == 0 else []
    if has_traceback(stderr) or has_traceback(stdout):
        problems.append("traceback")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if lines and lines[0].startswith("usage:"):  # argparse: usage block, then `prog: error: ...`
        lines = [ln for ln in lines if re.match(r"^\S+: error: ", ln)]
    errors = [ln for ln in lines if not ln.startswith("note: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    text = " ".join(errors).lower()
    return problems + [f"does not name {w!r}" for w in must_name if w.lower() not in text]


def first_error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]


def tensors_of(state, prefix=""):
    """{dotted name: tensor} for every tensor in a nested state (model, optimizer, rng)."""
    import torch
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(tensors_of(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def state_differences(a, b, keys=("model", "optimizer")):
    """Names of tensors that differ (not bit-exactly equal) between two checkpoints."""
    import torch
    diff = [] if a.get("iter_num") == b.get("iter_num") else [f"iter_num {a.get('iter_num')} != {b.get('iter_num')}"]
    for key in keys:
        ta, tb = tensors_of(a[key]), tensors_of(b[key])
        if ta.keys() != tb.keys():
            diff.append(f"{key}: different tensor names")
            continue
        diff += [f"{key}.{n}" for n in ta if ta[n].shape != tb[n].shape or not torch.equal(ta[n], tb[n])]
    return diff


def temp_files(folder):
    """Leftover temporary files (an interrupted atomic write) in a folder."""
    return sorted(n for n in os.listdir(folder) if ".tmp" in n) if os.path.isdir(folder) else []


def metrics_problems(out_dir):
    """What makes out_dir/metrics.jsonl unreadable: every line but a torn last one must be JSON,
    and diagnose's parser must read the run (once it has a train record)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    problems, records = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:  # not the last, possibly torn, line
                problems.append(f"metrics.jsonl line {i + 1} is not JSON: {line[:80]!r}")
    if any(r.get("event") == "train" for r in records):
        from diagnose.parse import load_run
        from errors import UserError
        try:
            load_run(out_dir)
        except UserError as e:
            problems.append(f"diagnose cannot read metrics.jsonl: {e}")
    return problems


def checkpoint_problems(out_dir, last_done_iter=None):
    """Checkpoints on disk that do not load (weights_only), hold non-finite weights, claim an
    iteration that never ran, or a best.pt older than the best ckpt.pt says it holds."""
    import torch
    problems, loaded = [], {}
    for name in ("ckpt.pt", "best.pt"):
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        try:
            ck = loaded[name] = load_checkpoint(path)
        except Exception as e:
            problems.append(f"{name} does not load: {type(e).__name__}: {str(e)[:100]}")
            continue
        if not all(torch.isfinite(t).all() for t in tensors_of(ck["model"]).values() if t.is_floating_point()):
            problems.append(f"{name} holds non-finite weights")
        if last_done_iter is not None and ck["iter_num"] > last_done_iter + 1:
            problems.append(f"{name} says iter {ck['iter_num']} but only {last_done_iter} ran")
    ck, best = loaded.get("ckpt.pt"), loaded.get("best.pt")
    if ck is not None and ck.get("best_iter") is not None:
        if best is None:
            problems.append(f"ckpt.pt says the best is iter {ck['best_iter']} but there is no best.pt")
        elif best["iter_num"] < ck["best_iter"]:  # (a newer best.pt, its ckpt.pt not yet written, is fine)
            problems.append(f"best.pt holds iter {best['iter_num']} but ckpt.pt says the best is "
                            f"iter {ck['best_iter']} (best.pt is stale)")
    return problems


# -----------------------------------------------------------------------------
# training under faults


def reference_run(data_dir, out_dir, **kw):
    """An uninterrupted tiny run (here); returns its final ckpt.pt and best.pt (loaded)."""
    r = train_here(tiny_train_args(data_dir, out_dir, **kw))
    if r["rc"] != 0:
        raise RuntimeError(f"the reference run failed: {r['stderr'][-2000:]}")
    return {n: load_checkpoint(os.path.join(out_dir, n)) for n in ("ckpt.pt", "best.pt")}


def resume_problems(args, out_dir, ref):
    """Resume (here) as the user would, from ckpt.pt or else from scratch, to the end: what differs
    from the reference run or is inconsistent. Returns (problems, inconsistent, tracebacks)."""
    mode = "resume" if os.path.exists(os.path.join(out_dir, "ckpt.pt")) else "scratch"
    r = train_here(list(args) + [f"--init_from={mode}"])
    tracebacks = int(has_traceback(r["stderr"]))
    if r["rc"] != 0:
        return [f"the {mode} run failed ({r['rc']}): {first_error_line(r['stderr'])}"], [], tracebacks
    problems = []
    for name in ("ckpt.pt", "best.pt"):
        diff = state_differences(load_checkpoint(os.path.join(out_dir, name)), ref[name])
        if diff:
            problems.append(f"{name} after resuming differs from the uninterrupted run: "
                            f"{', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}")
    return problems, checkpoint_problems(out_dir) + metrics_problems(out_dir), tracebacks


def _aim(w, out_dir, rng, phase, max_iters, eval_interval, eval_iters):
    """Wait for a moment chosen by rng within phase; returns once it has come."""
    n_evals = max_iters // eval_interval
    if phase == "startup":
        wait_for_handler(w.proc.pid)
        time.sleep(float(rng.uniform(0, 1.5)))
    elif phase == "train":
        w.wait_line(rf"^iter {int(rng.integers(0, max_iters - 1))}:")
        time.sleep(float(rng.uniform(0, 0.004)))
    elif phase == "eval":  # an eval in the middle (the first and last are special); ~4 ms per eval_iter
        w.wait_line(rf"^iter {int(rng.integers(1, n_evals)) * eval_interval - 1}:")
        time.sleep(float(rng.uniform(0, 0.002 * eval_iters)))
    else:  # 'checkpoint': any checkpoint file being written; 'best': best.pt being written
        e = int(rng.integers(1 if phase == "best" else 0, n_evals))
        if e > 0:
            w.wait_line(rf"^iter {e * eval_interval - 1}:")
        deadline, prefix = time.time() + 30, "best.pt" if phase == "best" else ""
        while time.time() < deadline and not any(n.startswith(prefix) for n in temp_files(out_dir)):
            pass


def signal_stop_problems(w, rc, sig, twice, out_dir):
    """A signalled run must stop cleanly: exit 0 with a checkpoint of the iteration it names
    (twice, an impatient Ctrl-C, may also exit 130)."""
    name = signal.Signals(sig).name
    if twice:
        return [] if rc in (0, 130) else [f"{name} twice: exit {rc} ({first_error_line(w.stderr)})"]
    m = re.search(r"stopped by \w+ at iter (\d+)", "\n".join(w.lines))
    if rc != 0 or m is None:
        return [f"{name}: exit {rc}, no 'stopped by' line ({first_error_line(w.stderr)})"]
    if os.path.exists(os.path.join(out_dir, "ckpt.pt")):
        at = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["iter_num"]
        if at != int(m.group(1)):
            return [f"stopped at iter {m.group(1)} but ckpt.pt holds iter {at}"]
    return []


def kill_trial(data_dir, out_dir, ref, rng, phase, max_iters=40, eval_interval=10, eval_iters=10,
               sig=signal.SIGKILL, extra=(), twice=False):
    """One train.py process killed (or signalled) at a moment chosen by rng within `phase` ('train',
    'eval', 'checkpoint', 'best', 'startup'), then resumed to the end and compared with the
    reference. twice: the signal is sent twice, 2 ms apart (an impatient Ctrl-C).

    Returns a dict: landed (where the signal landed, as observed), survived, lost (iterations
    done before the kill that the resumed run had to redo), inconsistent (list), tracebacks
    (count), problems (list), temps_left."""
    shutil.rmtree(out_dir, ignore_errors=True)
    args = tiny_train_args(data_dir, out_dir, max_iters, eval_interval, eval_iters, extra)
    w = Watched([PY, "train.py"] + args)
    _aim(w, out_dir, rng, phase, max_iters, eval_interval, eval_iters)
    w.signal(sig)
    if twice:
        time.sleep(0.002)
        w.signal(sig)
    rc = w.finish()
    temps, landed = temp_files(out_dir), phase
    if phase in ("checkpoint", "best"):
        landed = "ckpt.pt write" if any(t.startswith("ckpt.pt") for t in temps) else (
            "best.pt write" if temps else "just after an eval or a write")
    if phase == "eval" and not re.match(r"iter \d+:", (w.lines or [""])[-1]):
        landed = "just after an eval or a write"
    last = w.last_iter()
    problems = signal_stop_problems(w, rc, sig, twice, out_dir) if sig != signal.SIGKILL and phase != "startup" else []
    inconsistent = checkpoint_problems(out_dir, last) + metrics_problems(out_dir)
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    resumed_from = load_checkpoint(ckpt_path)["iter_num"] if os.path.exists(ckpt_path) else 0
    lost = 0 if last is None else max(0, last + 1 - resumed_from)
    more_problems, more_inconsistent, tracebacks = resume_problems(args, out_dir, ref)
    problems += more_problems
    inconsistent += more_inconsistent
    tracebacks += int(has_traceback(w.stderr))
    if lost > eval_interval:
        problems.append(f"{lost} iterations lost, more than eval_interval={eval_interval}")
    return {"phase": phase, "landed": landed, "survived": not problems and not inconsistent and not tracebacks,
            "lost": lost, "last_iter": last, "resumed_from": resumed_from, "inconsistent": inconsistent,
            "tracebacks": tracebacks, "problems": problems, "temps_left": temps}


def torn_line_trial(args, out_dir, stop_at, cut):
    """A run stopped by SIGTERM before iteration stop_at (here), `cut` bytes of its last
    metrics.jsonl record then torn off (what a power cut can leave), then resumed (here).
    Returns (first run, resumed run, the records before the cut, ckpt.pt's iteration after the stop)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    first = train_here(list(args) + [f"--fault_inject=sigterm@{stop_at}"])
    path = os.path.join(out_dir, "metrics.jsonl")
    with open(path) as f:
        records = [json.loads(ln) for ln in f]
    stopped_at = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["iter_num"]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - cut)
    return first, train_here(list(args) + ["--init_from=resume"]), records, stopped_at


def nonfinite_trial(data_dir, out_dir, spec, max_bad_steps=10, max_iters=40, eval_interval=10):
    """A run (here) with --fault_inject=spec. Returns a dict: rc, stderr, bad steps counted, the
    end reason, the iterations warned of and checkpointed, ckpt.pt's iteration, problems on disk."""
    shutil.rmtree(out_dir, ignore_errors=True)
    r = train_here(tiny_train_args(data_dir, out_dir, max_iters, eval_interval,
                                   extra=[f"--fault_inject={spec}", f"--max_bad_steps={max_bad_steps}"]))
    records = train_helpers.read_metrics(out_dir)
    end = [x for x in records if x["event"] == "end"]
    return {"rc": r["rc"], "stderr": r["stderr"], "stdout": r["stdout"],
            "bad_steps": end[-1]["stats"]["bad_steps"] if end else None,
            "reason": end[-1]["reason"] if end else None,
            "warned_iters": sorted({x["iter"] for x in records if x.get("id") == "nonfinite"}),
            "checkpoint_iters": [x["iter"] for x in records if x["event"] == "checkpoint"],
            "ckpt_iter": load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["iter_num"],
            "problems": checkpoint_problems(out_dir) + metrics_problems(out_dir),
            "tracebacks": int(has_traceback(r["stderr"]))}
