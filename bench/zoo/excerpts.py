"""
Seeded excerpts of 5-40 lines from each rendering, and what each cut can honestly be labelled.

A cut (and a whole file, the cut of all its lines) is labelled with the categories its lines
show, not with the run's: a category the run expects goes into the cut's 'expect' only when the
same check the generator used (checks.py) passes on the records the cut shows, as the format
shows them (an HF line's loss is its interval's mean; build-nanogpt's evals carry no train loss).
The run's 'forbid' stays: what is false of a run is false of any part of it. Everything else is
left open ('open'): an excerpt of an overfitting run's healthy start may or may not be called
overfitting, and neither answer is scored.
"""
import random
import re

from bench.zoo import checks, render
from bench.zoo.series import NANOGPT_EVAL, NANOGPT_ITER, open_text

MIN_LINES, MAX_LINES = 5, 40
# which eval fields each format's lines show (the rest of an eval record is unseen)
EVAL_FIELDS = {"metrics.jsonl": None, "nanogpt": ("iter", "train_loss", "val_loss"),
               "wandb-csv": ("iter", "train_loss", "val_loss")}
SHOWS_LR = ("metrics.jsonl", "llmc", "hf-trainer", "megatron", "wandb-csv")


def refs_of(fmt, path, series):
    """The record each line of a rendering shows (see render.py), recomputed from the series."""
    with open_text(path) as f:
        text = f.read()
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    if fmt == "metrics.jsonl":
        counts, refs = {"train": 0, "eval": 0}, []
        for line in lines:
            kind = re.search(r'"event": "(\w+)"', line).group(1)
            refs.append((kind, counts[kind]) if kind in counts else None)
            if kind in counts:
                counts[kind] += 1
        return lines, refs
    if series["source"] == "nanoGPT":
        counts, refs = {"train": 0, "eval": 0}, []
        for line in lines:
            kind = "train" if NANOGPT_ITER.match(line) else "eval" if NANOGPT_EVAL.match(line) else None
            refs.append((kind, counts[kind]) if kind else None)
            if kind:
                counts[kind] += 1
        return lines, refs
    rendered = render.FORMATS[fmt][1](series)
    assert [line for line, _ in rendered] == lines, f"{path} is not what render.py makes of its run"
    return lines, [ref for _, ref in rendered]


def window(series, refs, fmt):
    """The Series restricted to what these lines show."""
    out = dict(series, train=[], eval=[])
    keep = EVAL_FIELDS.get(fmt, ("iter", "val_loss"))
    for ref in refs:
        if ref is None:
            continue
        parts = [("train", ref[1]), ("eval", ref[2])] if ref[0] == "both" else [ref]  # a wandb row holds both
        for part in parts:
            out[part[0]].append(_shown(series, part, fmt, keep))
    return out


def _shown(series, ref, fmt, keep):
    """One record as a line of the format shows it."""
    rec = dict(series[ref[0]][ref[1]])
    if len(ref) > 2:
        rec.update(ref[2])
    if ref[0] == "eval" and keep is not None:
        rec = {k: v for k, v in rec.items() if k in keep or k == "epoch"}
    if ref[0] == "train" and fmt not in SHOWS_LR:
        rec["lr"] = None
    return rec


def visible(category, w, fmt, whole):
    """Does this window show the category (by the generator's own check)?"""
    if category == "overfitting":
        return checks.overfitting(w)[0]
    if category == "repeat":
        return bool(w["train"] or w["eval"]) and checks.epochs_at_end(w) >= 2
    if category == "plateau":
        return checks.plateau(w)[0]
    if category == "instability":
        return checks.divergence(w)[0] or checks.spikes(w)[0]
    if category == "not_learning":
        return checks.not_learning(w)[0]
    if category == "leakage":
        return checks.leakage(w)[0]
    if category == "lr_limited":
        return whole and fmt in SHOWS_LR
    return False


def label_cut(label, fmt, s, refs, whole):
    w = window(s, refs, fmt)
    expect = [c for c in label["expect"] if visible(c, w, fmt, whole)]
    forbid = list(label["forbid"])
    return dict(expect=expect, forbid=forbid,
                open=[c for c in checks.CATEGORIES if c not in expect and c not in forbid and c != "healthy"],
                iters=[min((r["iter"] for r in w["train"] + w["eval"]), default=None),
                       max((r["iter"] for r in w["train"] + w["eval"]), default=None)])


def cut_spans(key, n_lines, count):
    """`count` (start, length) spans for a file of n_lines, seeded by key: the first is the file's tail
    (what people paste most), the others anywhere."""
    rng = random.Random(key)
    spans = []
    for k in range(count):
        length = min(n_lines, rng.randint(MIN_LINES, MAX_LINES))
        start = n_lines - length if k == 0 else rng.randint(0, n_lines - length)
        spans.append((start, length))
    return spans


def cut_run(label, out_dir, s, per_file=3):
    """Cuts (whole files first) of every rendering of one run, each with its labels."""
    import os
    cuts = []
    for fmt, name in label["files"].items():
        path = os.path.join(out_dir, label["run"], name + ".gz")
        lines, refs = refs_of(fmt, path, s)
        spans = [(0, len(lines))] + cut_spans(f"{label['run']}/{name}", len(lines), per_file)
        for n, (start, length) in enumerate(spans):
            lab = label_cut(label, fmt, s, refs[start:start + length], whole=n == 0)
            cuts.append(dict(run=label["run"], verdict=label["verdict"], format=fmt, file=f"{label['run']}/{name}",
                             start=start, length=length, whole=n == 0, **lab))
    return cuts


def cut_text(path, start, length, fmt=None):
    """The text of a cut: lines [start, start + length) of the file; a CSV cut keeps its header line
    (a CSV pasted without it is no table)."""
    with open_text(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    head = lines[:1] if fmt == "wandb-csv" and start > 0 else []
    return "".join(line + "\n" for line in head + lines[start:start + length])
