"""sample.py on a tiny trained checkpoint."""
import os
import subprocess
import sys

import numpy as np
import pytest

from train_helpers import ROOT, TINY, make_dataset, run_train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("sample")
    # documents the model can learn quickly: one sentence in bytes, each after end-of-text (256)
    doc = [256] + list(b"the cat sat on the mat.")
    text = np.array(doc * 200, dtype=np.int64)
    data = make_dataset(str(base / "data"), train_ids=text, val_ids=text[:1000])
    out = str(base / "out")
    run_train(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--max_iters=100", "--eval_interval=50",
                      "--learning_rate=1e-2", "--min_lr=1e-3", "--lr_decay_iters=100", "--dropout=0.0"])
    import shutil
    shutil.rmtree(data)  # sampling needs only the run folder: the tokenizer is in the checkpoint
    return out


def sample(*args):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))




def test_sample_decodes_with_the_checkpoint_tokenizer(run_dir, tmp_path):
    p = sample(f"--out_dir={run_dir}", "--start=the cat", "--num_samples=2", "--max_new_tokens=24",
               "--temperature=0", "--device=cpu")
    assert p.returncode == 0, p.stderr
    samples = p.stdout.split("---------------\n")[:2]
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: the same twice
    assert samples[0].startswith("the cat")
    assert samples[0] == "the cat sat on the mat.<|endoftext|>the cat\n"  # it learned the document
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the cat")
    p2 = sample(f"--out_dir={run_dir}", f"--start=FILE:{prompt}", "--num_samples=2", "--max_new_tokens=40",
                "--temperature=0", "--device=cpu", "--checkpoint=latest")
    assert p2.returncode == 0 and p2.stdout.startswith("the cat")


def test_sample_seed_makes_it_repeatable(run_dir):
    args = [f"--out_dir={run_dir}", "--num_samples=1", "--max_new_tokens=30", "--temperature=1.5",
            "--top_k=50", "--device=cpu"]
    a, b, c = sample(*args, "--seed=1"), sample(*args, "--seed=1"), sample(*args, "--seed=2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout != c.stdout


def test_sample_errors_are_one_line(tmp_path):
    p = sample(f"--out_dir={tmp_path}")
    assert p.returncode == 2 and p.stderr.startswith(f"error: checkpoint {tmp_path}/best.pt not found")
    p = sample("--start=FILE:/no/such/prompt.txt", f"--out_dir={tmp_path}")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
