"""Analysis: what several detectors need, computed once per Run.

Train noise, the eval standard errors and their source, the non-finite and divergence verdicts,
the spikes other verdicts route to, tokens and epochs seen, and the LR now and at its peak.
detect.run_all builds one and hands it to every detector through the run (analysis_of); a
detector called alone (the tests do) gets a fresh one. Detectors read it and do not import one
another; only this module calls into the instability and sanity measurements it shares.
"""
from functools import cached_property

import numpy as np

from diagnose.detectors.common import epochs_seen, finite_series, lr_now_and_peak, tokens_seen
from diagnose.noise import eval_se, train_noise


class Analysis:
    def __init__(self, run):
        self.run = run

    @cached_property
    def train_noise(self):
        """noise.train_noise of the logged train loss, or None."""
        return train_noise(*finite_series(self.run.train["iter"], self.run.train["loss"]))

    @cached_property
    def val_se(self):
        """(se, source) of one val eval (noise.eval_se)."""
        return eval_se(self.run, "val")

    @cached_property
    def nonfinite(self):
        """The sanity.nonfinite findings (NaN/Inf in the loss or grad norm)."""
        from diagnose.detectors.sanity import nonfinite
        return nonfinite(self.run)

    @cached_property
    def divergence(self):
        """The instability.divergence findings of the train loss trend."""
        from diagnose.detectors.instability import divergence
        tn = self.train_noise
        return divergence(self.run, tn) if tn is not None and np.isfinite(tn["sigma"]) else []

    @cached_property
    def unstable(self):
        """The divergence, else the spike findings: what other verdicts route to the LR."""
        from diagnose.detectors.instability import spikes
        tn = self.train_noise
        if self.divergence or tn is None or not np.isfinite(tn["sigma"]) or not tn["sigma"] > 0:
            return self.divergence
        return [f for f in spikes(self.run, tn) if f.id == "instability.spike"]

    @cached_property
    def diverged(self):
        """Why the run counts as diverged, in a few words, or None: NaN/Inf it never recovered
        from, or a loss trend that rose far beyond noise (or above where it started)."""
        for f in self.nonfinite:
            if f.evidence.get("recovered") is not True or f.evidence.get("stopped_by_train"):
                return f.title
        return self.divergence[0].title if self.divergence else None

    @cached_property
    def tokens_seen(self):
        return tokens_seen(self.run)

    @cached_property
    def epochs_seen(self):
        return epochs_seen(self.run)

    def lr_now_and_peak(self, it):
        return lr_now_and_peak(self.run, it)


def analysis_of(run):
    """The run's shared Analysis while detect.run_all runs, else a fresh one."""
    a = getattr(run, "_analysis", None)
    return a if a is not None and a.run is run else Analysis(run)
