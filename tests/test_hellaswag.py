"""HellaSwag scoring on a hand-made file that a tiny model trained in-process must get right."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import checkpoint
from errors import UserError
from eval_hellaswag import (ending_losses, hellaswag_eval, hellaswag_summary, pick, read_hellaswag,
                            render_example)
from model import GPT, GPTConfig
from tokenizer import ByteTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = ["the cat sat on the mat.", "a dog ran in the park.", "birds fly over the sea.",
             "my fish swims in a bowl."]
# each context is the start of one sentence; the right ending is its end, the others end other sentences
EXAMPLES = [
    {"ctx": "the cat sat on the", "endings": ["park.", "mat.", "sea.", "bowl."], "label": 1},
    {"ctx": "a dog ran in the", "endings": ["park.", "mat.", "sea.", "bowl."], "label": 0},
    {"ctx": "birds fly over the", "endings": ["bowl.", "mat.", "park.", "sea."], "label": 3},
    {"ctx": "my fish swims in a", "endings": ["sea.", "bowl.", "mat.", "park."], "label": 1},
    {"ctx": "the cat sat", "endings": ["in a bowl.", "over the sea.", "on the mat.", "in the park."], "label": 2},
]


ARGS = dict(block_size=32, vocab_size=320, n_layer=2, n_head=2, n_embd=48, bias=True, token_vocab_size=257,
            dropout=0.0)


@pytest.fixture(scope="module")
def trained():
    """A 2-layer byte-level GPT trained for 300 steps (loss 0.14) on the four sentences (each after end-of-text)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend (40x slower on a busy machine)
    torch.manual_seed(0)
    tok = ByteTokenizer()
    model = GPT(GPTConfig(**ARGS))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        order = torch.randint(0, 4, (12,), generator=g).tolist()
        ids = []
        for i in order:
            ids += [tok.eot_token] + tok.encode(SENTENCES[i])
        data = torch.tensor(ids)
        starts = torch.randint(0, len(ids) - 33, (16,), generator=g)
        x = torch.stack([data[s:s + 32] for s in starts])
        y = torch.stack([data[s + 1:s + 33] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    yield model.eval(), tok
    torch.set_num_threads(threads)


def test_render_marks_the_ending_tokens():
    tokens, mask = render_example(ByteTokenizer(), {"ctx": "ab", "endings": ["c", "dd"], "label": 0}, 16)
    assert tokens.tolist() == [[256, 97, 98, 32, 99, 0], [256, 97, 98, 32, 100, 100]]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]
    tokens, mask = render_example(ByteTokenizer(), {"ctx": "abcdef", "endings": ["x"], "label": 0}, 4)
    assert tokens.tolist() == [[100, 101, 102, 32, 120]] and mask.tolist() == [[0, 0, 0, 1, 1]]  # its start is cut


def test_pick_sum_and_mean_can_disagree():
    assert pick(torch.tensor([4.0, 3.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])) == (1, 0)


def test_ending_losses_are_the_model_loss_on_the_ending(trained):
    model, tok = trained
    tokens, mask = render_example(tok, EXAMPLES[0], 32)
    sums, counts = ending_losses(model, tokens, mask, tok.n_vocab)
    row = tokens[1, :int(mask[1].nonzero().max()) + 1]  # the right ending, without padding
    logits, _ = model(row[None, :-1], row[None, 1:])
    n_ctx = len("the cat sat on the") + 1
    nats = torch.nn.functional.cross_entropy(logits[0, n_ctx - 1:, :257], row[n_ctx:], reduction="sum")
    assert counts[1].item() == len(" mat.")
    assert abs(sums[1].item() - nats.item()) < 1e-5  # float32 sums in another order


def test_a_trained_tiny_model_gets_the_hand_made_examples_right(trained):
    model, tok = trained
    sums = hellaswag_eval(model, tok, EXAMPLES, "cpu")
    assert sums == {"n": 5, "correct": 5, "correct_norm": 5}
    s = hellaswag_summary(sums)
    assert s["hellaswag_acc"] == 1.0 and s["hellaswag_acc_se"] == 0.0
    untrained = GPT(GPTConfig(**ARGS)).eval()
    assert hellaswag_eval(untrained, tok, EXAMPLES, "cpu")["correct"] < 5  # it is the training that knows


def test_ranks_split_the_examples_and_their_sums_add_up(trained):
    model, tok = trained
    wrong = [dict(e, label=(e["label"] + 1) % 4) for e in EXAMPLES]  # all wrong: the split shows in the sums
    parts = [hellaswag_eval(model, tok, EXAMPLES + wrong, "cpu", rank=r, world_size=3) for r in range(3)]
    assert [p["n"] for p in parts] == [4, 3, 3]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    assert total == hellaswag_eval(model, tok, EXAMPLES + wrong, "cpu") == {"n": 10, "correct": 5,
                                                                             "correct_norm": 5}
    s = hellaswag_summary(total)
    assert s["hellaswag_acc"] == 0.5 and s["hellaswag_acc_se"] == pytest.approx(math.sqrt(0.25 / 9))


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found; download hellaswag_val.jsonl"):
        read_hellaswag(str(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(EXAMPLES[0]) + "\n" + json.dumps({"ctx": "x", "endings": ["a"]}) + "\n")
    with pytest.raises(UserError, match=r"line 2 is not a HellaSwag example \(KeyError: 'label'\)"):
        read_hellaswag(str(bad))
    bad.write_text(json.dumps(dict(EXAMPLES[0], label=4)) + "\n")
    with pytest.raises(UserError, match="line 1: label 4 does not index its 4 endings"):
        read_hellaswag(str(bad))


def test_the_command_line_prints_the_accuracies(trained, tmp_path):
    model, tok = trained
    checkpoint.save_atomic({"model": model.state_dict(), "model_args": ARGS, "tokenizer": tok.info()},
                           str(tmp_path / "best.pt"))
    data = tmp_path / "hellaswag_val.jsonl"
    wrong = dict(EXAMPLES[0], label=0)
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES[:3] + [wrong]))
    p = subprocess.run([sys.executable, "eval_hellaswag.py", f"--out_dir={tmp_path}", f"--file={data}",
                        "--device=cpu"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert p.returncode == 0, p.stderr
    se = math.sqrt(0.75 * 0.25 / 3)
    assert re.search(rf"^acc      0\.7500 ± {se:.4f}  \(lowest summed loss\)$", p.stdout, re.M), p.stdout
    assert re.search(rf"^acc_norm 0\.7500 ± {se:.4f}", p.stdout, re.M)
    assert p.stdout.startswith("hellaswag on 4 examples of")


def test_the_evals_and_the_hf_loader_import_no_hugging_face_package():
    code = ("import sys, bpb, eval_hellaswag, hf_gpt2, hf_tokenizer\n"
            "print(sorted(m for m in ('transformers', 'safetensors', 'huggingface_hub') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "[]\n", p.stderr


def test_train_scores_hellaswag_file_at_every_eval(tmp_path):
    import numpy as np
    from train_helpers import TINY, make_dataset, read_metrics, train_in_process
    path = tmp_path / "hellaswag.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    doc = [256] + list(b"the cat sat on the mat.")
    data = make_dataset(str(tmp_path / "data"), train_ids=np.array(doc * 60), val_ids=np.array(doc * 30))
    out = str(tmp_path / "out")
    train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2",
                             f"--hellaswag_file={path}"])
    evals = [r for r in read_metrics(out) if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 2]
    for r in evals:
        assert r["hellaswag_n"] == 5
        assert all(0 <= r[k] <= 1 for k in ("hellaswag_acc", "hellaswag_acc_norm"))
    # the last eval scored the weights ckpt.pt holds: the same fields from eval_hellaswag's own functions
    ckpt = checkpoint.load(os.path.join(out, "ckpt.pt"), map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(checkpoint.clean_state_dict(ckpt["model"]))
    expected = hellaswag_summary(hellaswag_eval(model, ByteTokenizer(), EXAMPLES, torch.device("cpu")))
    assert {k: evals[-1][k] for k in expected} == pytest.approx(expected, nan_ok=True)
    with pytest.raises(UserError, match=r"^hellaswag_file '/nonexistent.jsonl' not found; download"):
        train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", "--hellaswag_file=/nonexistent.jsonl"])
