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


# -----------------------------------------------------------------------------
# memory: will a config fit? Bytes of one training step, by part. The coefficients are counts of
# what autograd keeps; those marked "measured" were fitted to peak RSS growth on CPU (torch 2.13,
# tests/memory_probe.py, tests/test_memory.py checks them within 25%); the GPU ones are read off the
# kernels and checked by bench/gpu_check.sh against torch.cuda.max_memory_allocated.

MiB, GiB = 2 ** 20, 2 ** 30
OPTIMIZERS = ("adamw", "muon")
# bytes per token per layer per unit of n_embd kept for the backward pass (residual stream, LayerNorm
# inputs, q/k/v and their contiguous copies, attention output, MLP hidden before and after GELU):
# fp32 eager 23 floats (measured); 16-bit autocast keeps the LayerNorm inputs in fp32 and the rest
# in 16 bits; torch.compile's partitioner keeps about 0.65 of it (it recomputes GELU and the norms)
ACT_BYTES_PER_D = {("float32", False): 92, ("16bit", False): 54, ("float32", True): 60, ("16bit", True): 35}
# attention without a fused kernel (SDPA's math path: CPU with dropout > 0, or attention='math'):
# scores, probabilities and dropped probabilities per (batch x head x T x T) element (measured, fp32),
# and extra per-token copies of q, k, v
MATH_ATTN_BYTES = {"float32": 11.6, "16bit": 7.0}
MATH_ATTN_BYTES_PER_D = 64
# logits, per (batch x block x vocab) element: eager keeps the logits held by the caller, their fp32
# copy (16-bit runs), log_softmax's output and the two gradients at the loss (fp32: 16, measured);
# compiled, the loss is one fused kernel that keeps only the logits and their gradient
LOGIT_BYTES = {("float32", False): 16, ("16bit", False): 18, ("float32", True): 8, ("16bit", True): 6}
# what the framework holds whatever the model: on CPU the allocator's arenas and oneDNN scratch
# (measured: a 70k-parameter model grows RSS by 34 MiB); on CUDA the context, cuBLAS workspaces and
# the caching allocator's rounding (it is outside max_memory_allocated, inside mem_get_info)
OVERHEAD_BYTES = {"cpu": 34 * MiB, "cuda": 600 * MiB, "mps": 300 * MiB}


def memory_estimate(n_layer, n_head, n_embd, block_size, vocab_size, batch_size, *, bias=False,
                    dtype="float32", compile=False, optimizer="adamw", attention="auto", dropout=0.0,
                    device_type="cuda", ddp=False):
    """Bytes one training step needs, by part: {'params', 'grads', 'optimizer', 'activations',
    'logits', 'overhead', 'total'}; vocab_size is the model's (padded) vocabulary.

    The weights stay fp32 under autocast (bfloat16/float16: the master copy), and autocast caches a
    16-bit copy of each matrix. Gradients count the tied embedding twice (its two contributions are
    summed); AdamW keeps 2 fp32 states per parameter (plus, unfused, a temporary the size of the
    largest parameter), Muon 1 momentum buffer for the 2-D hidden matrices and AdamW's 2 for the rest.
    attention 'auto' is the fused kernel (no T x T matrix) except on CPU with dropout, where SDPA
    falls back to its math path; 'flash' or 'math' forces one. DDP adds a gradient bucket copy.
    """
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if attention not in ("auto", "flash", "math"):
        raise UserError(f"unknown attention {attention!r}; use auto, flash or math")
    half = dtype in ("bfloat16", "float16")
    prec = "16bit" if half else "float32"
    d, tokens = n_embd, batch_size * block_size
    p = param_counts(n_layer, n_embd, vocab_size, block_size, bias)["params"]
    embed = vocab_size * d
    hidden_matrices = n_layer * 12 * d * d  # c_attn, attention c_proj, c_fc, MLP c_proj
    params = 4 * p + (2 * (hidden_matrices + embed) if half else 0)  # + autocast's 16-bit weight copies
    grads = 4 * p + 4 * embed + (4 * p if ddp else 0)
    if optimizer == "adamw":
        opt = 8 * p
    else:
        opt = 4 * hidden_matrices + 8 * (p - hidden_matrices)
    fused = device_type == "cuda"
    opt += 0 if fused else 4 * max(embed, 4 * d * d)  # the unfused step's temporary
    math_attn = attention == "math" or (attention == "auto" and device_type == "cpu" and dropout > 0)
    per_layer = tokens * d * ACT_BYTES_PER_D[(prec, bool(compile))]
    if math_attn:
        per_layer += batch_size * n_head * block_size ** 2 * MATH_ATTN_BYTES[prec] + tokens * d * MATH_ATTN_BYTES_PER_D
    if dropout > 0:
        per_layer += 2 * tokens * d  # the two residual dropout masks, 1 byte per element
    activations = int(n_layer * per_layer + tokens * d * 4 * 4)  # + embeddings and the final norm
    logits = tokens * vocab_size * LOGIT_BYTES[(prec, bool(compile))]
    overhead = OVERHEAD_BYTES.get(device_type, OVERHEAD_BYTES["cuda"])
    parts = {"params": params, "grads": grads, "optimizer": opt, "activations": activations,
             "logits": logits, "overhead": overhead}
    parts["total"] = sum(parts.values())
    return parts


def memory_estimate_for_config(config, vocab_size, device_type):
    """memory_estimate() of a resolved train.py config (dtype already resolved, not 'auto')."""
    return memory_estimate(
        config["n_layer"], config["n_head"], config["n_embd"], config["block_size"], vocab_size,
        config["batch_size"], bias=config.get("bias", False), dtype=config.get("dtype", "float32"),
        compile=config.get("compile", False), optimizer=config.get("optimizer", "adamw"),
        dropout=config.get("dropout", 0.0), device_type=device_type,
        ddp=config.get("ddp", False))


def format_bytes(n):
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def memory_verdict(config, vocab_size, device_type, device_bytes):
    """(fits, one-line message) for a config on a device with device_bytes of memory.

    When it does not fit, the message names the fix: the largest smaller batch_size that fits with
    more gradient_accumulation_steps, keeping the tokens per iteration exactly; else a smaller model."""
    need = memory_estimate_for_config(config, vocab_size, device_type)["total"]
    have = format_bytes(device_bytes)
    if need <= device_bytes:
        return True, f"needs about {format_bytes(need)} of {have}"
    fix = memory_advice(config, vocab_size, device_type, device_bytes)
    return False, f"needs about {format_bytes(need)} but the device has {have}; {fix}"


def memory_advice(config, vocab_size, device_type, device_bytes):
    """One line: a batch_size x gradient_accumulation_steps that keeps the tokens per iteration and
    fits, else a smaller model (fewer layers, then a narrower one) at batch_size 1."""
    b, g = config["batch_size"], config["gradient_accumulation_steps"]
    sequences = b * g

    def fits(**change):
        return memory_estimate_for_config({**config, **change}, vocab_size, device_type)["total"] <= device_bytes
    for nb in range(b - 1, 0, -1):
        if sequences % nb == 0 and fits(batch_size=nb):
            return (f"use --batch_size={nb} --gradient_accumulation_steps={sequences // nb} "
                    f"(the same {sequences * config['block_size']:,} tokens per iteration)")
    if config["n_layer"] > 1 and fits(batch_size=1, n_layer=1):
        lo, hi = 1, config["n_layer"] - 1  # the most layers that fit (memory grows with n_layer): bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(batch_size=1, n_layer=mid) else (lo, mid - 1)
        return f"use a smaller model: --n_layer={lo} --batch_size=1 --gradient_accumulation_steps={sequences}"
    d, h = config["n_embd"], config["n_head"]
    while d > h:
        d = max(h, (d // 2) // h * h)
        if fits(batch_size=1, n_layer=1, n_embd=d):
            return (f"use a smaller model: --n_layer=1 --n_embd={d} --batch_size=1 "
                    f"--gradient_accumulation_steps={sequences}")
    return "even a 1-layer model at batch_size 1 does not fit; use a smaller block_size or vocabulary"
