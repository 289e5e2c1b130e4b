"""
Backtest the schedule-aware forecast on real loss curves (../shared/curves, see its README):
fit on the first half of each curve, with the whole LR schedule known (as it is from a
config), predict the final loss, and compare.

    python bench/bench_forecast.py [CURVES_DIR] [--frac 0.5] [--calibrate-on 25]

--calibrate-on SIZE: the held-out check. The annealing prior (forecast.ANNEAL_PRIOR, what a decay
not yet seen will buy) is chosen on the curves of one model size only (the value with the least
mean |error| over its no-decay-yet backtests at a quarter and a half), then every curve is
backtested with it: the other size's rows are a model size the prior was not fitted on.
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diagnose import forecast as forecast_module  # noqa: E402
from diagnose.forecast import forecast  # noqa: E402

WARMUP = 2160  # the curves' warmup steps (not in the files; README)


def load_curve(path):
    d = np.genfromtxt(path, delimiter=",", names=True)
    return d["step"].astype(int), d["lr"].astype(float), d["loss"].astype(float)


def schedule(steps, lrs):
    """LR at every step 0..last: linear warmup to the first logged LR, then the logged LRs interpolated."""
    end = int(steps[-1])
    s = np.arange(end + 1)
    lr = np.interp(s, steps, lrs)
    warm = s < WARMUP
    lr[warm] = lrs[0] * (s[warm] + 1) / (WARMUP + 1)
    return lr


def backtest(path, frac=0.5):
    steps, lrs, loss = load_curve(path)
    lr = schedule(steps, lrs)
    cut = steps[0] + frac * (steps[-1] - steps[0])
    seen = steps <= cut
    f = forecast(steps[seen], loss[seen], lr, int(steps[-1]))
    true = float(loss[-1])
    return {"curve": os.path.relpath(path, os.path.dirname(os.path.dirname(path))),
            "predicted": f["predicted"], "true": true, "error": f["predicted"] - true,
            "lo80": f["lo80"], "hi80": f["hi80"], "covered": f["lo80"] <= true <= f["hi80"],
            "decay_seen": f["decay_seen"]}


PRIOR_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)


def calibrate_prior(paths):
    """The ANNEAL_PRIOR with the least mean |error| over these curves' no-decay-yet backtests."""
    best = None
    for prior in PRIOR_GRID:
        forecast_module.ANNEAL_PRIOR = prior
        rows = [r for p in paths for r in (backtest(p, 0.25), backtest(p, 0.5)) if not r["decay_seen"]]
        err = float(np.mean([abs(r["error"]) for r in rows])) if rows else float("inf")
        if best is None or err < best[1]:
            best = (prior, err)
    forecast_module.ANNEAL_PRIOR = best[0]
    return best


def by_size(rows):
    """Mean |error| and coverage per model-size folder."""
    out = {}
    for r in rows:
        out.setdefault(r["curve"].split(os.sep)[0], []).append(r)
    return {k: (float(np.mean([abs(r["error"]) for r in v])), float(np.mean([r["covered"] for r in v])), len(v))
            for k, v in sorted(out.items())}


def main():
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "curves")
    ap = argparse.ArgumentParser()
    ap.add_argument("curves", nargs="?", default=default)
    ap.add_argument("--frac", type=float, default=0.5)
    ap.add_argument("--calibrate-on", metavar="SIZE", help="choose the annealing prior on this size's curves only")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.curves, "*", "*.csv")))
    if not paths:
        sys.exit(f"error: no curves under {args.curves}; pass the folder with 25/ and 100/ of CSV files")
    if args.calibrate_on:
        fit_on = [p for p in paths if os.path.basename(os.path.dirname(p)) == args.calibrate_on]
        if not fit_on:
            sys.exit(f"error: no curves of size {args.calibrate_on!r} under {args.curves}; pass a folder name there")
        prior, err = calibrate_prior(fit_on)
        print(f"annealing prior chosen on size {args.calibrate_on} only: {prior} (mean |error| {err:.4f} there)")
    t0 = time.time()
    rows = [backtest(p, args.frac) for p in paths]
    dt = time.time() - t0
    print(f"{'curve':<28} {'pred':>7} {'true':>7} {'err':>7} {'80% interval':>17} cov decay-seen")
    for r in rows:
        print(f"{r['curve']:<28} {r['predicted']:7.4f} {r['true']:7.4f} {r['error']:+7.4f} "
              f"[{r['lo80']:6.3f}, {r['hi80']:6.3f}] {'yes' if r['covered'] else 'NO ':>3} "
              f"{'yes' if r['decay_seen'] else 'no'}")
    err = np.array([abs(r["error"]) for r in rows])
    cov = np.mean([r["covered"] for r in rows])
    width = np.mean([r["hi80"] - r["lo80"] for r in rows])
    print(f"mean |error| {err.mean():.4f} nats, max {err.max():.4f}; 80% interval coverage "
          f"{cov:.0%} ({sum(r['covered'] for r in rows)}/{len(rows)}), mean width {width:.3f}; "
          f"{dt / len(rows) * 1000:.0f} ms per curve")
    for size, (e, c, n) in by_size(rows).items():
        print(f"  size {size}: mean |error| {e:.4f} nats, 80% coverage {c:.0%} ({n} curves)")


if __name__ == "__main__":
    main()
