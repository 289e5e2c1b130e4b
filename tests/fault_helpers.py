"""
Helpers for the fault-injection suite (tests/test_faults.py and bench/faults.py): tiny training
runs that can be killed at chosen moments, damaged files, a crafted malicious checkpoint, and
the table of bad-input cases with a runner that runs most of them in this process.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_helpers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# tiny: 2 layers x 32 wide, context 32, byte vocabulary; a step takes ~5 ms on one CPU thread
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--device=cpu", "--dtype=float32", "--compile=False",
        "--log_interval=1", "--warmup_iters=5", "--learning_rate=1e-2", "--min_lr=1e-3",
        "--dropout=0.1", "--live_diagnose=False"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
           PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1")


def tiny_train_args(data_dir, out_dir, max_iters=40, eval_interval=10, eval_iters=10, extra=()):
    return TINY + [f"--data_dir={data_dir}", f"--out_dir={out_dir}", f"--max_iters={max_iters}",
                   f"--lr_decay_iters={max_iters}", f"--eval_interval={eval_interval}",
                   f"--eval_iters={eval_iters}"] + list(extra)


def make_dataset(data_dir, train_tokens=40000, val_tokens=6000, seed=0):
    """A byte-vocabulary dataset folder (train.bin, val.bin, meta.json) as prepare.py lays it out."""
    return train_helpers.make_dataset(data_dir, train_tokens=train_tokens, val_tokens=val_tokens, seed=seed)


# -----------------------------------------------------------------------------
# processes


def run(argv, cwd=ROOT, timeout=300, env=None, preexec_fn=None):
    """Run a command line to the end; CompletedProcess with text output."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, preexec_fn=preexec_fn)


def train(args, timeout=300):
    return run([PY, "train.py"] + list(args), timeout=timeout)


class Watched:
    """A process whose stdout lines are collected (with arrival times) by a thread, so that a
    caller can wait for a line and then kill it."""

    def __init__(self, argv, cwd=ROOT):
        self.proc = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = []
        self.stderr = ""
        self.cond = threading.Condition()
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def wait_line(self, pattern, timeout=120):
        """The first stdout line matching the regex (a match object), or None when the process
        ended (or timeout passed) first."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.proc.poll() is not None and not self._out.is_alive():
                    return None
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.05))

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def finish(self, timeout=300):
        rc = self.proc.wait(timeout=timeout)
        self._out.join(timeout=10)
        self._err.join(timeout=10)
        return rc

    def last_iter(self):
        """The last iteration train.py printed an `iter N:` line for (None if none)."""
        its = [int(m.group(1)) for m in (re.match(r"iter (\d+):", ln) for ln in self.lines) if m]
        return its[-1] if its else None


def has_traceback(text):
    return "Traceback (most recent call last)" in text


# -----------------------------------------------------------------------------
# checkpoints


load_checkpoint = train_helpers.load_ckpt  # as train.py loads it (weights_only=True); raises on a damaged file


def tensors_of(state, prefix=""):
    """{dotted name: tensor} for every tensor in a nested state (model, optimizer, rng)."""
    import torch
    out = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(tensors_of(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(tensors_of(v, f"{prefix}.{i}"))
    return out


def state_differences(a, b, keys=("model", "optimizer")):
    """Names of tensors that differ (not bit-exactly equal) between two checkpoints."""
    import torch
    diff = []
    for key in keys:
        ta, tb = tensors_of(a[key]), tensors_of(b[key])
        if ta.keys() != tb.keys():
            diff.append(f"{key}: different tensor names")
            continue
        for name in ta:
            if ta[name].shape != tb[name].shape or not torch.equal(ta[name], tb[name]):
                diff.append(f"{key}.{name}")
    if a.get("iter_num") != b.get("iter_num"):
        diff.append(f"iter_num {a.get('iter_num')} != {b.get('iter_num')}")
    return diff


def all_finite(ckpt):
    import torch
    return all(torch.isfinite(t).all().item() for t in tensors_of(ckpt["model"]).values()
               if t.is_floating_point())


def temp_files(folder):
    """Leftover temporary files (an interrupted atomic write) in a folder."""
    return sorted(n for n in os.listdir(folder) if ".tmp" in n) if os.path.isdir(folder) else []


def truncate(path, fraction):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))


def flip_bit(path, offset, bit=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def tensor_data_offset(path):
    """Byte offset of the first tensor's data inside a torch zip checkpoint."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if "/data/" in info.filename:
                # local header: 30 bytes + name + extra field, then the data
                with open(path, "rb") as f:
                    f.seek(info.header_offset + 26)
                    name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
                return info.header_offset + 30 + name_len + extra_len
    raise ValueError(f"{path} has no tensor data")


class _Payload:
    """Unpickling this object calls open(marker, 'w'): code run by merely loading a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft_malicious_checkpoint(path, marker):
    """A torch checkpoint that creates `marker` when unpickled without weights_only."""
    import torch
    torch.save({"model": _Payload(marker), "model_args": {}, "iter_num": 0}, path)
    return path


# -----------------------------------------------------------------------------
# the one-line-error contract


def error_problems(rc, stdout, stderr, must_name=()):
    """What is wrong with a failed run's answer to bad input; [] when it is one clear line.

    The answer must: exit non-zero; show no traceback; put exactly one error line on stderr
    (argparse's usage lines before its `error:` line are accepted, as every CLI user knows
    them); and name each of `must_name` (the key or file, and the fix)."""
    problems = []
    if rc == 0:
        problems.append("exit status 0")
    if has_traceback(stderr) or has_traceback(stdout):
        problems.append("traceback")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if lines and lines[0].startswith("usage:"):  # argparse: usage block, then `prog: error: ...`
        lines = [ln for ln in lines if re.match(r"^\S+: error: ", ln)]
    errors = [ln for ln in lines if not ln.startswith("note: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    text = " ".join(errors)
    for word in must_name:
        if word.lower() not in text.lower():
            problems.append(f"does not name {word!r}")
    return problems


def first_error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]


# -----------------------------------------------------------------------------
# damaged and foreign inputs, and the bad-input cases that use them


def write_parquet(path, texts, column="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({column: texts}), path)
    return path


def generated_texts(n_docs, seed=0, words_per_doc=300):
    """Quick varied English-ish documents (numpy only), for prepare.py runs."""
    import numpy as np
    rng = np.random.default_rng(seed)
    vocab = np.array("the of and to a in is it that for on with as was by this be are from or "
                     "an at not which have but they one all has more their can been its would "
                     "model data train loss token layer value file python error".split())
    lengths = rng.integers(words_per_doc // 4, words_per_doc * 2, n_docs)
    words = vocab[rng.integers(0, len(vocab), int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(doc) + "." for doc in np.split(words, cuts)]


def build_workspace(ws, good_ckpt):
    """Every damaged or foreign file that the bad-input cases point at, under ws.
    good_ckpt: a ckpt.pt from a tiny run on make_dataset()'s data (the cases damage copies)."""
    import shutil
    import numpy as np
    import torch
    os.makedirs(ws, exist_ok=True)
    j = lambda *p: os.path.join(ws, *p)  # noqa: E731
    data = make_dataset(j("data"))

    def dataset_copy(name):
        shutil.copytree(data, j(name))
        return j(name)

    def edit_meta(folder, **changes):
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        meta.update(changes)
        for k, v in list(meta.items()):
            if v is None:
                del meta[k]
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(meta, f)

    truncate(os.path.join(dataset_copy("data_badsize"), "train.bin"), 0.5)
    edit_meta(dataset_copy("data_baddtype"), dtype="float32")
    edit_meta(dataset_copy("data_nokeys"), train_tokens=None)
    with open(os.path.join(dataset_copy("data_garbagemeta"), "meta.json"), "w") as f:
        f.write("{ this is not json")
    os.remove(os.path.join(dataset_copy("data_noval"), "val.bin"))
    unfinished = dataset_copy("data_unfinished")
    os.replace(os.path.join(unfinished, "train.bin"), os.path.join(unfinished, "train.bin.tmp"))
    os.remove(os.path.join(unfinished, "meta.json"))
    edit_meta(dataset_copy("data_prepared"), request={"files": [["other.parquet", 1]]})

    def run_dir(name, ckpt_bytes=None):
        os.makedirs(j(name), exist_ok=True)
        if ckpt_bytes is not None:
            with open(j(name, "ckpt.pt"), "wb") as f:
                f.write(ckpt_bytes)
        return j(name)

    for name, damage in (("shards_magic", dict(magic=20240521)), ("shards_short", "short"),
                         ("shards_count", dict(count=301))):
        write_llmc_shards(j(name), damage)

    good = open(good_ckpt, "rb").read()
    run_dir("run_good", good)
    run_dir("run_fsize", good)
    truncate(os.path.join(run_dir("run_trunc", good), "ckpt.pt"), 0.6)
    run_dir("run_text", b"this is not a checkpoint\n")
    run_dir("run_zero", b"")
    run_dir("run_empty")
    craft_malicious_checkpoint(os.path.join(run_dir("run_evil"), "ckpt.pt"), j("PWNED"))
    shutil.copy(j("run_evil", "ckpt.pt"), j("run_evil", "best.pt"))
    ck = torch.load(good_ckpt, map_location="cpu", weights_only=True)
    nanogpt = {k: ck[k] for k in ("model", "optimizer", "model_args", "iter_num", "best_val_loss", "config")}
    nanogpt["model_args"] = {k: v for k, v in ck["model_args"].items() if k != "token_vocab_size"}
    torch.save(nanogpt, os.path.join(run_dir("run_nanogpt"), "ckpt.pt"))
    other_vocab = dict(ck, model_args=dict(ck["model_args"], token_vocab_size=50257))
    torch.save(other_vocab, os.path.join(run_dir("run_vocab"), "ckpt.pt"))
    torch.save({"model": ck["model"]}, os.path.join(run_dir("run_weightsonly"), "ckpt.pt"))
    shutil.copy(good_ckpt, j("run_good", "best.pt"))
    flip_bit(os.path.join(run_dir("run_flip_data", good), "ckpt.pt"), tensor_data_offset(good_ckpt) + 100, 6)
    flip_bit(os.path.join(run_dir("run_flip_header", good), "ckpt.pt"), 200, 3)

    configs = {"cfg_unknown.py": "lerning_rate = 1e-3\n", "cfg_syntax.py": "batch_size = = 4\n",
               "cfg_type.py": "batch_size = 'big'\n", "cfg_raise.py": "import nonexistent_module_xyz\n"}
    for name, text in configs.items():
        with open(j(name), "w") as f:
            f.write(text)
    rng = np.random.default_rng(0)
    with open(j("cfg_binary.py"), "wb") as f:
        f.write(rng.bytes(2000))
    with open(j("a_file"), "w") as f:
        f.write("not a folder\n")

    texts = generated_texts(60)
    write_parquet(j("good.parquet"), texts)
    write_parquet(j("notext.parquet"), texts, column="content")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": list(range(10))}), j("inttext.parquet"))
    write_parquet(j("empty.parquet"), pa.array([], type=pa.string()))
    shutil.copy(j("good.parquet"), j("trunc.parquet"))
    truncate(j("trunc.parquet"), 0.5)
    with open(j("garbage.parquet"), "wb") as f:
        f.write(rng.bytes(5000))
    with open(j("bad.jsonl"), "w") as f:
        f.write('{"text": "fine"}\n{"text": broken\n')
    with open(j("nofield.jsonl"), "w") as f:
        f.write('{"body": "a document"}\n')
    with open(j("latin1.txt"), "wb") as f:
        f.write("caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with open(j("data.csv"), "w") as f:
        f.write("text\nhello\n")
    os.makedirs(j("emptydir"), exist_ok=True)

    with open(j("empty.log"), "w"):
        pass
    with open(j("binary.log"), "wb") as f:
        f.write(rng.bytes(20000))
    with open(j("garbage.log"), "w") as f:
        f.write("\n".join(f"lorem ipsum dolor {i} sit amet" for i in range(50)) + "\n")
    with open(j("garbage.jsonl"), "w") as f:
        f.write("\n".join("{not json at all" for _ in range(20)) + "\n")
    with open(j("onlyrun.jsonl"), "w") as f:
        f.write(json.dumps({"event": "run", "time": 0, "config": {}}) + "\n")
    with open(j("unknown.csv"), "w") as f:
        f.write("alpha,beta,gamma\n1,2,3\n4,5,6\n")
    with open(j("good.jsonl"), "w") as f:
        for i in range(20):
            f.write(json.dumps({"event": "train", "time": i, "iter": i, "loss": 5.0 - i * 0.1}) + "\n")
    return ws


def write_llmc_shards(folder, damage):
    """llm.c GPT-2 shards (a header of 256 int32: magic, version, token count; then uint16
    tokens), the val shard damaged: dict(magic=..) / dict(count=..) in its header, or "short"."""
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    for name, n, fields in (("fineweb_train_000001.bin", 700, {}), ("fineweb_val_000000.bin", 300,
                                                                    damage if isinstance(damage, dict) else {})):
        header = np.zeros(256, dtype=np.int32)
        header[:3] = fields.get("magic", 20240520), 1, fields.get("count", n)
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(header.tobytes() + (np.arange(n) % 50257).astype(np.uint16).tobytes())
    if damage == "short":
        truncate(os.path.join(folder, "fineweb_val_000000.bin"), 0.1)


def _case(cid, program, argv, must, ok=False):
    """ok: the input is not bad after all (a foreign file this repository reads): the run must
    succeed with no traceback and its output name each of `must`."""
    return {"id": cid, "program": program, "argv": argv, "must": must, "ok": ok}


def case_problems(case, r):
    """[] when a case's result is what it must be: one clear error line, or (ok) a clean success."""
    if not case.get("ok"):
        return error_problems(r["rc"], r["stdout"], r["stderr"], case["must"])
    problems = [f"exit status {r['rc']}"] if r["rc"] != 0 else []
    if has_traceback(r["stderr"]) or has_traceback(r["stdout"]):
        problems.append("traceback")
    text = (r["stdout"] + r["stderr"]).lower()
    return problems + [f"does not say {w!r}" for w in case["must"] if w.lower() not in text]


def bad_input_cases(ws):
    """Bad input over the programs: (id, program, argv, words the one error line must hold).
    `must` names the problem (key, value or file) and the fix (the flag or action to take)."""
    j = lambda *p: os.path.join(ws, *p)  # noqa: E731
    T = ["train.py"] + TINY + [f"--data_dir={j('data')}", f"--out_dir={j('out_train')}", "--max_iters=2",
                                "--lr_decay_iters=2", "--warmup_iters=0", "--eval_iters=2"]
    R = lambda run: ["train.py"] + TINY + [f"--data_dir={j('data')}", f"--out_dir={j(run)}",  # noqa: E731
                                         "--init_from=resume", "--max_iters=2", "--lr_decay_iters=2",
                                         "--warmup_iters=0", "--eval_iters=2"]
    D = lambda folder: T + [f"--data_dir={j(folder)}"]  # noqa: E731
    P = ["data/fineweb_single/prepare.py", "--tokenizer", "byte", "--workers", "0",
         "--out-dir", j("out_prepare")]
    S = lambda run, *a: ["sample.py", f"--out_dir={j(run)}", "--device=cpu", "--num_samples=1",  # noqa: E731
                         "--max_new_tokens=4"] + list(a)
    G = ["-m", "diagnose"]
    c = _case
    return [
        # --- train.py: keys and types ---
        c("train-misspelt-key", "train", T + ["--learning_rat=1e-3"], ["learning_rat", "did you mean", "learning_rate"]),
        c("train-unknown-key", "train", T + ["--frobnicate=1"], ["frobnicate", "--help"]),
        c("train-key-without-value", "train", T + ["--batch_size"], ["--batch_size", "=VALUE"]),
        c("train-key-without-dashes", "train", T + ["batch_size=4"], ["batch_size=4", "--"]),
        c("train-int-gets-word", "train", T + ["--batch_size=many"], ["batch_size", "int"]),
        c("train-int-gets-fraction", "train", T + ["--batch_size=3.5"], ["batch_size", "int"]),
        c("train-float-gets-word", "train", T + ["--learning_rate=fast"], ["learning_rate", "float"]),
        c("train-bool-gets-word", "train", T + ["--compile=maybe"], ["compile", "bool"]),
        c("train-bool-gets-int", "train", T + ["--bias=1"], ["bias", "bool"]),
        c("train-str-gets-list", "train", T + ["--dataset=[1,2]"], ["dataset", "str"]),
        # --- train.py: impossible values ---
        c("train-negative-lr", "train", T + ["--learning_rate=-1e-3"], ["learning_rate", "positive", "--learning_rate="]),
        c("train-zero-lr", "train", T + ["--learning_rate=0"], ["learning_rate", "--learning_rate="]),
        c("train-min-lr-above-lr", "train", T + ["--learning_rate=1e-3", "--min_lr=1e-2"], ["min_lr", "learning_rate", "--min_lr="]),
        c("train-negative-min-lr", "train", T + ["--min_lr=-1"], ["min_lr", "--min_lr="]),
        c("train-block-larger-than-data", "train", T + ["--block_size=100000"], ["block_size", "larger than the data", "--block_size="]),
        c("train-head-not-dividing", "train", T + ["--n_embd=30", "--n_head=4"], ["n_embd", "n_head"]),
        c("train-zero-batch", "train", T + ["--batch_size=0"], ["batch_size", "--batch_size="]),
        c("train-zero-accumulation", "train", T + ["--gradient_accumulation_steps=0"], ["gradient_accumulation_steps", "--gradient_accumulation_steps="]),
        c("train-negative-max-iters", "train", T + ["--max_iters=-5"], ["max_iters", "--max_iters="]),
        c("train-negative-warmup", "train", T + ["--warmup_iters=-1"], ["warmup_iters", "--warmup_iters="]),
        c("train-decay-before-warmup", "train", T + ["--warmup_iters=100", "--lr_decay_iters=10", "--max_iters=200"], ["lr_decay_iters", "warmup_iters", "--lr_decay_iters"]),
        c("train-dropout-above-1", "train", T + ["--dropout=1.5"], ["dropout", "--dropout="]),
        c("train-beta-1", "train", T + ["--beta1=1.0"], ["beta1", "--beta1="]),
        c("train-negative-weight-decay", "train", T + ["--weight_decay=-0.1"], ["weight_decay", "--weight_decay="]),
        c("train-negative-grad-clip", "train", T + ["--grad_clip=-1"], ["grad_clip", "--grad_clip=0"]),
        c("train-zero-eval-interval", "train", T + ["--eval_interval=0"], ["eval_interval", "--eval_interval="]),
        c("train-zero-eval-iters", "train", T + ["--eval_iters=0"], ["eval_iters", "--eval_iters="]),
        c("train-zero-max-bad-steps", "train", T + ["--max_bad_steps=0"], ["max_bad_steps", "--max_bad_steps="]),
        c("train-decay-frac-zero", "train", T + ["--decay_frac=0", "--lr_schedule=wsd"], ["decay_frac", "--decay_frac="]),
        c("train-unknown-schedule", "train", T + ["--lr_schedule=linear"], ["linear", "cosine"]),
        c("train-unknown-dtype", "train", T + ["--dtype=float64"], ["float64", "bfloat16"]),
        c("train-unknown-device", "train", T + ["--device=tpu"], ["tpu", "cpu"]),
        c("train-cuda-missing", "train", T + ["--device=cuda"], ["cuda", "--device=cpu"]),
        c("train-unknown-sampling", "train", T + ["--sampling=shuffle"], ["shuffle", "epoch"]),
        c("train-init-from-gpt2", "train", T + ["--init_from=gpt2"], ["gpt2", "hf:PATH"]),
        c("train-unknown-backend", "train", T + ["--backend=mpi"], ["mpi", "gloo"]),
        c("train-negative-peak-flops", "train", T + ["--peak_flops=-5"], ["peak_flops", "--peak_flops="]),
        c("train-bad-fault-spec", "train", T + ["--fault_inject=nan@3"], ["nan@3", "--fault_inject="]),
        c("train-accumulation-vs-world-size", "train", T + ["--gradient_accumulation_steps=4", "--env:RANK=0,LOCAL_RANK=0,WORLD_SIZE=3"],
          ["gradient_accumulation_steps=4", "3 ranks", "--gradient_accumulation_steps="]),
        # --- train.py: config files ---
        c("train-config-missing", "train", ["train.py", j("nope.py")] + T[1:], ["nope.py", "not found"]),
        c("train-config-unknown-key", "train", ["train.py", j("cfg_unknown.py")] + T[1:], ["lerning_rate", "learning_rate"]),
        c("train-config-syntax-error", "train", ["train.py", j("cfg_syntax.py")] + T[1:], ["cfg_syntax.py", "SyntaxError", "fix that file"]),
        c("train-config-wrong-type", "train", ["train.py", j("cfg_type.py")] + T[1:], ["batch_size", "cfg_type.py", "int"]),
        c("train-config-binary", "train", ["train.py", j("cfg_binary.py")] + T[1:], ["cfg_binary.py", "Python text", "give a"]),
        c("train-config-import-error", "train", ["train.py", j("cfg_raise.py")] + T[1:], ["cfg_raise.py", "nonexistent_module_xyz"]),
        # --- train.py: dataset files ---
        c("train-dataset-missing", "train", D("nodata"), ["meta.json", "not found", "prepare.py"]),
        c("train-dataset-unfinished", "train", D("data_unfinished"), ["meta.json", "did not finish", "prepare.py"]),
        c("train-bin-size-mismatch", "train", D("data_badsize"), ["train.bin", "meta.json", "--force"]),
        c("train-meta-wrong-dtype", "train", D("data_baddtype"), ["meta.json", "float32", "--force"]),
        c("train-meta-missing-key", "train", D("data_nokeys"), ["meta.json", "train_tokens", "--force"]),
        c("train-meta-not-json", "train", D("data_garbagemeta"), ["meta.json", "--force"]),
        c("train-val-bin-missing", "train", D("data_noval"), ["val.bin", "not found", "--force"]),
        c("train-shard-bad-magic", "train", D("shards_magic"), ["fineweb_val_000000.bin", "20240520", "give GPT-2 shards"]),
        c("train-shard-short-file", "train", D("shards_short"), ["fineweb_val_000000.bin", "header", "download"]),
        c("train-shard-wrong-token-count", "train", D("shards_count"), ["fineweb_val_000000.bin", "301 tokens", "download"]),
        # a file-size limit: every checkpoint write fails (EFBIG), as on a full disk; training goes on
        # to the end, whose save failing is the one line
        c("train-file-size-limit", "train", T + [f"--out_dir={j('out_train_fsize')}", "--limit:fsize=20000"],
          [".pt at iter 2 failed", "there is no checkpoint yet", "free some space"]),
        c("train-resume-file-size-limit", "train", R("run_fsize") + ["--max_iters=6", "--limit:fsize=20000"],
          ["failed", "the last good checkpoint is iter", "--init_from=resume"]),
        c("train-out-dir-is-a-file", "train", T + [f"--out_dir={j('a_file')}"], ["a_file", "--out_dir"]),
        # --- train.py: checkpoints ---
        c("train-resume-no-checkpoint", "train", R("run_empty"), ["ckpt.pt", "not found", "--init_from=scratch"]),
        c("train-resume-truncated", "train", R("run_trunc"), ["ckpt.pt", "cannot be read", "--init_from=scratch"]),
        c("train-resume-empty-file", "train", R("run_zero"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-text-file", "train", R("run_text"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-malicious", "train", R("run_evil"), ["ckpt.pt", "--init_from=scratch"]),
        # nanoGPT's ckpt.pt is resumed (converted), saying what it lacks
        c("train-resume-nanogpt-checkpoint", "train", R("run_nanogpt"), ["nanoGPT checkpoint", "resuming at iter"],
          ok=True),
        c("train-resume-weights-only", "train", R("run_weightsonly"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-bitflip-header", "train", R("run_flip_header"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-bitflip-weights", "train", R("run_flip_data"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-other-vocab", "train", R("run_vocab"), ["50257", "vocabulary", "dataset"]),
        # --- prepare.py ---
        c("prepare-no-arguments", "prepare", P, ["--input", "--demo"]),
        c("prepare-input-missing", "prepare", P + ["--input", j("missing.parquet")], ["missing.parquet", "not found"]),
        c("prepare-input-empty-folder", "prepare", P + ["--input", j("emptydir")], ["emptydir", ".parquet"]),
        c("prepare-glob-matches-nothing", "prepare", P + ["--input", j("nomatch*.parquet")], ["nomatch", "pattern"]),
        c("prepare-unsupported-type", "prepare", P + ["--input", j("data.csv")], ["data.csv", ".parquet"]),
        c("prepare-garbage-parquet", "prepare", P + ["--input", j("garbage.parquet")], ["garbage.parquet", "download it again"]),
        c("prepare-truncated-parquet", "prepare", P + ["--input", j("trunc.parquet")], ["trunc.parquet", "download it again"]),
        c("prepare-no-text-column", "prepare", P + ["--input", j("notext.parquet")], ["notext.parquet", "--text-column"]),
        c("prepare-wrong-text-column", "prepare", P + ["--input", j("good.parquet"), "--text-column", "body"], ["body", "--text-column"]),
        c("prepare-int-text-column", "prepare", P + ["--input", j("inttext.parquet")], ["inttext.parquet", "--text-column"]),
        c("prepare-empty-parquet", "prepare", P + ["--input", j("empty.parquet")], ["empty.parquet", "no documents"]),
        c("prepare-jsonl-not-json", "prepare", P + ["--input", j("bad.jsonl")], ["bad.jsonl line 2", "JSON"]),
        c("prepare-jsonl-no-field", "prepare", P + ["--input", j("nofield.jsonl")], ["nofield.jsonl", "--text-column"]),
        c("prepare-txt-not-utf8", "prepare", P + ["--input", j("latin1.txt")], ["latin1.txt", "UTF-8"]),
        c("prepare-val-fraction-above-1", "prepare", P + ["--input", j("good.parquet"), "--val-fraction", "2"], ["--val-fraction"]),
        c("prepare-val-docs-zero", "prepare", P + ["--input", j("good.parquet"), "--val-docs", "0"], ["--val-docs"]),
        c("prepare-val-docs-too-many", "prepare", P + ["--input", j("good.parquet"), "--val-docs", "1000"], ["--val-docs", "fewer"]),
        c("prepare-tiny-val-fraction", "prepare", P + ["--input", j("good.parquet"), "--val-fraction", "0.0001"], ["--val-fraction", "--val-docs"]),
        c("prepare-negative-workers", "prepare", P + ["--input", j("good.parquet"), "--workers", "-1"], ["--workers"]),
        c("prepare-workers-word", "prepare", P + ["--input", j("good.parquet"), "--workers", "many"], ["--workers", "many"]),
        c("prepare-unknown-dtype", "prepare", P + ["--input", j("good.parquet"), "--dtype", "uint8"], ["--dtype", "uint8"]),
        c("prepare-unknown-tokenizer", "prepare", P + ["--input", j("good.parquet"), "--tokenizer", "bpe"], ["--tokenizer", "bpe"]),
        c("prepare-bpe-file-missing", "prepare", P + ["--input", j("good.parquet"), "--tokenizer", "gpt2", "--bpe-file", j("no.tiktoken")], ["no.tiktoken"]),
        c("prepare-demo-and-input", "prepare", P + ["--demo", "--input", j("good.parquet")], ["--input", "--demo"]),
        c("prepare-other-dataset-there", "prepare", P[:-1] + [j("data_prepared"), "--input", j("good.parquet"), "--val-docs", "3"], ["data_prepared", "--force", "--out-dir"]),
        c("prepare-out-dir-is-a-file", "prepare", P[:-1] + [j("a_file"), "--input", j("good.parquet"), "--val-docs", "3"], ["a_file", "--out-dir"]),
        # a file-size limit: every write past it fails (EFBIG), as on a full disk
        c("prepare-file-size-limit", "prepare", P[:-1] + [j("out_prepare_fsize"), "--input", j("good.parquet"),
                                                        "--val-docs", "3", "--limit:fsize=4096"],
          ["train.bin.tmp", "free some space", "--out-dir"]),
        c("prepare-unknown-option", "prepare", P + ["--input", j("good.parquet"), "--frobnicate"], ["--frobnicate"]),
        # --- sample.py ---
        c("sample-no-checkpoint", "sample", S("run_empty"), ["run_empty", "--out_dir"]),
        c("sample-truncated", "sample", S("run_trunc", "--checkpoint=latest"), ["ckpt.pt", "cannot be read"]),
        c("sample-malicious", "sample", S("run_evil"), ["best.pt", "cannot be read"]),
        c("sample-bad-which", "sample", S("run_good", "--checkpoint=last"), ["last", "--checkpoint=best"]),
        c("sample-prompt-file-missing", "sample", S("run_good", f"--start=FILE:{j('nope.txt')}"), ["nope.txt", "--start=FILE:"]),
        c("sample-negative-temperature", "sample", S("run_good", "--temperature=-1"), ["temperature", "0"]),
        c("sample-misspelt-key", "sample", S("run_good", "--max_new_token=5"), ["max_new_token", "max_new_tokens"]),
        # --- diagnose ---
        c("diagnose-missing-path", "diagnose", G + [j("nothing.log")], ["nothing.log", "not found"]),
        c("diagnose-empty-file", "diagnose", G + [j("empty.log")], ["empty.log", "empty"]),
        c("diagnose-binary-file", "diagnose", G + [j("binary.log")], ["binary.log", "binary"]),
        c("diagnose-checkpoint-file", "diagnose", G + [j("run_good", "ckpt.pt")], ["ckpt.pt", "metrics.jsonl"]),
        c("diagnose-garbage-text", "diagnose", G + [j("garbage.log")], ["garbage.log"]),
        c("diagnose-garbage-jsonl", "diagnose", G + [j("garbage.jsonl")], ["garbage.jsonl", "metrics.jsonl"]),
        c("diagnose-jsonl-without-steps", "diagnose", G + [j("onlyrun.jsonl")], ["onlyrun.jsonl", "log_interval"]),
        c("diagnose-csv-unknown-columns", "diagnose", G + [j("unknown.csv")], ["unknown.csv"]),
        c("diagnose-folder-without-metrics", "diagnose", G + [j("run_empty")], ["run_empty", "metrics.jsonl"]),
        c("diagnose-unknown-option", "diagnose", G + [j("good.jsonl"), "--frobnicate"], ["--frobnicate"]),
        c("diagnose-config-missing", "diagnose", G + [j("good.jsonl"), "--config", j("nope.py")], ["nope.py"]),
        c("diagnose-data-missing", "diagnose", G + [j("good.jsonl"), "--data", j("nodata")], ["nodata", "dataset folder"]),
    ]


def case_to_run(case, ws):
    """A case as {argv, cwd, env, fsize}: '--env:K=V,...' items become environment variables,
    '--limit:fsize=N' a file-size limit (RLIMIT_FSIZE) on the process."""
    argv, env, fsize = [], {}, None
    for a in case["argv"]:
        if a.startswith("--env:"):
            env.update(kv.split("=", 1) for kv in a[len("--env:"):].split(","))
        elif a.startswith("--limit:fsize="):
            fsize = int(a.split("=", 1)[1])
        else:
            argv.append(a)
    return {"argv": argv, "cwd": ROOT, "env": env, "fsize": fsize}


# -----------------------------------------------------------------------------
# running the cases: train.py, sample.py and diagnose in this process (their stages no longer
# keep state between runs), prepare.py and cases with environment variables as real processes


def run_in_process(case):
    """One case {argv, cwd, env} run here exactly as `python ARGV` would run it (runpy,
    sys.argv, the exit status, a traceback printed for an uncaught exception); {rc, stdout, stderr}."""
    import contextlib
    import io
    import runpy
    import traceback
    from train_helpers import saved_process_state
    argv, out, err = case["argv"], io.StringIO(), io.StringIO()
    with saved_process_state(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.chdir(case.get("cwd", ROOT))
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1]] + argv[2:]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(argv)
                runpy.run_path(argv[0], run_name="__main__")
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = 1
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def runs_in_process(case):
    return not case.get("env") and not case.get("fsize") and (case["argv"][0] in ("train.py", "sample.py") or case["argv"][:2] == ["-m", "diagnose"])


def run_cases(cases, real_processes=False, threads=3):
    """Results of many {argv, cwd, env} cases, in order: in this process where they can run here
    (unless real_processes), the rest as real processes, a few at a time meanwhile."""
    from concurrent.futures import ThreadPoolExecutor
    here = [i for i, c in enumerate(cases) if not real_processes and runs_in_process(c)]
    results = [None] * len(cases)
    with ThreadPoolExecutor(threads) as pool:
        elsewhere = {i: pool.submit(run_case_subprocess, c) for i, c in enumerate(cases) if i not in here}
        for i in here:
            results[i] = run_in_process(cases[i])
        for i, future in elsewhere.items():
            results[i] = future.result()
    return results


def run_case_subprocess(case, timeout=300):
    """A case as a real `python ...` process."""
    kw = {"preexec_fn": file_size_limit(case["fsize"])} if case.get("fsize") else {}
    p = run([PY] + case["argv"], cwd=case.get("cwd", ROOT), timeout=timeout,
            env=dict(ENV, **(case.get("env") or {})), **kw)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def file_size_limit(limit):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored), as on a full disk."""
    def limit_writes():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


# -----------------------------------------------------------------------------
# training under faults: kill -9, SIGTERM / SIGINT, non-finite values


def metrics_problems(out_dir):
    """What makes out_dir/metrics.jsonl unreadable: every line but a torn last one must be JSON,
    and diagnose's parser must read the run (once it has a train record)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    problems = []
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:  # not the last, possibly torn, line
                problems.append(f"metrics.jsonl line {i + 1} is not JSON: {line[:80]!r}")
    if any(r.get("event") == "train" for r in records):
        from diagnose.parse import load_run
        from errors import UserError
        try:
            load_run(out_dir)
        except UserError as e:
            problems.append(f"diagnose cannot read metrics.jsonl: {e}")
    return problems


def checkpoint_problems(out_dir, last_done_iter=None):
    """Checkpoints on disk that do not load (weights_only), hold non-finite weights, claim an
    iteration that never ran, or a best.pt older than the best ckpt.pt says it holds."""
    problems, loaded = [], {}
    for name in ("ckpt.pt", "best.pt"):
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        try:
            ck = loaded[name] = load_checkpoint(path)
        except Exception as e:
            problems.append(f"{name} does not load: {type(e).__name__}: {str(e)[:100]}")
            continue
        if not all_finite(ck):
            problems.append(f"{name} holds non-finite weights")
        if last_done_iter is not None and ck["iter_num"] > last_done_iter + 1:
            problems.append(f"{name} says iter {ck['iter_num']} but only {last_done_iter} ran")
    ck, best = loaded.get("ckpt.pt"), loaded.get("best.pt")
    if ck is not None and ck.get("best_iter") is not None:
        if best is None:
            problems.append(f"ckpt.pt says the best is iter {ck['best_iter']} but there is no best.pt")
        elif best["iter_num"] < ck["best_iter"]:  # (a newer best.pt, its ckpt.pt not yet written, is fine)
            problems.append(f"best.pt holds iter {best['iter_num']} but ckpt.pt says the best is "
                            f"iter {ck['best_iter']} (best.pt is stale)")
    return problems


def reference_run(data_dir, out_dir, args_extra=(), **kw):
    """An uninterrupted tiny run; returns its final ckpt.pt and best.pt (loaded)."""
    p = train(tiny_train_args(data_dir, out_dir, extra=args_extra, **kw))
    if p.returncode != 0:
        raise RuntimeError(f"the reference run failed: {p.stderr[-2000:]}")
    return {n: load_checkpoint(os.path.join(out_dir, n)) for n in ("ckpt.pt", "best.pt")}


def _wait_for_temp(out_dir, deadline, prefix=""):
    while time.time() < deadline:
        try:
            if any(".tmp" in n and n.startswith(prefix) for n in os.listdir(out_dir)):
                return True
        except FileNotFoundError:
            pass
    return False


def signal_stop_problems(w, rc, sig, twice, out_dir):
    """A signalled run must stop cleanly: exit 0 with a checkpoint of the iteration it names
    (twice, an impatient Ctrl-C, may also exit 130)."""
    name = signal.Signals(sig).name
    if twice:
        return [] if rc in (0, 130) else [f"{name} twice: exit {rc} ({first_error_line(w.stderr)})"]
    m = re.search(r"stopped by \w+ at iter (\d+)", "\n".join(w.lines))
    if rc != 0 or m is None:
        return [f"{name}: exit {rc}, no 'stopped by' line ({first_error_line(w.stderr)})"]
    if os.path.exists(os.path.join(out_dir, "ckpt.pt")):
        at = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["iter_num"]
        if at != int(m.group(1)):
            return [f"stopped at iter {m.group(1)} but ckpt.pt holds iter {at}"]
    return []


def kill_trial(data_dir, out_dir, ref, rng, phase, max_iters=40, eval_interval=10, eval_iters=10,
               sig=signal.SIGKILL, extra=(), twice=False):
    """One run killed (or signalled) at a moment chosen by rng within `phase` ('train', 'eval',
    'checkpoint' (any checkpoint file being written), 'best' (best.pt being written), 'startup'),
    then resumed to the end and compared with the reference. twice: the signal is sent twice,
    2 ms apart (an impatient Ctrl-C), which may interrupt the save itself.

    Returns a dict: landed (where the signal landed, as observed), survived, lost (iterations
    done before the kill that the resumed run had to redo), inconsistent (list), tracebacks
    (count), problems (list)."""
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)
    args = tiny_train_args(data_dir, out_dir, max_iters, eval_interval, eval_iters, extra)
    w = Watched([PY, "train.py"] + args)
    landed = phase
    n_evals = max_iters // eval_interval
    if phase == "startup":
        time.sleep(float(rng.uniform(0.05, 1.5)))
    elif phase == "train":
        k = int(rng.integers(0, max_iters - 1))
        w.wait_line(rf"^iter {k}:")
        time.sleep(float(rng.uniform(0, 0.004)))
    elif phase == "eval":
        e = int(rng.integers(1, n_evals))  # an eval in the middle (the first and last are special)
        w.wait_line(rf"^iter {e * eval_interval - 1}:")
        time.sleep(float(rng.uniform(0, 0.002 * eval_iters)))  # an eval takes ~4 ms per eval_iter
    elif phase in ("checkpoint", "best"):
        e = int(rng.integers(1 if phase == "best" else 0, n_evals))
        if e > 0:
            w.wait_line(rf"^iter {e * eval_interval - 1}:")
        _wait_for_temp(out_dir, time.time() + 30, "best.pt" if phase == "best" else "")
    w.signal(sig)
    if twice:
        time.sleep(0.002)
        w.signal(sig)
    rc = w.finish()
    temps = temp_files(out_dir)
    if phase in ("checkpoint", "best"):
        landed = "ckpt.pt write" if any(t.startswith("ckpt.pt") for t in temps) else (
            "best.pt write" if temps else "just after an eval or a write")
    if phase == "eval" and not re.match(r"iter \d+:", (w.lines or [""])[-1]):
        landed = "just after an eval or a write"
    tracebacks = int(has_traceback(w.stderr))
    last = w.last_iter()
    problems = signal_stop_problems(w, rc, sig, twice, out_dir) if sig != signal.SIGKILL and phase != "startup" else []
    inconsistent = []
    inconsistent += checkpoint_problems(out_dir, last)
    inconsistent += metrics_problems(out_dir)
    # resume, as the user would: from ckpt.pt if there is one, else from scratch
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    resumed_from = load_checkpoint(ckpt_path)["iter_num"] if os.path.exists(ckpt_path) else 0
    lost = 0 if last is None else max(0, last + 1 - resumed_from)
    mode = "resume" if os.path.exists(ckpt_path) else "scratch"
    p = train(args + [f"--init_from={mode}"])
    tracebacks += int(has_traceback(p.stderr))
    if p.returncode != 0:
        problems.append(f"the {mode} run failed ({p.returncode}): {first_error_line(p.stderr)}")
    else:
        final = {n: load_checkpoint(os.path.join(out_dir, n)) for n in ("ckpt.pt", "best.pt")}
        for name in final:
            diff = state_differences(final[name], ref[name])
            if diff:
                problems.append(f"{name} after resuming differs from the uninterrupted run: "
                                f"{', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}")
        inconsistent += checkpoint_problems(out_dir)
        inconsistent += metrics_problems(out_dir)
    if lost > eval_interval:
        problems.append(f"{lost} iterations lost, more than eval_interval={eval_interval}")
    survived = not problems and not inconsistent and not tracebacks
    return {"phase": phase, "landed": landed, "survived": survived, "lost": lost, "last_iter": last,
            "resumed_from": resumed_from, "inconsistent": inconsistent, "tracebacks": tracebacks,
            "problems": problems, "temps_left": temps}


def nonfinite_trial(data_dir, out_dir, spec, max_bad_steps=10, max_iters=40, eval_interval=10):
    """A run with --fault_inject=spec. Returns a dict: rc, stderr line, bad steps counted, the
    end reason, non-finite weights saved (bool), and the iteration of the checkpoint left."""
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)
    args = tiny_train_args(data_dir, out_dir, max_iters, eval_interval,
                           extra=[f"--fault_inject={spec}", f"--max_bad_steps={max_bad_steps}"])
    p = train(args)
    records = [json.loads(ln) for ln in open(os.path.join(out_dir, "metrics.jsonl")) if ln.strip()]
    end = [r for r in records if r["event"] == "end"]
    warned = sorted({r["iter"] for r in records if r["event"] == "warning" and r.get("id") == "nonfinite"})
    saved_iters = [r["iter"] for r in records if r["event"] == "checkpoint"]
    return {"rc": p.returncode, "stderr": p.stderr, "stdout": p.stdout,
            "bad_steps": end[-1]["stats"]["bad_steps"] if end else None,
            "reason": end[-1]["reason"] if end else None, "warned_iters": warned,
            "checkpoint_iters": saved_iters,
            "ckpt_iter": load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["iter_num"],
            "problems": checkpoint_problems(out_dir) + metrics_problems(out_dir),
            "tracebacks": int(has_traceback(p.stderr))}


# -----------------------------------------------------------------------------
# preparation under kill -9


def prepare_args(parquet, out_dir, workers=2, force=False):
    return ["data/fineweb_single/prepare.py", "--input", parquet, "--tokenizer", "byte",
            "--out-dir", out_dir, "--workers", str(workers), "--val-fraction", "0.01"] + (
        ["--force"] if force else [])


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


VOLATILE_META = ("created", "seconds")  # when and how fast it was prepared


def dataset_files_equal(a, b):
    """Differences between two prepared folders: .bin bytes, and meta.json but for its time."""
    import filecmp
    diff = [n for n in ("train.bin", "val.bin")
            if not filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)]
    metas = []
    for folder in (a, b):
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        for key in VOLATILE_META:
            meta.pop(key, None)
        metas.append(meta)
    if metas[0] != metas[1]:
        diff.append("meta.json")
    return diff


def dataset_problems(out_dir, ref_dir):
    """A meta.json beside .bin files it does not describe (or that differ from the reference)."""
    if not os.path.exists(os.path.join(out_dir, "meta.json")):
        return []
    from errors import UserError
    from facts import read_dataset_meta
    try:
        read_dataset_meta(out_dir)
    except UserError as e:
        return [f"meta.json beside unfinished data: {e}"]
    diff = dataset_files_equal(out_dir, ref_dir)
    return [f"meta.json present but {', '.join(diff)} differ from an uninterrupted preparation"] if diff else []


def modified_since(path, t):
    """Whether path exists and was modified at or after t (it may vanish while we look: a
    rebuild deletes the dataset it replaces)."""
    try:
        return os.path.getmtime(path) >= t
    except FileNotFoundError:
        return False


def prepare_kill_trial(parquet, out_dir, ref_dir, rng, duration, aim="random", workers=2):
    """prepare.py killed -9 at a random moment within `duration` seconds (aim='random'), or the
    moment its train.bin appears (aim='finish'), over an empty folder or (force=True, half of
    the trials) a complete older dataset being rebuilt; then rerun to the end and compared
    byte for byte with the reference."""
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)
    force = bool(rng.integers(0, 2))
    if force:
        shutil.copytree(ref_dir, out_dir)
    argv = [PY] + prepare_args(parquet, out_dir, workers, force)
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err_file)
    t0 = time.time()
    if aim == "finish":
        target = os.path.join(out_dir, "val.bin" if rng.integers(0, 2) else "train.bin")
        # over an old dataset, wait for the old meta.json to go first (the rebuild has begun)
        while proc.poll() is None and (os.path.exists(os.path.join(out_dir, "meta.json")) if force else False):
            pass
        start = time.time()
        while proc.poll() is None and not modified_since(target, start - 1):
            pass
    else:
        time.sleep(float(rng.uniform(0.05, duration)))
    workers_pids = children_of(proc.pid)
    finished_first = proc.poll() is not None
    present = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    if not finished_first:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at = time.time() - t0
    err_file.seek(0)
    err = err_file.read()
    err_file.close()
    if finished_first:
        landed = "after the end"
    elif "meta.json" in present and not force or "train.bin.tmp" not in present and not (
            {"train.bin", "val.bin"} & present and "meta.json" not in present):
        landed = "startup (reading, hashing)"
    elif "train.bin.tmp" in present:
        landed = "tokenizing and writing"
    else:
        landed = "finishing (renames, meta.json)"
    deadline = time.time() + 3  # the workers may take a moment to notice
    while time.time() < deadline and any(alive(p) for p in workers_pids):
        time.sleep(0.05)
    orphans = [p for p in workers_pids if alive(p)]
    for p in orphans:  # the tokenizing workers this trial started
        os.kill(p, signal.SIGKILL)
    inconsistent = dataset_problems(out_dir, ref_dir)
    tracebacks = int(has_traceback(err.decode("utf-8", "replace")))
    r = run([PY] + prepare_args(parquet, out_dir, workers, force))
    tracebacks += int(has_traceback(r.stderr))
    problems = []
    if r.returncode != 0:
        problems.append(f"the rerun failed ({r.returncode}): {first_error_line(r.stderr)}")
    else:
        diff = dataset_files_equal(out_dir, ref_dir)
        if diff:
            problems.append(f"the rerun's {', '.join(diff)} differ from an uninterrupted preparation")
        left = temp_files(out_dir)
        if left:
            inconsistent.append(f"temporary files left after the rerun: {', '.join(left)}")
    return {"at_s": at, "force": force, "landed": landed, "orphans": len(orphans),
            "survived": not problems and not inconsistent and not tracebacks,
            "inconsistent": inconsistent, "tracebacks": tracebacks, "problems": problems}
