"""Instability: blips (one-step outliers that recover at once, counted only), spikes
(persist or recover slowly, including long excursions of the trend that come back),
divergence, grad-norm precursors, clipping, fp16 loss-scale collapses, and val bumps beyond noise."""
import math

import numpy as np

from diagnose.detectors.common import eval_series, lr_now_and_peak, num, train_series
from diagnose.analysis import analysis_of
from diagnose.findings import SEVERITIES, Finding
from diagnose.noise import robust_sigma, sampling_se, train_noise

OUTLIER_Z = 6.0       # residual above trend, in robust sigmas
BLIP_STEPS = 3        # back within noise after at most this many logged steps: a blip
MANY_BUMPS = 3       # val bumps in one run from which they are a pattern (a notice), not chance
MIN_BUMP = 0.01       # nats: a val bump smaller than this is not worth a word, however exact the evals
MIN_EXCURSION = 0.25  # nats: a trend this far above its best so far, for longer than a blip, is an excursion
MIN_RISE = 0.5        # nats: the least rise of the trend that counts as divergence
ABOVE_INIT = 0.5      # nats: ending this far above where the log started is divergence, whatever the noise


def detect(run):
    out = []
    a = analysis_of(run)
    tn = a.train_noise
    if tn is not None and np.isfinite(tn["sigma"]):
        div = a.divergence
        out += spikes(run, tn, diverged=bool(div)) if tn["sigma"] > 0 else []
        out += div
    out += clipping(run)
    out += loss_scale(run)
    if not any(f.id == "instability.divergence" for f in out):   # a diverged run's val moves are the divergence
        spans = [(a, b) for f in out if f.id == "instability.spike"
                 for a, b in zip(f.evidence["spike_iters"], f.evidence["end_iters"])]
        out += val_bumps(run, spans)
    if tn is not None and np.isfinite(tn["sigma"]) and not a.nonfinite \
            and not any(f.rank() >= SEVERITIES.index("notice") for f in out):
        out.append(stable(tn, out))
    return out


def stable(tn, found):
    """'Is that bump noise?' answered when nothing above says otherwise."""
    blips = next((f for f in found if f.id == "instability.blips"), None)
    n_blips = len(blips.evidence["blip_iters"]) if blips else 0
    ev = {"sigma": num(tn["sigma"]), "memory_steps": num(tn["memory"]), "blips": n_blips,
          "test": f"a spike: above trend by > {OUTLIER_Z:g} local sigmas and not back within "
                  f"{BLIP_STEPS} x the logged loss's memory in steps, or above the initial loss"}
    return Finding("instability.none", "ok",
                   f"stable: no loss spike or divergence (train noise {tn['sigma']:.4f} per logged step"
                   + (f"; {n_blips} one-step blip(s), benign" if n_blips else "") + ")",
                   "Every jump of the train loss came back to its trend at once, or stayed within its noise: "
                   "the bumps are batches, not the optimizer.", evidence=ev)


def spikes(run, tn, diverged=False):
    it, v, trend, r, s = tn["iters"], tn["values"], tn["trend"], tn["resid"], tn["sigma"]
    # sigma from the whole run's second half underestimates early noise: use a local scale too
    local = np.maximum(s, _local_sigma(r, tn["window"]))
    z = r / local
    out_idx = np.flatnonzero(z > OUTLIER_Z)
    # a smoothed train loss (an EMA, a running mean) carries one bad batch over many logged steps:
    # "recovered at once" means within BLIP_STEPS of its memory, read from the residuals themselves
    blip_steps = int(round(BLIP_STEPS * tn["memory"]))
    init = initial_loss(run, v)
    blips, spikes_ = [], []
    i = 0
    while i < len(out_idx):
        k = out_idx[i]
        j = k
        while j + 1 < len(v) and r[j + 1] > 2 * local[j + 1]:
            j += 1
        steps = j - k + 1
        # above the loss the run started from is not benign unless only one logged step is up there:
        # wrecked weights take far longer than a step to relearn (that was one bad batch)
        wrecked = int(np.sum(v[k:j + 1] > init + max(ABOVE_INIT, OUTLIER_Z * local[k]))) > 1
        if k < tn["window"] // 2 and not wrecked:
            pass            # the rolling trend cannot follow the fast first fall at the edge: not a spike
        else:
            (blips if steps <= blip_steps and not wrecked else spikes_).append((k, j))
        while i < len(out_idx) and out_idx[i] <= j:
            i += 1
    # the rolling trend follows an excursion longer than its window, and the excursion inflates
    # the local sigma: find those against the best trend so far, which does not follow them up
    recovered = {}
    for a, b, rec in excursions(tn):
        if not rec and diverged:
            continue                     # the divergence finding says it
        w = tn["window"]
        inside = [(k, j) for k, j in spikes_ if k <= b + w and j >= a - w]
        spikes_ = [x for x in spikes_ if x not in inside]     # parts of this excursion: one spike
        a, b = min([a] + [k for k, _ in inside]), max([b] + [j for _, j in inside])
        blips = [(k, j) for k, j in blips if not a - w <= k <= b]
        spikes_.append((a, b))
        recovered[a] = rec
    spikes_ = merged(sorted(spikes_), tn["window"])
    found = []
    gblips = grad_blips(run)
    if blips or gblips:
        found.append(Finding("instability.blips", "info",
                             f"{len(blips)} single-step loss blip(s), each recovered within {BLIP_STEPS} logged steps"
                             + (f"; {len(gblips)} grad-norm blip(s)" if gblips else ""),
                             "One batch that was harder than usual (or one bad update that the next steps "
                             "undo) raises the loss for a step; the curve returns to its trend at once. "
                             "These are benign and need no action.",
                             evidence={"blip_iters": [int(it[k]) for k, _ in blips][:200],
                                       "heights": [num(r[k]) for k, _ in blips][:200], "sigma": num(s),
                                       "grad_norm_blip_iters": gblips[:200]}))
    if spikes_:
        gn_i, gn = train_series(run, "grad_norm")
        led = _grad_led(gn_i, gn, [it[k] for k, _ in spikes_])
        peaks = [float(v[k:j + 1].max()) for k, j in spikes_]
        rec = [bool(recovered.get(k, True)) for k, _ in spikes_]
        steps = [int(it[j] - it[k]) if ok else None for (k, j), ok in zip(spikes_, rec)]
        above = [p > init + ABOVE_INIT for p in peaks]
        worst = int(np.argmax(peaks))
        k0, j0 = spikes_[worst]
        title = f"{len(spikes_)} loss spike(s) that took more than {BLIP_STEPS} logged steps to recover"
        if above[worst]:
            title = (f"loss diverged to {peaks[worst]:.3g} (above the initial {init:.3g}) at iteration "
                     f"{int(it[k0])} and " + (f"recovered after {steps[worst]} iterations" if rec[worst]
                                              else "had not recovered by the end of the log"))
            if len(spikes_) > 1:
                title += f"; {len(spikes_)} spikes in all"
        warm = in_warmup(run, it[k0], it)
        lr_at, lr_peak = lr_now_and_peak(run, it[k0])
        if warm:
            lr_words = (f"LR {lr_at:.3g}, {lr_at / lr_peak:.0%} of its peak" if lr_at is not None and lr_peak
                        else "LR not logged")
            title = f"instability at warmup ({lr_words}): " + title
        found.append(Finding(
            "instability.spike", "warning", title,
            "The loss jumped well beyond its noise and stayed up: the update, not the batch, "
            "moved the weights somewhere worse. Repeated spikes mean the LR is too high for the "
            "current state (or the batch too small)."
            + (" The worst went above the loss the run started from: the model was wrecked and "
               "relearned from scratch, so the steps before it were wasted." if above[worst] else "")
            + (" The grad norm rose before them." if led else "")
            + (" It came during the LR warmup: the LR reached a size the fresh weights could not take; "
               "a longer warmup or a lower peak avoids it (this is instability, not a failure to learn)."
               if warm else ""),
            evidence={"spike_iters": [int(it[k]) for k, _ in spikes_], "peaks": [num(p) for p in peaks],
                      "recovery_steps": steps, "recovered": rec, "end_iters": [int(it[j]) for _, j in spikes_],
                      "above_initial_loss": above, "initial_loss": num(init),
                      "grad_norm_led": led, "sigma": num(s), "in_warmup": bool(warm),
                      "lr_at_worst": num(lr_at, 8), "lr_peak": num(lr_peak, 8)},
            iters=(int(it[spikes_[0][0]]), int(it[spikes_[-1][1]])),
            recommendations=["--learning_rate=<0.7 x now>" if not any(above) else "--learning_rate=<0.3 x now>",
                             "--grad_clip=1.0", "--warmup_iters=<2 x now>"]))
    return found


WARMUP_SHARE = 0.05   # without a known warmup: the first 5% of the logged iterations count as warmup


def in_warmup(run, at, iters):
    """Is iteration `at` in the LR warmup? From the config's warmup_iters, else a logged LR still
    rising, else the first WARMUP_SHARE of the log."""
    w = run.config.get("warmup_iters")
    if w is not None:
        return at <= int(w)
    li, lr = train_series(run, "lr")
    if len(lr) >= 3:
        return bool(at <= li[int(np.argmax(lr))] and np.max(lr) > lr[0])
    return bool(at <= iters[0] + WARMUP_SHARE * (iters[-1] - iters[0]))


def merged(spans, gap):
    """Spans (first, last) closer than `gap` logged steps joined: one episode, not several spikes."""
    out = []
    for k, j in spans:
        if out and k - out[-1][1] <= gap:
            out[-1] = (out[-1][0], max(out[-1][1], j))
        else:
            out.append((k, j))
    return out


def excursions(tn):
    """(first, last, recovered) index ranges where the loss trend stands more than
    max(OUTLIER_Z sigma, MIN_EXCURSION) above its best so far for longer than BLIP_STEPS."""
    trend, s = tn["trend"], tn["sigma"]
    thr = max(OUTLIER_Z * s, MIN_EXCURSION)
    up = trend - np.minimum.accumulate(trend) > thr
    edges = np.flatnonzero(np.diff(np.r_[0, up.astype(int), 0]))
    out = []
    for a, b in zip(edges[::2], edges[1::2]):     # up[a:b] is one stretch
        if out and a - out[-1][1] <= 2 * tn["window"]:
            a = out.pop()[0]                      # back down for a moment only: the same excursion
        out.append((int(a), int(b - 1)))
    return [(a, b, bool(b + 1 < len(trend))) for a, b in out if b - a + 1 > BLIP_STEPS]


def initial_loss(run, v):
    """Where the log starts: its first loss, at least ln(vocab) (the loss of a uniform guess)."""
    vocab = run.vocab_size()
    return max(float(v[0]), math.log(vocab)) if vocab else float(v[0])


def grad_blips(run):
    """Iterations where the grad norm jumps far above its trend (log scale) and is back within BLIP_STEPS."""
    gi, g = train_series(run, "grad_norm")
    if len(g) < 50:
        return []
    tn = train_noise(gi, np.log(np.maximum(g, 1e-12)))
    s = tn["sigma"]
    if not s > 0:
        return []
    r = tn["resid"]
    out = []
    for k in np.flatnonzero(r > OUTLIER_Z * s):
        after = r[k + 1:k + 1 + BLIP_STEPS]
        if len(after) and (after < 2 * s).any() and (k == 0 or r[k - 1] < OUTLIER_Z * s):
            out.append(int(gi[k]))
    return out


def _local_sigma(r, window):
    n = len(r)
    w = max(50, 5 * window)
    out = np.empty(n)
    for a in range(0, n, w):
        seg = r[max(0, a - w): a + 2 * w]
        out[a:a + w] = robust_sigma(seg)
    return out


def _grad_led(gi, g, spike_iters):
    if len(g) < 20:
        return None
    lg = np.log(np.maximum(g, 1e-12))
    med = np.median(lg)
    s = robust_sigma(lg)
    if not s > 0:
        return None
    led = 0
    for t in spike_iters:
        m = (gi <= t) & (gi >= t - 5 * max(1.0, float(np.median(np.diff(gi)))))
        if m.any() and (lg[m].max() - med) / s > OUTLIER_Z:
            led += 1
    return bool(led > len(spike_iters) / 2)


def divergence(run, tn):
    """The loss trend ends far above its minimum (measured against the noise before that
    minimum, not the diverged part's) or above where the run started."""
    it, trend, r = tn["iters"], tn["trend"], tn["resid"]
    n = len(trend)
    tail = max(3, n // 20)
    if n < tail + 5:
        return []
    k = int(np.argmin(trend[: n - tail]))
    end = float(np.median(trend[-tail:]))
    rise = end - float(trend[k])
    healthy = r[k // 2: k + 1]
    s = robust_sigma(healthy) if len(healthy) >= 8 else None
    thr = max(MIN_RISE, 10 * (s if s is not None else tn["sigma"]))
    init = initial_loss(run, tn["values"])
    above = end > init + ABOVE_INIT
    if rise < thr and not above:
        return []
    title = f"diverging: loss trend up {rise:.3g} nats from its minimum at {int(it[k])}"
    if above:
        title += f", ending at {end:.3g}, above the initial loss {init:.3g}"
    return [Finding("instability.divergence", "critical", title,
                    "The loss trend rose far beyond noise and did not come back: training diverged."
                    + (" It ends above the loss the run started from: the model is worse than at "
                       "initialisation, so nothing it learned survives." if above else ""),
                    evidence={"min_iter": int(it[k]), "min_trend": num(trend[k]), "end_trend": num(end),
                              "rise": num(rise), "threshold": num(thr), "sigma_before_min": num(s),
                              "initial_loss": num(init), "above_initial_loss": bool(above)},
                    iters=(int(it[k]), int(it[-1])),
                    recommendations=["--learning_rate=<half of now>", "--grad_clip=1.0",
                                     "resume from a checkpoint before the rise"])]


def clipping(run):
    gi, g = train_series(run, "grad_norm")
    clip = run.config.get("grad_clip")
    if len(g) < 10 or not clip:
        return []
    share = float(np.mean(g > clip))
    if share < 0.5:
        return [Finding("instability.clipping", "info", f"{share:.0%} of steps clipped at grad_clip={clip}",
                        "Clipping a minority of steps only tames outliers.",
                        evidence={"clipped_share": num(share), "grad_clip": clip})]
    return [Finding("instability.clipping", "notice", f"{share:.0%} of steps clipped at grad_clip={clip}",
                    "When most steps are clipped, the update size is set by grad_clip rather than "
                    "the LR: the effective LR is lower than the schedule says.",
                    evidence={"clipped_share": num(share), "grad_clip": clip},
                    recommendations=[f"--grad_clip={2 * clip:g}", "or a lower --learning_rate"])]


def loss_scale(run):
    si, sc = train_series(run, "grad_scale")
    if len(sc) < 3:
        return []
    halvings = int(np.sum(np.diff(sc) < 0))
    lo = float(np.min(sc))
    if lo >= 1.0 and float(sc[-1]) >= np.max(sc) / 2 ** 10:
        return [Finding("instability.loss_scale", "info", f"fp16 loss scale: {halvings} reduction(s), min {lo:g}",
                        "Occasional overflow steps are skipped by the scaler; harmless.",
                        evidence={"halvings": halvings, "min_scale": num(lo)})]
    k = int(np.argmin(sc))
    return [Finding("instability.loss_scale", "warning", f"fp16 loss scale collapsed to {lo:g}",
                    "The gradient scaler keeps halving: gradients overflow fp16 at every scale, "
                    "so steps are skipped or the loss is about to go NaN.",
                    evidence={"halvings": halvings, "min_scale": num(lo), "iter": int(si[k])},
                    iters=(int(si[k]), int(si[k])), recommendations=["--dtype=bfloat16"])]


def val_bumps(run, spans=()):
    """Val rises beyond eval noise that the next eval undoes, outside the loss spikes in `spans`."""
    iv, vv = eval_series(run)
    if len(vv) < 5:
        return []
    # against sampling noise: recurring bumps are what this asks about, so they must not set the scale
    se, source = sampling_se(run, "val")
    if source is None:
        se, source = analysis_of(run).val_se
    if not np.isfinite(se):
        return []
    # a bump: a rise over the previous eval beyond noise (3 sigma of a difference) that the next eval undoes
    rise = vv[1:-1] - vv[:-2]
    back = vv[1:-1] - vv[2:]
    thr = max(3 * se * np.sqrt(2.0), MIN_BUMP)
    idx = np.flatnonzero((rise > thr) & (back > thr / 2)) + 1
    idx = np.array([i for i in idx if not any(a <= iv[i] <= b for a, b in spans)], dtype=int)
    mid = np.r_[rise, 0.0]
    if len(idx) == 0:
        return []
    many = len(idx) >= MANY_BUMPS
    return [Finding("instability.val_bump", "notice" if many else "info",
                    f"{len(idx)} val bump(s) beyond noise at {', '.join(str(int(iv[i])) for i in idx[:8])}"
                    + ("" if many else ", undone by the next eval: harmless"),
                    f"These evals rose above the previous one by more than 3 sigma of eval noise "
                    f"(SE {se:.4f}, {source}); a transient the next eval undid. One-off bumps are "
                    f"harmless (one eval can be unlucky); {MANY_BUMPS} or more in a run mean the LR is on "
                    "the edge of stability.",
                    evidence={"bump_iters": [int(iv[i]) for i in idx], "heights": [num(mid[i - 1]) for i in idx],
                              "threshold": num(thr)},
                    iters=(int(iv[idx[0]]), int(iv[idx[-1]])))]
