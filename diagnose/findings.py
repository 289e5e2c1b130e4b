"""
Finding: one thing diagnose has to say about a run, with its evidence.

Detectors return lists of these; the report, JSON and plots only render them.
"""
from dataclasses import asdict, dataclass, field

SEVERITIES = ("ok", "info", "notice", "warning", "critical")  # in rising order; 'ok': a question answered "no"


@dataclass
class Finding:
    id: str                 # stable, dotted: 'overfit.confirmed', 'data.repetition', 'lr.warmup_short', ...
    severity: str           # one of SEVERITIES
    title: str              # one line: what it is, with the key number
    explanation: str        # one paragraph: why we think so, in plain words
    evidence: dict = field(default_factory=dict)       # the numbers it rests on (JSON-serialisable)
    iters: tuple = None     # (first, last) iteration it concerns, or None for the whole run
    recommendations: list = field(default_factory=list)  # config edits first: '--learning_rate=6e-4', then prose
    missing: list = field(default_factory=list)  # facts it needed and did not have: 'train_tokens (give --data DIR or --train-tokens N)'

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")

    def rank(self):
        return SEVERITIES.index(self.severity)

    def to_dict(self):
        d = asdict(self)
        d["iters"] = list(self.iters) if self.iters is not None else None
        return d
