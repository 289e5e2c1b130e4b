"""
A run's numbers as the zoo reads them, independently of diagnose/ (the ground truth must not
come from the code it measures): metrics.jsonl records, or the stdout of unmodified nanoGPT.

A Series is a dict: 'train' and 'eval' (lists of dicts, in iteration order), 'config', 'data'
(meta.json facts) and 'source' ('train.py' or 'nanoGPT').
"""
import gzip
import json
import math
import re


def open_text(path):
    """A text file, gzip-compressed when its name ends in .gz (the committed fixtures are)."""
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def read_metrics(path):
    """train.py's metrics.jsonl as a Series (one run record, train/eval records, the rest ignored)."""
    run, train, evals = {}, [], []
    with open_text(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec["event"] == "run" and not run:
                run = rec
            elif rec["event"] == "train":
                train.append(rec)
            elif rec["event"] == "eval":
                evals.append(rec)
    return dict(source="train.py", config=run.get("config", {}), data=run.get("data", {}),
                model=run.get("model", {}), train=train, eval=evals)


NANOGPT_ITER = re.compile(r"^iter (\d+): loss (\S+), time ([\d.]+)ms", re.M)
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)", re.M)


def read_nanogpt_stdout(text, config, data):
    """nanoGPT's stdout as a Series; its iter loss is the last micro-batch's, its evals are random
    batches (no standard error is printed)."""
    tokens_per_iter = config["batch_size"] * config["block_size"] * config["gradient_accumulation_steps"]
    train = [dict(iter=int(i), loss=float(x), dt_ms=float(t), lr=None, grad_norm=None,
                  epoch=(int(i) + 1) * tokens_per_iter / data["train_tokens"])
             for i, x, t in NANOGPT_ITER.findall(text)]
    evals = [dict(iter=int(i), train_loss=float(a), val_loss=float(b), train_loss_se=None, val_loss_se=None,
                  epoch=int(i) * tokens_per_iter / data["train_tokens"])
             for i, a, b in NANOGPT_EVAL.findall(text)]
    return dict(source="nanoGPT", config=config, data=data, model={}, train=train, eval=evals)


def tokens_per_iter(series):
    c = series["config"]
    return c["batch_size"] * c["block_size"] * c["gradient_accumulation_steps"]


def column(records, key):
    """Values of one key; None and missing become NaN."""
    out = []
    for r in records:
        v = r.get(key)
        out.append(float("nan") if v is None else float(v))
    return out


def finite(values):
    return [v for v in values if math.isfinite(v)]
