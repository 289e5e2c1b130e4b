"""
Findings rendered for people (terminal, markdown) and programs (JSON, schema in
SCHEMA.md). The report only renders: every number comes from the Run or a Finding.
"""
import json
import math
import os
import shutil
import sys
import textwrap

import numpy as np

from atomic import make_parent, write_text_atomic
from diagnose.findings import QUESTIONS, SEVERITIES
from diagnose.recipe import recipe_line, recipe_of

SCHEMA = "diagnose.report/1"
COLOURS = {"critical": "\x1b[1;31m", "warning": "\x1b[33m", "notice": "\x1b[36m", "info": "\x1b[2m",
           "ok": "\x1b[32m"}
RESET = "\x1b[0m"


# -----------------------------------------------------------------------------
# small helpers


def write_atomic(path, text):
    """Write to a temporary name in the same folder, then rename: never a half-written file."""
    make_parent(path)
    write_text_atomic(path, text)


def jsonable(x):
    """Plain JSON values: numpy scalars and arrays to Python, NaN/Inf to null, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


def fmt_num(v, grouping=True):
    """A number as people read it: 3.6412, 6e-04, 524,288, 1.2e+09 (no commas inside lists)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if grouping and abs(int(v)) >= 10000 else str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return fmt_num(int(v), grouping)
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def evidence_items(evidence, limit=10):
    """The evidence worth printing: scalars and short lists, not curves."""
    out = []
    for k, v in (evidence or {}).items():
        if isinstance(v, dict):
            continue
        if isinstance(v, (list, tuple, np.ndarray)):
            if len(v) > 6 or any(isinstance(e, (list, dict, tuple)) for e in v):
                out.append(f"{k}=[{len(v)} values]")
                continue
            out.append(f"{k}=[{', '.join(fmt_num(e, grouping=False) for e in v)}]")
        else:
            out.append(f"{k}={fmt_num(v)}")
        if len(out) >= limit:
            break
    return out


def run_label(run):
    """A short name: the run folder for metrics.jsonl, else the file name."""
    path = run.source
    if os.path.basename(path) == "metrics.jsonl":
        path = os.path.dirname(path) or path
    return os.path.basename(path.rstrip("/")) or path


def worst_severity(findings):
    return max((f.severity for f in findings), key=SEVERITIES.index, default=None)


def sorted_findings(findings):
    return sorted(findings, key=lambda f: -f.rank())  # stable: detector order within a severity


def summary(run):
    """The facts a reader wants before the findings, as a dict (also the JSON 'run' block)."""
    t, e = run.train, run.eval
    out = {"first_iter": None, "last_iter": run.last_iter(), "train_points": int(len(t["iter"])),
           "eval_points": int(len(e["iter"])), "segments": list(run.segments),
           "tokens_per_iter": run.tokens_per_iter(), "train_tokens": run.train_tokens(),
           "params": run.model.get("params"), "last_train_loss": None, "last_val_loss": None,
           "best_val_loss": None, "best_val_iter": None, "nonfinite_train_losses": 0,
           "no_finite_loss": nothing_usable(run) is not None,
           "last_train_ppl": None, "last_val_ppl": None, "best_val_ppl": None, "last_val_bpb": None,
           "train_loss_kind": run.train_loss_kind, "grad_accum": run.grad_accum}
    firsts = [a["iter"][0] for a in (t, e) if len(a["iter"])]
    out["first_iter"] = int(min(firsts)) if firsts else None
    loss = t["loss"]
    finite = np.isfinite(loss)
    out["nonfinite_train_losses"] = int((~finite).sum())
    if finite.any():
        out["last_train_loss"] = float(loss[finite][-1])
    val = e["val_loss"]
    vf = np.isfinite(val)
    if vf.any():
        out["last_val_loss"] = float(val[vf][-1])
        i = int(np.nanargmin(np.where(vf, val, np.inf)))
        out["best_val_loss"], out["best_val_iter"] = float(val[i]), int(e["iter"][i])
    for key in ("last_train", "last_val", "best_val"):
        out[f"{key}_ppl"] = perplexity(out[f"{key}_loss"])
    bpb = e["val_bpb"][np.isfinite(e["val_bpb"])]
    if len(bpb):
        out["last_val_bpb"] = float(bpb[-1])
    recipe = recipe_of(run)
    out["optimizer"], out["model_options"] = (recipe[0], recipe[1]) if recipe else (None, None)
    return out


def perplexity(loss):
    """exp(loss) for a loss in nats per token; None when there is none or it overflows."""
    if loss is None or not math.isfinite(loss) or loss > 700:
        return None
    return math.exp(loss)


def _with_ppl(label, loss, ppl):
    return f"{label} {fmt_num(loss)}" + (f" (perplexity {fmt_num(ppl)})" if ppl is not None else "")


def nothing_usable(run):
    """A line saying the log holds no finite loss at all, else None."""
    losses = [run.train["loss"], run.eval["val_loss"], run.eval["train_loss"]]
    if any(np.isfinite(v).any() for v in losses):
        return None
    n = len(run.train["loss"]) + len(run.eval["val_loss"])
    return (f"no finite loss anywhere in the log ({n} values, all NaN/Inf or absent): the run diverged "
            f"before its first logged step, or the log does not carry the loss")


def summary_lines(run):
    s = summary(run)
    lines = []
    empty = nothing_usable(run)
    if empty:
        lines.append(empty)
    span = f"iterations {s['first_iter']}..{s['last_iter']}" if s["last_iter"] is not None else "no iterations"
    lines.append(f"{span}: {s['train_points']} train points, {s['eval_points']} evals"
                 + (f", {len(s['segments'])} segments" if len(s["segments"]) > 1 else ""))
    losses = []
    if s["last_train_loss"] is not None:
        losses.append(_with_ppl("last train loss", s["last_train_loss"], s["last_train_ppl"]))
    if s["last_val_loss"] is not None:
        losses.append(_with_ppl("last val loss", s["last_val_loss"], s["last_val_ppl"])
                      + (f" = {fmt_num(s['last_val_bpb'])} bits per byte" if s["last_val_bpb"] is not None else ""))
    if s["best_val_loss"] is not None:
        losses.append(_with_ppl("best val", s["best_val_loss"], s["best_val_ppl"]) + f" at iter {s['best_val_iter']}")
    if s["last_val_bpb"] is not None and s["last_val_loss"] is None:
        losses.append(f"last val {fmt_num(s['last_val_bpb'])} bits per byte")
    if s["nonfinite_train_losses"]:
        losses.append(f"{s['nonfinite_train_losses']} non-finite train losses")
    if losses:
        lines.append(", ".join(losses))
    if loss_kind_line(run):
        lines.append(loss_kind_line(run))
    if recipe_line(run):
        lines.append(recipe_line(run))
    known = []
    known.append(f"tokens/iter {fmt_num(s['tokens_per_iter'])}" if s["tokens_per_iter"] else "tokens/iter unknown")
    known.append(f"dataset {fmt_num(s['train_tokens'])} train tokens" if s["train_tokens"] else "dataset size unknown")
    if s["params"]:
        known.append(f"{fmt_num(s['params'])} params")
    if run.system.get("device_name"):
        known.append(str(run.system["device_name"]))
    lines.append(", ".join(known))
    return lines


KIND_WORDS = {"iteration_mean": "the mean over each iteration", "last_microbatch": "the last micro-batch of each iteration",
              "ema": "a moving average", "epoch_running_mean": "a running mean over the epoch"}


def loss_kind_line(run):
    """What one logged train loss is, when the format says."""
    words = KIND_WORDS.get(run.train_loss_kind)
    if not words or not len(run.train["iter"]):
        return None
    accum = f" ({run.grad_accum} micro-batches per iteration)" if run.grad_accum else ""
    return f"the logged train loss is {words}{accum}"


# -----------------------------------------------------------------------------
# the user's questions, each answered by its findings ("no" included)


def answers(findings):
    """One answer per question of findings.QUESTIONS: {key, question, answer, finding_id,
    severity, evidence}, from the most severe finding that answers it."""
    out = []
    for key, question, prefixes in QUESTIONS:
        if key == "change":
            out.append(_what_to_change(question, findings))
            continue
        mine = [f for f in findings if f.id.startswith(prefixes)]
        if not mine:
            answer = {"bump": "no bump beyond the noise was found",
                      }.get(key, "not assessed: the log lacks what this needs (see the missing facts below)")
            out.append({"key": key, "question": question, "answer": answer, "finding_id": None,
                        "severity": None, "evidence": []})
            continue
        f = max(mine, key=lambda x: x.rank())  # the first of the most severe (detector order)
        out.append({"key": key, "question": question, "answer": f.title, "finding_id": f.id,
                    "severity": f.severity, "evidence": evidence_items(f.evidence, limit=4)})
    return out


def _what_to_change(question, findings):
    """The recommendations of the warnings first, then of the notices; nothing when none asks for a change."""
    recs, ids = [], []
    for f in sorted_findings(findings):
        if f.rank() < SEVERITIES.index("notice"):
            break
        new = [r for r in f.recommendations if r not in recs]
        recs += new
        if new and f.id not in ids:
            ids.append(f.id)
    if not recs:
        return {"key": "change", "question": question, "answer": "nothing: no finding asks for a change",
                "finding_id": None, "severity": None, "evidence": []}
    worst = max((f for f in findings if f.id == ids[0]), key=lambda x: x.rank())
    return {"key": "change", "question": question, "answer": "; ".join(recs[:4]), "finding_id": ids[0],
            "severity": worst.severity, "evidence": [f"from {', '.join(ids[:4])}"]}


def answer_line(a):
    ev = f" ({', '.join(a['evidence'])})" if a["evidence"] else ""
    tag = f" [{a['finding_id']}]" if a["finding_id"] else ""
    return f"{a['question']} {a['answer']}{ev}{tag}"


# -----------------------------------------------------------------------------
# terminal


def use_colour(stream=None):
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


def render_terminal(run, findings, colour=False, width=None):
    width = width or min(100, shutil.get_terminal_size((100, 20)).columns)
    wrap = lambda text, indent: textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)
    out = [f"diagnose {run.source} ({run.format})"]
    out += [wrap(ln, "  ") for ln in summary_lines(run)]
    out.append("")
    out.append("answers:")
    out += [textwrap.fill(answer_line(a), width, initial_indent="  ", subsequent_indent="      ")
            for a in answers(findings)]
    out.append("")
    if not findings:
        out.append("no findings")
    for f in sorted_findings(findings):
        label = f"{f.severity.upper():<8}"
        if colour:
            label = f"{COLOURS[f.severity]}{label}{RESET}"
        where = f"  (iters {f.iters[0]}..{f.iters[1]})" if f.iters else ""
        out.append(f"{label} {f.title}{where}  [{f.id}]")
        if f.explanation:
            out.append(wrap(f.explanation, "    "))
        ev = evidence_items(f.evidence)
        if ev:
            out.append(wrap("evidence: " + ", ".join(ev), "    "))
        for r in f.recommendations:
            out.append(wrap(f"try: {r}", "    "))
        for m in f.missing:
            out.append(wrap(f"missing: {m}", "    "))
        out.append("")
    if run.notes:
        out.append("how the log was read:")
        out += [textwrap.fill(n, width, initial_indent="  - ", subsequent_indent="    ") for n in run.notes]
    return "\n".join(out).rstrip() + "\n"


# -----------------------------------------------------------------------------
# markdown


def render_markdown(run, findings, plots=()):
    out = [f"# Diagnosis of `{run.source}`", "", f"Format: {run.format}", ""]
    out += [f"- {ln}" for ln in summary_lines(run)]
    out.append("")
    out += ["## Answers", ""]
    out += [f"- **{a['question']}** {a['answer']}" + (f" ({', '.join(a['evidence'])})" if a["evidence"] else "")
            + (f" `{a['finding_id']}`" if a["finding_id"] else "") for a in answers(findings)]
    out.append("")
    counts = {s: sum(f.severity == s for f in findings) for s in reversed(SEVERITIES)}
    out.append("| severity | count |")
    out.append("| --- | --- |")
    out += [f"| {s} | {n} |" for s, n in counts.items()]
    out.append("")
    for p in plots:
        out.append(f"![{os.path.basename(p)}]({p})")
    if plots:
        out.append("")
    for f in sorted_findings(findings):
        where = f" (iters {f.iters[0]}–{f.iters[1]})" if f.iters else ""
        out.append(f"## {f.severity.upper()}: {f.title}{where}")
        out.append("")
        out.append(f"`{f.id}`")
        out.append("")
        if f.explanation:
            out += [f.explanation, ""]
        ev = evidence_items(f.evidence, limit=20)
        if ev:
            out += ["Evidence: " + ", ".join(f"`{e}`" for e in ev), ""]
        if f.recommendations:
            out.append("Try:")
            out += [f"- `{r}`" if r.startswith("--") else f"- {r}" for r in f.recommendations]
            out.append("")
        if f.missing:
            out.append("Missing facts:")
            out += [f"- {m}" for m in f.missing]
            out.append("")
    if run.notes:
        out.append("## How the log was read")
        out.append("")
        out += [f"- {n}" for n in run.notes]
        out.append("")
    return "\n".join(out)


# -----------------------------------------------------------------------------
# JSON (SCHEMA.md documents every key; add keys, never rename or remove them)


def to_json(run, findings, plots=()):
    s = summary(run)
    doc = {
        "schema": SCHEMA,
        "source": run.source,
        "format": run.format,
        "run": s,
        "facts": {"config": run.config, "model": run.model, "data": run.data, "system": run.system},
        "worst_severity": worst_severity(findings),
        "counts": {sev: sum(f.severity == sev for f in findings) for sev in SEVERITIES},
        "findings": [f.to_dict() for f in sorted_findings(findings)],
        "events": run.events,
        "notes": list(run.notes),
        "plots": list(plots),
        "answers": answers(findings),
    }
    return jsonable(doc)


def render_json(run, findings, plots=()):
    return json.dumps(to_json(run, findings, plots), indent=2, allow_nan=False) + "\n"
