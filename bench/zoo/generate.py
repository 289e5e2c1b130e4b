"""
Generate the ground-truth zoo: train every run in configs.py on CPU, check each shows its verdict,
render it into every log format people paste, cut seeded excerpts, write the fixtures.

    python -m bench.zoo.generate --jobs 4            # everything (train, check, render, cut)
    python -m bench.zoo.generate --reuse             # re-label / re-render the runs already trained
    python -m bench.zoo.generate --only overfit_tiny # some runs (the others' fixtures are kept)

Runtime, measured on 2026-12-01 on 2 CPU cores shared with 7 other jobs (load 13-18): the 23 runs took
~50 min of wall time trained as up to 7 processes at once (their own wall times, labels.json's
train_seconds, sum to ~2.5 h at that load); on an idle core the base model's 200 iterations take 10 s.
With --reuse (nothing to train) the checks, renderings and cuts take ~20 s.

Runs are trained in --work (default /tmp/zoo_build; metrics and nanoGPT stdout stay there) and
the fixtures written to --out (default tests/fixtures/zoo): <run>/<format file>.gz for each
rendering (gzip keeps the folder small; bench/zoo/series.open_text reads them), labels.json
(verdict, reason, evidence, expect/forbid per run) and excerpts.json.
A run whose metrics do not show its verdict is relabelled to a fallback verdict its metrics do show
(configs.py names them; labels.json keeps both evidences) or dropped (said on stdout), never kept
mislabelled.
"""
import argparse
import concurrent.futures
import gzip
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.zoo import checks, configs, excerpts, render, runners, series  # noqa: E402

REFERENCE = "healthy_cosine"  # the working-LR run the LR-too-low run is compared with


def train_all(runs, work, folders, reuse, jobs=1):
    """Train (or reuse) each run in work/runs/<name> (stdout.txt, and seconds.txt: its wall time),
    `jobs` subprocesses at a time."""
    todo = [spec for spec in runs if not (reuse and os.path.exists(os.path.join(work, "runs", spec["name"],
                                                                                "stdout.txt")))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(train_one, spec, work, folders) for spec in todo]:
            future.result()


def train_one(spec, work, folders):
    out = os.path.join(work, "runs", spec["name"])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    data = folders[spec["dataset"]]
    if spec["trainer"] == "train.py":
        secs, stdout = runners.train_py(spec["config"], data, out)
    else:
        secs, stdout = runners.nanogpt(spec["config"], data, os.path.join(work, "nanogpt", spec["name"]),
                                       spec["dataset"])
    with open(os.path.join(out, "seconds.txt"), "w") as f:
        f.write(f"{secs:.1f}\n")
    with open(os.path.join(out, "stdout.txt"), "w") as f:  # last: a run without stdout.txt is unfinished
        f.write(stdout)
    print(f"trained {spec['name']} ({spec['trainer']}) in {secs:.0f} s", flush=True)


def train_seconds(work, name):
    path = os.path.join(work, "runs", name, "seconds.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(f.read())


def load_series(spec, work, folders):
    out = os.path.join(work, "runs", spec["name"])
    if spec["trainer"] == "train.py":
        return series.read_metrics(os.path.join(out, "metrics.jsonl"))
    with open(os.path.join(folders[spec["dataset"]], "meta.json")) as f:
        data = json.load(f)
    with open(os.path.join(out, "stdout.txt")) as f:
        return series.read_nanogpt_stdout(f.read(), spec["config"], data)


def label(spec, s, reference):
    """(ok, label): the run's verdict if its check passes, else the first fallback verdict whose check
    passes (relabelled, with the failed evidence kept); ok False when none does."""
    ok, evidence = checks.check(spec["verdict"], s, reference)
    verdict, failed = spec["verdict"], None
    for fallback in [] if ok else spec.get("fallback", []):
        fb_ok, fb_evidence = checks.check(fallback, s, reference)
        if fb_ok:
            ok, verdict, failed, evidence = True, fallback, evidence, fb_evidence
            break
    expect, forbid = checks.VERDICTS[verdict]
    lab = dict(run=spec["name"], verdict=verdict, trainer=spec["trainer"], dataset=spec["dataset"],
               reason=spec["why"], evidence=evidence, expect=list(expect), forbid=list(forbid),
               facts=dict(tokens_per_iter=series.tokens_per_iter(s), train_tokens=s["data"]["train_tokens"],
                          vocab_size=s["data"]["tokenizer"]["vocab_size"]))
    if failed is not None:
        lab.update(built_for=spec["verdict"], built_for_evidence=failed)
    return ok, lab


def write_run(spec, s, work, out_dir):
    """The renderings of one run, gzip-compressed, into out_dir/<run>/<name>.gz; returns {format: name}."""
    dst = os.path.join(out_dir, spec["name"])
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    src = os.path.join(work, "runs", spec["name"])
    if spec["trainer"] == "nanoGPT":  # its own stdout is the rendering; its loss is one micro-batch's
        texts = {"nanogpt": ("nanogpt.txt", _read_text(os.path.join(src, "stdout.txt")))}
    else:
        texts = {"metrics.jsonl": ("metrics.jsonl", _read_text(os.path.join(src, "metrics.jsonl")))}
        for fmt, (name, fn) in render.FORMATS.items():
            texts[fmt] = (name, "".join(line + "\n" for line, _ in fn(s)))
    for name, text in texts.values():
        write_gzip(os.path.join(dst, name + ".gz"), text)
    return {fmt: name for fmt, (name, _) in texts.items()}


def _read_text(path):
    with open(path) as f:
        return f.read()


def write_gzip(path, text):
    """Deterministic gzip (no time stamp, no file name), written to a temporary name and renamed."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(text.encode("utf-8"))
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/zoo_build", help="where runs are trained (kept for --reuse)")
    p.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "zoo"), help="fixture folder")
    p.add_argument("--reuse", action="store_true", help="do not retrain runs whose stdout.txt exists")
    p.add_argument("--only", nargs="+", metavar="RUN", help="only these runs")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (each uses one CPU thread)")
    p.add_argument("--excerpts", type=int, default=3, help="excerpts cut from each rendering")
    args = p.parse_args(argv)
    t0 = time.time()
    runs = [r for r in configs.ALL_RUNS if not args.only or r["name"] in args.only]
    os.makedirs(args.work, exist_ok=True)
    folders = runners.build_datasets(args.work, args.reuse)
    ref_spec = next(r for r in configs.ALL_RUNS if r["name"] == REFERENCE)
    ref_done = os.path.exists(os.path.join(args.work, "runs", REFERENCE, "stdout.txt"))
    extra = [ref_spec] if ref_spec not in runs and not ref_done else []  # the LR-too-low check compares with it
    train_all(runs + extra, args.work, folders, args.reuse, args.jobs)
    reference = load_series(ref_spec, args.work, folders)

    labels_path, cuts_path = os.path.join(args.out, "labels.json"), os.path.join(args.out, "excerpts.json")
    labels = _read(labels_path, {"runs": {}})["runs"]
    cuts = [c for c in _read(cuts_path, {"excerpts": []})["excerpts"] if c["run"] not in {r["name"] for r in runs}]
    for spec in runs:
        s = load_series(spec, args.work, folders)
        ok, lab = label(spec, s, reference)
        if not ok:
            print(f"DROPPED {spec['name']}: its metrics do not show '{spec['verdict']}': {lab['evidence']}")
            labels.pop(spec["name"], None)
            shutil.rmtree(os.path.join(args.out, spec["name"]), ignore_errors=True)
            continue
        lab["files"] = write_run(spec, s, args.work, args.out)
        lab["train_seconds"] = train_seconds(args.work, spec["name"])
        labels[spec["name"]] = lab
        cuts += excerpts.cut_run(lab, args.out, s, per_file=args.excerpts)
        relabel = f" (relabelled: built for {lab['built_for']})" if "built_for" in lab else ""
        print(f"kept {spec['name']}: {lab['verdict']}{relabel} {lab['evidence']}")
    _write(labels_path, {"note": "ground truth of the zoo: bench/zoo/generate.py; checks in bench/zoo/checks.py",
                         "runs": dict(sorted(labels.items()))})
    _write(cuts_path, {"note": "excerpts: lines [start, start + length) of a rendering; bench/zoo/excerpts.py",
                       "excerpts": sorted(cuts, key=lambda c: (c["run"], c["file"], c["start"]))})
    print(f"zoo: {len(labels)} runs, {len(cuts)} excerpts in {args.out}; {time.time() - t0:.0f} s")


def _read(path, default):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
