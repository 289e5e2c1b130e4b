"""
Build the zoo's datasets and run the trainers as subprocesses: the repository's train.py, and the
unmodified nanoGPT from ../shared/anchors/nanoGPT (copied to a scratch folder outside the
repository and run from there; none of its code enters the repository).
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

from bench.zoo.configs import DATASETS, LEAKS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NANOGPT = os.path.join(ROOT, "..", "shared", "anchors", "nanoGPT")
PREPARE = os.path.join(ROOT, "data", "fineweb_single", "prepare.py")


def _prepare(args, log, out_dir, reuse):
    if reuse and os.path.exists(os.path.join(out_dir, "meta.json")):
        return  # prepared already (meta.json is written last)
    subprocess.run([sys.executable, PREPARE, "--workers", "1", "--force"] + args, check=True, cwd=ROOT,
                   stdout=log, stderr=subprocess.STDOUT)


def build_datasets(work, reuse=False):
    """work/data/<name>/ for every dataset in configs.DATASETS and LEAKS (kept with reuse); returns
    {name: folder}."""
    import pyarrow.parquet as pq
    folders = {}
    with open(os.path.join(work, "prepare.log"), "a") as log:
        demo = os.path.join(work, "data", "demo")
        _prepare(["--demo", "--out-dir", demo], log, demo, reuse)
        folders["demo"] = demo
        texts = pq.read_table(os.path.join(demo, "source", "pydoc_topics.parquet")).column("text").to_pylist()
        for name, (n_docs, val_docs) in DATASETS.items():
            if n_docs is None:
                continue
            src = os.path.join(work, "sources", f"{name}.jsonl")
            os.makedirs(os.path.dirname(src), exist_ok=True)
            with open(src, "w") as f:
                for text in texts[:n_docs]:
                    f.write(json.dumps({"text": text}) + "\n")
            folders[name] = os.path.join(work, "data", name)
            _prepare(["--input", src, "--tokenizer", "byte", "--val-docs", str(val_docs),
                      "--out-dir", folders[name]], log, folders[name], reuse)
    for name, base in LEAKS.items():
        dst = os.path.join(work, "data", name)
        folders[name] = dst if reuse and os.path.exists(os.path.join(dst, "meta.json")) else \
            make_leak(folders[base], dst)
    return folders


def make_leak(src, dst):
    """A copy of dataset src whose val.bin is its train.bin: the validation split is the training data."""
    os.makedirs(dst, exist_ok=True)
    shutil.copyfile(os.path.join(src, "train.bin"), os.path.join(dst, "train.bin"))
    shutil.copyfile(os.path.join(src, "train.bin"), os.path.join(dst, "val.bin"))
    with open(os.path.join(src, "meta.json")) as f:
        meta = json.load(f)
    meta.update(val_tokens=meta["train_tokens"], val_docs=meta["train_docs"],
                leak="val.bin is a copy of train.bin (bench/zoo)")
    with open(os.path.join(dst, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(dst, "meta.json.tmp"), os.path.join(dst, "meta.json"))  # last, as prepare.py
    return dst


def train_py(config, data_dir, out_dir):
    """Run train.py with config as --key=value flags; returns (seconds, stdout text)."""
    import time
    args = [f"--{k}={v}" for k, v in config.items()]
    args += [f"--out_dir={out_dir}", f"--data_dir={data_dir}"]
    t0 = time.time()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1: train.py's own clean stop (e.g. too many non-finite steps)
        raise RuntimeError(f"train.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    for name in ("ckpt.pt", "best.pt"):  # the zoo needs the metrics only
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
    return time.time() - t0, proc.stdout


def nanogpt(config, data_dir, scratch, dataset_name):
    """Run the unmodified nanoGPT on data_dir (its train.bin/val.bin are uint16, nanoGPT's format)
    from a scratch copy; returns (seconds, stdout text)."""
    import time
    os.makedirs(scratch, exist_ok=True)
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copyfile(os.path.join(NANOGPT, name), os.path.join(scratch, name))
    data = os.path.join(scratch, "data", dataset_name)
    os.makedirs(data, exist_ok=True)
    for split in ("train", "val"):
        shutil.copyfile(os.path.join(data_dir, f"{split}.bin"), os.path.join(data, f"{split}.bin"))
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = json.load(f)
    assert meta["dtype"] == "uint16", "nanoGPT reads uint16 tokens"
    with open(os.path.join(data, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": meta["tokenizer"]["vocab_size"]}, f)
    args = [f"--{k}={v}" for k, v in config.items()] + [f"--dataset={dataset_name}", "--out_dir=out"]
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "train.py"] + args, cwd=scratch, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"nanoGPT failed ({proc.returncode}): {proc.stderr[-2000:]}")
    shutil.rmtree(os.path.join(scratch, "out"), ignore_errors=True)
    return time.time() - t0, proc.stdout

