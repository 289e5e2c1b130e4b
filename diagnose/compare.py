"""
Several runs side by side: a table of where each got to, on a tokens axis, and
an overlay plot. Tokens are the logged ones, else iterations x tokens_per_iter;
a run with neither is listed with the reason and left out of the overlay.
"""
import numpy as np

from diagnose.report import fmt_num, jsonable, run_label, summary, worst_severity

COLUMNS = ("run", "format", "last iter", "tokens", "tokens/iter", "last train", "last val", "best val (iter)",
           "worst finding")


def tokens_axis(run):
    """(function from a Run's train/eval columns to tokens, where they come from), or (None, why)."""
    logged = [c["tokens"] for c in (run.train, run.eval) if len(c["iter"])]
    if logged and all(np.isfinite(t).all() for t in logged):
        return (lambda cols: cols["tokens"]), "logged"
    tpi = run.tokens_per_iter()
    if tpi:
        return (lambda cols: cols["iter"] * tpi), f"iterations x {tpi:,} tokens/iter"
    return None, "tokens unknown: give --tokens-per-iter N (or --config FILE.py)"


def table_rows(runs, findings_per_run):
    rows = []
    for run, findings in zip(runs, findings_per_run):
        s = summary(run)
        to_tokens, how = tokens_axis(run)
        tokens = None
        if to_tokens is not None and s["last_iter"] is not None:
            cols = run.train if len(run.train["iter"]) else run.eval
            tokens = float(to_tokens(cols)[-1])
        rows.append({
            "run": run_label(run), "source": run.source, "format": run.format, "last_iter": s["last_iter"],
            "tokens": tokens, "tokens_from": how, "tokens_per_iter": s["tokens_per_iter"],
            "last_train_loss": s["last_train_loss"], "last_val_loss": s["last_val_loss"],
            "best_val_loss": s["best_val_loss"], "best_val_iter": s["best_val_iter"],
            "worst_severity": worst_severity(findings), "last_val_bpb": s["last_val_bpb"],
            "tokenizer": tokenizer_of(run),
        })
    return rows


def tokenizer_of(run):
    """What the run's tokens are (name or kind, vocabulary size), or None when the run does not say."""
    t = run.data.get("tokenizer")
    if not isinstance(t, dict):
        return None
    name = t.get("name") or t.get("kind") or t.get("encoding")
    return f"{name or 'tokenizer'} ({t['vocab_size']})" if t.get("vocab_size") else name


def on_bpb(rows):
    """True when the runs must be compared on val bits per byte: every run has it and their
    tokenizers differ (a loss per token of one vocabulary is not comparable with another's)."""
    toks = {r["tokenizer"] for r in rows}
    return len(rows) > 1 and all(r["last_val_bpb"] is not None for r in rows) and len(toks) > 1 and None not in toks


def bpb_line(rows):
    best = min(rows, key=lambda r: r["last_val_bpb"])
    return (f"compared on val bits per byte (the tokenizers differ: {', '.join(sorted({r['tokenizer'] for r in rows}))}): "
            + ", ".join(f"{r['run']} {fmt_num(r['last_val_bpb'])}" for r in rows) + f"; lowest: {best['run']}")


def _cells(r):
    best = f"{fmt_num(r['best_val_loss'])} ({r['best_val_iter']})" if r["best_val_loss"] is not None else "-"
    tokens = f"{r['tokens']:.3g}" if r["tokens"] is not None else "unknown"
    fmt = r["format"] if len(r["format"]) <= 32 else r["format"][:31] + "…"
    return [r["run"], fmt, fmt_num(r["last_iter"]), tokens,
            fmt_num(r["tokens_per_iter"]) if r["tokens_per_iter"] else "unknown",
            fmt_num(r["last_train_loss"]) if r["last_train_loss"] is not None else "-",
            fmt_num(r["last_val_loss"]) if r["last_val_loss"] is not None else "-", best,
            r["worst_severity"] or "-"]


def render_table(rows, markdown=False):
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + " --- |" * len(COLUMNS))
    else:
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if on_bpb(rows):
        lines.append(("- " if markdown else "") + bpb_line(rows))
    unknown = [r for r in rows if r["tokens"] is None]
    for r in unknown:
        lines.append(f"{'- ' if markdown else ''}{r['run']}: {r['tokens_from']}; left out of the tokens overlay")
    return "\n".join(lines) + "\n"


def compare_json(rows, docs):
    return jsonable({"schema": "diagnose.compare/1", "table": rows, "compared_on": "val_bpb" if on_bpb(rows) else
                     "val_loss", "runs": docs})
