"""
Facts that train.py and diagnose/ must agree on, in one torch-free place:
model size and FLOPs of a config, tokens per iteration, the LR schedule,
device peak FLOP/s, and the dataset's meta.json.
"""
import json
import math
import os

from errors import UserError

# -----------------------------------------------------------------------------
# model size and compute


def padded_vocab_size(vocab_size, multiple=64):
    """GPT-2's 50257 becomes 50304: a multiple of 64 keeps the LM-head matmul fast."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


def param_counts(n_layer, n_embd, vocab_size, block_size, bias=False, *,
                 rope=False, norm="layernorm", tie_embeddings=True):
    """Exact parameter counts of model.GPT, options as in model.GPTConfig: rope removes the
    position table, norm='rmsnorm' (parameter-free) removes the norm weights, an untied LM head
    adds its own vocab_size x n_embd matrix.

    'non_embedding' excludes the token and position embeddings and an untied head (Kaplan
    et al.'s N excludes every vocabulary and positional embedding), which is what scaling
    laws count; it does not depend on tying.
    """
    d = n_embd
    b = 1 if bias else 0
    ln = 0 if norm == "rmsnorm" else d + b * d       # LayerNorm weight (+ bias); RMSNorm has none
    attn = (d * 3 * d + b * 3 * d) + (d * d + b * d)  # c_attn + c_proj
    mlp = (d * 4 * d + b * 4 * d) + (4 * d * d + b * d)  # c_fc + c_proj
    per_block = 2 * ln + attn + mlp
    wte = vocab_size * d
    wpe = 0 if rope else block_size * d
    head = 0 if tie_embeddings else vocab_size * d
    total = wte + wpe + head + n_layer * per_block + ln  # + final norm
    return {"params": total, "non_embedding_params": total - wte - wpe - head}


def flops_per_token(n_layer, n_embd, vocab_size, block_size, bias=False, *,
                    rope=False, norm="layernorm", tie_embeddings=True):
    """Training FLOPs (forward + backward) per token, PaLM appendix B as nanoGPT counts it:
    6 * (the parameters used in matmuls: all but the position table and, when the head is
    untied, the token embedding, which is a lookup) + 12 * L * d * T for attention.
    The LM head is counted once either way; the options' elementwise work (rotary, soft-cap,
    ReLU^2, QK-norm) is not counted, as nanoGPT does not count GELU or LayerNorm."""
    counts = param_counts(n_layer, n_embd, vocab_size, block_size, bias,
                          rope=rope, norm=norm, tie_embeddings=tie_embeddings)
    n = counts["params"] - (0 if rope else block_size * n_embd) - (0 if tie_embeddings else vocab_size * n_embd)
    return 6 * n + 12 * n_layer * n_embd * block_size


def tokens_per_iter(batch_size, block_size, gradient_accumulation_steps):
    """Tokens in one optimizer step over all ranks. As in nanoGPT,
    gradient_accumulation_steps is the global count (split across DDP ranks)."""
    return batch_size * block_size * gradient_accumulation_steps


# -----------------------------------------------------------------------------
# learning-rate schedules

LR_SCHEDULES = ("cosine", "wsd", "constant")


def lr_at(it, *, learning_rate, min_lr, warmup_iters, lr_decay_iters, max_iters,
          lr_schedule="cosine", decay_frac=0.2, decay_lr=True):
    """Learning rate at iteration `it` (0-based).

    All schedules warm up linearly as lr * (it + 1) / (warmup_iters + 1), so the
    LR is never 0 at iteration 0 (nanoGPT's first step is wasted at LR 0).
    - cosine: cosine from learning_rate to min_lr over [warmup_iters, lr_decay_iters], then min_lr.
    - wsd: warmup, stable at learning_rate, then linear decay to min_lr over the
      last decay_frac of max_iters (Hu et al. 2024, "MiniCPM").
    - constant: warmup, then learning_rate.
    decay_lr=False means a constant learning_rate with no warmup (nanoGPT's meaning).
    """
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if lr_schedule == "constant":
        return learning_rate
    if lr_schedule == "cosine":
        if it >= lr_decay_iters:
            return min_lr
        span = max(1, lr_decay_iters - warmup_iters)
        ratio = (it - warmup_iters) / span
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return min_lr + coeff * (learning_rate - min_lr)
    if lr_schedule == "wsd":
        decay_start = wsd_decay_start(max_iters, warmup_iters, decay_frac)
        if it < decay_start:
            return learning_rate
        if it >= max_iters:
            return min_lr
        ratio = (it - decay_start) / max(1, max_iters - decay_start)
        return learning_rate + ratio * (min_lr - learning_rate)
    raise UserError(f"unknown lr_schedule {lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


def wsd_decay_start(max_iters, warmup_iters, decay_frac):
    """First iteration of the WSD cooldown: the last decay_frac of the run."""
    return max(warmup_iters, int(round(max_iters * (1.0 - decay_frac))))


def lr_from_config(it, config):
    """lr_at() with its arguments taken from a resolved config dict (train.py's globals)."""
    return lr_at(
        it,
        learning_rate=config["learning_rate"],
        min_lr=config["min_lr"],
        warmup_iters=config["warmup_iters"],
        lr_decay_iters=config["lr_decay_iters"],
        max_iters=config["max_iters"],
        lr_schedule=config.get("lr_schedule", "cosine"),
        decay_frac=config.get("decay_frac", 0.2),
        decay_lr=config.get("decay_lr", True),
    )


# -----------------------------------------------------------------------------
# device peak FLOP/s, dense tensor-core figures from the vendors' datasheets.
# GeForce cards: fp16/bf16 with fp32 accumulate (what PyTorch AMP uses).
# Matched by substring of torch.cuda.get_device_name(), first match wins.

PEAK_FLOPS = [
    # (name substring, {dtype: FLOP/s})
    ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12}),
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
    ("A10G", {"bfloat16": 70e12, "float16": 70e12, "float32": 31.2e12}),
    ("L4", {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12}),
    ("V100", {"float16": 125e12, "float32": 15.7e12}),
    ("T4", {"float16": 65e12, "float32": 8.1e12}),
    ("RTX 4090", {"bfloat16": 165.2e12, "float16": 165.2e12, "float32": 82.6e12}),
    ("RTX 4080", {"bfloat16": 97.5e12, "float16": 97.5e12, "float32": 48.7e12}),
    ("RTX 4070 Ti", {"bfloat16": 80.2e12, "float16": 80.2e12, "float32": 40.1e12}),
    ("RTX 4070", {"bfloat16": 58.3e12, "float16": 58.3e12, "float32": 29.1e12}),
    ("RTX 3090", {"bfloat16": 71e12, "float16": 71e12, "float32": 35.6e12}),
    ("RTX 3080", {"bfloat16": 59.5e12, "float16": 59.5e12, "float32": 29.8e12}),
]

# nanoGPT's estimate_mfu() divides by this whatever the GPU is.
NANOGPT_MFU_PEAK = 312e12


def peak_flops_for(device_name, dtype):
    """Peak FLOP/s of a device for a dtype, or None when the device is not in the table."""
    if not device_name:
        return None
    for key, by_dtype in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return by_dtype.get(dtype) or by_dtype.get("float16")
    return None


# -----------------------------------------------------------------------------
# the dataset's meta.json (written by data/<name>/prepare.py)

META_REQUIRED = ("tokenizer", "dtype", "train_tokens", "val_tokens")


def read_dataset_meta(data_dir):
    """meta.json of a prepared dataset folder, checked against its .bin files.

    A folder without meta.json is an unfinished preparation (meta.json is written last)."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        raise UserError(f"{path} not found: the dataset in {data_dir} is missing or its "
                        f"preparation did not finish; run its prepare.py")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); rerun prepare.py with --force")
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object; rerun prepare.py with --force")
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; rerun prepare.py with --force")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise UserError(f"{path} has dtype {meta['dtype']!r}, expected uint16 or uint32; "
                        f"rerun prepare.py with --force")
    itemsize = 2 if meta["dtype"] == "uint16" else 4
    for split in ("train", "val"):
        bin_path = os.path.join(data_dir, f"{split}.bin")
        expected = meta[f"{split}_tokens"] * itemsize
        if not os.path.exists(bin_path):
            raise UserError(f"{bin_path} not found though meta.json exists; rerun prepare.py with --force")
        actual = os.path.getsize(bin_path)
        if actual != expected:
            raise UserError(f"{bin_path} has {actual} bytes but meta.json says {meta[f'{split}_tokens']} "
                            f"{meta['dtype']} tokens ({expected} bytes); rerun prepare.py with --force")
    return meta
