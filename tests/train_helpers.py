"""Shared helpers for the training-stack tests: tiny datasets, tiny runs of train.py."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a model small enough that a run of a few iterations takes well under a second on a CPU
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--device=cpu", "--dtype=float32", "--compile=False",
        "--eval_iters=4", "--eval_interval=5", "--log_interval=1", "--warmup_iters=2",
        "--learning_rate=1e-2", "--min_lr=1e-3", "--lr_decay_iters=20", "--max_iters=12",
        "--dropout=0.1", "--live_diagnose=False"]


def tiny_gpt(**overrides):
    """The unit tests' model: 2 layers x 32 wide over the padded byte vocabulary, seeded."""
    import torch
    from model import GPT, GPTConfig
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=320, token_vocab_size=257)
    args.update(overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))


def make_dataset(data_dir, train_tokens=4000, val_tokens=1000, vocab=257, eot=256, seed=0,
                 train_ids=None, val_ids=None, dtype="uint16"):
    """train.bin, val.bin, meta.json in the layout prepare.py writes. The default text is a
    noisy repeating pattern, so a model can learn it."""
    os.makedirs(data_dir, exist_ok=True)
    rng = np.random.default_rng(seed)

    def pattern(n):
        base = np.tile(np.arange(0, 40), n // 40 + 1)[:n]
        noise = rng.integers(0, vocab - 1, size=n)
        return np.where(rng.random(n) < 0.1, noise, base)

    train = pattern(train_tokens) if train_ids is None else np.asarray(train_ids)
    val = pattern(val_tokens) if val_ids is None else np.asarray(val_ids)
    for name, arr in (("train", train), ("val", val)):
        arr.astype(np.dtype(dtype).newbyteorder("<")).tofile(os.path.join(data_dir, f"{name}.bin"))
    meta = {"tokenizer": {"name": "byte", "vocab_size": vocab, "eot_token": eot, "eot_position": "prepend"},
            "dtype": dtype, "train_tokens": int(len(train)), "val_tokens": int(len(val)),
            "train_docs": 1, "val_docs": 1, "source": {"name": "synthetic", "size": 0, "sha256": ""}}
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump(meta, f)
    return data_dir


def run_train(args, env=None, check=True, launcher=None, timeout=300):
    """Run train.py in a subprocess from the repo root; returns the CompletedProcess."""
    cmd = (launcher or [sys.executable]) + ["train.py"] + list(args)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def load_ckpt(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)


# --- in process: the stages and whole runs without a new interpreter (no torch import per run) ---

class saved_process_state:
    """Puts back what a program run in this process may change: signal handlers, sys.argv,
    the environment, the working directory."""

    def __enter__(self):
        import signal
        self.handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.argv, self.env, self.cwd = list(sys.argv), dict(os.environ), os.getcwd()
        return self

    def __exit__(self, *exc):
        import signal
        for s, h in self.handlers.items():
            signal.signal(s, h)
        sys.argv[:] = self.argv
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.cwd)


def train_in_process(args):
    """train.main(args) here; returns what it printed. A UserError propagates."""
    import contextlib
    import io
    import train
    out = io.StringIO()
    with saved_process_state(), contextlib.redirect_stdout(out):
        train.main(list(args))
    return out.getvalue()


def tiny_config(data_dir, out_dir, *args):
    """train.py's resolved config for a TINY run, as main() makes it."""
    import train
    from configurator import Config, configure
    c = Config(configure({k: getattr(train, k) for k in train.config_keys},
                         TINY + [f"--data_dir={data_dir}", f"--out_dir={out_dir}", *args]))
    train.validate(c)
    return c


class tiny_run(saved_process_state):
    """`with tiny_run(data, out, '--max_iters=3') as r:` a train.Run set up by train.start(), its
    loop not yet started; closed (loader, log, signal handlers) on leaving."""

    def __init__(self, data_dir, out_dir, *args):
        self.config = tiny_config(data_dir, out_dir, *args)

    def __enter__(self):
        import contextlib
        import io
        import train
        super().__enter__()
        with contextlib.redirect_stdout(io.StringIO()):
            self.run = train.start(self.config)
        return self.run

    def __exit__(self, *exc):
        self.run.t.loader.close()
        self.run.log.close()
        super().__exit__(*exc)
