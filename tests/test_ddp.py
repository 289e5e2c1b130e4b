"""DDP under torchrun with gloo on CPU: 2 processes train exactly like 1 with the same global batch."""
import os
import sys

import pytest
import torch

from train_helpers import TINY, load_ckpt, make_dataset, read_metrics, run_train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


MODERN = ["--max_iters=3", "--optimizer=muon", "--muon_lr=2e-2", "--rope=True", "--norm=rmsnorm", "--qk_norm=True", "--mlp_act=relu2",
          "--tie_embeddings=False", "--zero_init=True", "--logit_softcap=30"]


@pytest.mark.parametrize("recipe", [[], MODERN], ids=["gpt2", "modern-muon"])
def test_two_rank_run_equals_one_rank_run(tmp_path, recipe):
    data = make_dataset(str(tmp_path / "data"), train_tokens=1200, val_tokens=600)
    args = TINY + [f"--data_dir={data}", "--dropout=0.0", "--gradient_accumulation_steps=4", "--max_iters=8",
                   "--eval_interval=4"] + recipe
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_train(args + [f"--out_dir={one}"])
    p = run_train(args + [f"--out_dir={two}"], launcher=TORCHRUN)
    assert p.stdout.count(f"step {3 if recipe else 8}: train loss") == 1  # only rank 0 prints and writes
    a, b = read_metrics(one), read_metrics(two)
    assert b[0]["system"]["world_size"] == 2
    # torch.optim.Muon orthogonalises in bfloat16: the all-reduce's float32 round-off (~1e-7) can flip
    # a bfloat16 rounding, so the two runs agree to ~1e-4 after 8 steps instead of ~1e-6
    tol = 1e-3 if recipe else 1e-5
    for event, key in (("train", "loss"), ("eval", "val_loss"), ("eval", "train_loss"), ("eval", "val_bpb")):
        la = [r[key] for r in a if r["event"] == event]
        lb = [r[key] for r in b if r["event"] == event]
        assert len(la) == len(lb) > 0
        assert max(abs(x - y) for x, y in zip(la, lb)) < tol, (event, key, la, lb)
    assert b[-1]["event"] == "end" and b[-1]["reason"] == "max_iters"
    ca, cb = load_ckpt(os.path.join(one, "ckpt.pt")), load_ckpt(os.path.join(two, "ckpt.pt"))
    assert len(cb["rng_states"]) == 2 and cb["loader"] == ca["loader"]
    for k in ca["model"]:
        assert torch.allclose(ca["model"][k], cb["model"][k], atol=tol), k


def test_accumulation_that_does_not_divide_over_ranks_is_an_error(tmp_path):
    data = make_dataset(str(tmp_path / "data"), train_tokens=1200, val_tokens=600)
    p = run_train(TINY + [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}",
                          "--gradient_accumulation_steps=3"], launcher=TORCHRUN, check=False)
    assert p.returncode != 0
    assert "error: gradient_accumulation_steps=3 does not divide over 2 ranks; use a multiple of 2" in p.stderr
    assert "Traceback" not in p.stderr.split("error: gradient_accumulation_steps")[0]


def test_two_rank_run_resumes_exactly(tmp_path):
    # dropout on: each rank's RNG state must come back from the checkpoint
    data = make_dataset(str(tmp_path / "data"), train_tokens=1200, val_tokens=600)
    args = TINY + [f"--data_dir={data}", "--max_iters=8"]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    run_train(args + [f"--out_dir={full}"], launcher=TORCHRUN)
    p = run_train(args + [f"--out_dir={resumed}", "--fault_inject=sigterm@3"], launcher=TORCHRUN)
    assert "stopped by SIGTERM at iter 4" in p.stdout
    run_train(args + [f"--out_dir={resumed}", "--init_from=resume"], launcher=TORCHRUN)
    a, b = load_ckpt(os.path.join(full, "ckpt.pt")), load_ckpt(os.path.join(resumed, "ckpt.pt"))
    assert a["iter_num"] == b["iter_num"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
