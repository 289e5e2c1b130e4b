"""
What cutting the padded vocabulary (50304 -> GPT-2's 50257) costs an export: the val loss of a tiny
GPT-2-BPE model over all 50304 logits (our loss) and over the first 50257 (what transformers
computes on the export), as it trains. The padding rows start as ordinary rows (the difference is
then ~log(50304/50257) = 9.3e-4); no target ever uses them, so training lowers their logits, but
not to nothing: the export's loss is below ours by what the padding logits still hold.

    python bench/bench_vocab_cut.py [--iters 300]

Trains on the repository's README.md (GPT-2 BPE); CPU, one thread, about a minute.
"""
import argparse
import os
import sys

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        ids = torch.tensor(load_tokenizer("gpt2").encode(f.read()))
    split = int(len(ids) * 0.9)
    model = GPT(GPTConfig(block_size=64, vocab_size=50304, token_vocab_size=50257, n_layer=2, n_head=2, n_embd=64))
    opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.99), "cpu")[0]
    g = torch.Generator().manual_seed(0)

    def batch(lo, hi):
        s = torch.randint(lo, hi - 65, (8,), generator=g)
        return torch.stack([ids[i:i + 64] for i in s]), torch.stack([ids[i + 1:i + 65] for i in s])

    for it in range(args.iters + 1):
        if it % 100 == 0:
            model.eval()
            with torch.no_grad():
                x, y = batch(split, len(ids))
                logits, full = model(x, y)
                cut = F.cross_entropy(logits[..., :50257].reshape(-1, 50257), y.reshape(-1))
            model.train()
            print(f"iter {it}: val loss over 50304 logits {full.item():.6f}, over 50257 {cut.item():.6f}, "
                  f"difference {full.item() - cut.item():.2e}")
        x, y = batch(0, split)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
