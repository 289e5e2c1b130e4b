"""
The real loss curves the forecast bench backtests on, each with the LR of every step and its size.

- ../shared/curves/<size>/*.csv: the Multi-Power-Law curves (25M and 100M, columns step,lr,loss).
- ../shared/logs: the healthy full-length logs whose LR path is known, read with diagnose's own
  parser. Where the log prints the LR it is used as printed; where it does not, the schedule
  comes from the source's code as ../shared/logs/README.md (and the log's header) states it.
  The model sizes are the README's. The truth is the last val loss in the log.
- tests/fixtures/zoo: the healthy runs of our train.py that ran their whole schedule (bench/zoo),
  0.1M-0.4M parameters, 400 steps on CPU: far smaller and earlier in training than the runs the
  forecast is for, so the bench reports them apart and does not calibrate on them.
"""
import glob
import gzip
import json
import os
from dataclasses import dataclass

import numpy as np

from diagnose.parse import load_run
from diagnose.parse_jsonl import parse_jsonl
from facts import lr_from_config

CURVE_WARMUP = 2160   # the MPL curves' warmup steps (not in the files; ../shared/curves/README.md)


@dataclass
class Case:
    name: str
    size: str          # model-size group the held-out checks leave out together
    params: float      # parameters (README facts)
    iters: np.ndarray  # points to fit: val loss (logs) or loss (curves)
    losses: np.ndarray
    lr: np.ndarray     # LR at every step 0..end
    end: int           # the iteration whose loss is predicted
    true: float


def _warmup_then(steps, lrs, warmup):
    end = int(steps[-1])
    s = np.arange(end + 1)
    lr = np.interp(s, steps, lrs)
    warm = s < warmup
    lr[warm] = lrs[0] * (s[warm] + 1) / (warmup + 1)
    return lr


def curve_cases(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*", "*.csv"))):
        d = np.genfromtxt(path, delimiter=",", names=True)
        steps, lrs, loss = d["step"].astype(int), d["lr"].astype(float), d["loss"].astype(float)
        size = os.path.basename(os.path.dirname(path))
        out.append(Case(f"{size}/{os.path.basename(path)}", f"{size}M", float(size) * 1e6,
                        steps, loss, _warmup_then(steps, lrs, CURVE_WARMUP), int(steps[-1]), float(loss[-1])))
    return out


def _cosine(n, peak, floor, warmup):
    s = np.arange(n + 1, dtype=float)
    p = np.clip((s - warmup) / max(1, n - warmup), 0, 1)
    lr = floor + 0.5 * (peak - floor) * (1 + np.cos(np.pi * p))
    return np.where(s < warmup, peak * (s + 1) / warmup, lr)


def _const_then_linear(n, peak, warmdown):
    s = np.arange(n + 1, dtype=float)
    return peak * np.clip((n - s) / warmdown, 0, 1)


# file -> (size group, parameters, LR schedule: "logged" or a function of the last step)
LOGS = {
    "logbob0401__build-nanogpt__gpt2-124M-fineweb-edu-10B-oct26.txt":
        ("124M", 124e6, lambda n: _cosine(n, 6e-4, 6e-5, 715)),       # train_gpt2.py: warmup 715, cosine to max/10
    "KellerJordan__modded-nanogpt__llmc-gpt2-124M-main-log.txt": ("124M", 124e6, "logged"),
    "KellerJordan__modded-nanogpt__muon-record-2024-10-10.txt":
        ("124M", 124e6, lambda n: _const_then_linear(n, 0.0036, 1800)),  # warmup 0, warmdown 1800 (its header)
    "tnguyen21__camelid__925M-8ksteps.txt": ("925M", 925e6, "logged"),
}


# A log cut before its end whose source gives the final value: file -> (size, parameters, schedule,
# last step, final val bpb). nanochat d20: lrm 1.0 then a linear warmdown to 0 over the last 20%
# (base_train's warmdown_ratio 0.2, final_lr_frac 0); the full log's val bpb at step 21400 is
# 0.8155 (README). Its val is in bits per byte: the case is scaled to nats by the log's own ratio
# of train loss (nats) to val bpb over its last evals, so that its errors read in nats like the rest.
CUT_LOGS = {
    "chirag9127__nanochat__d20-base-train-4gpu-to-step-15750.txt":
        ("561M", 561e6, lambda n: _const_then_linear(n, 1.0, 0.2 * n), 21400, 0.8155),
}


def _finite_evals(path, column):
    """(run, iterations, values) of a log's finite evals after iteration 0, or (None, None, None)
    where the log is not there."""
    if not os.path.exists(path):
        return None, None, None
    run = load_run(path)
    it, v = run.eval["iter"], run.eval[column]
    ok = np.isfinite(v) & (it > 0)
    return run, it[ok].astype(int), v[ok]


def _bpb_cases(folder):
    out = []
    for name, (size, params, sched, end, final_bpb) in CUT_LOGS.items():
        run, it, bpb = _finite_evals(os.path.join(folder, name), "val_bpb")
        if run is None:
            continue
        t, loss = run.train["iter"], run.train["loss"]
        train_at = np.interp(it[-5:], t[np.isfinite(loss)], loss[np.isfinite(loss)])
        nats_per_bpb = float(np.median(train_at / bpb[-5:]))
        out.append(Case(name.split("__")[1] + "/d20-561M (val bpb as nats)", size, params,
                        it, bpb * nats_per_bpb, sched(end), end, final_bpb * nats_per_bpb))
    return out


def log_cases(folder):
    out = []
    for name, (size, params, sched) in LOGS.items():
        run, it, v = _finite_evals(os.path.join(folder, name), "val_loss")
        if run is None:
            continue
        end = int(it[-1])
        if sched == "logged":
            t, lr = run.train["iter"], run.train["lr"]
            k = np.isfinite(lr)
            lr_all = _warmup_then(np.r_[t[k], end].astype(int), np.r_[lr[k], lr[k][-1]], int(t[k][0]))
            lr_all[: int(t[k][0])] = lr[k][0] * (np.arange(int(t[k][0])) + 1) / (t[k][0] + 1)
        else:
            lr_all = sched(end)
        out.append(Case(name.split("__")[1] + "/" + name.split("__")[2][:-4], size, params,
                        it, v, lr_all[: end + 1], end, float(v[-1])))
    return out + _bpb_cases(folder)


def zoo_cases(folder, min_evals=12):
    """The zoo's healthy runs whose evals reach the planned max_iters (the truth is known)."""
    path = os.path.join(folder, "labels.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        runs = json.load(f)["runs"]
    out = []
    for name, lab in sorted(runs.items()):
        log = os.path.join(folder, name, "metrics.jsonl.gz")
        if lab["verdict"] != "healthy" or not os.path.exists(log):
            continue
        with gzip.open(log) as f:
            run = parse_jsonl(log, f.read())
        it, v = run.eval["iter"], run.eval["val_loss"]
        ok = np.isfinite(v) & (it > 0)
        it, v = it[ok].astype(int), v[ok]
        c = run.config
        if len(it) < min_evals or int(it[-1]) != int(c["max_iters"]):
            continue
        lr = np.array([lr_from_config(i, c) for i in range(int(it[-1]) + 1)])
        p = run.model["params"]
        out.append(Case(f"zoo/{name}", f"{p / 1e6:.1f}M", float(p), it, v, lr, int(it[-1]), float(v[-1])))
    return out


def all_cases(curves_dir, logs_dir):
    return curve_cases(curves_dir) + log_cases(logs_dir)
