"""
python -m diagnose PATH [PATH ...]: read the log(s), run the detectors, report.

One path: a report sorted by severity (terminal; --md, --json, --plot DIR).
Several paths: a comparison table on a tokens axis and an overlay plot, then
each run's findings.
"""
import argparse
import json
import os
import sys

from errors import UserError

EPILOG = """examples:
  python -m diagnose out/                          # a run folder (metrics.jsonl)
  python -m diagnose train.log --config config/train_fineweb_4070.py --data data/fineweb_single
  python -m diagnose llmc_main.log --tokens-per-iter 524288 --train-tokens 10e9 --plot plots/
  python -m diagnose out_a/ out_b/ --plot plots/   # compare runs on a tokens axis
exit status: 0, 1 with --strict when any finding is a warning or worse, 2 on bad input
  or when a report or plot cannot be written (the terminal report is still printed)"""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other user error
        raise UserError(f"{message}; see python -m diagnose --help")


def count(text):
    """An integer with optional separators, exponent or K/M/B suffix: 524,288  10e9  124M."""
    t = text.strip().replace(",", "").replace("_", "")
    mult = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}.get(t[-1:].lower(), 1)
    if mult != 1:
        t = t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (examples: 524288, 524,288, 10e9, 124M)")
    if value <= 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return int(round(value))


def build_parser():
    p = Parser(prog="python -m diagnose", description=__doc__.split("\n\n")[0].strip(),
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="run folder, metrics.jsonl, text log (nanoGPT, llm.c, modded-nanogpt, ...) or wandb CSV")
    facts = p.add_argument_group("facts the log may not say")
    facts.add_argument("--config", metavar="FILE.py", help="the run's config file (read without torch)")
    facts.add_argument("--data", metavar="DIR", help="the prepared dataset folder (its meta.json)")
    facts.add_argument("--tokens-per-iter", type=count, metavar="N", help="tokens per optimizer step, all ranks")
    facts.add_argument("--train-tokens", type=count, metavar="N", help="tokens in the training split")
    facts.add_argument("--params", type=count, metavar="N", help="model parameters (124M)")
    facts.add_argument("--gpu", metavar="NAME", help="the GPU, as nvidia-smi names it (RTX 4070)")
    facts.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="training dtype")
    facts.add_argument("--max-iters", type=count, metavar="N", help="the planned number of iterations")
    out = p.add_argument_group("output")
    out.add_argument("--md", metavar="FILE", help="also write a markdown report")
    out.add_argument("--json", metavar="FILE", help="also write the JSON report (diagnose/SCHEMA.md)")
    out.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    out.add_argument("--strict", action="store_true", help="exit 1 when any finding is a warning or worse")
    out.add_argument("--quiet", action="store_true", help="no terminal report (files and exit status only)")
    return p


def context_of(args):
    return {"config": args.config, "data": args.data, "tokens_per_iter": args.tokens_per_iter,
            "train_tokens": args.train_tokens, "params": args.params, "gpu": args.gpu, "dtype": args.dtype,
            "max_iters": args.max_iters}


def _check_outputs(args):
    for flag, path in (("--md", args.md), ("--json", args.json)):
        if path and os.path.isdir(path):
            raise UserError(f"{flag} {path} is a folder; give a file name ({flag} report.{flag[2:]})")
    if args.plot and os.path.exists(args.plot) and not os.path.isdir(args.plot):
        raise UserError(f"--plot {args.plot} is a file; give a folder for the PNGs")


def main(argv=None):
    from diagnose import report
    from diagnose.detect import run_all
    from diagnose.parse import load_run

    args = build_parser().parse_args(argv)
    _check_outputs(args)
    ctx = context_of(args)
    runs = [load_run(p, **ctx) for p in args.paths]
    findings = [run_all(r) for r in runs]

    failed = []
    if len(runs) == 1:
        run, found = runs[0], findings[0]
        plots = []
        if args.plot:
            from diagnose.plots import plot_run
            plots = _written(failed, "plot", lambda: plot_run(run, found, args.plot)) or []
        if not args.quiet:
            sys.stdout.write(report.render_terminal(run, found, colour=report.use_colour()))
            for p in plots:
                print(f"plot: {p}")
        if args.md:
            rel = [os.path.relpath(p, os.path.dirname(os.path.abspath(args.md))) for p in plots]
            _written(failed, "--md", lambda: report.write_atomic(args.md, report.render_markdown(run, found, rel)))
        if args.json:
            _written(failed, "--json", lambda: report.write_atomic(args.json, report.render_json(run, found, plots)))
    else:
        _compare(args, runs, findings, failed)

    if failed:
        return 2
    worst = max((f.rank() for fs in findings for f in fs), default=0)
    from diagnose.findings import SEVERITIES
    if args.strict and worst >= SEVERITIES.index("warning"):
        return 1
    return 0


def _written(failed, what, write):
    """Run one file write; an OSError (read-only folder, full disk, a file in the way) becomes one
    line on stderr naming the file, so the rest of the report still comes out."""
    try:
        return write()
    except OSError as e:
        name = e.filename or what
        line = (f"error: cannot write {what} {name} ({e.strerror or e}); "
                f"give a writable folder with free space")
        print(line, file=sys.stderr)
        failed.append(line)
        return None


def _compare(args, runs, findings, failed):
    from diagnose import compare, report
    rows = compare.table_rows(runs, findings)
    plots = []
    if args.plot:
        from diagnose.plots import plot_compare, plot_run
        axes = [compare.tokens_axis(r)[0] for r in runs]
        plots = _written(failed, "plot", lambda: plot_compare(runs, axes, args.plot)) or []
        for i, (run, found) in enumerate(zip(runs, findings)):
            name = f"loss_{i + 1}_{_safe(report.run_label(run))}.png"
            plots += _written(failed, "plot", lambda: plot_run(run, found, args.plot, name=name)) or []
    if not args.quiet:
        sys.stdout.write(compare.render_table(rows))
        for run, found in zip(runs, findings):
            print()
            sys.stdout.write(report.render_terminal(run, found, colour=report.use_colour()))
        for p in plots:
            print(f"plot: {p}")
    if args.md:
        base = os.path.dirname(os.path.abspath(args.md))
        parts = ["# Comparison", "", compare.render_table(rows, markdown=True)]
        parts += [f"![{os.path.basename(p)}]({os.path.relpath(p, base)})" for p in plots[:1]]
        parts += [report.render_markdown(r, f) for r, f in zip(runs, findings)]
        _written(failed, "--md", lambda: report.write_atomic(args.md, "\n".join(parts)))
    if args.json:
        docs = [report.to_json(r, f) for r, f in zip(runs, findings)]
        doc = compare.compare_json(rows, docs)
        doc["plots"] = plots
        _written(failed, "--json", lambda: report.write_atomic(args.json, json.dumps(doc, indent=2, allow_nan=False) + "\n"))


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
