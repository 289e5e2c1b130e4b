"""
One train.py run (a Series of its metrics.jsonl) rendered into the log formats people paste.

Every renderer returns a list of (line, ref): ref is ('train', i) or ('eval', i), the index of the
record the line shows (('both', train index, eval index) for a wandb row holding both; a third
item, {'loss': mean}, where the line shows an interval's mean), or None for a header line.
excerpts.py uses the refs to know what a cut shows. What each format logs as its loss is kept honest:
  - nanoGPT / modded-nanogpt print the last micro-batch's loss: the zoo's train.py runs use one
    micro-batch per iteration, where that is the mean train.py logs (asserted for nanoGPT; train.py does
    not log per-micro-batch losses, so a run with several could not be rendered honestly);
  - build-nanogpt and llm.c print the mean over the iteration's micro-batches (as train.py);
  - HF Trainer and Megatron print the mean over each logging interval of `interval` iterations.
Numbers are printed with each tool's own precision.
"""
import csv
import io
import math
import os
import statistics

from bench.zoo.series import tokens_per_iter

HF_INTERVAL = 10        # HF Trainer logging_steps
MEGATRON_INTERVAL = 10  # Megatron --log-interval


def _one_micro_batch(s):
    assert s["config"]["gradient_accumulation_steps"] == 1, \
        "a last-micro-batch format needs one micro-batch per iteration (train.py logs the mean)"


def _f(x, fmt):
    """A number as the tool prints it; nan/inf as Python and C print them."""
    return format(x, fmt) if x is not None else "nan"


def nanogpt(s):
    """nanoGPT train.py stdout: configurator echo, its start-up lines, evals and iter lines."""
    _one_micro_batch(s)
    c = dict(s["config"])
    c["dataset"] = os.path.basename(c["data_dir"].rstrip("/")) if c.get("data_dir") else c["dataset"]
    lines = [(f"Overriding: {k} = {c[k]}", None) for k in
             ("dataset", "batch_size", "block_size", "gradient_accumulation_steps", "n_layer", "n_head", "n_embd",
              "dropout", "learning_rate", "max_iters", "lr_decay_iters", "min_lr", "warmup_iters", "grad_clip",
              "eval_interval", "eval_iters", "log_interval", "device", "dtype", "compile")]
    # the schedule as the run's own command line overrode it (a constant-LR run that echoes only
    # learning_rate / lr_decay_iters would claim nanoGPT's default cosine)
    lines += [(f"Overriding: {k} = {c[k]}", None) for k, default in
              (("decay_lr", True), ("lr_schedule", "cosine"), ("decay_frac", 0.2)) if c.get(k, default) != default]
    lines += [(f"tokens per iteration will be: {tokens_per_iter(s):,}", None),
              (f"found vocab_size = {s['data']['tokenizer']['vocab_size']} "
               f"(inside data/{c['dataset']}/meta.pkl)", None),
              ("Initializing a new model from scratch", None),
              (f"number of parameters: {s['model']['non_embedding_params'] / 1e6:.2f}M", None),
              ("using fused AdamW: False", None)]
    for kind, i, r in _merged(s):
        if kind == "eval":
            lines.append((f"step {r['iter']}: train loss {r['train_loss']:.4f}, val loss {r['val_loss']:.4f}",
                          (kind, i)))
        else:
            mfu = -100.0 if r["iter"] < 5 or r.get("mfu") is None else r["mfu"] * 100
            lines.append((f"iter {r['iter']}: loss {_f(r['loss'], '.4f')}, time {r['dt_ms']:.2f}ms, mfu {mfu:.2f}%",
                          (kind, i)))
    return lines


def llmc(s):
    """llm.c train_gpt2cu stdout: `val loss X` before a step, `step N/M | loss ... | norm ...` with N = iter + 1;
    the z-scores are llm.c's, against the last 128 steps (nan until the window fills)."""
    total = s["config"]["max_iters"]
    lines = [("+-----------------------+----------------------------------------------------+", None),
             (f"| max_sequence_length T | {s['config']['block_size']:<50} |", None),
             (f"| vocab_size V          | {s['data']['tokenizer']['vocab_size']:<50} |", None),
             (f"| num_parameters        | {s['model']['params']:<50} |", None),
             ("+-----------------------+----------------------------------------------------+", None)]
    losses, norms = [], []
    for kind, i, r in _merged(s):
        if kind == "eval":
            lines.append((f"val loss {r['val_loss']:f}", (kind, i)))
            continue
        zl, zn = _z(losses, r["loss"]), _z(norms, r["grad_norm"])
        losses.append(r["loss"])
        norms.append(r["grad_norm"])
        lines.append((f"step {r['iter'] + 1:4d}/{total} | loss {_f(r['loss'], '7.6f')} ({zl})| norm "
                      f"{_f(r['grad_norm'], '6.4f')} ({zn})| lr {r['lr']:.2e} | {r['dt_ms']:.2f} ms | "
                      f"-100.0% bf16 MFU | {r['tokens_per_sec']:.0f} tok/s", (kind, i)))
    return lines


def _z(window, x, size=128):
    w = [v for v in window[-size:] if v is not None and math.isfinite(v)]
    if len(w) < size or x is None or not math.isfinite(x):
        return "+nanz"
    sd = statistics.pstdev(w)
    return f"{(x - statistics.fmean(w)) / sd:+.2f}z" if sd > 0 else "+nanz"


def build_nanogpt(s):
    """build-nanogpt's log.txt: `N val X` (4 decimals) at evals, `N train X` (6 decimals) every step."""
    out = []
    for kind, i, r in _merged(s):
        if kind == "eval":
            out.append((f"{r['iter']} val {r['val_loss']:.4f}", (kind, i)))
        else:
            out.append((f"{r['iter']} train {_f(r['loss'], '.6f')}", (kind, i)))
    return out


def modded_nanogpt(s):
    """modded-nanogpt: `step:N/M val_loss:X` at evals (N = iterations done), `step:N/M train_loss:X` with
    N = iter + 1 after each step; train_time is cumulative training time."""
    total, elapsed, steps = s["config"]["max_iters"], 0.0, 0
    lines = [(f"====== modded-nanogpt-style log of a bench/zoo run, {total} steps ======", None)]
    for kind, i, r in _merged(s):
        avg = f"{elapsed / (steps - 1):.2f}ms" if steps > 1 else "nanms"
        if kind == "eval":
            lines.append((f"step:{r['iter']}/{total} val_loss:{r['val_loss']:.4f} train_time:{elapsed:.0f}ms "
                          f"step_avg:{avg}", (kind, i)))
        else:
            steps += 1
            if steps > 1:  # modded-nanogpt leaves the first steps out of the timing
                elapsed += r["dt_ms"]
            avg = f"{elapsed / (steps - 1):.2f}ms" if steps > 1 else "nanms"
            lines.append((f"step:{r['iter'] + 1}/{total} train_loss:{_f(r['loss'], '.4f')} "
                          f"train_time:{elapsed:.0f}ms step_avg:{avg}", (kind, i)))
    return lines


def _interval_means(s, interval):
    """(last index, mean loss, last record) for each full or final logging interval of train records."""
    train = s["train"]
    for end in range(interval - 1, len(train), interval):
        chunk = [r["loss"] for r in train[end - interval + 1:end + 1]]
        yield end, sum(chunk) / len(chunk), train[end]
    tail = len(train) % interval
    if tail:
        chunk = [r["loss"] for r in train[-tail:]]
        yield len(train) - 1, sum(chunk) / len(chunk), train[-1]


def hf_trainer(s):
    """HF Trainer dicts: every HF_INTERVAL steps {'loss' (the interval's mean, 4 decimals), 'grad_norm',
    'learning_rate', 'epoch' (2 decimals)}, and {'eval_loss', ...} at evals."""
    events = [(s["train"][end]["iter"] + 0.5, "train", end, mean) for end, mean, _ in _interval_means(s, HF_INTERVAL)]
    events += [(e["iter"], "eval", i, None) for i, e in enumerate(s["eval"]) if e["iter"] > 0]
    lines = []
    for _, kind, i, mean in sorted(events):
        if kind == "train":
            r = s["train"][i]
            d = {"loss": round(mean, 4), "grad_norm": r["grad_norm"], "learning_rate": r["lr"],
                 "epoch": round(r["epoch"], 2)}
        else:
            e = s["eval"][i]
            d = {"eval_loss": e["val_loss"], "eval_runtime": 0.5, "eval_samples_per_second": 320.0,
                 "eval_steps_per_second": 40.0, "epoch": round(e["epoch"], 2)}
        lines.append((repr(d), (kind, i, {"loss": mean}) if kind == "train" else (kind, i)))
    return lines


def megatron(s):
    """Megatron-LM: `iteration N/ M | ... | lm loss: X | loss scale: 1.0 | grad norm: G |` every
    MEGATRON_INTERVAL iterations (N counts iterations done; the loss is the interval's mean; the loss
    scale is the GradScaler's in fp16, 1.0 in fp32), and the validation block."""
    total, gbs = s["config"]["max_iters"], s["config"]["batch_size"]
    events = [(r["iter"] + 0.5, "train", end, mean) for end, mean, r in _interval_means(s, MEGATRON_INTERVAL)]
    events += [(e["iter"], "eval", i, None) for i, e in enumerate(s["eval"]) if e["iter"] > 0]
    lines, start = [], 0
    for _, kind, i, mean in sorted(events):
        if kind == "train":
            r = s["train"][i]
            n = r["iter"] + 1
            skipped, nans = _skipped(s["train"], start, i)
            start = i + 1
            lines.append((f" iteration {n:8d}/{total:8d} | consumed samples: {n * gbs:12d} | elapsed time per "
                          f"iteration (ms): {r['dt_ms']:.1f} | learning rate: {r['lr']:.3E} | global batch size: "
                          f"{gbs:5d} | lm loss: {mean:.6E} | loss scale: {r.get('grad_scale') or 1.0:.1f} | "
                          f"grad norm: {_f(r['grad_norm'], '.3f')} | number of skipped iterations: {skipped:3d} | "
                          f"number of nan iterations: {nans:3d} |", (kind, i, {"loss": mean})))
        else:
            e = s["eval"][i]
            bar = "-" * 100
            ppl = math.exp(min(e["val_loss"], 700))
            lines += [(bar, None),
                      (f" validation loss at iteration {e['iter']} | lm loss value: {e['val_loss']:.6E} | "
                       f"lm loss PPL: {ppl:.6E} | ", (kind, i)), (bar, None)]
    return lines


WANDB_COLUMNS = ("_step", "_runtime", "iter", "train/loss", "lr", "grad_norm", "tokens_per_sec",
                 "train/loss_eval", "val/loss")


def _skipped(train, first, last):
    """Steps in records first..last that the GradScaler skipped (its scale fell) and non-finite losses."""
    skipped = sum(1 for k in range(max(first, 1), last + 1)
                  if (train[k].get("grad_scale") or 0) < (train[k - 1].get("grad_scale") or 0))
    nans = sum(1 for k in range(first, last + 1) if not math.isfinite(train[k]["loss"]))
    return skipped, nans


def wandb_csv(s):
    """A wandb run-history CSV export of train.py's wandb.log keys: one row per step, the eval keys on
    the rows of eval steps (wandb merges logs at one step; the final eval has a row of its own), empty
    cells elsewhere."""
    def row(cells):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue().rstrip("\n")
    lines, runtime = [(row(WANDB_COLUMNS), None)], 0.0
    by_step = {}
    for kind, i, r in _merged(s):
        by_step.setdefault(r["iter"], {})[kind] = i
    for step, kinds in sorted(by_step.items()):
        t = s["train"][kinds["train"]] if "train" in kinds else None
        e = s["eval"][kinds["eval"]] if "eval" in kinds else None
        runtime += t["dt_ms"] / 1000 if t else 0.0
        cells = [step, f"{runtime:.3f}", step]
        cells += [repr(t[k]) for k in ("loss", "lr", "grad_norm", "tokens_per_sec")] if t else ["", "", "", ""]
        cells += [repr(e["train_loss"]), repr(e["val_loss"])] if e else ["", ""]
        ref = ("train", kinds["train"]) if t else ("eval", kinds["eval"])
        lines.append((row(cells), ref))
        if t and e:  # one line shows both records
            lines[-1] = (lines[-1][0], ("both", kinds["train"], kinds["eval"]))
    return lines


def _merged(s):
    """Train and eval records in log order: the eval at iteration N comes before the step N update."""
    events = [(r["iter"], 1, "train", i, r) for i, r in enumerate(s["train"])]
    events += [(e["iter"], 0, "eval", i, e) for i, e in enumerate(s["eval"])]
    return [(kind, i, r) for _, _, kind, i, r in sorted(events, key=lambda e: e[:2])]


# format -> (file name, renderer)
FORMATS = {
    "nanogpt": ("nanogpt.txt", nanogpt),
    "llmc": ("llmc.txt", llmc),
    "build-nanogpt": ("build_nanogpt_log.txt", build_nanogpt),
    "modded-nanogpt": ("modded_nanogpt.txt", modded_nanogpt),
    "hf-trainer": ("hf_trainer.txt", hf_trainer),
    "megatron": ("megatron.txt", megatron),
    "wandb-csv": ("wandb_history.csv", wandb_csv),
}
