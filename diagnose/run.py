"""
Run: everything diagnose knows about one training run, whatever log it came from.

Parsers (diagnose/parse*.py) build it; detectors only read it. Series are numpy
arrays aligned by row; a value the log did not carry is NaN.
"""
from dataclasses import dataclass, field

import numpy as np

# columns of Run.train and Run.eval; every parser fills all of them (NaN when unknown)
TRAIN_COLUMNS = ("iter", "loss", "lr", "grad_norm", "grad_scale", "dt_ms",
                 "tokens_per_sec", "mfu", "tokens", "epoch", "lr_mult")  # lr_mult: the schedule's multiplier
EVAL_COLUMNS = ("iter", "train_loss", "val_loss", "train_loss_se", "val_loss_se",
                "tokens", "epoch", "lr", "val_bpb", "lr_mult")  # val_bpb: bits per byte (nanochat), not comparable to a loss

# what one logged train loss is an average of: a fact of the format (see each parser)
TRAIN_LOSS_KINDS = (
    "iteration_mean",      # the mean over all micro-batches of the iteration (our metrics.jsonl, llm.c, ...)
    "last_microbatch",     # the last micro-batch only (nanoGPT's `iter N: loss X` is loss.item() * accum of it)
    "ema",                 # an exponential moving average of the step losses (nanochat)
    "epoch_running_mean",  # a running mean since the start of the epoch (epoch summaries)
    "unknown",
)


def grad_accum_of(config):
    """gradient_accumulation_steps from a config, when it is a positive integer; else None."""
    v = config.get("gradient_accumulation_steps")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def empty_columns(names):
    return {name: np.array([], dtype=float) for name in names}


@dataclass
class Run:
    source: str                      # the path it was read from
    format: str                      # 'metrics.jsonl', 'nanogpt', 'llmc', 'modded-nanogpt', 'wandb-csv', 'generic: <pattern>'
    train: dict = field(default_factory=lambda: empty_columns(TRAIN_COLUMNS))
    eval: dict = field(default_factory=lambda: empty_columns(EVAL_COLUMNS))
    config: dict = field(default_factory=dict)   # train.py key names: batch_size, block_size, learning_rate, max_iters, ...
    data: dict = field(default_factory=dict)     # meta.json facts: train_tokens, val_tokens, tokenizer {vocab_size, ...}
    model: dict = field(default_factory=dict)    # params, non_embedding_params, flops_per_token
    system: dict = field(default_factory=dict)   # device_name, peak_flops, dtype, world_size, compile
    segments: list = field(default_factory=list)  # first iteration of each segment (restarts / resumes), in file order
    events: list = field(default_factory=list)   # other records: warning, checkpoint, end (dicts as logged)
    notes: list = field(default_factory=list)    # what the parser recognised or skipped, for the report
    train_loss_kind: str = "unknown"  # one of TRAIN_LOSS_KINDS: what one train-loss value averages over
    grad_accum: int = None            # micro-batches per iteration when the log or config says; else None
    nonfinite_printed: dict = field(default_factory=dict)  # column: rows whose value the log printed as nan/inf
    rounded_zero: dict = field(default_factory=dict)  # column: print resolution when its zeros are rounded ('0.000000')

    def __post_init__(self):
        if self.train_loss_kind not in TRAIN_LOSS_KINDS:
            raise ValueError(f"train_loss_kind {self.train_loss_kind!r} not in {TRAIN_LOSS_KINDS}")

    # --- facts that several detectors need; None when the run does not say ---

    def tokens_per_iter(self):
        c = self.config
        if c.get("tokens_per_iter"):
            return int(c["tokens_per_iter"])
        keys = ("batch_size", "block_size", "gradient_accumulation_steps")
        if all(c.get(k) for k in keys):
            from facts import tokens_per_iter
            return tokens_per_iter(*(int(c[k]) for k in keys))
        return None

    def train_tokens(self):
        t = self.data.get("train_tokens")
        return int(t) if t else None

    def vocab_size(self):
        tok = self.data.get("tokenizer") or {}
        v = tok.get("vocab_size") or self.config.get("vocab_size")
        return int(v) if v else None

    def last_iter(self):
        its = [a["iter"][-1] for a in (self.train, self.eval) if len(a["iter"])]
        return int(max(its)) if its else None
