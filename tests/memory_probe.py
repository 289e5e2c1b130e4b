"""
Measured peak memory of real training steps, for checking facts.memory_estimate (CPU).

    python tests/memory_probe.py '[{"n_layer": 2, "n_embd": 128, ...}, ...]'

prints one JSON line per shape: {"shape": ..., "peak_bytes": ...}. torch is imported once; each
shape runs in a forked child (a fresh heap, so one shape's freed memory cannot hide the next's
growth), whose peak RSS is reset (/proc/self/clear_refs) and read back (VmHWM) around the model
build and 3 training steps as train.py takes them (the peak still grows from the 2nd to the 3rd): AdamW, clipping, the logits held by the caller.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from model import GPT, GPTConfig  # noqa: E402


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def train_steps(shape, steps=3):
    cfg = GPTConfig(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                    block_size=shape["block_size"], vocab_size=shape["vocab_size"],
                    dropout=shape.get("dropout", 0.0), bias=shape.get("bias", False))
    model = GPT(cfg)
    optimizer, _ = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randint(0, cfg.vocab_size, (shape["batch_size"], cfg.block_size), generator=g)
        y = torch.randint(0, cfg.vocab_size, (shape["batch_size"], cfg.block_size), generator=g)
        _, loss = model(x, y)  # the caller holds the logits, as train.py's `_, loss = model(x, y)`
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure(shape):
    """Peak RSS growth (bytes) of building the model and training it, in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        base = status_kib("VmRSS")
        train_steps(shape)
        peak = status_kib("VmHWM")
        os.write(w, json.dumps({"shape": shape, "peak_bytes": (peak - base) * 1024}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"probe child for {shape} failed (status {status})")
    return json.loads(data)


TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, batch_size=2)

if __name__ == "__main__":
    # one tiny step first: the code pages of torch's kernels are then resident before the fork,
    # and do not count as a shape's memory (facts.memory_estimate's overhead holds them)
    torch.set_num_threads(1)
    if os.environ.get("PROBE_WARM", "1") == "1":
        train_steps(TINY, steps=1)
        train_steps(dict(TINY, dropout=0.1), steps=1)
    for s in json.loads(sys.argv[1]):
        print(json.dumps(measure(s)), flush=True)
