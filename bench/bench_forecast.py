"""
Backtest the schedule-aware forecast on real loss curves: fit on the first 1/4, 1/2 and 3/4 of
each curve, with the whole LR schedule known (as it is from a config), predict the final loss,
and compare. The curves (bench/forecast_cases.py): ../shared/curves (25M and 100M models) and
the healthy full-length logs of ../shared/logs whose LR path is known (124M x3, 925M).

    python bench/bench_forecast.py [--curves DIR] [--logs DIR] [--frac 0.5] [--holdout] [--calibrate]

default: every curve at --frac with the shipped calibration (forecast.CALIBRATION), then the
    coverage and median width of the 80% interval per fraction.
--holdout: leave one model size out: the annealing prior and the interval factor are calibrated
    on the other sizes' backtests only, then the held-out size is forecast with them; per size
    and fraction: mean |error|, coverage, median width. This is the honest accuracy on a model
    size the forecast was not fitted on.
--calibrate: the calibration from every size (what forecast.CALIBRATION should hold).
"""
import argparse
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from diagnose.forecast import CALIBRATION, Calibration, forecast  # noqa: E402
from forecast_cases import all_cases, zoo_cases  # noqa: E402

FRACS = (0.25, 0.5, 0.75)
PRIOR_GRID = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
COVER = 0.8


def backtest(case, frac=0.5, calibration=CALIBRATION):
    """Forecast case's final loss from the part of its curve up to frac of its length."""
    cut = case.iters[0] + frac * (case.end - case.iters[0])
    seen = case.iters <= cut
    f = forecast(case.iters[seen], case.losses[seen], case.lr, case.end, calibration=calibration)
    if f is None:
        return None
    return {"curve": case.name, "size": case.size, "frac": frac, "predicted": f["predicted"],
            "true": case.true, "error": f["predicted"] - case.true, "lo80": f["lo80"], "hi80": f["hi80"],
            "covered": f["lo80"] <= case.true <= f["hi80"], "decay_seen": f["decay_seen"],
            "spread": f["spread"], "horizon": f["horizon"]}


def conformal_scale(rows):
    """The finite-sample 80% quantile of |error| / spread: the interval factor that covers."""
    r = np.sort([abs(x["error"]) / max(x["spread"], 1e-9) for x in rows])
    k = min(len(r), math.ceil((len(r) + 1) * COVER))
    return float(r[k - 1])


def prior_response(case, frac):
    """With no decay seen the forecast is linear in the anneal prior: (its error at prior 0, its
    fall per unit prior); None where a decay was seen or the schedule has no decay to come."""
    zero, one = (backtest(case, frac, Calibration(anneal_prior=p)) for p in (1e-9, 1.0))
    fall = zero["predicted"] - one["predicted"]
    return None if zero["decay_seen"] or fall < 1e-9 else (zero["error"], fall)


def knots(rows, fracs):
    """(median horizon, conformal factor) at each fraction."""
    out = []
    for fr in fracs:
        at = [r for r in rows if r["frac"] == fr]
        if at:
            out.append((round(float(np.median([r["horizon"] for r in at])), 3), round(conformal_scale(at), 3)))
    return tuple(out) or ((1.0, 1.0),)


def calibrate(cases, fracs=FRACS):
    """Calibration from these cases: the prior with the least mean |error| over the backtests that
    saw no decay yet, then the conformal interval factor at each fraction's median horizon."""
    resp = [r for c in cases for fr in fracs for r in [prior_response(c, fr)] if r is not None]
    prior = min(PRIOR_GRID, key=lambda p: np.mean([abs(e0 - p * fall) for e0, fall in resp]) if resp else 0.0)
    unit = Calibration(anneal_prior=prior, interval_scale=((1.0, 1.0),))
    rows = [backtest(c, fr, unit) for c in cases for fr in fracs]
    return Calibration(anneal_prior=prior, interval_scale=knots(rows, fracs))


def summary(rows):
    err = np.array([abs(r["error"]) for r in rows])
    width = np.array([r["hi80"] - r["lo80"] for r in rows])
    return (f"n {len(rows):2d}  mean |error| {err.mean():.4f}  max {err.max():.4f}  "
            f"80% coverage {np.mean([r['covered'] for r in rows]):4.0%}  median width {np.median(width):.3f}")


def print_rows(rows):
    print(f"{'curve':<48} {'pred':>7} {'true':>7} {'err':>7} {'80% interval':>17} cov decay-seen")
    for r in rows:
        print(f"{r['curve']:<48} {r['predicted']:7.4f} {r['true']:7.4f} {r['error']:+7.4f} "
              f"[{r['lo80']:6.3f}, {r['hi80']:6.3f}] {'yes' if r['covered'] else 'NO ':>3} "
              f"{'yes' if r['decay_seen'] else 'no'}")


def holdout(cases):
    """Leave one model size out: calibrate on the rest, forecast the size left out."""
    sizes = sorted({c.size for c in cases}, key=lambda s: float(s[:-1]))
    rows = []
    for size in sizes:
        cal = calibrate([c for c in cases if c.size != size])
        print(f"size {size} held out: calibrated on the others: {cal}")
        rows += [backtest(c, fr, cal) for c in cases if c.size == size for fr in FRACS]
    print()
    for size in sizes:
        for fr in FRACS:
            sel = [r for r in rows if r["size"] == size and r["frac"] == fr]
            print(f"  held-out {size:>5} at {fr:4}: {summary(sel)}")
    for fr in FRACS:
        print(f"  all held-out at {fr:4}: {summary([r for r in rows if r['frac'] == fr])}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--curves", default=os.path.join(ROOT, "..", "shared", "curves"))
    ap.add_argument("--logs", default=os.path.join(ROOT, "..", "shared", "logs"))
    ap.add_argument("--zoo", default=os.path.join(ROOT, "tests", "fixtures", "zoo"))
    ap.add_argument("--frac", type=float, default=0.5)
    ap.add_argument("--holdout", action="store_true", help="leave one model size out (calibrate on the rest)")
    ap.add_argument("--calibrate", action="store_true", help="print the calibration from every size")
    args = ap.parse_args()
    cases = all_cases(args.curves, args.logs)
    if not cases:
        sys.exit(f"error: no curves under {args.curves} and no known logs under {args.logs}; "
                 "pass --curves with the folder of 25/ and 100/ CSV files")
    if args.holdout:
        return holdout(cases)
    if args.calibrate:
        print(calibrate(cases))
        return
    t0 = time.time()
    rows = [backtest(c, args.frac) for c in cases]
    dt = time.time() - t0
    print(f"calibration: {CALIBRATION}; fit on the first {args.frac:g} of each curve")
    print_rows(rows)
    print(f"{summary(rows)}; {dt / len(rows) * 1000:.0f} ms per curve")
    for fr in FRACS:
        print(f"  at {fr:4}: {summary([backtest(c, fr) for c in cases])}")
    zoo_report(zoo_cases(args.zoo))


def errors_text(rows):
    return ", ".join(f"{r['curve'].split('/')[-1]} {r['error']:+.3f}" for r in rows)


def zoo_report(zoo):
    """The zoo's tiny runs, apart: outside the sizes the calibration is for."""
    if not zoo:
        return
    print(f"\nzoo (our train.py, {', '.join(sorted({c.size for c in zoo}))} params, a few hundred CPU steps; "
          "not calibrated on):")
    for fr in FRACS:
        rows = [r for r in (backtest(c, fr) for c in zoo) if r is not None]
        if rows:
            print(f"  at {fr:4}: {summary(rows)}  ({errors_text(rows)})")
        else:
            print(f"  at {fr:4}: too few evals to fit")


if __name__ == "__main__":
    main()
