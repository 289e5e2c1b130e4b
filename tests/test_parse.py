"""Parsing: the real logs in ../shared/logs with their exact numbers, then generated
fixtures for every format and every kind of damage a log can have."""
import json
import math

import numpy as np
import pytest

from diagnose.parse import load_run
from diagnose.parse_jsonl import run_from_records
from errors import UserError
from shared_logs import at, needs_logs, real

# -----------------------------------------------------------------------------
# the real logs


@needs_logs
def test_llmc_main_log():
    r = real("KellerJordan__modded-nanogpt__llmc-gpt2-124M-main-log.txt")
    assert r.format == "llmc"
    t, e = r.train, r.eval
    assert len(t["iter"]) == 19560 and t["iter"][0] == 0 and t["iter"][-1] == 19559
    assert t["loss"][0] == 11.0091 and t["loss"][-1] == 3.2217
    assert np.isfinite(t["lr"]).all() and np.isfinite(t["grad_norm"]).all()  # lr and norm on every step
    assert t["lr"][0] == 0.000001 and t["grad_norm"][0] == 15.37
    assert at(t, 7435, "loss") == 3.7819 and at(t, 7435, "grad_norm") == 1.44
    assert len(e["iter"]) == 80
    assert at(e, 0, "val_loss") == 11.0092 and at(e, 1250, "val_loss") == 4.1296
    assert at(e, 10000, "val_loss") == 3.3924 and at(e, 19560, "val_loss") == 3.2722
    assert np.isnan(e["train_loss"]).all()
    assert r.segments == [0]


@needs_logs
def test_modded_nanogpt_record():
    r = real("KellerJordan__modded-nanogpt__muon-record-2024-10-10.txt")
    assert r.format == "modded-nanogpt"
    t, e = r.train, r.eval
    assert (t["iter"][0], t["iter"][-1], len(t["iter"])) == (1, 6200, 6200)
    assert t["loss"][0] == 10.9184 and t["loss"][-1] == 3.2533
    assert len(e["iter"]) == 51 and e["val_loss"][0] == 10.9264
    assert at(e, 1000, "val_loss") == 3.7447 and at(e, 6200, "val_loss") == 3.2785
    assert r.config["max_iters"] == 6200


@needs_logs
def test_camelid_pipe_lines_and_nanogpt_evals():
    r = real("tnguyen21__camelid__925M-8ksteps.txt")
    assert r.format.startswith("generic: ") and "N | loss X | lr Y | Tms | mfu Z%" in r.format
    t, e = r.train, r.eval
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (875, 0, 8740)
    assert t["loss"][0] == 11.2204 and t["lr"][0] == 0.0 and t["dt_ms"][0] == 24729.12
    assert t["mfu"][0] == pytest.approx(0.0005)           # 0.05% as a fraction
    assert at(t, 10, "lr") == 3e-06 and at(t, 10, "mfu") == pytest.approx(0.0343)
    assert t["loss"][-1] == 3.6078 and np.isnan(t["mfu"][-1])  # the cut-off last line keeps its loss
    assert len(e["iter"]) == 88
    assert (e["train_loss"][0], e["val_loss"][0]) == (11.2257, 11.2324)
    assert (e["iter"][-1], e["train_loss"][-1], e["val_loss"][-1]) == (8700, 3.7453, 3.7300)
    assert r.tokens_per_iter() == 32768
    assert r.system["device_name"] == "NVIDIA A100-SXM4-40GB"


@needs_logs
def test_tiny_shakespeare_eval_only():
    r = real("saurabhmangal__ERA_late_submissions__s21-tiny-gpt-shakespeare-char.txt")
    assert r.format == "nanogpt"
    e = r.eval
    assert len(r.train["iter"]) == 0 and len(e["iter"]) == 51
    assert (e["iter"][0], e["train_loss"][0], e["val_loss"][0]) == (0, 4.3948, 4.3847)
    assert (e["iter"][-1], e["train_loss"][-1], e["val_loss"][-1]) == (4999, 1.5477, 1.7119)
    assert at(e, 2500, "val_loss") == 1.8075 and at(e, 4900, "val_loss") == 1.7116


@needs_logs
def test_rasbt_epoch_step_lines():
    r = real("rasbt__LLMs-from-scratch__ch05-gpt124M-verdict-10epochs.txt")
    assert r.format == "generic: Ep E (Step N): Train loss X, Val loss Y"
    e = r.eval
    assert list(e["iter"]) == list(range(0, 90, 5))
    assert (e["train_loss"][0], e["val_loss"][0]) == (9.817, 9.924)
    assert (e["train_loss"][-1], e["val_loss"][-1]) == (0.569, 6.373)
    assert e["val_loss"].min() == 6.123 and at(e, 50, "val_loss") == 6.123
    assert at(e, 85, "epoch") == 9  # 'Ep 10' = 9 epochs completed
    assert len(r.train["iter"]) == 0  # the sample text between the lines is skipped
    assert any("other line(s) skipped" in n for n in r.notes)


@needs_logs
def test_issue211_val_only_series():
    r = real("karpathy__nanoGPT__issue211-nlayer12-shakespeare-char-val.txt")
    assert r.format == "generic: N iterations -- validation loss X"
    assert len(r.train["iter"]) == 0
    assert list(r.eval["iter"]) == list(range(250, 2001, 250))
    assert list(r.eval["val_loss"]) == [2.11, 1.77, 1.59, 1.52, 1.49, 1.51, 1.52, 1.56]
    assert np.isnan(r.eval["train_loss"]).all()


@needs_logs
def test_aakash_step_loss_norm_lr():
    r = real("aakashvardhan__s21-gpt2__gpt2-124M-shakespeare-5000steps.txt")
    assert r.format == "generic: step N, loss: X, norm: G, lr: L"
    t = r.train
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (4999, 1, 4999)
    assert (t["loss"][0], t["grad_norm"][0], t["lr"][0]) == (9.502789, 10.649774551391602, 1.2e-04)
    assert (t["dt_ms"][0], t["tokens_per_sec"][0]) == (449.89, 36418.0)
    assert t["loss"][-1] == 0.012582
    assert len(r.eval["iter"]) == 0


@needs_logs
def test_pythia_constant_loss():
    r = real("Lightning-AI__litgpt__issue689-pythia70m-loss-constant.txt")
    t = r.train
    assert (len(t["iter"]), t["iter"][0], t["iter"][-1]) == (23, 76, 98)
    assert (t["loss"] == 10.8259).all()
    assert r.vocab_size() == 50304 and r.model["params"] == 70426624
    assert "batch_size" not in r.config  # litgpt counts batches differently: not taken


@needs_logs
def test_issue215_quoted_timestamped_nan():
    r = real("karpathy__nanoGPT__issue215-gpt2-fp16-nan.txt")
    assert r.format == "nanogpt"
    t = r.train
    assert list(t["iter"]) == list(range(2920, 3071, 10))
    assert t["loss"][0] == 3.9883 and at(t, 3000, "loss") == 4.2490
    assert np.isfinite(t["loss"][t["iter"] <= 3000]).all()
    assert np.isnan(t["loss"][t["iter"] >= 3010]).all()
    assert t["mfu"][0] == pytest.approx(0.1534)
    assert (r.eval["iter"][0], r.eval["train_loss"][0], r.eval["val_loss"][0]) == (3000, 4.0390, 4.0427)
    assert r.config["dtype"] == "float16"


# -----------------------------------------------------------------------------
# metrics.jsonl


def records(n=5, start=0, step=10, run=True, **cfg):
    out = []
    if run:
        out.append({"event": "run", "time": 0, "config": {"batch_size": 4, "block_size": 8,
                                                           "gradient_accumulation_steps": 2, **cfg},
                    "model": {"params": 1000}, "data": {"train_tokens": 5000},
                    "system": {"device_name": "cpu"}, "resumed_from_iter": start or None})
    for i in range(n):
        it = start + i * step
        out.append({"event": "train", "time": 1, "iter": it, "tokens": it * 64, "epoch": it * 64 / 5000,
                    "lr": 1e-3, "loss": 5.0 - 0.01 * it, "grad_norm": 1.0, "grad_scale": None,
                    "dt_ms": 10.0, "tokens_per_sec": 6400.0, "mfu": 0.3})
        if it % 20 == 0:
            out.append({"event": "eval", "time": 1, "iter": it, "tokens": it * 64, "epoch": 0.0, "lr": 1e-3,
                        "train_loss": 5.0 - 0.01 * it, "val_loss": 5.1 - 0.01 * it,
                        "train_loss_se": 0.01, "val_loss_se": 0.02})
    return out


def write_jsonl(path, recs, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    return str(path)


def test_run_from_records_fills_every_column():
    r = run_from_records(records(), "live")
    assert r.format == "metrics.jsonl" and r.source == "live"
    assert list(r.train["iter"]) == [0, 10, 20, 30, 40]
    assert r.train["mfu"][0] == 0.3 and np.isnan(r.train["grad_scale"]).all()
    assert list(r.eval["iter"]) == [0, 20, 40] and r.eval["val_loss_se"][0] == 0.02
    assert r.tokens_per_iter() == 64 and r.train_tokens() == 5000 and r.model["params"] == 1000


def test_jsonl_resume_segments_keep_last_occurrence(tmp_path):
    first = records(n=5)                                   # 0..40
    second = records(n=4, start=20, lr_schedule="wsd")      # resumed at 20: redoes 20..50
    for rec in second:
        if rec["event"] == "train":
            rec["loss"] = 1.0
    p = write_jsonl(tmp_path / "metrics.jsonl", first + second)
    r = load_run(str(tmp_path))  # the run folder
    assert r.segments == [0, 20]
    assert list(r.train["iter"]) == [0, 10, 20, 30, 40, 50]
    assert list(r.train["loss"]) == [5.0, 4.9, 1.0, 1.0, 1.0, 1.0]  # the resumed values win
    assert r.config["lr_schedule"] == "wsd"
    assert any("repeated iteration" in n and "last occurrence" in n for n in r.notes)
    assert any(ev.get("resumed_from_iter") == 20 for ev in r.events)
    assert load_run(p).segments == [0, 20]


def test_jsonl_torn_last_line_nan_and_garbage(tmp_path):
    recs = records(n=3)
    text = "".join(json.dumps(r) + "\n" for r in recs)
    text = text.replace('"loss": 4.9', '"loss": NaN').replace('"loss": 4.8', '"loss": Infinity')
    text += '{"event": "train", "iter": 30, "lo'  # cut off mid-record
    p = tmp_path / "metrics.jsonl"
    p.write_text(text)
    r = load_run(str(p))
    assert list(r.train["iter"]) == [0, 10, 20]
    assert r.train["loss"][0] == 5.0 and np.isnan(r.train["loss"][1]) and r.train["loss"][2] == math.inf
    assert any("cut off" in n for n in r.notes)
    # a garbage line in the middle: the slow path skips it and says so
    p.write_text(text.replace('{"event": "eval"', 'garbage\n{"event": "eval"', 1))
    r = load_run(str(p))
    assert list(r.train["iter"]) == [0, 10, 20] and any("unreadable" in n for n in r.notes)


def test_jsonl_without_train_or_eval_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "metrics.jsonl", records(n=0))
    with pytest.raises(UserError, match="no `train` or `eval` record"):
        load_run(p)


def test_run_folder_config_json_when_no_run_record(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", records(n=3, run=False))
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 2, "block_size": 4,
                                                      "gradient_accumulation_steps": 3}))
    r = load_run(str(tmp_path))
    assert r.tokens_per_iter() == 24 and any("config.json" in n for n in r.notes)


def test_jsonl_only_eval_records(tmp_path):
    recs = [r for r in records(n=5) if r["event"] != "train"]
    r = load_run(write_jsonl(tmp_path / "m.jsonl", recs))
    assert len(r.train["iter"]) == 0 and list(r.eval["iter"]) == [0, 20, 40]


# -----------------------------------------------------------------------------
# text logs


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


NANOGPT = """Overriding config with config/train_gpt2.py:
# config for training GPT-2 (124M)
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

Overriding: max_iters = 600000
tokens per iteration will be: 491,520
found vocab_size = 50304 (inside data/openwebtext/meta.pkl)
number of parameters: 123.59M
step 0: train loss 10.9877, val loss 10.9868
iter 0: loss 10.9851, time 3456.12ms, mfu -100.00%
\x1b[32miter 1: loss 10.9012, time 250.00ms, mfu 12.50%\x1b[0m
 45%|████▌     | 45/100 [00:01<00:01, 40.0it/s]\riter 2: loss 10.8000, time 251.00ms, mfu 12.40%
garbage line with numbers 1 2 3
iter 3: loss inf, time 250.00ms, mfu 12.40%
iter 4: loss 10.5, time 250.00ms, mfu 12.40%
step 5: train loss 10.4, val loss 10.45
iter 5: loss 10.4, time 250.00ms, mfu n/a, 32,768 tok/s, eta 1m 02s
iter 6: loss 10.3"""


def test_nanogpt_text_with_config_colours_progress_bars_and_cut_line(tmp_path):
    r = load_run(write(tmp_path, "train.log", NANOGPT))
    assert r.format == "nanogpt"
    t = r.train
    assert list(t["iter"]) == [0, 1, 2, 3, 4, 5, 6]
    assert list(t["loss"][[0, 1, 2, 4, 5, 6]]) == [10.9851, 10.9012, 10.8, 10.5, 10.4, 10.3]
    assert t["loss"][3] == math.inf
    assert t["mfu"][1] == pytest.approx(0.125) and t["dt_ms"][2] == 251.0
    assert t["dt_ms"][5] == 250.0 and np.isnan(t["mfu"][5])  # this repo's train.py: 'mfu n/a, N tok/s, eta'
    assert np.isnan(t["dt_ms"][6])  # the cut-off last line keeps its loss only
    assert list(r.eval["iter"]) == [0, 5] and r.eval["val_loss"][1] == 10.45
    c = r.config
    assert (c["batch_size"], c["block_size"], c["gradient_accumulation_steps"]) == (12, 1024, 40)
    assert c["max_iters"] == 600000 and r.tokens_per_iter() == 491520 and r.vocab_size() == 50304
    assert r.model["params"] == 123590000


def test_nanogpt_restart_splits_segments_and_keeps_last(tmp_path):
    lines = [f"iter {i}: loss {5 - i / 100:.4f}, time 10.00ms, mfu 1.00%" for i in range(0, 30, 10)]
    lines += ["resuming..."] + [f"iter {i}: loss {1 + i / 100:.4f}, time 10.00ms, mfu 1.00%" for i in range(10, 50, 10)]
    r = load_run(write(tmp_path, "a.log", "\n".join(lines) + "\n"))
    assert r.segments == [0, 10]
    assert list(r.train["iter"]) == [0, 10, 20, 30, 40]
    assert list(r.train["loss"]) == [5.0, 1.1, 1.2, 1.3, 1.4]
    assert any("2 segments" in n for n in r.notes) and any("last occurrence" in n for n in r.notes)


def test_llmc_stdout_line_is_step_minus_one(tmp_path):
    text = ("step    1/100 | loss 11.009054 (+nanz)| norm 15.3749 (+nanz)| lr 8.57e-07 | 1012.58 ms "
            "| 38.8% bf16 MFU | 517631 tok/s\n"
            "step    2/100 | loss 10.950000 (+1.00z)| norm 14.0000 (+0.50z)| lr 1.71e-06 | 400.00 ms "
            "| 40.0% bf16 MFU | 520000 tok/s\n")
    r = load_run(write(tmp_path, "llmc.txt", text))
    assert r.format == "llmc"
    t = r.train
    assert list(t["iter"]) == [0, 1] and list(t["loss"]) == [11.009054, 10.95]
    assert t["grad_norm"][0] == 15.3749 and t["lr"][1] == 1.71e-06 and t["mfu"][0] == pytest.approx(0.388)
    assert t["tokens_per_sec"][1] == 520000 and r.config["max_iters"] == 100


def test_generic_shapes(tmp_path):
    megatron = (" iteration      100/  500000 | consumed samples: 51200 | elapsed time per iteration (ms): 1234.5 | "
                "learning rate: 1.500E-05 | global batch size: 512 | lm loss: 8.123456E+00 | loss scale: 65536.0 | "
                "grad norm: 2.345 |\n"
                " iteration      200/  500000 | learning rate: 3.000E-05 | lm loss: 7.5E+00 |\n"
                " validation loss at iteration 200 | lm loss value: 7.4E+00 | lm loss PPL: 1636.0 |\n")
    r = load_run(write(tmp_path, "megatron.log", megatron))
    assert r.format.startswith("generic: iteration N/ M")
    assert list(r.train["iter"]) == [100, 200] and list(r.train["loss"]) == [8.123456, 7.5]
    assert r.train["lr"][0] == 1.5e-05 and r.train["grad_norm"][0] == 2.345 and np.isnan(r.train["grad_norm"][1])
    assert r.train["dt_ms"][0] == 1234.5 and r.train["grad_scale"][0] == 65536.0
    assert list(r.eval["val_loss"]) == [7.4]

    hf = ("{'loss': 2.5, 'grad_norm': 1.5, 'learning_rate': 5e-05, 'epoch': 0.1}\n"
          "{'loss': 2.3, 'grad_norm': 1.2, 'learning_rate': 4e-05, 'epoch': 0.2}\n"
          "{'eval_loss': 2.4, 'eval_runtime': 3.0, 'epoch': 0.2}\n")
    r = load_run(write(tmp_path, "hf.log", hf))
    assert list(r.train["loss"]) == [2.5, 2.3] and list(r.train["lr"]) == [5e-05, 4e-05]
    assert list(r.eval["val_loss"]) == [2.4]
    assert list(r.train["iter"]) == [0, 1] and list(r.eval["iter"]) == [1]  # record index: no interval said
    assert any("no logging_steps in the log" in n for n in r.notes)
    # the TrainingArguments echo (HF's example scripts log it) gives the optimizer steps
    r = load_run(write(tmp_path, "hf_args.log", "TrainingArguments(\nlogging_steps=50,\n)\n" + hf))
    assert list(r.train["iter"]) == [50, 100] and list(r.eval["iter"]) == [100]
    r = load_run(write(tmp_path, "hf_args2.log", "TrainingArguments(\neval_steps=75,\nlogging_steps=50,\n)\n" + hf))
    assert list(r.eval["iter"]) == [75]

    # nothing known: the fallback names what it recognised
    odd = "epoch 1 | step: 10 | train_loss=3.5 | val_loss=3.7\nstep: 20 | train_loss=3.25\n"
    r = load_run(write(tmp_path, "odd.log", odd))
    assert r.format.startswith("generic: step N") and "train_loss X" in r.format
    assert list(r.train["iter"]) == [10, 20] and list(r.train["loss"]) == [3.5, 3.25]
    assert list(r.eval["iter"]) == [10] and list(r.eval["val_loss"]) == [3.7]


# -----------------------------------------------------------------------------
# wandb CSV


def test_wandb_history_csv(tmp_path):
    text = ("_step,iter,train/loss,lr,mfu,val/loss,train/loss_eval\n"
            "0,0,10.9,6e-4,30.5,10.95,10.91\n"
            "1,1,10.5,6e-4,31.0,,\n"
            "2,2,nan,6e-4,31.0,,\n"
            "3,3,10.0,6e-4,31.0,10.1,10.05\n")
    r = load_run(write(tmp_path, "export.csv", text))
    assert r.format == "wandb-csv"
    assert list(r.train["iter"]) == [0, 1, 2, 3] and r.train["loss"][1] == 10.5 and np.isnan(r.train["loss"][2])
    assert r.train["mfu"][0] == pytest.approx(0.305)  # nanoGPT logs percent
    assert list(r.eval["iter"]) == [0, 3] and list(r.eval["val_loss"]) == [10.95, 10.1]
    assert list(r.eval["train_loss"]) == [10.91, 10.05]


def test_wandb_panel_csv_nanogpt_style(tmp_path):
    text = ('"Step","gpt2 - train/loss","gpt2 - train/loss__MIN","gpt2 - train/loss__MAX","gpt2 - val/loss"\n'
            '"0","10.9","10.9","10.9","10.95"\n"250","5.0","5.0","5.0","5.1"\n')
    r = load_run(write(tmp_path, "panel.csv", text))
    # train/loss only where val/loss is: both are eval estimates (nanoGPT's estimate_loss)
    assert len(r.train["iter"]) == 0
    assert list(r.eval["iter"]) == [0, 250] and list(r.eval["train_loss"]) == [10.9, 5.0]


# -----------------------------------------------------------------------------
# what cannot be read: one clear UserError each


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_run(str(tmp_path / "nope.log"))
    with pytest.raises(UserError, match="is empty"):
        load_run(write(tmp_path, "empty.log", ""))
    with pytest.raises(UserError, match="is empty"):
        load_run(write(tmp_path, "blank.log", "\n  \n"))
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 50)
    with pytest.raises(UserError, match="looks binary"):
        load_run(str(tmp_path / "ckpt.pt"))
    with pytest.raises(UserError, match="tried metrics.jsonl, wandb CSV, nanoGPT"):
        load_run(write(tmp_path, "prose.txt", "hello world\nno numbers that look like training here\n"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="without metrics.jsonl"):
        load_run(str(tmp_path / "dir"))
    with pytest.raises(UserError, match="no `train` or `eval`"):
        load_run(write(tmp_path, "x.jsonl", '{"event": "run", "config": {}}\n'))


# -----------------------------------------------------------------------------
# context: facts from flags, config files and dataset folders


def test_context_flags_config_and_data(tmp_path):
    lines = "\n".join(f"iter {i}: loss 3.0, time 1.00ms, mfu 1.00%" for i in range(3))
    log = write(tmp_path, "t.log", lines)
    cfg = write(tmp_path, "cfg.py", "import math\nbatch_size = 8\nblock_size = 256\n"
                                    "gradient_accumulation_steps = 2 * 2\nlearning_rate = 6e-4\n"
                                    "min_lr = learning_rate / 10\nn_layer = 2\nn_embd = 64\nn_head = 2\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.bin").write_bytes(b"\0" * 2000)
    (data / "val.bin").write_bytes(b"\0" * 200)
    (data / "meta.json").write_text(json.dumps({"tokenizer": {"name": "gpt2", "vocab_size": 50257},
                                                "dtype": "uint16", "train_tokens": 1000, "val_tokens": 100}))
    r = load_run(log, config=cfg, data=str(data), gpu="RTX 4070", dtype="bfloat16", max_iters=5000)
    assert r.tokens_per_iter() == 8 * 256 * 4 and r.config["min_lr"] == pytest.approx(6e-5)
    assert r.train_tokens() == 1000 and r.vocab_size() == 50257
    assert r.model["params"] > 0 and r.model["flops_per_token"] > 0
    assert r.system["peak_flops"] == 58.3e12 and r.config["max_iters"] == 5000
    r = load_run(log, tokens_per_iter=524288, train_tokens=10**9, params=124000000)
    assert r.tokens_per_iter() == 524288 and r.train_tokens() == 10**9 and r.model["params"] == 124000000
    with pytest.raises(UserError, match="imports torch"):
        load_run(log, config=write(tmp_path, "bad.py", "import torch\n"))
    with pytest.raises(UserError, match="bad2.py failed: NameError"):
        load_run(log, config=write(tmp_path, "bad2.py", "x = undefined_name\n"))
    with pytest.raises(UserError, match="meta.json not found"):
        load_run(log, data=str(tmp_path))
