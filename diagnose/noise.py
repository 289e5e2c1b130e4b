"""
The noise model under every threshold: how much a logged loss moves by chance.

- train noise: the robust spread (1.4826 * MAD) of the per-step loss around a
  rolling-median trend, so trends, warmup and single outliers do not inflate it;
- eval standard error: the logged *_loss_se, else derived from the train noise and
  eval_iters (by what the format's train loss averages: Run.train_loss_kind), else estimated
  from the eval curve itself; never below what the eval curve's own swings show;
- the smallest change between two evals that the evals can detect, and the
  eval_iters that would make the val curve readable.
"""
import math

import numpy as np
from scipy.ndimage import median_filter

MAD_TO_SIGMA = 1.4826      # sigma of a normal distribution from its median absolute deviation
DETECT_Z = 2.0             # a change between two evals counts when above DETECT_Z * se * sqrt(2)
READABLE_CHANGE = 0.01     # nats: the val curve is readable when a change this small is detectable
MAX_EVAL_ITERS_FACTOR = 10  # advise at most this many times the current eval_iters: evals cost time too


def finite_series(iters, values):
    """(iters, values) as float arrays, sorted by iteration, non-finite values dropped."""
    it = np.asarray(iters, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(it) & np.isfinite(v)
    it, v = it[keep], v[keep]
    order = np.argsort(it, kind="stable")
    return it[order], v[order]


def robust_sigma(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def rolling_trend(values, window):
    """Rolling median: a trend that single-step outliers do not move."""
    window = max(3, int(window) | 1)  # odd
    if len(values) < window:
        window = max(1, len(values) | 1) if len(values) > 2 else 1
    return median_filter(np.asarray(values, dtype=float), size=window, mode="nearest")


def trend_window(n):
    """Points in the rolling window: wide enough to average, narrow enough to follow the curve."""
    return int(min(101, max(5, n // 50))) | 1


def train_noise(iters, losses):
    """Per-logged-step train noise around a rolling trend.

    Returns {'sigma', 'window', 'trend', 'resid', 'iters', 'values', 'memory'} or None with < 8
    points; memory: logged steps one batch stays in a logged value (see memory()).
    sigma is the robust spread over the second half of the run (early training moves
    too fast for any window to follow)."""
    it, v = finite_series(iters, losses)
    if len(v) < 8:
        return None
    w = trend_window(len(v))
    trend = rolling_trend(v, w)
    resid = v - trend
    half = resid[len(resid) // 2:]
    sigma = robust_sigma(half)
    return {"sigma": sigma, "window": w, "trend": trend, "resid": resid, "iters": it, "values": v,
            "memory": memory(resid)}


def memory(resid):
    """Logged steps one batch's loss stays in a logged value: 1 / (1 - rho) for the lag-1
    autocorrelation rho of the residuals (1 for independent steps, ~10 for an EMA with beta 0.9)."""
    r = np.asarray(resid, float)
    r = r[np.isfinite(r)]
    if len(r) < 20:
        return 1.0
    a, b = r[1:] - np.median(r), r[:-1] - np.median(r)
    # robust: a spike's own steps must not make the noise look smooth
    clip = 5 * robust_sigma(r)
    a, b = np.clip(a, -clip, clip), np.clip(b, -clip, clip)
    rho = float(np.sum(a * b) / max(np.sqrt(np.sum(a * a) * np.sum(b * b)), 1e-300))
    return float(min(30.0, 1.0 / (1.0 - max(0.0, min(rho, 0.97)))))


def quantization(values):
    """The rounding step of logged values (0.01 for '1.49'), from their decimals."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0
    for decimals in range(0, 7):
        if np.all(np.abs(v * 10 ** decimals - np.round(v * 10 ** decimals)) < 1e-6):
            return 10.0 ** -decimals
    return 0.0


def curve_sigma(values):
    """Noise of a short, smooth-ish curve (evals) from the curve itself.

    Many points: second differences (a locally linear trend cancels; var = 6 sigma^2).
    Few points: residuals of a cubic in log-iteration index. Floored by rounding."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 5:
        return float("nan")
    tail = v[n // 3:] if n >= 12 else v
    if len(tail) >= 12:
        d2 = np.diff(tail, 2)
        sigma = robust_sigma(d2) / math.sqrt(6.0)
    else:
        x = np.log1p(np.arange(len(tail), dtype=float))
        deg = min(3, len(tail) - 3)
        coef = np.polyfit(x, tail, deg)
        r = tail - np.polyval(coef, x)
        sigma = float(np.sqrt(np.sum(r ** 2) / max(1, len(tail) - deg - 1)))
    q = quantization(v)
    return float(max(sigma, q / math.sqrt(12.0), 1e-4))


# what one logged train loss averages, in micro-batches, by the kind the format logs (Run.train_loss_kind);
# None: the logged value is smoothed over steps (an EMA, a running mean), so its spread is not one batch's
def batches_per_logged_loss(kind, accum):
    if kind == "iteration_mean":
        return accum                     # None when the accumulation is not known
    if kind == "last_microbatch":
        return 1                         # nanoGPT's `loss.item() * accum` only undoes the division
    if kind == "unknown" and accum == 1:
        return 1                         # one micro-batch per iteration: both readings agree
    return None


def sampling_se(run, which="val"):
    """Sampling SE of one eval: logged, else the train noise of one batch over eval_iters batches.
    Returns (se, source) or (nan, None)."""
    col = run.eval.get(f"{which}_loss_se")
    if col is not None and len(col) and np.isfinite(col).any():
        return float(np.nanmedian(col[np.isfinite(col)])), "logged"
    eval_iters = run.config.get("eval_iters")
    accum = getattr(run, "grad_accum", None) or run.config.get("gradient_accumulation_steps")
    batches = batches_per_logged_loss(getattr(run, "train_loss_kind", "unknown"), accum)
    if not (eval_iters and batches):
        return float("nan"), None
    tn = train_noise(run.train["iter"], run.train["loss"]) if len(run.train["loss"]) else None
    if tn and np.isfinite(tn["sigma"]) and tn["sigma"] > 0:
        per_batch = tn["sigma"] * math.sqrt(float(batches))
        return per_batch / math.sqrt(float(eval_iters)), "train noise and eval_iters"
    return float("nan"), None


SWING_CONFIDENCE = 0.9   # the swing estimate used is this one-sided upper bound of the scatter's sigma
INCONSISTENT_P = 0.001   # a sampling SE the curve's swings reject at this level gives way to them


def swing_sigma(values):
    """(sigma, dof): the eval-to-eval scatter the curve itself shows, or (nan, 0).

    Independent noise of sigma on each eval makes neighbouring steps anti-correlated:
    cov(d_i, d_i+1) = -sigma^2 for the first differences d, while a trend (its curvature, the V
    of an overfitting curve, a fall that slows) only adds positive covariance. So the swings that
    recur, up-down-up, count in full, and the shape under test does not. Read over the curve
    after its first third; it holds what the weights wander between evals too, which is noise
    for any question about the trend. dof: its rough degrees of freedom."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 5:
        return float("nan"), 0
    d = np.diff(v[len(v) // 3:] if len(v) >= 9 else v[1:])
    d = d - d.mean()
    if len(d) < 3:
        return float("nan"), 0
    prod = np.sort(d[1:] * d[:-1])
    if len(prod) >= 5:
        prod = prod[1:]      # one bump (what the bump test asks about) is not scatter
    var = -float(np.mean(prod))
    return math.sqrt(max(var, 0.0)), max(1.0, len(prod) / 2.0)


def upper_bound(sigma, dof, confidence=SWING_CONFIDENCE):
    """One-sided upper confidence bound on a sigma estimated with `dof` degrees of freedom."""
    from scipy.stats import chi2
    return float(sigma * math.sqrt(dof / chi2.ppf(1 - confidence, dof)))


def eval_se(run, which="val"):
    """Standard error of one eval of `which` ('val' or 'train') and where it came from.

    The sampling SE (logged, or train noise and eval_iters) stands unless the eval curve's own
    swings reject it (chi-square, p < INCONSISTENT_P): evals that jump +-0.02 cannot carry an SE
    of 0.003, and then the swings replace it. Without a sampling SE the larger of the curve's
    fitted scatter (curve_sigma) and its swings is used. Returns
    (se, source): 'logged' or 'train noise and eval_iters' (either with "; floored by the eval
    curve's swings"), 'eval curve', or (nan, 'unknown'). Decisions on it use high multiples
    (overfit: 4 SE), so the few degrees of freedom of a curve estimate cost little."""
    from scipy.stats import chi2
    se, source = sampling_se(run, which)
    vals = run.eval.get(f"{which}_loss")
    swing, dof = swing_sigma(vals) if vals is not None else (float("nan"), 0)
    if source is None:
        s = curve_sigma(vals) if vals is not None else float("nan")
        if np.isfinite(s) or np.isfinite(swing):
            return float(np.nanmax([s, swing])), "eval curve"
        return float("nan"), "unknown"
    if np.isfinite(swing) and se > 0 and chi2.sf(dof * (swing / se) ** 2, dof) < INCONSISTENT_P:
        return swing, source + "; floored by the eval curve's swings"
    return se, source


def min_detectable_change(se):
    """Smallest difference between two evals that is not chance (DETECT_Z sigma of a difference)."""
    return DETECT_Z * math.sqrt(2.0) * se


def eval_iters_for(se, eval_iters, change=READABLE_CHANGE):
    """eval_iters that would make `change` nats detectable between two evals (SE falls as 1/sqrt(n))."""
    if not (se and eval_iters) or not np.isfinite(se):
        return None
    target_se = change / (DETECT_Z * math.sqrt(2.0))
    need = int(math.ceil(eval_iters * (se / target_se) ** 2))
    return max(1, need)
