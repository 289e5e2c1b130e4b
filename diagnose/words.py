"""The words of findings, keyed by verdict id: detectors measure and pick the id, this says it.

Each entry is (title, explanation), str.format templates over the finding's evidence (plus a few
flags a detector passes). Changing the words never touches a detector's logic.
"""

WORDS = {
    "overfit.gap": (
        "val {val:.3f} is {gap:.3f} nats above train {train:.3f} at iteration {iter} ({gap_in_se:.0f} SE)",
        "At the same eval the model gives held-out tokens e^-{gap:.2f} = {ratio:.0%} of the probability it "
        "gives training tokens: it has learned its training set, not the language. A gap this size "
        "({test}) needs no long curve to be read; {trend}",
    ),
    "overfit.none": (
        "not overfitting: {detail}",
        "The val loss has not risen beyond eval noise (SE {se:.4f}) since its best ({best_val:.4f}); "
        "{gap_words}",
    ),
}


def _extra(verdict, ev):
    """Derived words some templates need (ratios, clauses), from the evidence alone."""
    import math
    out = {}
    if verdict == "overfit.gap":
        out["ratio"] = math.exp(-ev["gap"])
        out["trend"] = ("val is not falling, so more steps only widen it." if ev.get("rising")
                        else "val still falls for now; watch the next evals.")
    if verdict == "overfit.none":
        if ev.get("gap") is not None:
            out["detail"] = (f"val - train = {ev['gap']:+.3f} +- {ev['gap_se']:.3f} over the last "
                             f"{ev['gap_evals']} evals")
            out["gap_words"] = "the val - train gap is what held-out data costs, not memorisation."
        else:
            out["detail"] = f"val {ev['last_val']:.4f}, best {ev['best_val']:.4f} (train loss not logged)"
            out["gap_words"] = "without an eval-mode train loss the gap cannot be read."
    return out


def title(verdict, **ev):
    return WORDS[verdict][0].format(**ev, **_extra(verdict, ev))


def explain(verdict, **ev):
    return WORDS[verdict][1].format(**ev, **_extra(verdict, ev))
