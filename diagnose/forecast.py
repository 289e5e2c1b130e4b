"""
Schedule-aware forecast of the loss at the planned end of a run.

The fit is the LR-annealing scaling law of Tissue et al. (2024):
    L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)
    S1 = sum of lr up to s (the forward area, in peak-LR steps),
    S2 = sum of m_i, m_i = lam * m_(i-1) + (lr_(i-1) - lr_i)  (the momentum-decayed annealing area).
For a fixed (alpha, lam) the law is linear in (L0, A, C), so a grid over alpha and lam with
non-negative least squares finds the best fit exactly; no optimizer to start or tune.

The fit backtests itself: refitted on the first part of what it has seen, it predicts the
rest; that error, scaled to the real horizon, is one part of the interval's spread (with the
fit noise, the eval SE, the prior's uncertainty and the law's model error). A prefix with no
LR decay in it cannot measure C (what annealing will buy); then C comes from a prior and the
interval says so by its width. The prior and the factor that turns the spread into an 80%
interval are both calibrated on real curves with one model size held out at a time
(bench/bench_forecast.py --calibrate); the interval is a conformal one: the factor is the
finite-sample 80% quantile of |error| / spread over the calibration backtests.

Known limits (measured in bench_forecast.py): once a cosine decay has begun, the half curve
cannot tell a short momentum memory (lam 0.99-0.995) from a long one (0.999+): the grid picks the
short one and under-predicts the rest of the decay by ~0.01-0.02 nats on the MPL cosines, while a
longer lam over-predicts the 124M cosines by ~0.04, so the grid is kept. After a large step drop
(wsdcon_3) the S2 term itself, fitted on the whole curve, falls short: that is the law's form.
"""
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from diagnose.noise import finite_series

LAMBDAS = (0.99, 0.995, 0.999)
ALPHAS = np.geomspace(0.03, 3.0, 48)
MAX_POINTS = 300          # the fit bins longer curves down to this many points
LAMBDA_PRIOR = 0.995
MODEL_ERROR = 0.1         # relative error of the law on the change it extrapolates
ANNEAL_PRIOR_SPREAD = 0.5  # the prior's relative uncertainty


@dataclass(frozen=True)
class Calibration:
    """The two numbers calibrated on real curves (bench/bench_forecast.py --calibrate).

    anneal_prior: with no decay seen, annealing from the peak LR all the way down buys this
    fraction of the loss the power-law term still had to lose at the end of the prefix.
    interval_scale: the 80% interval is +- scale x the spread (the root sum of squares of the
    error sources); the scale is the conformal 80% quantile of |error| / spread on real
    backtests, measured separately at a few horizons (how far past the data, in units of the
    span seen), as (horizon, scale) knots: the error sources do not grow with the horizon in
    the proportion the spread assumes. Between knots the scale is interpolated in log horizon."""
    anneal_prior: float = 0.35
    interval_scale: tuple = ((0.377, 1.172), (1.137, 1.161), (3.459, 0.531))

    def scale_at(self, horizon):
        h, k = zip(*sorted(self.interval_scale))
        return np.interp(np.log(np.maximum(horizon, 1e-3)), np.log(h), k)


# from `python bench/bench_forecast.py --calibrate` (every size); --holdout shows it per held-out size
CALIBRATION = Calibration()


def lr_per_step(lr_at, end):
    """The LR at every step 0..end (inclusive) from a function of the step."""
    return np.array([lr_at(i) for i in range(int(end) + 1)], dtype=float)


def areas(lr, lam):
    """S1 (forward area) and S2 (annealing area) at every step, LR in units of its peak."""
    from scipy.signal import lfilter
    peak = float(np.max(lr)) if len(lr) else 0.0
    eta = lr / peak if peak > 0 else np.zeros_like(lr)
    s1 = np.cumsum(eta)
    drop = np.maximum(0.0, np.r_[0.0, eta[:-1] - eta[1:]])  # warmup (rising LR) is not annealing
    m = lfilter([1.0], [1.0, -lam], drop)
    s2 = np.cumsum(m)
    return s1, s2


def _bin(x, y, n):
    if len(x) <= n:
        return x, y
    edges = np.linspace(x[0], x[-1] + 1e-9, n + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n - 1)
    cnt = np.bincount(idx, minlength=n)
    keep = cnt > 0
    bx = np.bincount(idx, weights=x, minlength=n)[keep] / cnt[keep]
    by = np.bincount(idx, weights=y, minlength=n)[keep] / cnt[keep]
    return bx, by


class Law:
    """A fitted L(s) = L0 + A*S1^-alpha - C*S2 over a known LR schedule."""

    def __init__(self, L0, A, alpha, C, lam, sigma, c_from_prior=False, calibration=CALIBRATION):
        self.L0, self.A, self.alpha, self.C, self.lam = L0, A, alpha, C, lam
        self.sigma = sigma
        self.c_from_prior = c_from_prior
        self.calibration = calibration

    def predict(self, iters, lr):
        s1, s2 = areas(lr, self.lam)
        idx = np.clip(np.asarray(iters, dtype=int), 0, len(lr) - 1)
        s1 = np.maximum(s1[idx], 1e-9)
        return self.L0 + self.A * s1 ** (-self.alpha) - self.C * s2[idx]

    def params(self):
        return {"L0": self.L0, "A": self.A, "alpha": self.alpha, "C": self.C, "lam": self.lam}


def fit_law(iters, losses, lr, anneal_seen=True, calibration=CALIBRATION):
    """Best (alpha, lam) on the grid, (L0, A, C) by non-negative least squares.

    With annealing seen, C is measured, with the prior as one extra weak row, so that a
    decay seen over only a few points cannot run away; without, C is the prior."""
    x, y = _bin(np.asarray(iters, float), np.asarray(losses, float), MAX_POINTS)
    idx = np.clip(x.astype(int), 0, len(lr) - 1)
    prior = calibration.anneal_prior
    base = _grid_fit(x, y, idx, lr, (LAMBDA_PRIOR,), None)
    if anneal_seen:
        still = base[1] * max(areas(lr, LAMBDA_PRIOR)[0][idx[-1]], 1e-9) ** (-base[2])
        sigma0 = max(_noise(y), base[5] / math.sqrt(max(1, len(y) - 3)), 1e-4)
        # the momentum time scale needs several points after the decay began to be measured
        peak = float(np.max(lr[: idx[-1] + 1]))
        after = int(np.sum(lr[idx] < 0.9 * peak))
        lams = LAMBDAS if after >= 5 else (LAMBDA_PRIOR,)
        best = _grid_fit(x, y, idx, lr, lams, (sigma0, max(still, 1e-3), prior))
        L0, A, alpha, C, lam, rnorm = best
    else:
        L0, A, alpha, C, lam, rnorm = base
    dof = max(1, len(y) - (4 if anneal_seen else 3))
    law = Law(L0, A, alpha, C, lam, float(rnorm / math.sqrt(dof)), calibration=calibration)
    if not anneal_seen:
        _set_anneal_prior(law, x[-1], lr, prior)
    return law


def _noise(y):
    d2 = np.diff(y, 2)
    if len(d2) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def _grid_fit(x, y, idx, lr, lams, prior):
    """Grid over (lam, alpha); prior = (sigma0, still, anneal_prior) adds the annealing prior row."""
    best = None
    for lam in lams:
        s1, s2 = areas(lr, lam)
        a1 = np.maximum(s1[idx], 1e-9)
        full = 1.0 / (1.0 - lam)
        s_last = a1[-1]
        for alpha in ALPHAS:
            p = a1 ** (-alpha)
            if prior is None:
                X = np.stack([np.ones_like(a1), p], axis=1)
                coef, rnorm = nnls(X, y)
                cand = (float(coef[0]), float(coef[1]), float(alpha), 0.0, lam, rnorm, rnorm)
            else:
                sigma0, still, anneal = prior
                w = sigma0 / (ANNEAL_PRIOR_SPREAD * anneal * still)
                X = np.stack([np.ones_like(a1), p, -s2[idx]], axis=1)
                row = np.array([[0.0, -w * anneal * s_last ** (-alpha), w * full]])
                coef, total = nnls(np.vstack([X, row]), np.r_[y, 0.0])
                rnorm = float(np.linalg.norm(X @ coef - y))
                cand = (float(coef[0]), float(coef[1]), float(alpha), float(coef[2]), lam, rnorm, total)
            if best is None or cand[-1] < best[-1]:
                best = cand
    return best[:6]


def _set_anneal_prior(law, last_iter, lr, anneal):
    """C such that a full anneal buys `anneal` x the power-law loss still to lose."""
    s1, s2 = areas(lr, law.lam)
    full = 1.0 / (1.0 - law.lam)     # S2 growth per step once a full drop has passed its momentum
    still = law.A * max(s1[int(min(last_iter, len(lr) - 1))], 1e-9) ** (-law.alpha)
    law.C = anneal * still / full
    law.c_from_prior = True


def decay_seen(lr, upto, start):
    """Has the LR fallen below 90% of its peak anywhere in [start, upto]?"""
    seg = lr[int(start):int(upto) + 1]
    return len(seg) > 0 and float(np.min(seg)) < 0.9 * float(np.max(lr[:int(upto) + 1]))


def forecast(iters, losses, lr, end_iter, se=0.0, fit_from=None, calibration=CALIBRATION):
    """Predict the loss at end_iter from (iters, losses) and the LR of every step 0..end_iter.

    Returns a dict: predicted, lo80, hi80, curve {iter, mid, lo, hi}, law parameters,
    backtest error, whether annealing was seen, and a note; or None with too few points."""
    it, y = finite_series(iters, losses)
    lr = np.asarray(lr, dtype=float)
    end_iter = int(min(end_iter, len(lr) - 1))
    if fit_from is None:
        fit_from = _default_start(it, lr)
    keep = (it >= fit_from) & (it <= end_iter)
    it, y = it[keep], y[keep]
    if len(it) < 6:
        return None
    seen = decay_seen(lr, it[-1], fit_from)
    law = fit_law(it, y, lr, anneal_seen=seen, calibration=calibration)

    # backtest on its own prefix: fit on the first part, predict the last point seen
    errs = []
    for frac in (0.5, 0.7):
        cut = it[0] + frac * (it[-1] - it[0])
        m = it <= cut
        if m.sum() >= 6:
            sub = fit_law(it[m], y[m], lr, anneal_seen=decay_seen(lr, it[m][-1], fit_from),
                          calibration=calibration)
            tail = it > cut
            pred = sub.predict(it[tail], lr)
            # error at the far end of the backtest, per unit of horizon (fraction of the seen span)
            h_bt = (it[-1] - cut) / max(1.0, it[-1] - it[0])
            err_end = float(np.mean(np.abs(pred[-max(1, tail.sum() // 5):] - y[tail][-max(1, tail.sum() // 5):])))
            errs.append(err_end / max(h_bt, 1e-6))
    err_per_span = float(np.sqrt(np.mean(np.square(errs)))) if errs else 0.0

    grid = np.unique(np.linspace(it[0], end_iter, 200).astype(int))
    mid = law.predict(grid, lr)
    horizon = np.maximum(0.0, (grid - it[-1]) / max(1.0, it[-1] - it[0]))
    bt = err_per_span * horizon
    prior = np.zeros_like(mid)
    if law.c_from_prior:
        s1, s2 = areas(lr, law.lam)
        prior = ANNEAL_PRIOR_SPREAD * law.C * s2[grid]
    # a law is a model: its error grows with the change still to be predicted
    model = MODEL_ERROR * np.abs(mid - law.predict([int(it[-1])], lr)[0])
    spread = np.sqrt(law.sigma ** 2 + (se or 0.0) ** 2 + bt ** 2 + prior ** 2 + model ** 2)
    half = calibration.scale_at(horizon) * spread
    predicted = float(mid[-1])
    note = None
    if law.c_from_prior:
        note = ("the LR has not started to decay in the part seen, so what the decay will buy is a "
                "prior, not a measurement: the interval is wide for that reason")
    return {
        "predicted": predicted,
        "lo80": float(mid[-1] - half[-1]),
        "hi80": float(mid[-1] + half[-1]),
        "final_iter": int(end_iter),
        "last_seen_iter": int(it[-1]),
        "first_seen_iter": int(it[0]),
        "fit_from_iter": int(fit_from),
        "se": float(se or 0.0),
        "curve": {"iter": [int(g) for g in grid], "mid": [float(v) for v in mid],
                  "lo": [float(v) for v in mid - half], "hi": [float(v) for v in mid + half]},
        "law": law.params(),
        "fit_sigma": law.sigma,
        "backtest_error_per_span": err_per_span,
        "decay_seen": bool(seen),
        "spread": float(spread[-1]),
        "horizon": float(horizon[-1]),
        "note": note,
        "_law": law,
    }


def _default_start(it, lr):
    """Skip warmup and the fast initial transient the power law does not describe."""
    peak_at = int(np.argmax(lr[: int(it[-1]) + 1])) if len(lr) else 0
    return max(float(peak_at), it[0] + 0.1 * (it[-1] - it[0]))


def predict_with(law, lr, end_iter):
    """The fitted law's loss at end_iter under another LR schedule (a what-if)."""
    return float(law.predict([int(end_iter)], lr)[0])


def what_if(fit, law, lr, end_iter, lr_seen):
    """(predicted, lo80, hi80) of the fitted law at end_iter under another LR schedule `lr`,
    with the interval built as forecast() builds its own: fit noise, eval SE, the backtest error
    scaled by how far past the data it reaches, and the law's model error on the change it
    predicts (measured from the fit at the last point seen under the real schedule `lr_seen`)."""
    end_iter = int(min(end_iter, len(lr) - 1))
    mid = predict_with(law, lr, end_iter)
    last, first = fit["last_seen_iter"], fit["first_seen_iter"]
    horizon = max(0.0, (end_iter - last) / max(1.0, last - first))
    bt = fit["backtest_error_per_span"] * horizon
    prior = ANNEAL_PRIOR_SPREAD * law.C * areas(lr, law.lam)[1][end_iter] if law.c_from_prior else 0.0
    model = MODEL_ERROR * abs(mid - predict_with(law, lr_seen, last))
    half = law.calibration.scale_at(horizon) * math.sqrt(law.sigma ** 2 + fit["se"] ** 2 + bt ** 2 + prior ** 2 + model ** 2)
    return mid, mid - half, mid + half
