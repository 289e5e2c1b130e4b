"""A real nanoGPT run (its unmodified files, from a scratch copy, on CPU) and what this repository
makes of its dataset folder and ckpt.pt. nanoGPT's code runs only in subprocesses in the scratch
folder; nothing of it is imported here."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_formats import open_dataset
from dataloader import TrainLoader
from model import GPT, GPTConfig
from nanogpt_compat import NOT_RESTORED, convert, is_nanogpt_checkpoint, load_nanogpt
from tokenizer import load_tokenizer, prompt_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT = os.path.join(ROOT, "..", "shared", "anchors", "nanoGPT")
TEXT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
        "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n") * 40
# a tiny model, a few iterations: ckpt.pt is written at iteration 4 (nanoGPT saves at evals after 0)
NANOGPT_ARGS = ["--dataset=prose", "--out_dir=out", "--device=cpu", "--compile=False", "--dtype=float32",
                "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4",
                "--gradient_accumulation_steps=2", "--max_iters=4", "--eval_interval=4", "--eval_iters=2",
                "--log_interval=1", "--warmup_iters=1", "--lr_decay_iters=4", "--learning_rate=1e-2",
                "--min_lr=1e-3", "--dropout=0.0", "--bias=False", "--wandb_log=False"]
LR, BETAS, WD = 1e-2, (0.9, 0.95), 0.1

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(NANOGPT, "train.py")),
                                reason="nanoGPT's files are not in ../shared/anchors/nanoGPT")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two threads on a loaded 2-core machine run these tiny models ~20x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_nanogpt_folder(folder, char):
    """data/prose as nanoGPT's prepare.py scripts write it: shakespeare_char's (ids of sorted
    characters, meta.pkl) or openwebtext's (GPT-2 ids, end-of-text after each document)."""
    os.makedirs(folder)
    n = int(0.9 * len(TEXT))
    if char:
        chars = sorted(set(TEXT))
        stoi, itos = {c: i for i, c in enumerate(chars)}, dict(enumerate(chars))
        splits = [[stoi[c] for c in part] for part in (TEXT[:n], TEXT[n:])]
        with open(os.path.join(folder, "meta.pkl"), "wb") as f:
            pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    else:
        tok = load_tokenizer("gpt2")
        splits = [tok.encode(part) + [tok.eot_token] for part in (TEXT[:n], TEXT[n:])]
    for name, ids in zip(("train", "val"), splits):
        np.array(ids, dtype=np.uint16).tofile(os.path.join(folder, f"{name}.bin"))


def run_nanogpt(scratch, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    p = subprocess.run([sys.executable, *args], cwd=scratch, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, f"nanoGPT failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


# after nanoGPT's train.py, in the same process (one start of torch, not two): its model and
# optimizer from ckpt.pt, the loss on a batch, one AdamW step from the saved optimizer state,
# then the loss again
NANOGPT_STEP = f"""
import json, numpy as np, runpy, sys, torch
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')
from model import GPT, GPTConfig
ck = torch.load('out/ckpt.pt', map_location='cpu', weights_only=True)
model = GPT(GPTConfig(**ck['model_args']))
model.load_state_dict({{k.removeprefix('_orig_mod.'): v for k, v in ck['model'].items()}})
opt = model.configure_optimizers({WD}, {LR}, {BETAS}, 'cpu')
opt.load_state_dict(ck['optimizer'])
x, y = (torch.from_numpy(np.load(name)) for name in ('x.npy', 'y.npy'))
_, before = model(x, y)
before.backward()
opt.step()
with torch.no_grad():
    _, after = model(x, y)
print(json.dumps([before.item(), after.item()]))
"""


@pytest.fixture(scope="module", params=["char", "gpt2"])
def nanogpt_run(request, tmp_path_factory):
    """A scratch copy of nanoGPT with its data/prose folder and out/ckpt.pt after 4 iterations,
    and nanoGPT's losses before and after one step on a batch of val.bin (see NANOGPT_STEP)."""
    scratch = str(tmp_path_factory.mktemp(f"nanogpt_{request.param}"))
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(os.path.join(NANOGPT, name), scratch)
    folder = os.path.join(scratch, "data", "prose")
    write_nanogpt_folder(folder, char=request.param == "char")
    x, y = a_batch(folder)
    np.save(os.path.join(scratch, "x.npy"), x.numpy())
    np.save(os.path.join(scratch, "y.npy"), y.numpy())
    out = run_nanogpt(scratch, "-c", NANOGPT_STEP, *NANOGPT_ARGS)
    assert os.path.isfile(os.path.join(scratch, "out", "ckpt.pt"))
    return scratch, request.param, json.loads(out.splitlines()[-1])


def our_step(ckpt, x, y):
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])  # strict: every name matches
    opt, _ = model.configure_optimizers(WD, LR, BETAS, "cpu")
    opt.load_state_dict(ckpt["optimizer"])
    for p in model.parameters():  # the state belongs to the parameter of its shape
        assert opt.state[p]["exp_avg"].shape == p.shape
    _, before = model(x, y)
    before.backward()
    opt.step()
    with torch.no_grad():
        _, after = model(x, y)
    return [before.item(), after.item()], model


def a_batch(folder, block_size=16, rows=(0, 37, 80)):
    val = open_dataset(folder).val
    windows = val.rows([r * 2 for r in rows], block_size + 1)
    return torch.from_numpy(windows[:, :-1].copy()), torch.from_numpy(windows[:, 1:].copy())


def test_a_nanogpt_checkpoint_continues_here_with_nanogpts_loss_and_optimizer_state(nanogpt_run):
    scratch, kind, theirs = nanogpt_run
    folder = os.path.join(scratch, "data", "prose")
    ckpt, note = load_nanogpt(os.path.join(scratch, "out", "ckpt.pt"), data_dir=folder)
    ours, model = our_step(ckpt, *a_batch(folder))
    assert abs(ours[0] - theirs[0]) < 1e-5 and abs(ours[1] - theirs[1]) < 1e-5, (ours, theirs)
    assert ours[1] < ours[0] - 1e-3  # the step did something, so equal losses after it say the state carried over
    assert ckpt["iter_num"] == 4 and ckpt["tokens_seen"] == 4 * 4 * 16 * 2
    assert ckpt["loader"]["pos"] == 4 * 4 * 2 and isinstance(ckpt["best_val_loss"], float)
    assert note.endswith(NOT_RESTORED) and "iter 4" in note
    # sampling decodes with the dataset's tokenizer
    tok = load_tokenizer(ckpt["tokenizer"])
    ids, skip = prompt_ids(tok, "ROMEO:")
    torch.manual_seed(0)
    out = model.generate(torch.tensor([ids]), 30, temperature=1.0)
    text = tok.decode(out[0, skip:].tolist())
    assert text.startswith("ROMEO:")
    if kind == "char":
        assert ckpt["tokenizer"]["name"] == "char" and ckpt["model_args"]["token_vocab_size"] == len(set(TEXT))
        assert len(text) == len("ROMEO:") + 30 and set(text) <= set(TEXT)
    else:
        assert ckpt["tokenizer"]["name"] == "gpt2"
        assert (ckpt["model_args"]["vocab_size"], ckpt["model_args"]["token_vocab_size"]) == (50304, 50257)


def test_compiled_checkpoints_prefixes_are_dropped_and_ours_are_not_taken_for_nanogpts(nanogpt_run):
    scratch, _, _ = nanogpt_run
    raw = torch.load(os.path.join(scratch, "out", "ckpt.pt"), map_location="cpu", weights_only=True)
    assert is_nanogpt_checkpoint(raw)
    folder = os.path.join(scratch, "data", "prose")
    plain, _ = convert(dict(raw), "ckpt.pt", data_dir=folder)
    compiled = dict(raw, model={f"_orig_mod.{k}": v for k, v in raw["model"].items()})  # as compile=True saves
    prefixed, _ = convert(compiled, "ckpt.pt", data_dir=folder)
    assert plain["model"].keys() == prefixed["model"].keys()
    assert all(torch.equal(plain["model"][k], prefixed["model"][k]) for k in plain["model"])
    assert not is_nanogpt_checkpoint(plain)  # the converted one is ours


def test_our_training_learns_from_a_nanogpt_folder(nanogpt_run):
    """From scratch, through open_dataset and TrainLoader: the loss falls well below its start."""
    scratch, _, _ = nanogpt_run
    ds = open_dataset(os.path.join(scratch, "data", "prose"))
    assert ds.meta["train_tokens"] == os.path.getsize(os.path.join(scratch, "data", "prose", "train.bin")) // 2
    vocab = ds.meta["tokenizer"]["vocab_size"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=((vocab + 63) // 64) * 64,
                          token_vocab_size=vocab))
    opt, _ = model.configure_optimizers(0.0, 1e-2, (0.9, 0.95), "cpu")
    loader = TrainLoader(ds.train, 16, 8, 1, 0, 1, 1337, "epoch", torch.device("cpu"))
    losses = []
    for _ in range(40):
        x, y = loader.next_batch()
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    loader.close()
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3]), losses


# -----------------------------------------------------------------------------
# end to end through train.py and sample.py, once they call data_formats / nanogpt_compat

TINY_OURS = ["--device=cpu", "--dtype=float32", "--compile=False", "--dropout=0.0", "--live_diagnose=False",
             "--batch_size=4", "--gradient_accumulation_steps=1", "--log_interval=1", "--eval_iters=2"]
NANOGPT_LOSS = """
import json, numpy as np, torch
from model import GPT, GPTConfig
ck = torch.load('out/ckpt.pt', map_location='cpu', weights_only=True)
model = GPT(GPTConfig(**ck['model_args']))
model.load_state_dict({k.removeprefix('_orig_mod.'): v for k, v in ck['model'].items()})
_, loss = model(*(torch.from_numpy(np.load(name)) for name in ('first_x.npy', 'first_y.npy')))
print(json.dumps(loss.item()))
"""


def run_ours(script, *args, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr
    return p


def test_train_py_trains_on_a_nanogpt_folder_and_resumes_a_nanogpt_checkpoint(nanogpt_run, tmp_path):
    scratch, kind, _ = nanogpt_run
    folder = os.path.join(scratch, "data", "prose")
    fresh = run_ours("train.py", f"--data_dir={folder}", f"--out_dir={tmp_path / 'fresh'}", *TINY_OURS,
                     "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--max_iters=3",
                     "--eval_interval=3")
    assert "read as a nanoGPT dataset folder" in fresh.stdout
    with open(tmp_path / "fresh" / "metrics.jsonl") as f:
        run = json.loads(f.readline())
    assert run["data"]["format"] == "nanogpt"
    assert run["data"]["train_tokens"] == os.path.getsize(os.path.join(folder, "train.bin")) // 2

    # resume nanoGPT's run; the first loss is nanoGPT's model's loss on the batch our loader draws first
    out = tmp_path / "resumed"
    shutil.copytree(os.path.join(scratch, "out"), out)
    ckpt, _ = load_nanogpt(str(out / "ckpt.pt"), tokenizer=open_dataset(folder).meta["tokenizer"])
    loader = TrainLoader(open_dataset(folder).train, 16, 4, 1, 0, 1, 1337, "epoch", torch.device("cpu"))
    loader.load_state_dict(ckpt["loader"])
    x, y = loader.next_batch()
    loader.close()
    np.save(os.path.join(scratch, "first_x.npy"), x.numpy())
    np.save(os.path.join(scratch, "first_y.npy"), y.numpy())
    theirs = json.loads(run_nanogpt(scratch, "-c", NANOGPT_LOSS).splitlines()[-1])
    resumed = run_ours("train.py", "--init_from=resume", f"--data_dir={folder}", f"--out_dir={out}", *TINY_OURS,
                       "--max_iters=6", "--eval_interval=100")
    assert NOT_RESTORED in resumed.stdout + resumed.stderr
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    first = next(r for r in records if r.get("event") == "train")
    assert first["iter"] == 4 and abs(first["loss"] - theirs) < 1e-5, (first, theirs)
    written = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert written["iter_num"] == 6 and written["tokenizer"]["name"] == kind  # our own format from here on


def test_sample_py_decodes_a_nanogpt_checkpoint(nanogpt_run):
    scratch, kind, _ = nanogpt_run
    # from nanoGPT's folder, as nanoGPT's sample.py is run: data/<dataset>/meta.pkl is found there
    p = run_ours("sample.py", "--out_dir=out", "--checkpoint=latest", "--start=ROMEO:", "--num_samples=1",
                 "--max_new_tokens=20", "--device=cpu", cwd=scratch)
    text = p.stdout.split("---------------")[0].rstrip("\n")
    assert text.startswith("ROMEO:") and "nanoGPT checkpoint" in p.stderr
    if kind == "char":
        assert len(text) == len("ROMEO:") + 20 and set(text) <= set(TEXT)
