"""The real logs in ../shared/logs, for the tests that read their exact numbers."""
import os

import numpy as np
import pytest

from diagnose.parse import load_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(ROOT, "..", "shared", "logs")
needs_logs = pytest.mark.skipif(not os.path.isdir(LOGS), reason="../shared/logs is absent")


def real(name):
    return load_run(os.path.join(LOGS, name))


def at(cols, it, col):
    """The value of column col at iteration it (exactly one row)."""
    idx = np.flatnonzero(cols["iter"] == it)
    assert len(idx) == 1, f"iteration {it}: {len(idx)} rows"
    return float(cols[col][idx[0]])
