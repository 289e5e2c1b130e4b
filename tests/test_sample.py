"""sample.py on a tiny trained checkpoint: in this process (sample.main), and its one-line
errors as a real command line."""
import os
import subprocess
import sys

import numpy as np
import pytest

from errors import UserError
from train_helpers import ROOT, TINY, make_dataset, train_in_process


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("sample")
    # documents the model can learn quickly: one sentence in bytes, each after end-of-text (256)
    doc = [256] + list(b"the cat sat on the mat.")
    text = np.array(doc * 200, dtype=np.int64)
    data = make_dataset(str(base / "data"), train_ids=text, val_ids=text[:1000])
    out = str(base / "out")
    train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--max_iters=100", "--eval_interval=50",
                             "--learning_rate=1e-2", "--min_lr=1e-3", "--lr_decay_iters=100", "--dropout=0.0"])
    import shutil
    shutil.rmtree(data)  # sampling needs only the run folder: the tokenizer is in the checkpoint
    return out


def sample(capsys, *args):
    """(stdout, stderr) of sample.main(args) in this process."""
    import sample as sample_py
    capsys.readouterr()
    sample_py.main(list(args))
    return capsys.readouterr()


def test_sample_decodes_with_the_checkpoint_tokenizer(run_dir, tmp_path, capsys):
    out, _ = sample(capsys, f"--out_dir={run_dir}", "--start=the cat", "--num_samples=2", "--max_new_tokens=24",
                    "--temperature=0", "--device=cpu")
    samples = out.split("---------------\n")[:2]
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: the same twice
    assert samples[0] == "the cat sat on the mat.<|endoftext|>the cat\n"  # it learned the document
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the cat")
    out, _ = sample(capsys, f"--out_dir={run_dir}", f"--start=FILE:{prompt}", "--num_samples=2",
                    "--max_new_tokens=40", "--temperature=0", "--device=cpu", "--checkpoint=latest")
    assert out.startswith("the cat")


def test_sample_seed_makes_it_repeatable(run_dir, capsys):
    args = [f"--out_dir={run_dir}", "--num_samples=1", "--max_new_tokens=30", "--temperature=1.5",
            "--top_k=50", "--device=cpu"]
    a, b, c = (sample(capsys, *args, f"--seed={s}")[0] for s in (1, 1, 2))
    assert a == b != c


def test_missing_best_pt_is_noted_once_and_ckpt_pt_used(run_dir, tmp_path, capsys):
    import shutil
    only_latest = tmp_path / "run"
    only_latest.mkdir()
    shutil.copy(os.path.join(run_dir, "ckpt.pt"), only_latest / "ckpt.pt")
    out, err = sample(capsys, f"--out_dir={only_latest}", "--num_samples=1", "--max_new_tokens=4", "--device=cpu")
    assert err == f"note: {only_latest}/best.pt not found, sampling from {only_latest}/ckpt.pt\n"
    assert out.endswith("---------------\n")


@pytest.mark.parametrize("arg, message", [
    ("--top_k=-1", "top_k=-1 is negative; use 0 for all tokens"),
    ("--temperature=-0.5", "temperature=-0.5 is negative or not finite; use 0 (greedy) or more"),
    ("--temperature=1e999", "temperature=inf is negative or not finite"),
    ("--num_samples=0", "num_samples=0 must be at least 1; e.g. --num_samples=1"),
    ("--max_new_tokens=0", "max_new_tokens=0 must be at least 1; e.g. --max_new_tokens=200"),
    ("--checkpoint=last", "checkpoint='last' is not 'best' or 'latest'; e.g. --checkpoint=best"),
    ("--dtype=fp8", "unknown dtype 'fp8'; use one of auto, float32, bfloat16, float16"),
    ("--device=tpu", "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
    ("--device=mps", "device 'mps' but MPS is not available; use --device=cpu"),
])
def test_every_sampling_key_is_validated(run_dir, capsys, arg, message):
    import runtime
    if arg == "--device=mps" and runtime.mps_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(UserError) as e:
        sample(capsys, f"--out_dir={run_dir}", "--device=cpu", arg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_missing_gpt2_ranks_file_names_sample_pys_own_flag(run_dir, tmp_path, capsys):
    import torch
    ckpt = torch.load(os.path.join(run_dir, "ckpt.pt"), weights_only=True)
    ckpt["tokenizer"] = {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256}
    (tmp_path / "gpt2run").mkdir()
    torch.save(ckpt, tmp_path / "gpt2run" / "best.pt")
    with pytest.raises(UserError) as e:
        sample(capsys, f"--out_dir={tmp_path / 'gpt2run'}", "--device=cpu", f"--bpe_file={tmp_path / 'no.tiktoken'}")
    text = str(e.value)
    assert text.startswith("cannot read the BPE file") and text.endswith("give sample.py that file with --bpe_file=PATH")
    assert "--bpe-file" not in text and "--tokenizer" not in text  # prepare.py's spellings


def test_sample_errors_are_one_line(tmp_path):
    def sample_cli(*args):
        return subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    p = sample_cli(f"--out_dir={tmp_path}")
    assert p.returncode == 2 and p.stderr == f"error: checkpoint {tmp_path}/best.pt not found; give the run " \
        f"folder with --out_dir (train.py writes best.pt and ckpt.pt there)\n"
    p = sample_cli("--start=FILE:/no/such/prompt.txt", f"--out_dir={tmp_path}", "--top_k=-3")
    assert p.returncode == 2 and p.stderr.startswith("error: top_k=-3 is negative") and len(p.stderr.splitlines()) == 1


def test_sample_reads_a_checkpoint_of_the_modern_recipe(tmp_path, capsys):
    doc = [256] + list(b"the cat sat on the mat.")
    text = np.array(doc * 200, dtype=np.int64)
    data = make_dataset(str(tmp_path / "data"), train_ids=text, val_ids=text[:1000])
    out = str(tmp_path / "out")
    train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--max_iters=100", "--eval_interval=50",
                             "--lr_decay_iters=100", "--dropout=0.0", "--optimizer=muon", "--muon_lr=2e-2",
                             "--rope=True", "--norm=rmsnorm", "--qk_norm=True", "--mlp_act=relu2",
                             "--tie_embeddings=False", "--zero_init=True", "--logit_softcap=30"])
    text_out, _ = sample(capsys, f"--out_dir={out}", "--start=the cat", "--num_samples=1", "--max_new_tokens=24",
                         "--temperature=0", "--device=cpu")
    assert text_out == "the cat sat on the mat.<|endoftext|>the cat\n---------------\n"


def test_an_unknown_init_from_is_one_line(capsys):
    with pytest.raises(UserError, match=r"^init_from='gpt3' is not supported; use 'resume' \(a run of --out_dir\), "
                                        r"gpt2, gpt2-medium, gpt2-large, gpt2-xl or hf:PATH$"):
        sample(capsys, "--init_from=gpt3")
