"""
Run every detector over a Run and return the findings, most severe first.

A detector that raises does not take the others down: its error becomes an
'internal.<name>' info finding (tests call the detectors directly, so real bugs still fail them).
"""
from diagnose.detectors import (capacity, excerpt, forecast_final, instability, noise_model, overfit,
                                plateau, repetition, sanity, schedule, throughput)
from diagnose.analysis import Analysis
from diagnose.findings import Finding

DETECTORS = [sanity, noise_model, plateau, forecast_final, overfit, repetition, capacity,
             instability, schedule, throughput, excerpt]
# cheap enough for every eval inside train.py
LIVE_DETECTORS = [overfit, plateau, instability, repetition]


def _run(detectors, run):
    out = []
    run._analysis = Analysis(run)     # computed once, read by every detector (analysis_of)
    try:
        _each(detectors, run, out)
    finally:
        del run._analysis
    out.sort(key=lambda f: -f.rank())  # stable: detector order within a severity
    return out


def _each(detectors, run, out):
    for d in detectors:
        name = d.__name__.rsplit(".", 1)[-1]
        try:
            out.extend(d.detect(run))
        except Exception as e:  # noqa: BLE001 - one broken detector must not hide the others
            out.append(Finding(f"internal.{name}", "info", f"detector {name} failed: {type(e).__name__}: {e}",
                               "This is a bug in diagnose, not in the run; the other findings stand."))


def run_all(run):
    return _run(DETECTORS, run)


def run_live(run):
    return _run(LIVE_DETECTORS, run)
