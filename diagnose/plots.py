"""
PNG plots of a run and its findings (matplotlib, Agg backend, written atomically).

loss.png: raw train loss (a min/max band when there are many points), smoothed
train loss, eval train/val with their standard errors, LR on a second axis, and
what the findings point at (evidence keys listed in SCHEMA.md): epoch
boundaries, best val, spikes, plateau regions, the forecast band. The lower
panel zooms on the second half of the run, where the questions usually are.
"""
import os
import warnings

import numpy as np

from atomic import make_parent, write_atomic
from diagnose.report import run_label

MAX_POINTS = 4000  # above this the raw series is drawn as a per-bucket min/max band


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_atomic(fig, path):
    make_parent(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _save(fig, out_dir, name):
    """Lay out and write a finished figure; returns the paths written."""
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    save_atomic(fig, path)
    return [path]


def smooth(y, window):
    """Centered moving average over the finite values (NaN/Inf do not smear into neighbours).

    The window narrows near the start, where the loss falls fastest, so the first steep
    drop is followed instead of averaged away."""
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    n = len(y)
    if window <= 1 or ok.sum() < 3:
        return np.where(ok, y, np.nan)
    csum = np.r_[0.0, np.cumsum(np.where(ok, y, 0.0))]
    ccount = np.r_[0, np.cumsum(ok)]
    i = np.arange(n)
    half = np.minimum(window // 2, i // 4)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, n)
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[hi] - csum[lo]) / count
    out[count < (hi - lo) / 3] = np.nan  # mostly non-finite around here: no mean
    return out


def envelope(x, y, max_points=MAX_POINTS):
    """(x, lo, hi) per bucket: keeps every spike visible at a fixed number of points."""
    n = len(x)
    b = int(np.ceil(n / max_points))
    m = n // b * b
    xs = x[:m].reshape(-1, b)
    ys = np.where(np.isfinite(y[:m]), y[:m], np.nan).reshape(-1, b)
    with warnings.catch_warnings():  # an all-NaN bucket is a gap, not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(ys, axis=1), np.nanmax(ys, axis=1)
    return xs[:, 0], lo, hi


def _findings_by_prefix(findings, prefix):
    return [f for f in findings if f.id.startswith(prefix)]


def _draw_loss(ax, run, findings, x_min=None):
    t, e = run.train, run.eval
    it, loss = t["iter"], t["loss"]
    sel = it >= x_min if x_min is not None else np.ones(len(it), bool)
    it, loss = it[sel], loss[sel]
    if len(it):
        if len(it) > MAX_POINTS:
            bx, lo, hi = envelope(it, loss)
            ax.fill_between(bx, lo, hi, color="tab:blue", alpha=0.2, lw=0, label="train loss (min-max)",
                            rasterized=True)
        else:
            ax.plot(it, loss, color="tab:blue", alpha=0.3, lw=0.7, label="train loss", rasterized=True)
        window = max(1, len(it) // 50)
        if window > 1:
            sm = smooth(loss, window)
            step = max(1, len(it) // MAX_POINTS)
            ax.plot(it[::step], sm[::step], color="tab:blue", lw=1.6, label=f"train loss (mean of {window})")
        bad = ~np.isfinite(loss)
        if bad.any():
            ax.axvline(it[bad][0], color="red", lw=1, ls="--", label=f"non-finite loss from {int(it[bad][0])}")
    eit = e["iter"]
    esel = eit >= x_min if x_min is not None else np.ones(len(eit), bool)
    for col, se, colour, label in (("train_loss", "train_loss_se", "tab:green", "eval train"),
                                   ("val_loss", "val_loss_se", "tab:orange", "val")):
        y = e[col][esel]
        if np.isfinite(y).any():
            err = e[se][esel]
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(eit[esel], y, yerr=err if err.any() else None, color=colour, marker="o", ms=3,
                        lw=1.2, capsize=2, label=label)
    for s in run.segments[1:]:
        if x_min is None or s >= x_min:
            ax.axvline(s, color="gray", ls=":", lw=1)
    _draw_findings(ax, run, findings, x_min)


def _best_val(run, findings):
    """(iter, val) of the best val: an overfit finding's, else the series' own minimum; or None."""
    for f in _findings_by_prefix(findings, "overfit"):
        ev = f.evidence or {}
        if ev.get("best_iter") is not None and ev.get("best_val") is not None:
            return ev["best_iter"], ev["best_val"]
    v = run.eval["val_loss"]
    if np.isfinite(v).any():
        i = int(np.nanargmin(np.where(np.isfinite(v), v, np.inf)))
        return float(run.eval["iter"][i]), float(v[i])
    return None


def epoch_boundaries(run, findings):
    """Iterations where an epoch ends: data.repetition's, else where the logged epoch passes a whole number."""
    for f in findings:
        if f.id == "data.repetition" and (f.evidence or {}).get("epoch_boundary_iters"):
            return list(f.evidence["epoch_boundary_iters"])
    it, ep = run.train["iter"], run.train["epoch"]
    ok = np.isfinite(ep)
    if ok.sum() < 2:
        return []
    whole = np.floor(ep[ok] + 1e-9)
    return [float(x) for x in it[ok][1:][np.diff(whole) > 0]]


def _draw_findings(ax, run, findings, x_min):
    def visible(x):
        return x_min is None or x >= x_min

    for f in _findings_by_prefix(findings, "plateau"):
        if f.iters and f.id != "plateau.none":  # plateau.none's iters are the window checked
            lo, hi = f.iters
            if visible(hi):
                ax.axvspan(max(lo, x_min or lo), hi, color="gold", alpha=0.15, label=f"flat within noise ({f.id})")
            if visible(lo) and f.id not in ("plateau.lr_decaying", "plateau.lr_high"):
                ax.axvline(lo, color="goldenrod", lw=1, ls="-.", label=f"plateau onset {lo}")
    for f in _findings_by_prefix(findings, "instability.spike"):
        ev = f.evidence or {}
        starts, ends = ev.get("spike_iters", []), ev.get("end_iters") or []
        for j, x in enumerate(starts):
            end = ends[j] if j < len(ends) else None
            if end is not None and visible(end):  # spike to recovery, shaded
                ax.axvspan(max(x, x_min or x), end, color="crimson", alpha=0.12, lw=0,
                           label="spike until recovered" if j == 0 else None)
            if visible(x):
                ax.axvline(x, color="crimson", lw=0.8, alpha=0.7, label="spike" if j == 0 else None)
    best = _best_val(run, findings)
    if best is not None and visible(best[0]):
        ax.plot([best[0]], [best[1]], marker="*", ms=14, color="tab:red", ls="",
                label=f"best val {best[1]:.4g} @ {int(best[0])}")
    xs = [x for x in epoch_boundaries(run, findings) if visible(x)]
    for j, x in enumerate(xs[:200]):
        ax.axvline(x, color="purple", lw=0.6, ls="--", alpha=0.5, label="epoch boundary" if j == 0 else None)
    for f in [f for f in findings if f.id == "forecast.final"]:
        curve = (f.evidence or {}).get("curve") or {}
        if all(k in curve for k in ("iter", "mid", "lo", "hi")) and len(curve["iter"]):
            cx = np.asarray(curve["iter"], dtype=float)
            sel = cx >= x_min if x_min is not None else np.ones(len(cx), bool)
            ax.fill_between(cx[sel], np.asarray(curve["lo"], float)[sel], np.asarray(curve["hi"], float)[sel],
                            color="tab:orange", alpha=0.15, lw=0, label="forecast (80%)")
            ax.plot(cx[sel], np.asarray(curve["mid"], float)[sel], color="tab:orange", ls="--", lw=1.2)
        ev = f.evidence or {}
        if ev.get("predicted") is not None and ev.get("final_iter") is not None:
            yerr = None
            if ev.get("lo80") is not None and ev.get("hi80") is not None:
                yerr = [[ev["predicted"] - ev["lo80"]], [ev["hi80"] - ev["predicted"]]]
            ax.errorbar([ev["final_iter"]], [ev["predicted"]], yerr=yerr, color="tab:orange", marker="D", ms=5,
                        capsize=3, label=f"predicted final {ev.get('fitted_on', 'loss')} {ev['predicted']:.4g}")
            ax.axvline(ev["final_iter"], color="tab:orange", lw=0.8, ls=":", label="planned end")


def _loss_ylim(ax, run, x_min, findings=()):
    """Tight y-limits on what is drawn in the zoom (NaN and the first steep fall excluded),
    widened to show the forecast's interval at the end."""
    vals = []
    for it, y in ((run.train["iter"], run.train["loss"]), (run.eval["iter"], run.eval["val_loss"]),
                  (run.eval["iter"], run.eval["train_loss"])):
        y = y[it >= x_min]
        vals.append(y[np.isfinite(y)])
    v = np.concatenate(vals) if vals else np.array([])
    if len(v) > 3:
        lo, hi = np.percentile(v, [0.5, 99.5])
        for f in findings:
            ends = [f.evidence.get(k) for k in ("lo80", "hi80")] if f.id == "forecast.final" else []
            ends = [e for e in ends if e is not None and np.isfinite(e)]
            if ends:
                lo, hi = min(lo, min(ends)), max(hi, max(ends))
        pad = 0.1 * (hi - lo) + 1e-6
        ax.set_ylim(lo - pad, hi + pad)


def plot_run(run, findings, out_dir, name="loss.png"):
    """Write the loss figure; returns the paths written."""
    plt = _pyplot()
    fig, (ax, zoom) = plt.subplots(2, 1, figsize=(11, 8.5), gridspec_kw={"height_ratios": [3, 2]})
    try:
        _draw_loss(ax, run, findings)
        ax.set_title(f"{run_label(run)} ({run.format})", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        lr_it, lr = run.train["iter"], run.train["lr"]
        if np.isfinite(lr).any():
            ax2 = ax.twinx()
            step = max(1, len(lr_it) // MAX_POINTS)
            ax2.plot(lr_it[::step], lr[::step], color="gray", lw=1, alpha=0.8, label="learning rate")
            ax2.set_ylabel("learning rate", color="gray")
            ax2.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            ax2.set_ylim(bottom=0)
        handles, labels = ax.get_legend_handles_labels()
        seen = {}
        for h, lab in zip(handles, labels):
            seen.setdefault(lab, h)
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper right")

        last = run.last_iter() or 0
        first = min([a["iter"][0] for a in (run.train, run.eval) if len(a["iter"])] or [0])
        x_min = first + (last - first) / 2
        _draw_loss(zoom, run, findings, x_min=x_min)
        zoom.set_xlim(left=x_min)
        _loss_ylim(zoom, run, x_min, findings)
        zoom.set_title("second half", fontsize=9)
        zoom.set_xlabel("iteration")
        zoom.set_ylabel("loss")
        zoom.grid(alpha=0.3)
        return _save(fig, out_dir, name)
    finally:
        plt.close(fig)


def plot_compare(runs, xs, out_dir, name="compare.png"):
    """Overlay of several runs: val loss (markers) and smoothed train loss against tokens.

    xs[i] maps run i's iterations to tokens (a function), or None when unknown: those
    runs are left out of the plot (the table says why)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 6))
    try:
        for i, (run, to_x) in enumerate(zip(runs, xs)):
            if to_x is None:
                continue
            colour = f"C{i % 10}"
            label = run_label(run)
            it, loss = run.train["iter"], run.train["loss"]
            if len(it):
                sm = smooth(loss, max(1, len(it) // 50))
                step = max(1, len(it) // MAX_POINTS)
                ax.plot(to_x(run.train)[::step], sm[::step], color=colour, lw=1.2, alpha=0.8,
                        label=f"{label} train (smoothed)")
            v = run.eval["val_loss"]
            if np.isfinite(v).any():
                ax.plot(to_x(run.eval), v, color=colour, marker="o", ms=3, ls="--", lw=1, label=f"{label} val")
        ax.set_xlabel("tokens")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
            _compare_ylim(ax)
        return _save(fig, out_dir, name)
    finally:
        plt.close(fig)


def _compare_ylim(ax):
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines])
    ys = ys[np.isfinite(ys)]
    if len(ys) > 3:
        lo, hi = np.percentile(ys, [0, 90])  # the late part of the curves, not the first steep fall
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-6), hi + 0.3 * (hi - lo + 1e-6))
