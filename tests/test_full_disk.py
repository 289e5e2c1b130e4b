"""A full disk during training, on real small filesystems: a tmpfs of a few hundred KB (root only)
or a file-size limit (RLIMIT_FSIZE) in a child process. A save that does not fit leaves the
previous checkpoint loadable and no temporary, costs one warning line, and training goes on; the
final save failing ends the run in one line; a resume works once there is room again."""
import os
import re
import subprocess
import sys

import pytest
import torch

import checkpoint
import facts
import fault_helpers as fh
from train_helpers import TINY, make_dataset, tiny_config

ARGS = ["--eval_iters=2", "--eval_interval=2", "--always_save_checkpoint=True", "--warmup_iters=0",
        "--lr_decay_iters=8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("data")), train_tokens=1200, val_tokens=600)


def checkpoint_size_estimate(data, out_dir):
    return checkpoint.checkpoint_bytes(tiny_config(data, out_dir), facts.padded_vocab_size(257))


def train(data, out_dir, *args, fsize=None):
    """train.py as a real process (a file-size limit applies to it alone): {rc, stdout, stderr}."""
    case = {"argv": ["train.py", *TINY, f"--data_dir={data}", f"--out_dir={out_dir}", *ARGS, *args],
            "fsize": fsize}
    r = fh.run_case_subprocess(case)
    assert not fh.has_traceback(r["stderr"] + r["stdout"]), r["stderr"][-3000:]
    return r


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("note: ")]


def temporaries(folder):
    return [name for name in os.listdir(folder) if ".tmp" in name]


def ckpt_iter(path):
    return torch.load(path, map_location="cpu", weights_only=True)["iter_num"]


def test_the_size_estimate_is_within_10_percent_of_a_real_checkpoint(data, tmp_path):
    out = tmp_path / "out"
    assert train(data, out, "--max_iters=2")["rc"] == 0
    actual = os.path.getsize(out / "ckpt.pt")
    assert 0.9 < checkpoint_size_estimate(data, out) / actual < 1.1


def test_a_file_size_limit_skips_saves_keeps_the_last_good_checkpoint_and_resumes(data, tmp_path):
    out = tmp_path / "out"
    assert train(data, out, "--max_iters=2")["rc"] == 0  # ckpt.pt at iter 2
    size = os.path.getsize(out / "ckpt.pt")
    # every checkpoint write now fails (EFBIG) past 100 kB; metrics.jsonl stays under it
    r = train(data, out, "--init_from=resume", "--max_iters=6", fsize=100_000)
    assert r["rc"] == 2
    # a serializer that cannot write, or the file-size limit itself, whichever torch meets first
    reason = r"\((File too large|no room to write it: a full disk or a file-size limit; torch: unexpected pos \d+ vs \d+)\)"
    warnings = [line for line in r["stdout"].splitlines() if line.startswith("warning: saving")]
    assert len(warnings) == 2, r["stdout"][-3000:]
    for it, warning in zip((4, 6), warnings):
        assert re.match(rf"warning: saving {re.escape(str(out))}/(ckpt|best)\.pt at iter {it} failed {reason}: it needs "
                        r"about [\d.]+ kB and [\d.,]+ [kMG]B is free; the last good checkpoint is iter 2; training "
                        r"goes on", warning), warning
    [line] = error_lines(r["stderr"])
    assert re.match(rf"error: saving {re.escape(str(out))}/(ckpt|best)\.pt at iter 6 failed {reason}: .*"
                    r"the last good checkpoint is iter 2; the run ended without saving iter 6", line), line
    needed = float(re.search(r"needs about ([\d.]+) kB", line).group(1)) * 1e3
    assert abs(needed - size) < 0.1 * size
    records = fh.train_helpers.read_metrics(out)
    assert [rec["iter"] for rec in records if rec["event"] == "train"][-4:] == [2, 3, 4, 5]  # training went on
    assert [rec["iter"] for rec in records if rec.get("id") == "checkpoint.save_failed"] == [4, 6]
    assert ckpt_iter(out / "ckpt.pt") == 2 and temporaries(out) == []
    # room again: the resume starts from the last good checkpoint
    r = train(data, out, "--init_from=resume", "--max_iters=4")
    assert r["rc"] == 0 and "resuming at iter 2" in r["stdout"], r["stderr"][-2000:]
    assert ckpt_iter(out / "ckpt.pt") == 4


def test_a_filesystem_that_holds_one_checkpoint_warns_skips_saves_and_resumes_when_freed(data, tmp_path,
                                                                                       small_filesystem):
    size = checkpoint_size_estimate(data, tmp_path)
    fs = small_filesystem(int(2.3 * size) // 4096 * 4096)  # best.pt + ckpt.pt, not a third file beside them
    out = fs / "out"
    r = train(data, out, "--max_iters=6")
    assert r["rc"] == 2
    assert re.search(rf"warning: {re.escape(str(out))} has [\d.]+ [kM]B free: room for the first checkpoint but not "
                     r"for ckpt.pt, best.pt and a save's temporary", r["stdout"]), r["stdout"][-2000:]
    failed = re.findall(r"^warning: saving \S+ at iter (\d+) failed \(.*\): it needs about ([\d.]+) kB and ([\d.]+) kB "
                        r"is free", r["stdout"], re.M)
    # iter 0's files hold no optimizer state yet (AdamW makes it at the first step): a third of the
    # size, so iter 2's full-size pair still fits in their place; from iter 4 no save does
    assert [int(it) for it, _, _ in failed] == [4, 6], r["stdout"][-3000:]
    for _, need, free in failed:  # the free space beside the two files: the temporary's is back
        assert 0.3 * float(need) < float(free) < float(need)
    [line] = error_lines(r["stderr"])
    assert re.match(r"error: saving \S+ at iter 6 failed .* the last good checkpoint is iter 2; the run ended", line)
    assert ckpt_iter(out / "ckpt.pt") == 2 and temporaries(out) == []
    # freed: the filesystem grown, the resume from iter 2 runs to the end
    subprocess.run(["mount", "-o", f"remount,size={10 * size}", str(fs)], check=True)
    r = train(data, out, "--init_from=resume", "--max_iters=4")
    assert r["rc"] == 0 and "resuming at iter 2" in r["stdout"], r["stderr"][-2000:]
    assert "warning" not in r["stdout"] and ckpt_iter(out / "ckpt.pt") == 4


def test_a_filesystem_too_small_for_one_checkpoint_is_refused_at_start_up(data, tmp_path, small_filesystem):
    size = checkpoint_size_estimate(data, tmp_path)
    fs = small_filesystem(int(1.5 * size) // 4096 * 4096)
    r = train(data, fs / "out", "--max_iters=6")
    assert r["rc"] == 2
    [line] = error_lines(r["stderr"])
    assert re.match(rf"error: {re.escape(str(fs / 'out'))} has [\d.]+ kB free but a checkpoint needs [\d.]+ kB there "
                    r"\(about [\d.]+ kB each: weights and optimizer state\); free some space, give another "
                    r"--out_dir, or set --always_save_checkpoint=False", line), line
    assert not (fs / "out" / "ckpt.pt").exists() and "iter 0:" not in r["stdout"]


METRICS_UNDER_A_LIMIT = """
import json, resource, signal, sys
sys.path.insert(0, {root!r})
from metrics_log import MetricsLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
log = MetricsLog({path!r}, master=True)
for i in range(30):
    log.write({{'event': 'train', 'iter': i, 'loss': 1.5}})
print(log.dropped)
"""


def test_metrics_writes_that_fail_are_dropped_counted_and_leave_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    p = subprocess.run([sys.executable, "-c", METRICS_UNDER_A_LIMIT.format(root=fh.ROOT, path=str(path))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(path.read_bytes()) <= 1000
    kept = [fh.json.loads(line) for line in lines[:-1]]  # every line whole
    assert [rec["iter"] for rec in kept] == list(range(len(kept))) and 0 < len(kept) < 30
    assert int(p.stdout) == 30 - len(kept)
