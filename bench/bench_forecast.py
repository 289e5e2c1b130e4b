"""
Backtest the schedule-aware forecast on real loss curves (../shared/curves, see its README):
fit on the first half of each curve, with the whole LR schedule known (as it is from a
config), predict the final loss, and compare.

    python bench/bench_forecast.py [CURVES_DIR] [--frac 0.5]
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def main():
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "curves")
    ap = argparse.ArgumentParser()
    ap.add_argument("curves", nargs="?", default=default)
    ap.add_argument("--frac", type=float, default=0.5)
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.curves, "*", "*.csv")))
    if not paths:
        sys.exit(f"error: no curves under {args.curves}; pass the folder with 25/ and 100/ of CSV files")
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


if __name__ == "__main__":
    main()
