import json
import math

import numpy as np
import pytest

from errors import UserError
from facts import (flops_per_token, lr_at, padded_vocab_size, param_counts, peak_flops_for,
                   read_dataset_meta, tokens_per_iter)

REF = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=500, lr_decay_iters=20000, max_iters=20000)


def test_reference_run_sizes():
    # the reference user's 12 x 384 model with GPT-2's padded vocabulary
    counts = param_counts(12, 384, 50304, 1024, bias=False)
    assert counts["params"] == 40_953_216  # nanoGPT prints 40.56M: it leaves out wpe (393,216)
    assert counts["non_embedding_params"] == 12 * 12 * 384 * 384 + 25 * 384  # 12 d^2 per layer + 25 LayerNorms
    assert tokens_per_iter(16, 1024, 32) == 524_288
    n = counts["params"] - 1024 * 384
    assert flops_per_token(12, 384, 50304, 1024) == 6 * n + 12 * 12 * 384 * 1024
    assert padded_vocab_size(50257) == 50304 and padded_vocab_size(257) == 320


def test_cosine_schedule_values():
    assert lr_at(0, **REF) == pytest.approx(1e-3 / 501)  # never 0 at iteration 0
    assert lr_at(499, **REF) == pytest.approx(1e-3 * 500 / 501)
    assert lr_at(500, **REF) == pytest.approx(1e-3)
    assert lr_at(10250, **REF) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway through the cosine
    assert lr_at(20000, **REF) == pytest.approx(1e-4)
    assert lr_at(30000, **REF) == pytest.approx(1e-4)


def test_wsd_and_constant_schedules():
    wsd = dict(REF, lr_schedule="wsd", decay_frac=0.2)
    assert lr_at(15999, **wsd) == pytest.approx(1e-3)       # stable until the last 20%
    assert lr_at(16000, **wsd) == pytest.approx(1e-3)       # decay starts here
    assert lr_at(18000, **wsd) == pytest.approx(5.5e-4)     # halfway through a linear decay
    assert lr_at(20000, **wsd) == pytest.approx(1e-4)
    const = dict(REF, lr_schedule="constant")
    assert lr_at(19999, **const) == 1e-3 and lr_at(100, **const) == pytest.approx(1e-3 * 101 / 501)
    assert lr_at(0, **dict(REF, decay_lr=False)) == 1e-3
    with pytest.raises(UserError, match="unknown lr_schedule 'linear'"):
        lr_at(1000, **dict(REF, lr_schedule="linear"))


def test_peak_flops_table():
    assert peak_flops_for("NVIDIA GeForce RTX 4070", "float16") == 58.3e12
    assert peak_flops_for("NVIDIA GeForce RTX 4070 Ti", "bfloat16") == 80.2e12
    assert peak_flops_for("NVIDIA H200", "bfloat16") == 989e12
    assert peak_flops_for("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert peak_flops_for("cpu", "float32") is None


def _write_dataset(tmp_path, n_train=100, n_val=10, dtype="uint16", **overrides):
    np.arange(n_train, dtype=dtype).tofile(tmp_path / "train.bin")
    np.arange(n_val, dtype=dtype).tofile(tmp_path / "val.bin")
    meta = {"tokenizer": {"name": "byte", "vocab_size": 257, "eot_token": 256},
            "dtype": dtype, "train_tokens": n_train, "val_tokens": n_val, **overrides}
    (tmp_path / "meta.json").write_text(json.dumps(meta))


def test_read_dataset_meta_ok_and_bad(tmp_path):
    _write_dataset(tmp_path)
    assert read_dataset_meta(str(tmp_path))["train_tokens"] == 100
    _write_dataset(tmp_path, train_tokens=99)
    with pytest.raises(UserError, match=r"train.bin has 200 bytes but meta.json says 99 uint16 tokens"):
        read_dataset_meta(str(tmp_path))
    _write_dataset(tmp_path, dtype="uint16", **{})
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": {}, "dtype": "int8", "train_tokens": 1, "val_tokens": 1}))
    with pytest.raises(UserError, match="dtype 'int8'"):
        read_dataset_meta(str(tmp_path))
    (tmp_path / "meta.json").unlink()
    with pytest.raises(UserError, match="preparation did not finish"):
        read_dataset_meta(str(tmp_path))


# --- memory estimate (pure arithmetic; tests/test_memory.py checks it against measured peaks) ---
import facts  # noqa: E402

REF_4070 = dict(n_layer=12, n_head=12, n_embd=384, block_size=1024, batch_size=16, gradient_accumulation_steps=32,
           dtype="float16", compile=True, dropout=0.1, bias=False)


def test_memory_estimate_parts():
    e = facts.memory_estimate(12, 12, 384, 1024, 50304, 16, dtype="float16", compile=True, device_type="cuda")
    p = param_counts(12, 384, 50304, 1024)["params"]
    embed, hidden = 50304 * 384, 12 * 12 * 384 * 384
    assert e["params"] == 4 * p + 2 * (hidden + embed)   # fp32 master weights + autocast's 16-bit copies
    assert e["grads"] == 4 * p + 4 * embed               # the tied embedding's two contributions
    assert e["optimizer"] == 8 * p                       # fused AdamW on CUDA: no temporary
    assert e["logits"] == 16 * 1024 * 50304 * 6
    assert e["overhead"] == 600 * facts.MiB
    assert e["total"] == sum(v for k, v in e.items() if k != "total")
    muon = facts.memory_estimate(12, 12, 384, 1024, 50304, 16, dtype="float16", compile=True,
                                 device_type="cuda", optimizer="muon")
    assert e["optimizer"] - muon["optimizer"] == 4 * hidden  # one buffer, not two, for the hidden matrices
    eager = facts.memory_estimate(12, 12, 384, 1024, 50304, 16, dtype="float16", device_type="cuda")
    assert eager["activations"] > e["activations"] and eager["logits"] > e["logits"]
    assert facts.memory_estimate(12, 12, 384, 1024, 50304, 16, device_type="cuda", ddp=True)["grads"] == 8 * p + 4 * embed


def test_memory_estimate_math_attention_adds_the_t_squared_term():
    flash = facts.memory_estimate(2, 4, 128, 256, 256, 8, device_type="cpu")
    math_ = facts.memory_estimate(2, 4, 128, 256, 256, 8, device_type="cpu", attention="math")
    expected = 2 * (8 * 4 * 256 ** 2 * facts.MATH_ATTN_BYTES["float32"] + 8 * 256 * 128 * facts.MATH_ATTN_BYTES_PER_D)
    assert math_["activations"] - flash["activations"] == int(expected)
    # CPU with dropout: SDPA's math path, as attention='math'
    auto = facts.memory_estimate(2, 4, 128, 256, 256, 8, device_type="cpu", dropout=0.1)
    assert auto["activations"] == facts.memory_estimate(2, 4, 128, 256, 256, 8, device_type="cpu", dropout=0.1,
                                                        attention="math")["activations"]


def test_memory_verdict_reference_config_on_a_12gb_card():
    fits, msg = facts.memory_verdict(REF_4070, 50304, "cuda", 12 * facts.GiB)
    assert fits and msg == "needs about 8.6 GiB of 12.0 GiB"
    fits, msg = facts.memory_verdict({**REF_4070, "compile": False}, 50304, "cuda", 12 * facts.GiB)
    assert not fits
    assert msg == ("needs about 19.2 GiB but the device has 12.0 GiB; use --batch_size=8 "
                   "--gradient_accumulation_steps=64 (the same 524,288 tokens per iteration)")


def test_memory_advice_keeps_tokens_then_shrinks_the_model():
    cfg = {**REF_4070, "batch_size": 12, "gradient_accumulation_steps": 40, "compile": False}
    need_6 = facts.memory_estimate_for_config({**cfg, "batch_size": 6}, 50304, "cuda")["total"]
    assert facts.memory_advice(cfg, 50304, "cuda", need_6) == \
        "use --batch_size=6 --gradient_accumulation_steps=80 (the same 491,520 tokens per iteration)"
    need_1 = facts.memory_estimate_for_config({**cfg, "batch_size": 1, "n_layer": 3}, 50304, "cuda")["total"]
    assert facts.memory_advice(cfg, 50304, "cuda", need_1) == \
        "use a smaller model: --n_layer=3 --batch_size=1 --gradient_accumulation_steps=480"


def test_memory_estimate_refuses_unknown_options():
    with pytest.raises(UserError, match="unknown optimizer 'sgd'; use one of adamw, muon"):
        facts.memory_estimate(1, 1, 8, 8, 64, 1, optimizer="sgd")
    with pytest.raises(UserError, match="unknown attention 'fast'; use auto, flash or math"):
        facts.memory_estimate(1, 1, 8, 8, 64, 1, attention="fast")
