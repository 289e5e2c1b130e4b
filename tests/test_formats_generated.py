"""The formats of other communities on small generated text: lines as each trainer prints
them (prefixes, CR LF, notes typed after a line by hand), parsed to exact numbers; which loss
each format logs and how many micro-batches an iteration has, when the log says."""
import pytest

import numpy as np

from diagnose.parse import load_run
from diagnose.parse_jsonl import run_from_records


def parse(tmp_path, text, name="log.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode())
    return load_run(str(p))


def test_build_nanogpt_with_hellaswag_lines(tmp_path):
    r = parse(tmp_path, "0 val 10.9514\n0 hella 0.2490\n0 train 10.954986\n1 train 10.902718\n"
                        "2 train 10.803947\n2 val 10.5\n2 hella 0.2501\n")
    assert r.format == "build-nanogpt"
    assert list(r.train["iter"]) == [0, 1, 2] and list(r.train["loss"]) == [10.954986, 10.902718, 10.803947]
    assert list(r.eval["iter"]) == [0, 2] and list(r.eval["val_loss"]) == [10.9514, 10.5]  # hella is no loss
    assert r.train_loss_kind == "iteration_mean"


def test_hand_annotated_lines_are_kept(tmp_path):
    r = parse(tmp_path, "{'loss': 1.52, 'grad_norm': 0.9, 'learning_rate': 2e-05, 'epoch': 0.1}\n"
                        "{'loss': 1.51, 'grad_norm': 11140.0} <-- spike\n"
                        "{'loss': 1.5, 'grad_norm': 1.1, 'learning_rate': 2e-05, 'epoch': 0.3}   # back to normal\n")
    assert list(r.train["loss"]) == [1.52, 1.51, 1.5]
    assert list(r.train["grad_norm"]) == [0.9, 11140.0, 1.1]
    assert r.train["lr"][0] == 2e-05 and np.isnan(r.train["lr"][1]) and r.train["epoch"][2] == 0.3


def test_annotated_nanogpt_and_torchtitan_lines(tmp_path):
    r = parse(tmp_path, "iter 10: loss 3.30, time 50.00ms, mfu 30.00%\n"
                        "iter 20: loss 7.31<-- exploded here\n"
                        "iter 30: loss 3.1, time 50.00ms, mfu 30.00%  # fine again\n")
    assert list(r.train["loss"]) == [3.30, 7.31, 3.1]
    r = parse(tmp_path, "[rank0]:[titan] 2025-05-28 21:13:37,816 - root - INFO - step:  1  loss: 10.8595  "
                        "grad_norm:  3.2105  memory:  8.44GiB(13.20%)  tps: 6,697  mfu: 0.47%\n"
                        "  [2025-09-11 14:09:46][I][components/metrics:437:log] step:  2  loss: 14.4458  "
                        "grad_norm: 41.7880  memory:  8.44GiB(13.20%)  <- look\n", name="titan.txt")
    assert r.format == "torchtitan"
    assert list(r.train["iter"]) == [1, 2] and list(r.train["loss"]) == [10.8595, 14.4458]
    assert list(r.train["grad_norm"]) == [3.2105, 41.788]


def test_nanochat_crlf_and_accumulation(tmp_path):
    r = parse(tmp_path, "Total batch size 524,288 => gradient accumulation steps: 4\r\n"
                        "Step 00000 | Validation bpb: 3.2987\r\n"
                        "step 00000/00100 (0.00%) | loss: 11.090355 | lrm: 1.00 | dt: 18285.05ms | "
                        "tok/sec: 14,336 | mfu: 2.53 | total time: 0.00m\r\n"
                        "step 00001/00100 (1.00%) | loss: 10.807247 | lrm: 0.50 | dt: 874.40ms | "
                        "tok/sec: 299,799 | mfu: 52.92 | total time: 0.00m\r\n")
    assert r.format == "nanochat"
    assert list(r.train["loss"]) == [11.090355, 10.807247] and list(r.train["dt_ms"]) == [18285.05, 874.40]
    assert np.isnan(r.train["lr"]).all()  # lrm is a multiplier, not the learning rate
    assert list(r.eval["val_bpb"]) == [3.2987] and np.isnan(r.eval["val_loss"]).all()
    assert (r.train_loss_kind, r.grad_accum, r.config["max_iters"]) == ("ema", 4, 100)


def test_lightning_csv_after_a_comment(tmp_path):
    csv = ("# pasted from lightning_logs/version_0/metrics.csv\n"
           "epoch,step,train_loss_step,train_loss_epoch,val_loss\n"
           "0,49,7.5,,\n0,99,7.25,,\n0,99,,,6.5\n0,99,,7.4,\n1,149,6.0,,\n")
    r = parse(tmp_path, csv, name="metrics.csv")
    assert r.format == "lightning-csv"
    assert list(r.train["iter"]) == [49, 99, 149] and list(r.train["loss"]) == [7.5, 7.25, 6.0]
    assert list(r.train["epoch"]) == [0, 0, 1]
    assert list(r.eval["iter"]) == [99] and list(r.eval["val_loss"]) == [6.5]
    assert r.train_loss_kind == "iteration_mean"
    assert any("1 epoch-summary row(s)" in n for n in r.notes)


def test_wandb_csv_loss_kind_unknown_unless_ours(tmp_path):
    r = parse(tmp_path, "_step,train/loss,lr\n0,5.0,0.001\n1,4.9,0.001\n", name="wandb.csv")
    assert r.format == "wandb-csv" and r.train_loss_kind == "unknown"


def test_nanogpt_config_echo_gives_grad_accum(tmp_path):
    r = parse(tmp_path, "Overriding config with config/train_gpt2.py:\ngradient_accumulation_steps = 8\n"
                        "batch_size = 12\nblock_size = 1024\ntokens per iteration will be: 98,304\n"
                        "iter 0: loss 10.9, time 100.00ms, mfu -100.00%\niter 1: loss 10.5, time 100.00ms, mfu 30.00%\n")
    assert r.train_loss_kind == "last_microbatch" and r.grad_accum == 8


def test_nanogpt_without_echo_takes_accum_from_config_file(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text("gradient_accumulation_steps = 32\nbatch_size = 4\nblock_size = 256\n")
    p = tmp_path / "log.txt"
    p.write_text("iter 0: loss 10.9\niter 1: loss 10.5\n")
    r = load_run(str(p), config=str(cfg))
    assert r.grad_accum == 32 and r.train_loss_kind == "last_microbatch"


def test_llmc_stdout_accumulation_echo(tmp_path):
    r = parse(tmp_path, "=> setting grad_accum_steps=16\nval loss 11.0\n"
                        "step    1/100 | loss 11.0 (+nanz)| norm 15.0 (+nanz)| lr 1.00e-06 | 100.00 ms | 30.0% bf16 MFU | 1000 tok/s\n"
                        "step    2/100 | loss 10.5 (+nanz)| norm 12.0 (+nanz)| lr 2.00e-06 | 100.00 ms | 30.0% bf16 MFU | 1000 tok/s\n"
                        "val loss 10.25\n")
    assert list(r.train["iter"]) == [0, 1] and list(r.eval["iter"]) == [0, 2]
    assert list(r.eval["val_loss"]) == [11.0, 10.25]
    assert r.grad_accum == 16 and r.train_loss_kind == "iteration_mean"


def test_metrics_jsonl_is_an_iteration_mean():
    recs = [{"event": "run", "time": 0, "config": {"gradient_accumulation_steps": 4}},
            {"event": "train", "time": 1, "iter": 0, "loss": 5.0}]
    r = run_from_records(recs, "live")
    assert r.train_loss_kind == "iteration_mean" and r.grad_accum == 4


def test_megatron_excerpt_fields(tmp_path):
    r = parse(tmp_path, " iteration      400/    3000 | elapsed time per iteration (ms): 12879.0 | learning rate "
                        "6.300E-06 | lm loss 6.758929E+00 | grad norm 2.5 | loss scale 64.0 |\n"
                        " iteration      500/    3000 | elapsed time per iteration (ms): 11092.2 | learning rate: "
                        "7.917E-06 | lm loss: 6.286667E+00 | grad norm: 3.5 | loss scale: 8.0 |\n")
    t = r.train
    assert list(t["loss"]) == [6.758929, 6.286667] and list(t["grad_norm"]) == [2.5, 3.5]
    assert list(t["grad_scale"]) == [64.0, 8.0] and list(t["lr"]) == [6.3e-06, 7.917e-06]
    assert list(t["dt_ms"]) == [12879.0, 11092.2]


def test_unknown_loss_kind_is_rejected():
    from diagnose.run import Run
    with pytest.raises(ValueError, match="train_loss_kind"):
        Run(source="x", format="x", train_loss_kind="mean")


def test_our_stdout_logs_the_iteration_mean_and_nanogpts_the_last_micro_batch(tmp_path):
    """Both print `iter N: loss X`; only this repository's train.py averages over the micro-batches,
    and its start-up line says which program wrote the log (issue 17, class 5)."""
    lines = "".join(f"iter {i}: loss {4 - i / 100:.4f}, time 100.00ms, mfu 1.00%\n" for i in range(20))
    ours = ("training from scratch: 40.95M parameters (21.24M non-embedding), 524,288 tokens per iteration, "
            "1 rank(s), cpu, float32, compile False, fused AdamW False\n" + lines)
    nanogpt = "gradient_accumulation_steps = 32\ntokens per iteration will be: 524,288\n" + lines
    assert parse(tmp_path, ours, "ours.txt").train_loss_kind == "iteration_mean"
    theirs = parse(tmp_path, nanogpt, "nanogpt.txt")
    assert (theirs.train_loss_kind, theirs.grad_accum) == ("last_microbatch", 32)


def test_our_step_line_carries_val_bpb_and_nanogpts_has_none(tmp_path):
    text = ("step 0: train loss 5.6000, val loss 5.6200, val bpb 8.1081\n"
            "step 100: train loss 2.3000, val loss 2.3500\n")
    run = parse(tmp_path, text)
    assert list(run.eval["val_loss"]) == [5.62, 2.35]
    bpb = list(run.eval["val_bpb"])
    assert bpb[0] == 8.1081 and np.isnan(bpb[1])
