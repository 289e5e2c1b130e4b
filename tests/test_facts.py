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
