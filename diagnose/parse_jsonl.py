"""
metrics.jsonl (DESIGN.md, written by train.py) into a Run.

run_from_records() is also what the live monitor calls on the records train.py
has written so far, so it takes plain dicts and never touches a file.
"""
import json

from diagnose.parse_common import Rows, finish_run
from diagnose.run import EVAL_COLUMNS, TRAIN_COLUMNS, grad_accum_of
from errors import UserError

TRAIN_FIELDS = TRAIN_COLUMNS      # record keys are the column names
EVAL_FIELDS = EVAL_COLUMNS
OTHER_EVENTS = ("checkpoint", "warning", "end")


def run_from_records(records, source):
    """A Run from metrics.jsonl records (dicts), in the order they were written."""
    train = Rows("train", TRAIN_FIELDS)
    evals = Rows("eval", EVAL_FIELDS)
    other = []
    for seq, r in enumerate(records):
        event = r.get("event") if isinstance(r, dict) else None
        if event == "train":
            train.add(seq, *[r.get(k) for k in TRAIN_FIELDS])
        elif event == "eval":
            evals.add(seq, *[r.get(k) for k in EVAL_FIELDS])
        else:
            other.append((seq, r))
    return _assemble(source, train, evals, other)


def parse_jsonl(path, raw):
    """Read metrics.jsonl (bytes). A cut-off last line (a run still writing, or
    killed) is ignored with a note; other unreadable lines are counted and skipped.

    Fast path: pyarrow reads the train/eval numbers of every record in C++; the few
    other records (run, checkpoint, warning, end) and lines holding NaN/Infinity
    (which pyarrow rejects) are read with json.loads. Any surprise falls back to
    json.loads on every line."""
    notes = []
    end = len(raw)
    while end and raw[end - 1:end].isspace():  # (no copy of the whole file: it can be 200 MB)
        end -= 1
    cut = raw.rfind(b"\n", 0, end)
    try:
        json.loads(raw[cut + 1:end])
    except ValueError:
        end = cut + 1 if cut >= 0 else 0
        notes.append("the last line is cut off (the run was still writing or was killed): ignored")
    body = memoryview(raw)[:end] if end < len(raw) else raw
    if not raw[:min(end, 65536)].strip() and not bytes(body).strip():
        raise UserError(f"{path} has no readable JSON records; pass a metrics.jsonl written by train.py "
                        f"(or a text log / wandb CSV)")
    try:
        run = _fast(path, body)
    except _Slow:
        run = _slow(path, _lines(body))
    run.notes.extend(notes)
    if not len(run.train["iter"]) and not len(run.eval["iter"]):
        raise UserError(f"{path} has no `train` or `eval` record with an iteration; let the run "
                        f"log at least one step (log_interval) before diagnosing")
    return run


class _Slow(Exception):
    pass


def _lines(body):
    return [ln for ln in bytes(body).split(b"\n") if ln.strip()]


def _slow(path, lines):
    records, bad = [], 0
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    if not records:
        raise UserError(f"{path} has no readable JSON records; pass a metrics.jsonl written by train.py "
                        f"(or a text log / wandb CSV)")
    run = run_from_records(records, str(path))
    if bad:
        run.notes.append(f"{bad} unreadable line(s) skipped")
    return run


def _read_table(buffer):
    import pyarrow as pa
    import pyarrow.json as pj
    numeric = sorted(set(TRAIN_FIELDS) | set(EVAL_FIELDS))
    schema = pa.schema([("event", pa.string())] + [(c, pa.float64()) for c in numeric])
    return pj.read_json(pa.py_buffer(buffer), read_options=pj.ReadOptions(block_size=1 << 24),
                        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))


def _rare_records(body, expected):
    """The lines of the rare events, found by a fast byte search for how json.dumps writes
    them; None when that does not account for all of them (another writer's spacing)."""
    found = []
    size = len(body)
    body = body.obj if isinstance(body, memoryview) else body  # search the bytes, within size
    for event in (b"run",) + tuple(e.encode() for e in OTHER_EVENTS):
        needle = b'"event": "' + event + b'"'
        pos = body.find(needle, 0, size)
        while pos >= 0:
            start = body.rfind(b"\n", 0, pos) + 1
            stop = body.find(b"\n", pos, size)
            stop = size if stop < 0 else stop
            found.append((start, body[start:stop]))
            pos = body.find(needle, stop, size)
    if len(found) != expected:
        return None
    return [line for _, line in sorted(found)]


def _fast(path, body):
    """pyarrow for the numbers of all records; json.loads for the rest."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    patched, lines = {}, None
    try:
        table = _read_table(body)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        if b"NaN" not in bytes(body) and b"Infinity" not in bytes(body):
            raise _Slow()
        # NaN / Infinity are not JSON (Python writes them anyway): read those lines in Python
        lines = _lines(body)
        for i, ln in enumerate(lines):
            if b"NaN" in ln or b"Infinity" in ln:
                try:
                    patched[i] = json.loads(ln)
                except ValueError:
                    raise _Slow()
                lines[i] = b'{"event": "patched"}'
        try:
            table = _read_table(b"\n".join(lines))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise _Slow()
        if table.num_rows != len(lines):
            raise _Slow()

    def event_is(name):  # a writable bool array; a record without `event` is neither
        hit = pc.fill_null(pc.equal(table.column("event"), name), False)
        return np.array(hit.to_numpy(zero_copy_only=False), dtype=bool)

    is_train, is_eval = event_is("train"), event_is("eval")
    numeric = sorted(set(TRAIN_FIELDS) | set(EVAL_FIELDS))
    cols = {c: table.column(c).to_numpy() for c in numeric}
    if patched:
        cols = {c: np.array(v, dtype=float) for c, v in cols.items()}  # writable copies
        for i, rec in patched.items():  # put the NaN/Infinity records' numbers back
            is_train[i], is_eval[i] = rec.get("event") == "train", rec.get("event") == "eval"
            for c in numeric:
                v = rec.get(c)
                cols[c][i] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
    seq = np.arange(table.num_rows)
    train = Rows.from_arrays("train", TRAIN_FIELDS, seq[is_train], [cols[c][is_train] for c in TRAIN_FIELDS])
    evals = Rows.from_arrays("eval", EVAL_FIELDS, seq[is_eval], [cols[c][is_eval] for c in EVAL_FIELDS])
    # everything else is rare: run, checkpoint, warning, end (and records without a known event)
    rare = np.flatnonzero(~(is_train | is_eval))
    if lines is None:
        rare_lines = _rare_records(body, len(rare))
        if rare_lines is None:  # spacing other than json.dumps's: index the lines
            lines = _lines(body)
            if len(lines) != table.num_rows:
                raise _Slow()
        else:
            return _assemble(path, train, evals, [(int(i), json.loads(ln)) for i, ln in zip(rare, rare_lines)])
    other = [(int(i), patched[i] if i in patched else json.loads(lines[i])) for i in rare]
    return _assemble(path, train, evals, other)


def _assemble(source, train, evals, other):
    """The Run from train/eval Rows and the other (seq, record) pairs: each `run`
    record after the first starts a segment; config, model, data and system facts
    are merged, the later ones winning."""
    config, model, data, system = {}, {}, {}, {}
    boundaries, events, unknown, n_run = [], [], 0, 0
    for seq, r in other:
        event = r.get("event") if isinstance(r, dict) else None
        if event == "run":
            n_run += 1
            if n_run > 1:
                boundaries.append(seq)
            for dest, key in ((config, "config"), (model, "model"), (data, "data"), (system, "system")):
                if isinstance(r.get(key), dict):
                    dest.update(r[key])
            if r.get("resumed_from_iter") is not None:
                events.append({k: v for k, v in r.items() if k not in ("config", "model", "data", "system")})
        elif event in OTHER_EVENTS:
            events.append(r)
        else:
            unknown += 1
    run = finish_run(str(source), "metrics.jsonl", [train, evals], boundaries,
                     config=config, model=model, data=data, system=system, events=events,
                     train_loss_kind="iteration_mean",  # train.py logs the mean over the micro-steps
                     grad_accum=grad_accum_of(config))
    if unknown:
        run.notes.append(f"{unknown} record(s) with an unknown event skipped")
    if n_run == 0 and (train.data or evals.data):
        run.notes.append("no `run` record: config, model and data facts must come from flags")
    return run
