"""
The facts a log may not say: from the log's own config lines, a config file of
this project (--config FILE.py, run as plain assignments like configurator.py
does, torch never imported), a dataset folder (--data DIR, its meta.json) and
flags. Explicit input wins over the log; every fact used says where it came from.
"""
import ast
import builtins
import os
import re

import facts
from configurator import apply_config_file, script_defaults
from diagnose.parse_common import literal_dict
from errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# train.py's config keys (read from its config block, torch-free), and the facts a log may print
KNOWN_KEYS = set(script_defaults(os.path.join(REPO, "train.py"))) | {"vocab_size", "tokens_per_iter"}
# keys another trainer's printed dict may carry with the same meaning as ours
# (not batch_size / gradient_accumulation_steps: other trainers count them differently)
DICT_KEYS = {"learning_rate", "max_iters", "warmup_iters", "lr_decay_iters", "min_lr", "weight_decay",
             "beta1", "beta2", "grad_clip", "decay_lr", "n_layer", "n_head", "n_embd", "block_size",
             "vocab_size", "eval_interval", "eval_iters", "log_interval"}


def literal(text):
    """A Python literal or simple arithmetic (`8*64`, `6e-4/10`), else the bare text."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        tree = ast.parse(text, mode="eval")
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)
        if len(text) < 100 and all(isinstance(n, allowed) for n in ast.walk(tree)):
            return eval(compile(tree, "<value>", "eval"), {"__builtins__": {}})
    except (SyntaxError, ValueError, ArithmeticError, TypeError):
        pass
    return text.strip("'\"")


def _int(text):
    return int(text.replace(",", "").replace("_", ""))


def config_from_text(text, head):
    """(config, model, system, notes) from the config lines a log prints.

    Whole-text scans use regexes with a literal start (fast); line-anchored ones
    (echoed config files, printed dicts, command lines) look at `head` only."""
    config, model, system, notes = {}, {}, {}, []
    for m in re.finditer(r"tokens per iteration(?: will be)?:\s*([\d,_]+)", text):
        config["tokens_per_iter"] = _int(m.group(1))
    for m in re.finditer(r"Overriding: (\w+) = ([^\n]+)", text):
        config[m.group(1)] = literal(m.group(2))
    # an echoed config file: unindented `key = value` lines of known keys
    for m in re.finditer(r"(?m)^(\w+) = ([^\n#]+)", head):
        if m.group(1) in KNOWN_KEYS:
            config.setdefault(m.group(1), literal(m.group(2)))
    # a command line: `train.py ... --key=value`
    for line in re.findall(r"(?m)^[^\n]*train\.py[^\n]*$", head):
        for k, v in re.findall(r"--(\w+)=(\S+)", line):
            if k in KNOWN_KEYS:
                config[k] = literal(v)
    # dicts another trainer prints (litgpt: hyperparameters, then the model config)
    for d_text in re.findall(r"\{'[^\n]*\}", head):
        if "'loss'" in d_text or "'eval_loss'" in d_text:
            continue
        d = literal_dict(d_text)
        if d is None:
            continue
        for k in DICT_KEYS & d.keys():
            if isinstance(d[k], (int, float, bool)):
                config.setdefault(k, d[k])
        if isinstance(d.get("padded_vocab_size"), int):  # the softmax width: what the loss is over
            config["vocab_size"] = d["padded_vocab_size"]
    m = re.search(r"found vocab_size = (\d+)", text)
    if m:
        config["vocab_size"] = int(m.group(1))
    m = re.search(r"number of parameters: ([\d.]+)M", text)
    if m:  # nanoGPT counts without the position embedding; close enough for a size
        model["params"] = int(round(float(m.group(1)) * 1e6))
    m = re.search(r"Total parameters:? ([\d,]+)", text)
    if m:
        model["params"] = _int(m.group(1))
    m = re.search(r"\|\s*num_parameters\s*\|\s*(\d+)\s*\|", head)  # llm.c's start-up table
    if m:
        model["params"] = int(m.group(1))
    gpus = re.findall(r"\|\s+\d+\s+(NVIDIA [^|\n]*?)\s{2,}(?:On|Off)\s+\|", head)
    if gpus:
        system["device_name"] = gpus[0]
        system["gpus_listed"] = len(gpus)
    if config:
        notes.append("from the log's config lines: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items())))
    return config, model, system, notes


# -----------------------------------------------------------------------------
# a config file of this project, read without running train.py or importing torch


def _no_torch_import(name, *args, **kwargs):
    if name.split(".")[0] == "torch":
        raise ImportError("torch")
    return builtins.__import__(name, *args, **kwargs)


def read_config_file(path):
    """Run a config file as train.py does (configurator.py over train.py's defaults), torch refused."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found; pass a config/*.py file of this project")
    namespace = script_defaults(os.path.join(REPO, "train.py"))
    try:
        apply_config_file(path, namespace, builtins=dict(vars(builtins), __import__=_no_torch_import), strict=False)
    except ImportError:
        raise UserError(f"config file {path} imports torch; diagnose reads configs without torch, "
                        f"so give the facts as flags (--tokens-per-iter, --max-iters, ...)")
    return {k: v for k, v in namespace.items() if isinstance(v, (int, float, str, bool, type(None)))}


# -----------------------------------------------------------------------------


def apply_context(run, config=None, data=None, tokens_per_iter=None, train_tokens=None, params=None,
                  gpu=None, dtype=None, max_iters=None):
    """Fill what the user gave into run (explicit input wins over the log) and derive
    model size, FLOPs and peak FLOP/s where the config allows."""
    if config:
        cfg = read_config_file(config)
        changed = [k for k in sorted(cfg) if k in run.config and run.config[k] != cfg[k] and k in KNOWN_KEYS]
        if changed:
            run.notes.append(f"--config {config} overrides the log on " +
                             ", ".join(f"{k} ({run.config[k]} -> {cfg[k]})" for k in changed[:8]))
        run.config.update(cfg)
        run.notes.append(f"config from {config}")
        if not data and cfg.get("dataset"):
            for base in (".", REPO):  # the config's dataset, from here or from the repo
                guess = os.path.join(base, "data", str(cfg["dataset"]))
                if os.path.exists(os.path.join(guess, "meta.json")):
                    data = guess
                    run.notes.append(f"dataset facts from {guess}/meta.json (the config's dataset)")
                    break
    if data:
        if not os.path.isdir(data):
            raise UserError(f"--data {data} is not a folder; pass a prepared dataset folder (data/<name>)")
        run.data.update(facts.read_dataset_meta(data))
    for value, name in ((tokens_per_iter, "tokens_per_iter"), (max_iters, "max_iters")):
        if value is not None:
            if value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
            run.config[name] = int(value)
    if train_tokens is not None:
        if train_tokens <= 0:
            raise UserError(f"--train-tokens must be positive, got {train_tokens}")
        run.data["train_tokens"] = int(train_tokens)
    if params is not None:
        if params <= 0:
            raise UserError(f"--params must be positive, got {params}")
        run.model["params"] = int(params)
    if gpu:
        run.system["device_name"] = gpu
    if dtype:
        run.system["dtype"] = dtype
        run.config["dtype"] = dtype
    if gpu or dtype:  # recompute the peak for what the user says ran
        run.system.pop("peak_flops", None)
    derive_facts(run)
    return run


def derive_facts(run):
    """Model size and FLOPs from the config, peak FLOP/s from the device, when not logged."""
    c = run.config
    vocab = run.vocab_size()
    if all(c.get(k) for k in ("n_layer", "n_embd", "block_size")) and vocab:
        args = (int(c["n_layer"]), int(c["n_embd"]), facts.padded_vocab_size(vocab), int(c["block_size"]),
                bool(c.get("bias", False)))
        if not run.model.get("params"):
            run.model.update(facts.param_counts(*args))
        run.model.setdefault("flops_per_token", facts.flops_per_token(*args))
    dtype = run.system.get("dtype") or c.get("dtype")
    if dtype and not run.system.get("dtype"):
        run.system["dtype"] = dtype
    if run.system.get("device_name") and dtype and not run.system.get("peak_flops"):
        peak = facts.peak_flops_for(run.system["device_name"], dtype)
        if peak:
            run.system["peak_flops"] = peak
