"""
How often is `python -m diagnose` right? Runs the diagnosis over
  (a) the zoo (tests/fixtures/zoo: whole renderings and seeded excerpts, per format), and
  (b) ../shared/logs (labels from its README tables and labels_more.json),
and prints, separately, per verdict and per category: recall, false alarms, and the healthy
false-alarm rate of each finding id (goal <= 5% per finding; 0 warnings on healthy shared logs).

    python bench/bench_accuracy.py                 # both sets (~1-2 min on 2 CPU cores)
    python bench/bench_accuracy.py --set zoo --no-excerpts
    python bench/bench_accuracy.py --json acc.json # the figures as JSON too

A label says which categories the diagnosis must raise ('expect') and must not raise ('forbid');
a category in neither is open and not scored. An item is 'all right' when diagnose read it, raised
every expected category and none forbidden; recall counts expected categories raised; a false alarm
is an item with a forbidden category raised. How a category is read from the findings is the
CATEGORY_FINDINGS table below: when a detector's id changes, change one line there. CATEGORY_EVIDENCE
raises a category from a finding's evidence at any severity ('repeat': data.repetition with >= 2
epochs); --severity-only scores without it, as before. CATEGORY_NEEDS leaves out of recall an expected
category whose needed facts every finding reports missing (listed as 'not decidable from the log');
--count-undecidable counts those as misses, as before.
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# category -> (finding id prefixes, lowest severity that counts as raising it, ids excluded)
CATEGORY_FINDINGS = {
    "overfitting": (("overfit.",), "warning", ()),  # overfit.gap included; overfit.none is an 'ok' answer
    "repeat": (("data.repetition", "data.memorization"), "warning", ()),
    "plateau": (("plateau.",), "warning", ("plateau.none", "plateau.lr_decaying", "plateau.lr_high",
                                          "plateau.flattening")),  # plateau.creep included
    "lr_limited": (("lr.peak_low", "lr.decay_beyond_end", "plateau.lr_high"),
                   "notice", ()),  # the LR findings are notices by design: advice, not alarms
    "instability": (("instability.", "sanity.nonfinite"), "warning",
                    ("instability.blips", "instability.none")),  # spike_excerpt, gradnorm_jump included
    "not_learning": (("sanity.not_learning", "sanity.zero_lr", "sanity.cannot_learn"), "warning", ()),
    "leakage": (("sanity.val_not_held_out",), "warning", ()),
    "suspicious_low": (("sanity.loss_implausibly_low", "sanity.invalid_loss"), "warning", ()),  # <= 0: a placeholder
    "gradnorm_spikes": (("instability.gradnorm_jump",), "warning", ()),
}
SEVERITIES = ("ok", "info", "notice", "warning", "critical")  # as diagnose/findings.py
# category -> (finding id, evidence key, lowest value): raised by that finding's evidence at any severity.
# 'repeat' asks "was the data repeated?": a run that saw it 2-4 times has data.repetition at info (repeats
# are then nearly as good as new data, Muennighoff et al.), which answers yes without a warning.
CATEGORY_EVIDENCE = {"repeat": ("data.repetition", "epochs", 2.0)}
# category -> facts (diagnose/detectors/common.py HOW_TO_GIVE keys) that, all reported missing by the
# findings, make the category undecidable from that log: an 'LR too low' needs the model size or the
# config, and a format without either ('unknown' is then the right answer) is not a miss
CATEGORY_NEEDS = {"lr_limited": ("config", "params")}

LOGS = os.path.join(ROOT, "..", "shared", "logs")
ZOO = os.path.join(ROOT, "tests", "fixtures", "zoo")
_BAD = ["overfitting", "plateau", "instability", "repeat", "not_learning"]
# ../shared/logs/README.md, first table: its verdict column as categories, its facts column as flags
README_LABELS = {
    "KellerJordan__modded-nanogpt__llmc-gpt2-124M-main-log.txt":
        ("healthy", dict(tokens_per_iter=524288, params=124_000_000), [], _BAD),
    "KellerJordan__modded-nanogpt__muon-record-2024-10-10.txt":
        ("healthy", dict(tokens_per_iter=524288, max_iters=6200), [], _BAD),
    "tnguyen21__camelid__925M-8ksteps.txt":
        ("healthy", dict(tokens_per_iter=32768, params=925_000_000), [], _BAD),
    "saurabhmangal__ERA_late_submissions__s21-tiny-gpt-shakespeare-char.txt":
        ("healthy", dict(tokens_per_iter=512, train_tokens=1_000_000, params=1_604_161), [],
         ["overfitting", "plateau", "instability", "not_learning"]),  # ~2.5 epochs: repeat left open
    "rasbt__LLMs-from-scratch__ch05-gpt124M-verdict-10epochs.txt":
        ("overfitting", dict(tokens_per_iter=512, train_tokens=4608, params=124_000_000),
         ["overfitting", "repeat"], ["instability", "not_learning"]),
    "karpathy__nanoGPT__issue211-nlayer12-shakespeare-char-val.txt":
        ("overfitting", dict(tokens_per_iter=16384, train_tokens=1_000_000), ["overfitting", "repeat"],
         ["instability", "not_learning"]),
    "aakashvardhan__s21-gpt2__gpt2-124M-shakespeare-5000steps.txt":
        ("repeat", dict(tokens_per_iter=16384, train_tokens=338_025, params=124_000_000), ["repeat"],
         ["instability", "not_learning"]),  # train only: overfitting cannot be seen, left open
    "Lightning-AI__litgpt__issue689-pythia70m-loss-constant.txt":
        ("not_learning", {}, ["not_learning"], ["overfitting", "repeat"]),
    "karpathy__nanoGPT__issue215-gpt2-fp16-nan.txt":
        ("divergence", {}, ["instability"], ["overfitting", "repeat"]),
}
# labels_more.json has no verdict field: the verdict is read from its expect list
MORE_VERDICT = {(): "healthy", ("instability",): "instability", ("overfitting", "repeat"): "overfitting",
                ("suspicious_low",): "suspicious_low", ("repeat",): "repeat", ("plateau",): "plateau",
                ("instability", "suspicious_low"): "instability"}
FACT_KEYS = ("tokens_per_iter", "train_tokens", "params", "max_iters")


def raised(findings, by_evidence=True):
    """The categories a list of findings (dicts: id, severity, evidence) raises; by_evidence False scores
    by severity alone (the scoring before CATEGORY_EVIDENCE)."""
    out = set()
    for cat, (fid, key, lowest) in CATEGORY_EVIDENCE.items() if by_evidence else ():
        if any(f["id"] == fid and (f.get("evidence") or {}).get(key) is not None
               and f["evidence"][key] >= lowest for f in findings):
            out.add(cat)
    for cat, (prefixes, lowest, excluded) in CATEGORY_FINDINGS.items():
        for f in findings:
            if f["id"] in excluded or SEVERITIES.index(f["severity"]) < SEVERITIES.index(lowest):
                continue
            if any(f["id"].startswith(p) for p in prefixes):
                out.add(cat)
    return out


def diagnose(path, facts):
    """(findings as dicts, the format diagnose read) for one file; (None, None) when it cannot read it."""
    from diagnose.detect import run_all
    from diagnose.parse import load_run
    from errors import UserError
    try:
        run = load_run(path, **{k: v for k, v in facts.items() if k in FACT_KEYS})
        return [f.to_dict() for f in run_all(run)], run.format
    except UserError:
        return None, None


def zoo_items(zoo, excerpts):
    """(item, path) for every whole rendering and, with excerpts, every cut (each written to a temp file
    under the rendering's own name: diagnose reads .jsonl by its name)."""
    from bench.zoo.excerpts import cut_text
    with open(os.path.join(zoo, "labels.json")) as f:
        runs = json.load(f)["runs"]
    with open(os.path.join(zoo, "excerpts.json")) as f:
        cuts = json.load(f)["excerpts"]
    tmp = tempfile.mkdtemp(prefix="zoo_cuts_")
    for i, c in enumerate(cuts):
        if not c["whole"] and not excerpts:
            continue
        cut = os.path.join(tmp, f"{i}_{os.path.basename(c['file'])}")  # the fixtures are gzipped
        with open(cut, "w") as f:
            f.write(cut_text(os.path.join(zoo, c["file"] + ".gz"), c["start"], c["length"], c["format"]))
        path = cut
        item = dict(c, name=f"{c['file']}[{c['start']}:+{c['length']}]", facts=runs[c["run"]]["facts"],
                    set="zoo-whole" if c["whole"] else "zoo-excerpt")
        yield item, path


def shared_items(logs):
    for name, (verdict, facts, expect, forbid) in README_LABELS.items():
        yield dict(name=name, set="shared", verdict=verdict, format=name.split("__")[1], facts=facts, expect=expect,
                   forbid=forbid), os.path.join(logs, name)
    with open(os.path.join(logs, "labels_more.json")) as f:
        cases = json.load(f)["cases"]
    for c in cases:
        name = os.path.basename(c["file"])
        verdict = MORE_VERDICT.get(tuple(c["expect"]), "+".join(c["expect"]))
        yield dict(name=name, set="shared", verdict=verdict, format=name.split("__")[1], facts=c["facts"],
                   expect=c["expect"], forbid=c["forbid"]), os.path.join(logs, name)


def undecidable(found, got, expect):
    """The expected categories not raised whose needed facts the findings all report missing."""
    from diagnose.detectors.common import HOW_TO_GIVE
    lacking = {m for f in found for m in f.get("missing") or []}
    return [c for c in expect if c not in got and c in CATEGORY_NEEDS
            and all(HOW_TO_GIVE[k] in lacking for k in CATEGORY_NEEDS[c])]


def score(items, by_evidence=True, excuse=True):
    """Diagnose each item; returns the scored rows. excuse: an expected category that the log cannot
    decide (CATEGORY_NEEDS) moves from 'expect' to 'undecidable' instead of counting as a miss."""
    rows = []
    for item, path in items:
        found, read_as = diagnose(path, item["facts"])
        got = raised(found, by_evidence) if found is not None else set()
        skip = undecidable(found, got, item["expect"]) if (excuse and found is not None) else []
        item = dict(item, expect=[c for c in item["expect"] if c not in skip], undecidable=skip)
        loud = sorted({f["id"] for f in found or [] if SEVERITIES.index(f["severity"]) >= SEVERITIES.index("warning")})
        rows.append(dict(item, unreadable=found is None, read_as=read_as, raised=sorted(got), loud=loud,
                         hits=[c for c in item["expect"] if c in got],
                         false=[c for c in item["forbid"] if c in got]))
    return rows


def right(r):
    """Read, every expected category raised, none forbidden raised."""
    return not r["unreadable"] and len(r["hits"]) == len(r["expect"]) and not r["false"]


def pct(a, b):
    return f"{100 * a / b:5.1f}% ({a}/{b})" if b else "      -"


def table_verdicts(rows):
    out = ["verdict                    items  all right          recall             false alarms (forbidden raised)"]
    by = collections.defaultdict(list)
    for r in rows:
        by[r["verdict"]].append(r)
    for v, rs in sorted(by.items()):
        n_right = sum(1 for r in rs if right(r))
        exp = sum(len(r["expect"]) for r in rs)
        hits = sum(len(r["hits"]) for r in rs)
        fa = sum(1 for r in rs if r["false"])
        out.append(f"{v:26s} {len(rs):5d}  {pct(n_right, len(rs)):18s} {pct(hits, exp):18s} {pct(fa, len(rs))}")
    return out


def table_categories(rows):
    out = ["category         recall (expected raised)   false-alarm rate (forbidden raised)"]
    for cat in CATEGORY_FINDINGS:
        exp = [r for r in rows if cat in r["expect"]]
        forb = [r for r in rows if cat in r["forbid"]]
        if not exp and not forb:
            continue
        hit = sum(1 for r in exp if cat in r["hits"])
        fa = sum(1 for r in forb if cat in r["false"])
        out.append(f"{cat:16s} {pct(hit, len(exp)):26s} {pct(fa, len(forb))}")
    return out


def table_healthy(rows):
    healthy = [r for r in rows if r["verdict"] == "healthy"]
    counts = collections.Counter(i for r in healthy for i in r["loud"])
    any_loud = sum(1 for r in healthy if r["loud"])
    out = [f"healthy items: {len(healthy)}; with any warning or worse: {pct(any_loud, len(healthy))}"]
    for fid, n in counts.most_common():
        flag = "  > 5%" if n > 0.05 * len(healthy) else ""
        out.append(f"  {fid:32s} {pct(n, len(healthy))}{flag}")
    return out


def table_formats(rows):
    out = ["format           items  all right          unreadable"]
    by = collections.defaultdict(list)
    for r in rows:
        by[r["format"]].append(r)
    for fmt, rs in sorted(by.items()):
        n_right = sum(1 for r in rs if right(r))
        unread = sum(r["unreadable"] for r in rs)
        out.append(f"{fmt:16s} {len(rs):5d}  {pct(n_right, len(rs)):18s} {pct(unread, len(rs))}")
    return out


def report(title, rows, formats=False):
    unread = [r["name"] for r in rows if r["unreadable"]]
    excused = collections.Counter(c for r in rows for c in r.get("undecidable", []))
    lines = [f"== {title}: {len(rows)} items; not read by diagnose: {len(unread)} {unread[:5] if unread else ''} ==",
             *table_verdicts(rows), "", *table_categories(rows), "",
             *table_healthy(rows)]
    if excused:
        lines += ["", "not decidable from the log (needed facts absent; left out of recall): "
                  + ", ".join(f"{c} {n}" for c, n in sorted(excused.items()))]
    if formats:
        lines += ["", *table_formats(rows)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=("zoo", "shared", "both"), default="both")
    p.add_argument("--no-excerpts", action="store_true", help="zoo: whole renderings only")
    p.add_argument("--zoo", default=ZOO, help="zoo fixture folder (labels.json, excerpts.json)")
    p.add_argument("--logs", default=LOGS, help="the shared logs folder")
    p.add_argument("--json", metavar="FILE", help="also write every scored item as JSON")
    p.add_argument("--misses", action="store_true", help="list the items that were wrong")
    p.add_argument("--count-undecidable", action="store_true",
                   help="count expected categories the log cannot decide (CATEGORY_NEEDS) as misses, as before")
    p.add_argument("--severity-only", action="store_true",
                   help="score categories by severity alone, without CATEGORY_EVIDENCE (the older scoring)")
    args = p.parse_args(argv)
    t0 = time.time()
    out = {}
    if args.set in ("zoo", "both"):
        rows = score(zoo_items(args.zoo, not args.no_excerpts), not args.severity_only, not args.count_undecidable)
        out["zoo"] = rows
        for s in ("zoo-whole", "zoo-excerpt"):
            part = [r for r in rows if r["set"] == s]
            if part:
                sys.stdout.write(report(s, part, formats=True) + "\n")
    if args.set in ("shared", "both") and os.path.isdir(args.logs):
        rows = score(shared_items(args.logs), not args.severity_only, not args.count_undecidable)
        out["shared"] = rows
        sys.stdout.write(report("shared logs", rows) + "\n")
    if args.misses:
        for rows in out.values():
            for r in rows:
                if not right(r):
                    missed = [c for c in r["expect"] if c not in r["hits"]]
                    print(f"MISS {r['name']}: missed {missed} false {r['false']} (raised {r['raised']})")
    print(f"bench_accuracy: {sum(len(v) for v in out.values())} items in {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
