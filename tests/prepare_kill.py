"""
prepare.py under kill -9, for the fault suite (tests/test_faults.py, bench/faults.py): generated
parquet input, a preparation killed at a chosen moment and rerun, and the checks that a kill
never leaves meta.json beside unfinished data, nor different bytes after the rerun.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from fault_helpers import ENV, PY, ROOT, first_error_line, has_traceback, run, temp_files


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def write_parquet(path, texts, column="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({column: texts}), path)
    return path


def generated_texts(n_docs, seed=0, words_per_doc=300):
    """Quick varied English-ish documents (numpy only), for prepare.py runs."""
    import numpy as np
    rng = np.random.default_rng(seed)
    vocab = np.array("the of and to a in is it that for on with as was by this be are from or "
                     "an at not which have but they one all has more their can been its would "
                     "model data train loss token layer value file python error".split())
    lengths = rng.integers(words_per_doc // 4, words_per_doc * 2, n_docs)
    words = vocab[rng.integers(0, len(vocab), int(lengths.sum()))]
    return [" ".join(doc) + "." for doc in np.split(words, np.cumsum(lengths)[:-1])]


def prepare_args(parquet, out_dir, workers=2, force=False):
    return ["data/fineweb_single/prepare.py", "--input", parquet, "--tokenizer", "byte",
            "--out-dir", out_dir, "--workers", str(workers), "--val-fraction", "0.01"] + (
        ["--force"] if force else [])


def dataset_files_equal(a, b):
    """Differences between two prepared folders: .bin bytes, and meta.json but for when and how
    fast it was prepared."""
    import filecmp
    diff = [n for n in ("train.bin", "val.bin")
            if not filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)]
    metas = []
    for folder in (a, b):
        with open(os.path.join(folder, "meta.json")) as f:
            metas.append({k: v for k, v in json.load(f).items() if k not in ("created", "seconds")})
    return diff + (["meta.json"] if metas[0] != metas[1] else [])


def dataset_problems(out_dir, ref_dir):
    """A meta.json beside .bin files it does not describe (or that differ from the reference)."""
    if not os.path.exists(os.path.join(out_dir, "meta.json")):
        return []
    from errors import UserError
    from facts import read_dataset_meta
    try:
        read_dataset_meta(out_dir)
    except UserError as e:
        return [f"meta.json beside unfinished data: {e}"]
    diff = dataset_files_equal(out_dir, ref_dir)
    return [f"meta.json present but {', '.join(diff)} differ from an uninterrupted preparation"] if diff else []


def modified_since(path, t):
    """Whether path exists and was modified at or after t (a rebuild deletes what it replaces)."""
    try:
        return os.path.getmtime(path) >= t
    except FileNotFoundError:
        return False


def _landed(present, force, finished_first):
    if finished_first:
        return "after the end"
    if "meta.json" in present and not force or "train.bin.tmp" not in present and not (
            {"train.bin", "val.bin"} & present and "meta.json" not in present):
        return "startup (reading, hashing)"
    return "tokenizing and writing" if "train.bin.tmp" in present else "finishing (renames, meta.json)"


def prepare_kill_trial(parquet, out_dir, ref_dir, rng, duration, aim="random", workers=2):
    """prepare.py killed -9 at a random moment within `duration` seconds (aim='random'), or the
    moment its train.bin or val.bin appears (aim='finish'), over an empty folder or (force, half of
    the trials) a complete older dataset being rebuilt; then rerun to the end and compared
    byte for byte with the reference."""
    shutil.rmtree(out_dir, ignore_errors=True)
    force = bool(rng.integers(0, 2))
    if force:
        shutil.copytree(ref_dir, out_dir)
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen([PY] + prepare_args(parquet, out_dir, workers, force), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=err_file)
    t0 = time.time()
    if aim == "finish":
        target = os.path.join(out_dir, "val.bin" if rng.integers(0, 2) else "train.bin")
        while force and proc.poll() is None and os.path.exists(os.path.join(out_dir, "meta.json")):
            pass  # over an old dataset: the old meta.json goes first (the rebuild has begun)
        start = time.time()
        while proc.poll() is None and not modified_since(target, start - 1):
            pass
    else:
        time.sleep(float(rng.uniform(0.05, duration)))
    workers_pids, finished_first = children_of(proc.pid), proc.poll() is not None
    present = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    if not finished_first:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at = time.time() - t0
    err_file.seek(0)
    tracebacks = int(has_traceback(err_file.read().decode("utf-8", "replace")))
    err_file.close()
    deadline = time.time() + 3  # the workers may take a moment to notice
    while time.time() < deadline and any(alive(p) for p in workers_pids):
        time.sleep(0.05)
    orphans = [p for p in workers_pids if alive(p)]
    for p in orphans:  # the tokenizing workers this trial started
        os.kill(p, signal.SIGKILL)
    inconsistent, problems = dataset_problems(out_dir, ref_dir), []
    r = run([PY] + prepare_args(parquet, out_dir, workers, force))
    tracebacks += int(has_traceback(r.stderr))
    if r.returncode != 0:
        problems.append(f"the rerun failed ({r.returncode}): {first_error_line(r.stderr)}")
    else:
        diff = dataset_files_equal(out_dir, ref_dir)
        if diff:
            problems.append(f"the rerun's {', '.join(diff)} differ from an uninterrupted preparation")
        if temp_files(out_dir):
            inconsistent.append(f"temporary files left after the rerun: {', '.join(temp_files(out_dir))}")
    return {"at_s": at, "force": force, "landed": _landed(present, force, finished_first), "orphans": len(orphans),
            "survived": not problems and not inconsistent and not tracebacks,
            "inconsistent": inconsistent, "tracebacks": tracebacks, "problems": problems}
