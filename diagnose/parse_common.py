"""
What every parser shares: rows collected as tuples while reading (cheap per line),
turned into a Run's numpy columns once at the end, with restarts split into
segments and repeated iterations resolved (the last occurrence wins).
"""
import ast
import math
import re

import numpy as np

from diagnose.run import EVAL_COLUMNS, TRAIN_COLUMNS, Run

NAN = float("nan")


class Rows:
    """Rows of one kind ('train' or 'eval') that carry the same columns.

    data holds one tuple of values per row; seq, when given, orders rows of all
    kinds as they appeared in the file (a record number), which is how restarts
    are placed. Without seq, the row's index is its order."""

    def __init__(self, kind, columns, scale=None, offset=None):
        assert kind in ("train", "eval") and "iter" in columns
        self.kind = kind
        self.columns = tuple(columns)
        self.scale = dict(scale or {})    # column: factor (a percentage to a fraction, ...)
        self.offset = dict(offset or {})  # column: added after scaling (llm.c prints step + 1)
        self.data = []
        self.seq = None
        self._array = None
        self._columns = None

    @classmethod
    def from_arrays(cls, kind, columns, seq, arrays):
        """Rows already parsed into float columns (the fast metrics.jsonl path)."""
        rows = cls(kind, columns)
        rows._columns = {c: np.asarray(a, dtype=float) for c, a in zip(columns, arrays)}
        rows.data = range(len(seq))  # only its length is used once the columns are set
        rows.seq = np.asarray(seq, dtype=float)
        return rows

    def add(self, seq, *values):
        if self.seq is None:
            self.seq = []
        elif not isinstance(self.seq, list):
            raise TypeError("add() after from_arrays()")
        self.seq.append(seq)
        self.data.append(values)

    def seq_array(self):
        return np.array(self.seq, dtype=float) if self.seq is not None else np.arange(len(self.data), dtype=float)

    def array(self):
        """The values as a float array of shape (n, len(columns)); scale and offset applied."""
        if self._array is not None and len(self._array) == len(self.data):
            return self._array
        if not self.data:
            return np.empty((0, len(self.columns)))
        try:
            a = np.array(self.data, dtype=float)
        except (TypeError, ValueError):  # an empty capture or stray text: convert column by column
            a = np.column_stack([_float_column(col) for col in zip(*self.data)])
        for c, k in self.scale.items():
            a[:, self.columns.index(c)] *= k
        for c, k in self.offset.items():
            a[:, self.columns.index(c)] += k
        self._array = a
        return a

    def nonfinite_printed(self):
        """{column: how many rows printed NaN/Inf as its value}: a value logged as NaN, where an absent one
        is None or '' (the float arrays cannot tell the two apart)."""
        if self._columns is not None or not self.data:
            return {}
        out, a = {}, self.array()
        for j, c in enumerate(self.columns):  # only the NaN/Inf cells: absent ones are NaN too
            n = sum(1 for i in np.flatnonzero(~np.isfinite(a[:, j])) if _printed_nonfinite(self.data[i][j]))
            if n:
                out[c] = n
        return out

    def rounded_zeros(self):
        """{column: print resolution} for columns whose zeros were all printed in fixed point with 3 or
        more decimals ('0.000000': a value under half the last digit, not an exact 0 as '0' or '0.0' is)."""
        if self._columns is not None or not self.data:
            return {}
        out, a = {}, self.array()
        for j, c in enumerate(self.columns):
            zeros = [self.data[i][j] for i in np.flatnonzero(a[:, j] == 0.0)]
            decimals = [_fixed_decimals(v) for v in zeros]
            if zeros and all(d >= 3 for d in decimals):
                out[c] = 10.0 ** -min(decimals)
        return out

    def column(self, name):
        if self._columns is not None:
            return self._columns[name]
        return self.array()[:, self.columns.index(name)]


def _float_column(values):
    """Floats from numbers or number strings; '' (an optional field absent) and text become NaN."""
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        pass
    try:
        return np.array([v if v != "" else "nan" for v in values], dtype=float)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in values], dtype=float)


def _printed_nonfinite(v):
    if isinstance(v, str):
        return v.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
    return isinstance(v, float) and not math.isfinite(v)


def _fixed_decimals(v):
    """Decimals of a number printed in fixed point ('0.000000': 6); 0 for anything else (a float, '0', '1e-7')."""
    if not isinstance(v, str) or "e" in v.lower() or "." not in v:
        return 0
    return len(v.strip().split(".")[1])


def _to_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def _columns_of(kind, rows_list, ordered):
    """Stack all Rows of one kind into (seq array, {column: array}), in file order
    (ordered: seq is global across Rows; otherwise Rows are taken one after another)."""
    names = TRAIN_COLUMNS if kind == "train" else EVAL_COLUMNS
    parts = [r for r in rows_list if r.kind == kind and r.data]
    if not parts:
        return np.array([], dtype=float), {c: np.array([], dtype=float) for c in names}
    seq = np.concatenate([r.seq_array() for r in parts])
    cols = {}
    for c in names:
        chunks = [r.column(c) if c in r.columns else np.full(len(r.data), NAN) for r in parts]
        cols[c] = np.concatenate(chunks) if len(chunks) > 1 else np.asarray(chunks[0], dtype=float)
    if ordered and not np.all(np.diff(seq) > 0):
        order = np.argsort(seq, kind="stable")
        seq = seq[order]
        cols = {c: v[order] for c, v in cols.items()}
    keep = np.isfinite(cols["iter"])  # a row without an iteration cannot be placed
    if keep.all():
        return seq, cols
    return seq[keep], {c: v[keep] for c, v in cols.items()}


def _last_occurrence(cols):
    """Keep the last row of each iteration (a resumed run redoes the steps since its
    checkpoint; the redone values are the ones the final model saw), sorted by iteration."""
    it = cols["iter"]
    if len(it) == 0 or np.all(np.diff(it) > 0):
        return cols, 0
    _, idx_rev = np.unique(it[::-1], return_index=True)
    keep = len(it) - 1 - idx_rev  # np.unique sorts by iteration
    return {c: v[keep] for c, v in cols.items()}, len(it) - len(keep)


def _segment_starts(seq, its, boundaries=()):
    """First iteration of each segment: a segment starts at an explicit boundary
    (a seq number) and wherever the iteration goes back."""
    if len(its) == 0:
        return [], 0
    back = np.flatnonzero(np.diff(its) < 0) + 1  # index of the first row after a step back
    starts = np.union1d(seq[back], np.asarray(list(boundaries), dtype=float))
    seg_id = np.searchsorted(starts, seq, side="right")
    first = np.flatnonzero(np.r_[True, np.diff(seg_id) != 0])
    return [int(its[i]) for i in first], len(back)


def finish_run(source, fmt, rows_list, boundaries=(), ordered=True, **facts):
    """Build the Run from collected rows.

    ordered: the rows' seq numbers order all kinds together (metrics.jsonl records);
    then boundaries are seq numbers where the log itself starts a new segment (a `run`
    record). Unordered (text logs), segments come from the longest stream alone.
    Iterations going back start a segment either way."""
    run = Run(source=source, format=fmt, **facts)
    tseq, tcols = _columns_of("train", rows_list, ordered)
    eseq, ecols = _columns_of("eval", rows_list, ordered)

    if ordered:
        seq = np.concatenate([tseq, eseq])
        its = np.concatenate([tcols["iter"], ecols["iter"]])
        order = np.argsort(seq, kind="stable")
        run.segments, went_back = _segment_starts(seq[order], its[order], boundaries)
    else:
        streams = [r for r in rows_list if r.data]
        longest = max(streams, key=lambda r: (r.kind == "train", len(r.data)), default=None)
        its = longest.column("iter") if longest else np.array([])
        its = its[np.isfinite(its)]
        run.segments, went_back = _segment_starts(np.arange(len(its), dtype=float), its)

    for r in rows_list:
        for c, n in r.nonfinite_printed().items():
            run.nonfinite_printed[c] = run.nonfinite_printed.get(c, 0) + n
        for c, res in r.rounded_zeros().items():
            run.rounded_zero[c] = max(res, run.rounded_zero.get(c, 0.0))
    run.train, tdup = _last_occurrence(tcols)
    run.eval, edup = _last_occurrence(ecols)
    if len(run.segments) > 1:
        shown = ", ".join(str(s) for s in run.segments[:12]) + (" ..." if len(run.segments) > 12 else "")
        run.notes.append(f"{len(run.segments)} segments (restarts or resumes) starting at iterations {shown}"
                         + (f"; the iteration went back {went_back} time(s)" if went_back else ""))
    if tdup or edup:
        run.notes.append(
            f"{tdup + edup} repeated iteration(s) ({tdup} train, {edup} eval): kept the last "
            f"occurrence of each, as a resumed run redoes the steps since its checkpoint")
    return run


# a bare nan/inf as Python prints a float (`'grad_norm': nan`), which literal_eval cannot read
NONFINITE_RX = re.compile(r"(?<![\w'\"])(-?)(nan|inf)(?![\w'\"])")


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def literal_dict(text):
    """The dict a log line printed (`{'loss': 2.1, 'grad_norm': nan}`), or None when the text is not one."""
    d = _literal(text)
    if d is None and ("nan" in text or "inf" in text):
        d = _literal(NONFINITE_RX.sub(r"'\1\2'", text))
        if isinstance(d, dict):
            d = {k: float(v) if v in ("nan", "inf", "-inf", "-nan") else v for k, v in d.items()}
    return d if isinstance(d, dict) else None
