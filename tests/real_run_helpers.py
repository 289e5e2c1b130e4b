"""Helpers for tests/test_real_runs.py: byte-level datasets cut from CPython's documentation
text (pydoc_data.topics: real English with code, so a tiny model has something to learn),
and tiny train.py runs on the CPU whose diagnosis the tests check."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT = 256      # byte vocabulary: 256 bytes + the end-of-text token
VOCAB = 257

# small enough for ~50 ms per iteration on one busy core
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=48", "--block_size=64", "--batch_size=8",
              "--gradient_accumulation_steps=1", "--dropout=0.0", "--bias=False",
              "--device=cpu", "--dtype=float32", "--compile=False", "--log_interval=1",
              "--wandb_log=False"]


def documents():
    """The documentation topics as byte strings, in a fixed order (by topic name)."""
    from pydoc_data.topics import topics
    return [topics[k].encode("utf-8") for k in sorted(topics)]


def token_stream(docs, n_tokens):
    """The first n_tokens of docs joined with EOT in front of each (DESIGN.md's layout);
    returns (tokens, number of documents started)."""
    out, n_docs, total = [], 0, 0
    for d in docs:
        if total >= n_tokens:
            break
        ids = np.concatenate([[EOT], np.frombuffer(d, dtype=np.uint8)])
        out.append(ids)
        n_docs += 1
        total += len(ids)
    return np.concatenate(out)[:n_tokens].astype(np.uint16), n_docs


def make_text_dataset(data_dir, train_tokens, val_tokens):
    """train.bin / val.bin / meta.json: val from the first topics, train from the others,
    so no document is in both."""
    docs = documents()
    val, val_docs = token_stream(docs, val_tokens)
    train, train_docs = token_stream(docs[val_docs:], train_tokens)
    assert len(train) == train_tokens and len(val) == val_tokens, "pydoc_data.topics too short"
    os.makedirs(data_dir, exist_ok=True)
    for name, arr in (("train", train), ("val", val)):
        arr.astype("<u2").tofile(os.path.join(data_dir, f"{name}.bin"))
    meta = {"tokenizer": {"name": "byte", "vocab_size": VOCAB, "eot_token": EOT, "eot_position": "prepend"},
            "dtype": "uint16", "train_tokens": int(len(train)), "val_tokens": int(len(val)),
            "train_docs": train_docs, "val_docs": val_docs,
            "source": {"name": "pydoc_data.topics", "size": int(sum(map(len, docs))), "sha256": ""}}
    tmp = os.path.join(data_dir, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, os.path.join(data_dir, "meta.json"))
    return meta


def train(out_dir, data_dir, *overrides, timeout=300):
    """One train.py run on the CPU; returns (CompletedProcess, metrics.jsonl records).
    A non-zero exit is returned, not raised: the divergence run may end that way by design."""
    cmd = [sys.executable, "train.py", *TINY_MODEL, f"--out_dir={out_dir}", f"--data_dir={data_dir}",
           *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise AssertionError(f"train.py wrote no metrics.jsonl (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    with open(path) as f:
        records = [json.loads(line) for line in f]
    return p, records


def diagnose(out_dir):
    """Findings of the full diagnosis of a run folder, most severe first."""
    from diagnose.detect import run_all
    from diagnose.parse import load_run
    return run_all(load_run(out_dir))


def at_least(findings, severity, prefix=""):
    """The findings with this id prefix of `severity` or worse."""
    from diagnose.findings import SEVERITIES
    return [f for f in findings if f.id.startswith(prefix) and f.rank() >= SEVERITIES.index(severity)]


def summary(findings):
    """id, severity, title per line: what an assertion message shows."""
    return "\n".join(f"{f.id} [{f.severity}] {f.title}" for f in findings)


def events(records, name):
    return [r for r in records if r.get("event") == name]
