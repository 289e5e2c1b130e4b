"""
The bad-input table of the fault suite (tests/test_bad_input.py, bench/faults.py): a workspace of
damaged and foreign files, the cases over train.py, prepare.py, sample.py and diagnose (each a
command line and the words its one error line must hold), and a runner that runs most of them
in this process.
"""
import hashlib
import json
import os
import shutil

from fault_helpers import ROOT, TINY, error_problems, has_traceback, make_dataset, run_case_subprocess, run_in_process
from prepare_kill import generated_texts, write_parquet


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
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    with open(path, "rb") as f:  # the local header: 30 bytes + name + extra field, then the data
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


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


# copies of a good ckpt.pt, damaged: truncated to a percentage, or one bit flipped in each part
# (where, counted from: the file's start, the first tensor's data or the end, offset, bit)
TRUNCATIONS = (0, 10, 60, 90, 99.9)
BIT_FLIPS = (("zip_header", "start", 2, 5), ("pickle", "start", 200, 3), ("tensor_data", "data", 100, 6),
             ("tensor_data_far", "data", 20000, 5), ("zip_directory", "end", -200, 5))
DAMAGED_NAMES = tuple(f"trunc{pct}" for pct in TRUNCATIONS) + tuple(f"flip_{f[0]}" for f in BIT_FLIPS)


def damage_checkpoint(path, name):
    """Damage the copy of a good ckpt.pt at path as DAMAGED_NAMES' `name` says."""
    if name.startswith("trunc"):
        return truncate(path, float(name[len("trunc"):]) / 100)
    where, base, offset, bit = next(f for f in BIT_FLIPS if name == f"flip_{f[0]}")
    start = {"start": 0, "data": tensor_data_offset(path), "end": os.path.getsize(path)}[base]
    flip_bit(path, start + offset, bit)


def build_workspace(ws, good_ckpt):
    """Every damaged or foreign file that the bad-input cases point at, under ws.
    good_ckpt: a ckpt.pt from a tiny run on make_dataset()'s data (the cases damage copies)."""
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
    for name in DAMAGED_NAMES:
        damage_checkpoint(os.path.join(run_dir(f"run_{name}", good), "ckpt.pt"), name)
    run_dir("run_text", b"this is not a checkpoint\n")
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


# folders whose content the programs may change (the runs that must succeed, or are refused only
# after they started writing)
MAY_CHANGE = ("out_train", "out_train_fsize", "run_fsize", "out_prepare", "out_prepare_fsize", "run_good",
              "run_nanogpt")


def snapshot(ws):
    """{path under ws: sha256} of every file the cases must leave as it was."""
    sums = {}
    for folder, _, files in os.walk(ws):
        if os.path.relpath(folder, ws).split(os.sep)[0] in MAY_CHANGE:
            continue
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                sums[os.path.relpath(os.path.join(folder, name), ws)] = hashlib.sha256(f.read()).hexdigest()
    return sums


def changed_files(before, after):
    return [k for k in before if after.get(k) != before[k]]


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
    D = lambda folder: T + [f"--data_dir={j(folder)}", f"--out_dir={j('out_' + folder)}"]  # noqa: E731
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
        *[c(f"train-resume-damaged-{name}", "train", R(f"run_{name}"), ["ckpt.pt", "cannot be read", "--init_from=scratch"])
          for name in DAMAGED_NAMES],
        c("train-resume-text-file", "train", R("run_text"), ["ckpt.pt", "--init_from=scratch"]),
        c("train-resume-malicious", "train", R("run_evil"), ["ckpt.pt", "--init_from=scratch"]),
        # nanoGPT's ckpt.pt is resumed (converted), saying what it lacks
        c("train-resume-nanogpt-checkpoint", "train", R("run_nanogpt"), ["nanoGPT checkpoint", "resuming at iter"],
          ok=True),
        c("train-resume-weights-only", "train", R("run_weightsonly"), ["ckpt.pt", "--init_from=scratch"]),
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
        c("sample-truncated", "sample", S("run_trunc60", "--checkpoint=latest"), ["ckpt.pt", "cannot be read"]),
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
        c("diagnose-malicious", "diagnose", G + [j("run_evil", "ckpt.pt")], ["ckpt.pt", "metrics.jsonl"]),
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
# running the cases: train.py, sample.py and diagnose in this process, prepare.py (its speed tricks
# end the process at once) and cases with environment variables or limits as real processes


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
