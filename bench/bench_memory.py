"""
facts.memory_estimate against the measured peak RSS growth of real training steps on CPU
(tests/memory_probe.py), shape by shape, and what the estimate says of the reference config on a
12 GB card.

$ python bench/bench_memory.py
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import facts  # noqa: E402

SHAPES = [  # (n_layer, n_head, n_embd, block_size, vocab_size, batch_size, dropout)
    (4, 4, 256, 256, 512, 8, 0.0), (4, 4, 256, 256, 512, 16, 0.0), (8, 4, 256, 256, 512, 8, 0.0),
    (4, 4, 256, 256, 512, 8, 0.1), (1, 2, 64, 128, 32768, 4, 0.0), (1, 2, 64, 128, 32768, 8, 0.0),
    (2, 8, 768, 32, 16384, 2, 0.0), (2, 4, 128, 512, 256, 8, 0.0), (2, 4, 128, 512, 256, 8, 0.1),
    (3, 6, 192, 128, 1024, 12, 0.0), (1, 2, 64, 64, 20032, 8, 0.0), (2, 8, 512, 16, 8192, 2, 0.0),
    (2, 4, 128, 256, 256, 8, 0.1), (6, 6, 384, 256, 4096, 4, 0.0),
]
KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "batch_size", "dropout")


def main():
    shapes = [dict(zip(KEYS, s)) for s in SHAPES]
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "memory_probe.py"), json.dumps(shapes)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"memory_probe failed:\n{p.stderr[-2000:]}")
    print("n_layer n_embd block batch vocab dropout   estimate MiB   measured MiB   estimate/measured")
    for line in p.stdout.splitlines():
        m = json.loads(line)
        s = m["shape"]
        est = facts.memory_estimate(s["n_layer"], s["n_head"], s["n_embd"], s["block_size"], s["vocab_size"],
                                    s["batch_size"], dropout=s["dropout"], device_type="cpu")["total"]
        print(f"{s['n_layer']:7d} {s['n_embd']:6d} {s['block_size']:5d} {s['batch_size']:5d} {s['vocab_size']:5d} "
              f"{s['dropout']:7.1f}   {est / facts.MiB:12.1f}   {m['peak_bytes'] / facts.MiB:12.1f}   "
              f"{est / m['peak_bytes']:.3f}")
    cfg = {}
    exec(open(os.path.join(ROOT, "config", "train_fineweb_4070.py")).read(), {}, cfg)
    vocab = facts.padded_vocab_size(50257)
    for compile in (True, False):
        c = {**cfg, "compile": compile}
        est = facts.memory_estimate_for_config(c, vocab, "cuda")
        fits, message = facts.memory_verdict(c, vocab, "cuda", 12 * facts.GiB)
        parts = ", ".join(f"{k} {facts.format_bytes(v)}" for k, v in est.items() if k != "total")
        print(f"\nconfig/train_fineweb_4070.py, compile {compile}, on 12 GiB: {'fits' if fits else 'DOES NOT FIT'}: "
              f"{message}\n  ({parts})")


if __name__ == "__main__":
    main()
