"""
A CSV of metrics into a Run: a wandb export (the run page's history export: `_step`,
`iter`, `train/loss`, `val/loss`, `lr`, ...; or a panel export: `Step`, `<run> - train/loss`,
with `__MIN`/`__MAX` columns that are dropped), or Lightning's CSVLogger `metrics.csv`
(`epoch`, `step`, `train_loss_step`, `train_loss_epoch`, `val_loss`; unused cells empty).
"""
import csv
import io
import re

import numpy as np

from diagnose.parse_common import Rows, _float_column, finish_run
from errors import UserError

STEP_NAMES = ("iter", "iter_num", "trainer_global_step", "train_global_step", "global_step", "step", "_step")
# normalised column name -> Run column
TRAIN_NAMES = {"train_loss": "loss", "loss": "loss", "train_lm_loss": "loss",
               "lr": "lr", "learning_rate": "lr", "train_lr": "lr", "train_learning_rate": "lr",
               "grad_norm": "grad_norm", "train_grad_norm": "grad_norm", "mfu": "mfu", "train_mfu": "mfu",
               "tokens": "tokens", "epoch": "epoch", "train_epoch": "epoch", "dt_ms": "dt_ms",
               "tokens_per_sec": "tokens_per_sec", "grad_scale": "grad_scale",
               "train_loss_step": "loss", "loss_step": "loss"}  # Lightning's on_step value
VAL_NAMES = ("val_loss", "eval_loss", "valid_loss", "validation_loss", "val_lm_loss", "eval_val_loss",
             "val_loss_epoch")
# Lightning's on_epoch summaries: the mean over the epoch, logged once at its last step
EPOCH_SUMMARY_NAMES = ("train_loss_epoch", "loss_epoch")
VAL_SE_NAMES = ("val_loss_se", "eval_val_loss_se")
TRAIN_SE_NAMES = ("train_loss_se",)


def normalise(name):
    name = name.split(" - ", 1)[-1] if " - " in name else name  # '<run name> - train/loss'
    return re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_") or "_"


def looks_like_csv(head_line):
    cells = [normalise(c) for c in next(csv.reader([head_line]), [])]
    return (len(cells) >= 2 and any(c in STEP_NAMES for c in cells)
            and any("loss" in c for c in cells))


def parse_csv(path, text):
    table = list(csv.reader(io.StringIO(text)))
    if len(table) < 2:
        raise UserError(f"{path} has a CSV header but no rows; export the run's history again from wandb")
    header, rows = table[0], [r for r in table[1:] if r]
    names = [normalise(h) for h in header]
    notes = []
    keep = {}  # normalised name -> column index, first run only, no __MIN/__MAX
    runs = []
    for i, (raw, n) in enumerate(zip(header, names)):
        if raw.endswith("__MIN") or raw.endswith("__MAX"):
            continue
        if " - " in raw:
            run_name = raw.split(" - ", 1)[0]
            if run_name not in runs:
                runs.append(run_name)
            if run_name != runs[0]:
                continue
        keep.setdefault(n, i)
    if len(runs) > 1:
        notes.append(f"the CSV holds {len(runs)} runs; read '{runs[0]}' only (export one run, or pass each)")
    step_name = next((s for s in STEP_NAMES if s in keep), None)
    if step_name is None:
        raise UserError(f"{path}: no step column (one of {', '.join(STEP_NAMES)}); export the run's history from wandb")
    width = len(header)
    rows = [r + [""] * (width - len(r)) if len(r) < width else r for r in rows]

    def col(name):
        return _float_column([r[keep[name]] for r in rows])

    it = col(step_name)
    train_cols = {"iter": it}
    for n, c in TRAIN_NAMES.items():
        if n in keep and c not in train_cols:
            train_cols[c] = col(n)
    val_name = next((n for n in VAL_NAMES if n in keep), None)
    val = col(val_name) if val_name else np.full(len(it), np.nan)
    # a written 'nan' is an eval that diverged (keep it); an empty cell is a row without an eval
    has_val = np.array([r[keep[val_name]].strip() != "" for r in rows]) if val_name else np.isfinite(val)
    loss = train_cols.get("loss", np.full(len(it), np.nan))
    has_loss = np.isfinite(loss)

    train, evals = Rows("train", tuple(train_cols)), Rows("eval", ("iter", "train_loss", "val_loss",
                                                                     "val_loss_se", "train_loss_se"))
    val_se = col(next(n for n in VAL_SE_NAMES if n in keep)) if any(n in keep for n in VAL_SE_NAMES) else None
    train_se = col("train_loss_se") if "train_loss_se" in keep else None
    nan = np.full(len(it), np.nan)
    # nanoGPT logs train/loss only with val/loss (both from estimate_loss): then both are eval
    eval_train = has_val.any() and has_loss.any() and not (has_loss & ~has_val).any()
    if eval_train:
        notes.append("the train loss is logged only with the val loss: read both as eval estimates")
        sel = has_val | has_loss
        evals.data = list(zip(it[sel], loss[sel], val[sel], (val_se if val_se is not None else nan)[sel],
                              (train_se if train_se is not None else nan)[sel]))
        others = {c: v for c, v in train_cols.items() if c not in ("loss",)}
        lr_like = [c for c in others if c != "iter"]
        if lr_like:  # lr, mfu, ... still make a train series (without loss)
            sel = np.zeros(len(it), bool)
            for c in lr_like:
                sel |= np.isfinite(others[c])
            train = Rows("train", tuple(others))
            train.data = list(zip(*[others[c][sel] for c in others]))
    else:
        sel = np.zeros(len(it), bool)
        for c, v in train_cols.items():
            if c not in ("iter", "epoch"):  # an epoch alone is on every row (val and summaries too)
                sel |= np.isfinite(v)
        train.data = list(zip(*[train_cols[c][sel] for c in train_cols]))
        eval_train_loss = col("train_loss_eval") if "train_loss_eval" in keep else nan  # this repo's train.py
        evals.data = list(zip(it[has_val], eval_train_loss[has_val], val[has_val],
                              (val_se if val_se is not None else nan)[has_val], nan[has_val],
                              train_cols.get("epoch", nan)[has_val]))
        evals.columns += ("epoch",)
    if "mfu" in train_cols:  # nanoGPT logs mfu in percent
        m = train_cols["mfu"]
        if np.nanmax(np.r_[m, 0]) > 1.5:
            train.scale["mfu"] = 0.01
    if not train.data and not evals.data:
        raise UserError(f"{path}: the CSV has no loss values; export a run history with train/loss or val/loss")
    lightning = "epoch" in keep and "step" in keep and "_step" not in keep
    fmt = "lightning-csv" if lightning else "wandb-csv"
    run = finish_run(str(path), fmt, [r for r in (train, evals) if r.data], ordered=False)
    run.train_loss_kind, kind_note = _train_loss_kind(keep, lightning)
    run.notes.insert(0, f"{'Lightning' if lightning else 'wandb'} CSV: step from '{header[keep[step_name]]}'"
                        + (f", val loss from '{header[keep[val_name]]}'" if val_name else ""))
    summary = next((n for n in EPOCH_SUMMARY_NAMES if n in keep), None)
    if summary:
        n = int(np.isfinite(col(summary)).sum())
        notes.append(f"{n} epoch-summary row(s) ('{header[keep[summary]]}', the epoch's mean) not read as train steps")
    if kind_note:
        notes.append(kind_note)
    run.notes.extend(notes)
    return run


def _train_loss_kind(keep, lightning):
    """(what one train-loss value averages over, a note saying why) for these columns."""
    if "train_loss_eval" in keep:  # this repo's train.py: the mean over the iteration's micro-batches
        return "iteration_mean", None
    if lightning and any(n in keep for n in ("train_loss_step", "loss_step", "train_loss", "loss")):
        return "iteration_mean", ("Lightning logs the step's batch loss: the iteration's loss under the default "
                                  "accumulate_grad_batches=1")
    return "unknown", None
