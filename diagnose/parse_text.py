"""
Text logs into a Run: nanoGPT, llm.c, modded-nanogpt, a few other known line
shapes, and a generic fallback for anything with a step number and named losses.

Speed: each recognised line shape is one compiled regex run over the whole text
with findall (one pass in C), never a chain of regexes tried per line. Which
shapes a log uses is decided on its first 512 KB and last 256 KB.
"""
import re

from diagnose.parse_common import Rows, finish_run, literal_dict
from diagnose.run import grad_accum_of
from errors import UserError

V = r"([^\s,|%<#]+)"  # a value; what float() cannot read becomes NaN later (`<`, `#`: a hand-written note)
NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|(?i:nan|inf))\b)"  # a number, nan or inf, nothing else


class Shape:
    """One kind of log line: its regex and what each capture group is."""

    def __init__(self, name, family, kind, regex, columns, scale=None, offset=None, rows=None,
                 loss_kind="unknown"):
        self.name = name          # as the user would recognise it: 'iter N: loss X, time Yms, mfu Z%'
        self.family = family      # 'nanogpt', 'llmc', 'modded-nanogpt' or 'generic'
        self.kind = kind          # 'train' or 'eval'
        self.regex = re.compile(regex)
        self.columns = columns    # one per group; names starting with '_' are not series
        self.scale = scale or {}
        self.offset = offset or {}
        self.rows = rows          # optional: matches -> (columns, rows) for shapes needing more than groups
        self.loss_kind = loss_kind  # train shapes: what the printed loss averages over (run.TRAIN_LOSS_KINDS)


def _megatron_rows(matches):
    """Megatron prints `name: value |` fields in an order that varies between versions."""
    # old Megatron-LM prints `lm loss X | loss scale S` without the colons
    fields = (("loss", r"lm loss:? " + V), ("lr", r"learning rate:? " + V), ("grad_norm", r"grad norm:? " + V),
              ("dt_ms", r"elapsed time per iteration \(ms\):? " + V), ("grad_scale", r"loss scale:? " + V))
    found = [(c, re.compile(p)) for c, p in fields]
    out = []
    for it, total, rest in matches:
        vals = [total]
        for _, rx in found:
            m = rx.search(rest)
            vals.append(m.group(1) if m else "")
        out.append((it, *vals))
    return ("iter", "_max_iters") + tuple(c for c, _ in found), out


def _llmc_val_rows(matches):
    """llm.c evaluates at the top of loop step k and then prints `step k+1/M`, so an eval's
    iteration is the N of the step line before it (0 before the first)."""
    out, last = [], 0
    for step, val in matches:
        if step:
            last = int(step)
        else:
            out.append((last, val))
    return ("iter", "val_loss"), out


HF_KEYS = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "epoch": "epoch"}


def _hf_rows(matches, kind):
    """HF Trainer prints dicts, most without a `step`: there a train dict is numbered by how many
    train dicts came before it, counting from 1, and an eval dict by the train dicts before it (the
    Trainer logs, then evaluates, at the same step). _hf_steps turns these counts into steps with
    the logging interval when the log states it."""
    out, n_train = [], 0
    for text in matches:
        d = literal_dict(text)
        if d is None:
            continue
        if "loss" in d:
            n_train += 1
            if kind == "train":
                out.append((d.get("step", n_train), d.get("loss"), d.get("learning_rate"), d.get("grad_norm"),
                            d.get("epoch")))
        elif kind == "eval" and "eval_loss" in d:
            out.append((d.get("step", n_train), d.get("eval_loss"), d.get("epoch")))
    if kind == "train":
        return ("iter", "loss", "lr", "grad_norm", "epoch"), out
    return ("iter", "val_loss", "epoch"), out


HF_DICT = r"(?m)^[^{\n]*(\{'(?:eval_)?loss': [^\n]*\})[^\n]*$"  # both kinds, in file order


def _hf_interval(text, key):
    """HF Trainer's logging_steps or eval_steps when the log echoes it (TrainingArguments, a JSON config,
    the command line) with one value and that logging/eval is by steps; None otherwise."""
    strategy = "logging_strategy" if key == "logging_steps" else "eval(?:uation)?_strategy"
    if re.search(strategy + r"\W+(?:IntervalStrategy\.)?(?i:epoch|no)\b", text):
        return None
    found = {int(m) for m in re.findall(key + r"""['"]?\s*[=:]?\s*(\d+)""", text)}
    return found.pop() if len(found) == 1 and min(found) > 0 else None


def _hf_steps(text, rows_list, recognised):
    """HF dicts without `step`: scale their record counts by the logging interval (evals: by
    eval_steps, else the last logged step before them), or say that the iterations are counts of
    logged records. Returns the note for the run, or None."""
    hf = [(r, s) for r, (s, _) in zip(rows_list, recognised) if "HF Trainer" in s.name]
    if not hf or "'step'" in re.findall(HF_DICT, text)[0]:
        return None
    interval, every = _hf_interval(text, "logging_steps"), _hf_interval(text, "eval_steps")
    if interval:
        for rows, shape in hf:
            if shape.kind == "eval" and every:
                rows.data = [((j + 1) * every, *row[1:]) for j, row in enumerate(rows.data)]
            else:
                rows.scale["iter"] = interval
        return (f"HF Trainer dicts without 'step': iteration = logged records x logging_steps ({interval})"
                + (f", evals every eval_steps ({every})" if every else ", an eval at the last logged step"))
    for rows, _ in hf:  # the train record k (from 0) is iteration k, as before
        rows.offset["iter"] = -1
    return ("HF Trainer dicts without 'step' and no logging_steps in the log: the iteration is the record's "
            "index (0, 1, 2, ...), not the optimizer step")


SHAPES = [
    # nanoGPT train.py
    Shape("iter N: loss X, time Yms, mfu Z%", "nanogpt", "train",
          r"iter (\d+): loss " + V + r"(?:, time ([^\s,m]+) ?ms)?(?:, mfu ([^\s,%]+)%)?",
          ("iter", "loss", "dt_ms", "mfu"), scale={"mfu": 0.01}, loss_kind="last_microbatch"),
    Shape("step N: train loss X, val loss Y", "nanogpt", "eval",  # this repository adds `, val bpb Z`
          r"step (\d+): train loss " + V + r", val loss " + V + r"(?:, val bpb " + V + ")?",
          ("iter", "train_loss", "val_loss", "val_bpb")),
    # llm.c: main.log lines and its stdout line (which prints step + 1)
    Shape("s:N trl:X lr:Y norm:Z", "llmc", "train",
          r"(?<![\w:])s:(\d+) trl:([^\s]+)(?: lr:([^\s]+))?(?: norm:([^\s]+))?", ("iter", "loss", "lr", "grad_norm"),
          loss_kind="iteration_mean"),
    Shape("s:N tel:X", "llmc", "eval", r"(?<![\w:])s:(\d+) tel:([^\s]+)", ("iter", "val_loss")),
    Shape("step N/M | loss X | norm G | lr L | T ms", "llmc", "train",
          r"step\s+(\d+)/(\d+) \| loss\s+([^\s|]+)[^|\n]*\| norm\s+([^\s|]+)[^|\n]*\| lr ([^\s|]+) \| ([\d.]+) ms"
          r"(?: \| ([\d.]+)% bf16 MFU)?(?: \| ([\d.]+) tok/s)?",
          ("iter", "_max_iters", "loss", "grad_norm", "lr", "dt_ms", "mfu", "tokens_per_sec"),
          scale={"mfu": 0.01}, offset={"iter": -1}, loss_kind="iteration_mean"),
    # llm.c stdout prints `val loss X` alone, at the top of the loop's step after the last `step N/M` line
    Shape("val loss X (llm.c, after step N/M)", "llmc", "eval",
          r"(?m)^(?:step\s+(\d+)/\d+ \| loss|val loss\s+" + NUM + ")", None, rows=_llmc_val_rows),
    # modded-nanogpt
    Shape("step:N/M train_loss:X", "modded-nanogpt", "train",
          r"step:(\d+)/(\d+) train_loss:([^\s]+)", ("iter", "_max_iters", "loss"),
          loss_kind="last_microbatch"),  # `train_loss = loss.detach()` inside the micro-step loop, rank 0
    Shape("step:N/M val_loss:X", "modded-nanogpt", "eval",
          r"step:(\d+)/(\d+) val_loss:([^\s]+)", ("iter", "_max_iters", "val_loss")),
    # Karpathy's build-nanogpt log.txt (`0 train 10.955`, `250 val 3.78`, `250 hella 0.2487`: an accuracy)
    Shape("N train X / N val X (build-nanogpt log.txt)", "build-nanogpt", "train",
          r"(?m)^[ \t]*(\d+) train " + NUM, ("iter", "loss"), loss_kind="iteration_mean"),  # loss_accum
    Shape("N val X (build-nanogpt log.txt)", "build-nanogpt", "eval",
          r"(?m)^[ \t]*(\d+) val " + NUM, ("iter", "val_loss")),
    # nanochat scripts/base_train: the printed loss is a debiased EMA; val is in bits per byte
    Shape("step N/M (p%) | loss: X | lrm: Y (nanochat)", "nanochat", "train",
          r"step (\d+)/(\d+) \([\d.]+%\) \| loss: " + NUM + r"(?: \| lrm: [^\s|]+)?(?: \| dt: ([\d.]+)ms)?",
          ("iter", "_max_iters", "loss", "dt_ms"), loss_kind="ema"),
    Shape("Step N | Validation bpb: X (nanochat)", "nanochat", "eval",
          r"Step (\d+) \| Validation bpb: " + NUM, ("iter", "val_bpb")),
    # torchtitan's metrics line, behind any logger prefix (`[rank0]:[titan] ... INFO - `)
    Shape("step: N  loss: X  grad_norm: G (torchtitan)", "torchtitan", "train",
          r"step:\s*(\d+)\s+loss:\s*" + NUM + r"(?:\s+grad_norm:\s*" + NUM + r")?",
          ("iter", "loss", "grad_norm"), loss_kind="iteration_mean"),
    # other trainers people post logs from
    Shape("N | loss X | lr Y | Tms | mfu Z%", "generic", "train",
          r"(?m)^[ \t]*(\d+) \| loss ([^\s|]+)(?: \| lr ([^\s|]+))?(?: \| ([\d.]+) ?ms)?(?: \| mfu ([^\s|%]+)%)?",
          ("iter", "loss", "lr", "dt_ms", "mfu"), scale={"mfu": 0.01}),
    Shape("Ep E (Step N): Train loss X, Val loss Y", "generic", "eval",
          r"Ep (\d+) \(Step (\d+)\): Train loss " + V + r", Val loss " + V,
          ("epoch", "iter", "train_loss", "val_loss"), offset={"epoch": -1}),
    Shape("N iterations -- validation loss X", "generic", "eval",
          r"(\d+) iterations? -- validation loss " + V, ("iter", "val_loss")),
    Shape("step N, loss: X, norm: G, lr: L", "generic", "train",
          r"step (\d+), loss: " + V + r"(?:, norm: " + V + r")?(?:, lr: " + V + r")?(?:, time: ([\d.]+) ?ms)?"
          r"(?:, tok(?:ens)?/sec: ([\d.]+))?", ("iter", "loss", "grad_norm", "lr", "dt_ms", "tokens_per_sec")),
    Shape("iter N step S: loss X, iter time: Tms", "generic", "train",
          r"iter (\d+) step (\d+): loss " + V + r"(?:, iter time: ([\d.]+) ?ms)?", ("iter", "_step", "loss", "dt_ms")),
    Shape("iter N step S | loss train: X", "generic", "train",
          r"iter (\d+) step (\d+) \| loss train: " + V + r"[^|\n]*(?:\| iter time: ([\d.]+) ?ms)?",
          ("iter", "_step", "loss", "dt_ms"), loss_kind="iteration_mean"),  # litgpt's RunningMean over the accumulation
    Shape("iteration N/ M | ... lm loss: X |", "generic", "train",
          r"iteration\s+(\d+)/\s*(\d+) \|([^\n]*lm loss:? [^\n]*)", None, rows=_megatron_rows,
          loss_kind="iteration_mean"),  # averaged over the log interval
    Shape("validation loss at iteration N | lm loss value: X", "generic", "eval",
          r"validation loss at iteration (\d+)[^\n]*?(?i:lm loss)(?: value)?: " + V, ("iter", "val_loss")),
    # a dict per line, maybe behind a progress bar and followed by a note (`} <-- spike`)
    Shape("{'loss': X, ...} (HF Trainer)", "generic", "train",
          HF_DICT, None, rows=lambda m: _hf_rows(m, "train"),
          loss_kind="iteration_mean"),  # the mean since the last log, over the accumulation too
    Shape("{'eval_loss': X, ...} (HF Trainer)", "generic", "eval",
          HF_DICT, None, rows=lambda m: _hf_rows(m, "eval")),
]

GENERIC = [s.name for s in SHAPES if s.family == "generic"]

# the fallback: a step number and at least one named loss on a line, in any order and punctuation
STEP_RX = re.compile(r"(?i)\b(step|iteration|iter|it)\b\s*[:=#]?\s*(\d+)")
NAMED_RX = re.compile(r"(?i)\b(train[_ ]loss|val(?:id(?:ation)?)?[_ ]loss|eval[_ ]loss|test[_ ]loss|loss|"
                      r"lr|learning[_ ]rate|grad[_ ]norm)\b\s*[:=]?\s*"
                      r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|nan|inf))\b")
NAMED_COLUMNS = {"loss": "loss", "train_loss": "loss", "val_loss": "val_loss", "valid_loss": "val_loss",
                 "validation_loss": "val_loss", "eval_loss": "val_loss", "test_loss": "val_loss",
                 "lr": "lr", "learning_rate": "lr", "grad_norm": "grad_norm"}

ANSI_RX = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
HEAD, TAIL = 512 * 1024, 256 * 1024


def clean(text):
    """Drop terminal colour codes; a carriage return (progress bars) ends a line."""
    if "\x1b" in text:
        text = ANSI_RX.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def sample_of(text):
    if len(text) <= HEAD + TAIL:
        return text
    return text[:HEAD] + "\n" + text[-TAIL:]


def shapes_in(text):
    """The known line shapes a log uses (judged on a sample, then the whole text)."""
    for part in (sample_of(text), text):
        found = [s for s in SHAPES if s.regex.search(part)]
        if found:
            return found
        if part is text:
            break
    return []


def parse_text(path, text):
    """A Run from a text log, or a UserError saying what was tried."""
    from diagnose.context import config_from_text
    text = clean(text)
    shapes = shapes_in(text)
    rows_list, recognised = [], []
    for shape in shapes:
        matches = shape.regex.findall(text)
        if shape.rows is not None:
            columns, data = shape.rows(matches)
        else:
            columns, data = shape.columns, matches
            if len(columns) == 1:  # findall gives bare strings for one group
                data = [(m,) for m in data]
        rows = Rows(shape.kind, columns, scale=shape.scale, offset=shape.offset)
        rows.data = data
        if rows.data:
            rows_list.append(rows)
            recognised.append((shape, len(rows.data)))
    generic_fallback = False
    if not rows_list:
        rows_list, name = _fallback_rows(text)
        generic_fallback = bool(rows_list)
    if not rows_list:
        raise UserError(f"{path}: no training log lines found; tried metrics.jsonl, wandb CSV, nanoGPT "
                        f"('iter N: loss X', 'step N: train loss X, val loss Y'), llm.c ('s:N trl:X'), "
                        f"modded-nanogpt ('step:N/M val_loss:X'), {len(GENERIC)} other line shapes "
                        f"({'; '.join(GENERIC)}) "
                        f"and any line with a step number and a named loss; pass a training log")

    if generic_fallback:
        fmt = f"generic: {name}"
    else:
        families = sorted({s.family for s, _ in recognised if s.family != "generic"})
        generic = any(s.family == "generic" for s, _ in recognised)
        fmt = "generic: " + " + ".join(s.name for s, _ in recognised) if generic else "+".join(families)
    hf_note = _hf_steps(text, rows_list, recognised)
    # the seq of text rows is their index within one shape: file order is known per shape only
    run = finish_run(str(path), fmt, rows_list, ordered=False)

    config, model, system, config_notes = config_from_text(text, sample_of(text))
    for rows in rows_list:  # 'step:N/M' and llm.c's 'step N/M' say the planned length
        if "_max_iters" in rows.columns and rows.data:
            config.setdefault("max_iters", int(rows.column("_max_iters")[-1]))
    run.config.update(config)
    run.model.update(model)
    run.system.update(system)
    run.train_loss_kind = _train_loss_kind(recognised, text)
    run.grad_accum = _grad_accum(text, run.config)

    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1) - text.count("\n\n")  # not blank ones
    used = sum(len(r.data) for r in rows_list)
    if generic_fallback:
        run.notes.insert(0, f"recognised the generic pattern '{name}' on {used} line(s)")
    else:
        run.notes.insert(0, "recognised " + "; ".join(f"'{s.name}' ({n} lines)" for s, n in recognised))
    other = n_lines - used
    if other > 0:
        run.notes.append(f"{other} other line(s) skipped (config, sample text, progress bars)")
    if any(s.name.startswith("step N/M") for s, _ in recognised):
        run.notes.append("llm.c prints step + 1 on stdout: iterations here are its step index (N - 1)")
    if any(s.name.startswith("iter N step S") for s, _ in recognised):
        run.notes.append("iteration = litgpt's 'iter' (micro-batches); its optimizer step is 'step'")
    if any(s.name.startswith("Ep E") for s, _ in recognised):
        run.notes.append("the epoch column is 'Ep E' - 1 (epochs completed), not a fraction")
    if hf_note:
        run.notes.append(hf_note)
    run.notes.extend(config_notes)
    return run


# this repository's train.py prints nanoGPT's `iter N: loss X` lines, but with the mean over the
# iteration's micro-batches; its start-up line tells its stdout from nanoGPT's
OUR_START_RX = re.compile(r"(?m)^(?:training from scratch|resuming at iter \d+): [\d.]+M parameters")


def _train_loss_kind(recognised, text):
    """What the printed train loss averages over: the kind of the train shape with the most lines."""
    train = [(n, s) for s, n in recognised if s.kind == "train"]
    if not train:
        return "unknown"
    shape = max(train, key=lambda t: t[0])[1]
    if shape.family == "nanogpt" and OUR_START_RX.search(text[:20000]):
        return "iteration_mean"
    return shape.loss_kind


# nanochat `gradient accumulation steps: 2`, llm.c `=> setting grad_accum_steps=16`,
# build-nanogpt `=> calculated gradient accumulation steps: 32`
ACCUM_RX = re.compile(r"\b[Gg]rad(?:ient)?[ _]accum(?:ulation)?[ _]steps\s*[:=]\s*(\d+)\b(?!\s*[*/])")


def _grad_accum(text, config):
    """Micro-batches per iteration, when the log says (an echoed config first, then a printed count)."""
    if grad_accum_of(config):
        return grad_accum_of(config)
    m = ACCUM_RX.search(text[:HEAD])  # printed at start-up, before the first step
    return int(m.group(1)) if m else None


def _fallback_rows(text):
    """Lines with a step number and named losses: slow (per line), so only for unknown logs."""
    train = Rows("train", ("iter", "loss", "lr", "grad_norm"))
    evals = Rows("eval", ("iter", "val_loss"))
    keys_seen = {}
    for line in text.split("\n"):
        m = STEP_RX.search(line)
        if not m:
            continue
        vals = {}
        for name, value in NAMED_RX.findall(line[m.end():]) + NAMED_RX.findall(line[:m.start()]):
            col = NAMED_COLUMNS.get(name.lower().replace(" ", "_"))
            if col and col not in vals:
                vals[col] = value
                keys_seen.setdefault(name, None)
        if "loss" not in vals and "val_loss" not in vals:
            continue
        step_word = m.group(1)
        keys_seen.setdefault(f"{step_word} N", None)
        if "loss" in vals:
            train.data.append((m.group(2), vals["loss"], vals.get("lr", ""), vals.get("grad_norm", "")))
        if "val_loss" in vals:
            evals.data.append((m.group(2), vals["val_loss"]))
    rows_list = [r for r in (train, evals) if r.data]
    names = list(keys_seen)
    name = " ... ".join([n for n in names if n.endswith(" N")][:1] + [f"{n} X" for n in names if not n.endswith(" N")][:5])
    return rows_list, name
