"""
load_run(path): any supported log into one Run, the format found from the content.

  a run folder            -> its metrics.jsonl
  metrics.jsonl           -> parse_jsonl (records as train.py writes them)
  a wandb CSV export      -> parse_csv
  anything else (text)    -> parse_text (nanoGPT, llm.c, modded-nanogpt, generic)

Then the facts the log does not say are filled from --config/--data/flags (context.py).
"""
import json
import os

from diagnose.context import apply_context
from diagnose.run import grad_accum_of
from errors import UserError

FORMATS_TRIED = ("metrics.jsonl, wandb or Lightning CSV, nanoGPT, llm.c, modded-nanogpt, build-nanogpt, "
                 "nanochat, torchtitan, HF Trainer, Megatron and generic text logs")


def read_bytes(path):
    """The file's bytes, or a UserError for what cannot be a log (missing, empty, binary)."""
    if not os.path.exists(path):
        raise UserError(f"{path} not found; pass a run folder, its metrics.jsonl, or a training log file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); check the path and its permissions")
    if not raw.strip():
        raise UserError(f"{path} is empty; nothing was logged yet (wait for the first log_interval) "
                        f"or pass another file")
    head = raw[:65536]
    bad = head.decode("utf-8", errors="replace").count("\ufffd")
    if b"\x00" in head or bad > max(16, len(head) // 50):
        raise UserError(f"{path} looks binary, not a log (tried {FORMATS_TRIED}); "
                        f"pass metrics.jsonl or the text log (a checkpoint .pt is not a log)")
    return raw


def _is_jsonl(path, raw):
    if path.endswith(".jsonl"):
        return True
    line = raw.lstrip().split(b"\n", 1)[0]
    if not line.startswith(b"{"):
        return False
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return isinstance(rec, dict) and "event" in rec


def _without_leading_comments(text):
    """The text after leading blank and `#` lines (a pasted CSV often starts with a note)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        line = text[start:end].strip()
        if line and not line.startswith("#"):
            break
        start = end
    return text[start:]


def parse_file(path):
    """The Run in one file, before context is applied."""
    from diagnose.parse_csv import looks_like_csv, parse_csv
    from diagnose.parse_jsonl import parse_jsonl
    from diagnose.parse_text import parse_text
    raw = read_bytes(path)
    if _is_jsonl(path, raw):
        return parse_jsonl(path, raw)
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    body = _without_leading_comments(text)
    if looks_like_csv(body.split("\n", 1)[0]):
        return parse_csv(path, body)
    return parse_text(path, text)


def resolve(path):
    """A run folder means its metrics.jsonl."""
    path = str(path)
    if os.path.isdir(path):
        inner = os.path.join(path, "metrics.jsonl")
        if not os.path.exists(inner):
            raise UserError(f"{path} is a folder without metrics.jsonl; pass a run's out_dir "
                            f"or the log file itself")
        return inner
    return path


def load_run(path, **context):
    """A Run from any supported log, with the user's facts (see context.apply_context) filled in."""
    run = parse_file(resolve(path))
    if os.path.isdir(str(path)) and not run.config:  # metrics.jsonl lost its run record: config.json
        cfg_path = os.path.join(str(path), "config.json")
        try:
            with open(cfg_path) as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            cfg = None
        if isinstance(cfg, dict):
            run.config.update(cfg)
            run.notes.append(f"config from {cfg_path}")
    apply_context(run, **context)
    if run.grad_accum is None:  # --config FILE.py may say what the log did not
        run.grad_accum = grad_accum_of(run.config)
    return run
