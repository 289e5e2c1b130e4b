"""Hugging Face GPT-2 layout: import (hf:PATH, hub names through the cache) and export_hf.py.
Everything is made locally (transformers.GPT2Config + save_pretrained, tiny GPTs of ours); no hub."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import checkpoint  # noqa: E402
import tokenizer as tok_mod  # noqa: E402
from errors import UserError  # noqa: E402
from export_hf import check_exportable, export_checkpoint  # noqa: E402
from hf_gpt2 import load_hf_gpt2, requested_arch, tokenizer_info_for  # noqa: E402
from hf_tokenizer import gpt2_ranks, vocab_and_merges  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_gpt2 = pytest.mark.skipif(tok_mod.cached_gpt2_ranks() is None,
                                reason="GPT-2 BPE ranks not cached; run .ci/seed_tiktoken.sh")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def sharpen_(model, std=0.3, seed=0):
    """Weights far from the near-uniform init, so that a wrong transpose or a missing bias shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_hf(tmp_path, name="tiny-hf", **overrides):
    kw = dict(vocab_size=300, n_positions=32, n_embd=48, n_layer=2, n_head=4, activation_function="gelu",
              bos_token_id=0, eos_token_id=0)
    kw.update(overrides)
    torch.manual_seed(0)
    hf = sharpen_(transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw))).eval()
    folder = tmp_path / name
    hf.save_pretrained(folder)
    return hf, folder


def our_model(model_args, state_dict):
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(state_dict)
    return model.eval()


# -----------------------------------------------------------------------------
# import


def test_hf_folder_imports_with_the_same_loss(tmp_path):
    hf, folder = tiny_hf(tmp_path)
    args, sd, notes = load_hf_gpt2(f"hf:{folder}")
    assert args == dict(n_layer=2, n_head=4, n_embd=48, block_size=32, bias=True, vocab_size=300,
                        token_vocab_size=300, dropout=0.0)
    assert notes == []
    ours = our_model(args, sd)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 300, (4, 32), generator=g), torch.randint(0, 300, (4, 32), generator=g)
    with torch.no_grad():
        logits, loss = ours(x, y)
        theirs = hf(input_ids=x).logits
    hf_loss = torch.nn.functional.cross_entropy(theirs.view(-1, 300), y.view(-1))
    assert loss.item() > 3.0  # sharpened weights: far from log(300) = 5.7 only by chance, not uniform
    assert abs(loss.item() - hf_loss.item()) < 1e-5
    assert torch.allclose(logits, theirs, atol=1e-4, rtol=0)


def test_a_shorter_block_size_crops_the_positions(tmp_path):
    hf, folder = tiny_hf(tmp_path)
    args, sd, _ = load_hf_gpt2(f"hf:{folder}", requested=requested_arch(
        {"block_size": 16, "n_layer": 12, "bias": False}, {"block_size": 1024, "n_layer": 12, "bias": False}))
    assert args["block_size"] == 16 and sd["transformer.wpe.weight"].shape == (16, 48)
    x = torch.arange(16).view(1, 16)
    with torch.no_grad():  # the first 16 positions are GPT-2's own
        assert torch.allclose(our_model(args, sd)(x, x)[0], hf(input_ids=x).logits, atol=1e-4, rtol=0)


def test_pytorch_model_bin_and_old_key_names_import(tmp_path):
    hf, folder = tiny_hf(tmp_path)
    # an old-style file: keys without 'transformer.', the causal-mask buffers, an explicit lm_head
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in hf.state_dict().items()}
    sd["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    sd["lm_head.weight"] = sd["wte.weight"]
    os.remove(folder / "model.safetensors")
    torch.save(sd, folder / "pytorch_model.bin")
    args, ours_sd, _ = load_hf_gpt2(f"hf:{folder}")
    x = torch.arange(32).view(1, 32)
    with torch.no_grad():
        assert torch.allclose(our_model(args, ours_sd)(x, x)[0], hf(input_ids=x).logits, atol=1e-4, rtol=0)


def test_tanh_gelu_checkpoints_load_with_a_note(tmp_path):
    _, folder = tiny_hf(tmp_path, activation_function="gelu_new")
    _, _, notes = load_hf_gpt2(f"hf:{folder}")
    assert len(notes) == 1 and "gelu_new" in notes[0] and "exact GELU" in notes[0]


def test_a_key_that_contradicts_the_weights_is_one_line(tmp_path):
    _, folder = tiny_hf(tmp_path)
    with pytest.raises(UserError, match=r"^n_layer=6 contradicts the weights of hf:.*, which have n_layer=2; "
                                        r"remove --n_layer"):
        load_hf_gpt2(f"hf:{folder}", requested={"n_layer": 6})
    with pytest.raises(UserError, match=r"^bias=False contradicts"):
        load_hf_gpt2(f"hf:{folder}", requested={"bias": False, "dropout": 0.1})
    load_hf_gpt2(f"hf:{folder}", requested={"n_layer": 2, "dropout": 0.1})  # agreeing keys are fine
    with pytest.raises(UserError, match=r"^block_size=64 contradicts the weights of .*block_size=32"):
        load_hf_gpt2(f"hf:{folder}", requested={"block_size": 64})
    with pytest.raises(UserError, match="has a vocabulary of 300 tokens but the dataset has 257"):
        load_hf_gpt2(f"hf:{folder}", token_vocab=257)
    with pytest.raises(UserError, match="has a vocabulary of 300 tokens, not GPT-2's 50257; this repository"):
        tokenizer_info_for(load_hf_gpt2(f"hf:{folder}")[0], f"hf:{folder}")


@pytest.mark.parametrize("override, key", [(dict(n_inner=100), "n_inner"),
                                           (dict(activation_function="relu"), "activation_function"),
                                           (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
                                           (dict(scale_attn_by_inverse_layer_idx=True),
                                            "scale_attn_by_inverse_layer_idx")])
def test_what_our_gpt_cannot_express_is_refused(tmp_path, override, key):
    _, folder = tiny_hf(tmp_path, **override)
    with pytest.raises(UserError, match=rf"config.json has {key}=.*which this repository's GPT does not implement"):
        load_hf_gpt2(f"hf:{folder}")


def test_bad_folders_are_one_line(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        load_hf_gpt2(f"hf:{tmp_path}")
    _, folder = tiny_hf(tmp_path)
    os.remove(folder / "model.safetensors")
    with pytest.raises(UserError, match="has none of model.safetensors, pytorch_model.bin"):
        load_hf_gpt2(f"hf:{folder}")
    with pytest.raises(UserError, match="is not a GPT-2 name"):
        load_hf_gpt2("gpt3")


def run_py(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(ENV, **env), timeout=120)


LOAD_GPT2 = ("from errors import exit_on_user_error\nfrom hf_gpt2 import load_hf_gpt2, requested_arch, tokenizer_info_for\n"
             "args, sd, notes = exit_on_user_error(lambda: load_hf_gpt2('gpt2'))\nprint(args['n_layer'], len(sd))")


def test_hub_name_offline_without_files_says_how_to_get_them(tmp_path):
    p = run_py(LOAD_GPT2, HF_HOME=str(tmp_path / "hf-home"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: GPT-2 weights 'gpt2' are not in the Hugging Face cache")
    assert "`hf download gpt2 config.json model.safetensors`" in lines[0] and "--init_from=hf:PATH" in lines[0]


def test_hub_name_is_read_from_the_huggingface_cache(tmp_path):
    # the cache layout huggingface_hub writes: models--gpt2/refs/main -> snapshots/<commit>/files
    _, folder = tiny_hf(tmp_path)
    commit = "0" * 40
    snap = tmp_path / "hub" / "models--gpt2" / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        os.rename(folder / name, snap / name)
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text(commit)
    p = run_py(LOAD_GPT2, HF_HUB_CACHE=str(tmp_path / "hub"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2", str(4 + 2 * 12 + 1)]  # 2 layers; wte, wpe, ln_f x2, lm_head + 12 per block


# -----------------------------------------------------------------------------
# export


def save_our_run(out_dir, bias=True, tokenizer="gpt2", seed=0, **model_extra):
    vocab = 50257 if tokenizer == "gpt2" else 257
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=bias, vocab_size=50304 if vocab == 50257 else 320,
                token_vocab_size=vocab, dropout=0.0, **model_extra)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**args))
    sharpen_(model, std=0.5, seed=seed)
    info = {"name": tokenizer, "vocab_size": vocab, "eot_token": vocab - 1, "eot_position": "prepend"}
    os.makedirs(out_dir, exist_ok=True)
    checkpoint.save_atomic({"model": model.state_dict(), "model_args": args, "tokenizer": info,
                            "config": {"dataset": "tiny", "data_dir": "data/tiny", "init_from": "scratch"}, "iter_num": 40,
                            "best_val_loss": 4.25, "best_iter": 40, "tokens_seen": 40 * 256},
                           os.path.join(out_dir, "best.pt"))
    return model.eval()


def export(*args):
    return subprocess.run([sys.executable, "export_hf.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run of ours (biases on) exported through the command line: (our model, run dir, hf dir)."""
    base = tmp_path_factory.mktemp("export")
    ours = save_our_run(str(base / "run"))
    p = export(f"--out_dir={base / 'run'}", f"--hf_dir={base / 'hf'}")
    assert p.returncode == 0, p.stderr
    return ours, base / "run", base / "hf"


def load_hf_model(hf_dir):
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return hf.eval()


def assert_same_logits(ours, hf):
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied again
    assert hf.config.vocab_size == 50257
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        our_logits = ours(x, x)[0][..., :50257]
        theirs = hf(input_ids=x).logits
    assert our_logits.abs().max() > 1.0  # not a near-zero model
    assert (our_logits - theirs).abs().max().item() < 1e-4


@needs_gpt2
def test_export_loads_in_transformers_with_our_logits(exported):
    ours, run, hf_dir = exported
    assert sorted(os.listdir(hf_dir)) == ["README.md", "config.json", "merges.txt", "model.safetensors",
                                          "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert [n for n in os.listdir(hf_dir.parent) if n.startswith(".hf")] == []  # no temporary folder left
    assert_same_logits(ours, load_hf_model(hf_dir))
    card = (hf_dir / "README.md").read_text()
    assert "validation loss: 4.2500 at iteration 40" in card and "10,240 tokens seen" in card
    assert f"python export_hf.py --out_dir={run} --hf_dir={hf_dir}" in card
    assert card.count(f"pretrained={hf_dir} --tasks hellaswag") == 1 and "Trained from scratch" in card
    assert json.loads((hf_dir / "config.json").read_text())["activation_function"] == "gelu"


@needs_gpt2
def test_a_model_without_biases_exports_with_zero_biases(tmp_path):
    ours = save_our_run(str(tmp_path / "run"), bias=False)
    export_checkpoint(str(tmp_path / "run" / "best.pt"), str(tmp_path / "hf"))
    hf = load_hf_model(tmp_path / "hf")
    assert hf.transformer.h[1].mlp.c_fc.bias.abs().max() == 0
    assert_same_logits(ours, hf)


@needs_gpt2
def test_export_then_import_gives_back_the_same_weights(exported):
    ours, _, hf_dir = exported
    args, sd, _ = load_hf_gpt2(f"hf:{hf_dir}")
    assert tokenizer_info_for(args, "x") == {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256,
                                             "eot_position": "prepend"}
    assert args == dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=True, vocab_size=50257,
                        token_vocab_size=50257, dropout=0.0)
    original = ours.state_dict()
    assert sorted(sd) == sorted(original)
    for key, value in original.items():
        if key in ("transformer.wte.weight", "lm_head.weight"):
            value = value[:50257]  # the padding rows are not exported
        assert torch.equal(sd[key], value), key


@needs_gpt2
def test_exported_tokenizer_encodes_like_tiktoken(exported):
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported[2])
    enc = tok_mod.gpt2_encoding()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    texts = ["Hello world", "  two  spaces\n\n\nnewlines \n\t tab\r\n", "héllo wörld — ünïcode 日本語 🤖 ½ ﬁ",
             "don't I'll we've THEY'RE", "12345 3.14159 1,000,000", "trailing   ", " leading", readme]
    for text in texts:
        assert hf_tok.encode(text) == enc.encode_ordinary(text), text[:40]
        assert hf_tok.decode(hf_tok.encode(text)) == text
    assert hf_tok.eos_token_id == 50256 and hf_tok.convert_ids_to_tokens(50256) == "<|endoftext|>"


@needs_gpt2
def test_merges_are_one_per_token_in_rank_order():
    vocab, merges = vocab_and_merges(gpt2_ranks(tok_mod.gpt2_encoding()))
    assert len(vocab) == 50256 and len(merges) == 50000  # GPT-2's merges.txt has 50000 merges
    assert merges[0] == ("Ġ", "t") and vocab["Ġt"] == 256  # GPT-2's first merge: ' ' + 't'
    assert vocab["!"] == 0 and vocab["Ġ"] == 220


def test_export_refuses_the_byte_tokenizer(tmp_path):
    save_our_run(str(tmp_path / "run"), tokenizer="byte")
    p = export(f"--out_dir={tmp_path / 'run'}", f"--hf_dir={tmp_path / 'hf'}")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert p.stderr.startswith("error: the run was trained with the 'byte' tokenizer")
    assert not os.path.exists(tmp_path / "hf")


def test_export_refuses_any_model_option_stock_gpt2_lacks():
    # the check walks GPTConfig's fields; a config with an extra option stands for model.py's own
    @dataclasses.dataclass
    class ConfigWithOptions(GPTConfig):
        rope: bool = False
        norm: str = "layernorm"

    gpt2 = {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256}
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=50304, dropout=0.1)
    check_exportable(dict(args, rope=False, norm="layernorm"), gpt2, ConfigWithOptions)
    with pytest.raises(UserError, match=r"^the model has norm='rmsnorm', which no stock transformers GPT-2 "
                                        r"expresses \(it needs norm='layernorm'\)"):
        check_exportable(dict(args, norm="rmsnorm"), gpt2, ConfigWithOptions)
    with pytest.raises(UserError, match=r"^the model has rope=True"):
        check_exportable(dict(args, rope=True), gpt2, ConfigWithOptions)


@needs_gpt2
def test_an_existing_folder_is_replaced_only_with_force(tmp_path):
    save_our_run(str(tmp_path / "run"))
    with pytest.raises(UserError, match=f"^checkpoint {tmp_path}/best.pt not found"):
        export_checkpoint(str(tmp_path / "best.pt"), str(tmp_path / "hf"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "old.txt").write_text("x")
    with pytest.raises(UserError, match="exists; choose another --hf_dir or replace it with --force=True"):
        export_checkpoint(str(tmp_path / "run" / "best.pt"), str(tmp_path / "hf"))
    assert os.listdir(tmp_path / "hf") == ["old.txt"]
    export_checkpoint(str(tmp_path / "run" / "best.pt"), str(tmp_path / "hf"), force=True)
    assert not (tmp_path / "hf" / "old.txt").exists() and (tmp_path / "hf" / "config.json").exists()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".hf")) == []


@needs_gpt2
def test_latest_checkpoint_card_takes_its_val_loss_from_the_metrics_log(tmp_path):
    run = tmp_path / "run"
    save_our_run(str(run))
    os.rename(run / "best.pt", run / "ckpt.pt")  # iter_num 40
    records = [{"event": "eval", "iter": 20, "val_loss": 5.5}, {"event": "train", "iter": 30, "loss": 5.0},
               {"event": "eval", "iter": 40, "val_loss": 4.75}, {"event": "eval", "iter": 60, "val_loss": 4.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "ev')
    export_checkpoint(str(run / "ckpt.pt"), str(tmp_path / "hf"))
    assert "validation loss: 4.7500 at iteration 40" in (tmp_path / "hf" / "README.md").read_text()


# -----------------------------------------------------------------------------
# train.py and sample.py with --init_from=hf:PATH


def gpt2_bpe_dataset(data_dir):
    """A tiny dataset in GPT-2 BPE ids (the meta.json prepare.py writes for --tokenizer gpt2)."""
    from train_helpers import make_dataset
    make_dataset(str(data_dir), train_tokens=1200, val_tokens=600, vocab=50257, eot=50256)
    meta_path = os.path.join(data_dir, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["tokenizer"] = {"name": "gpt2", "vocab_size": 50257, "eot_token": 50256, "eot_position": "prepend"}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return str(data_dir)


@needs_gpt2
def test_train_fine_tunes_an_hf_folder_and_sample_reads_it(tmp_path, capsys):
    import torch.nn.functional as F
    from dataloader import TokenFile
    from evaluation import EvalSets
    from train_helpers import TINY, read_metrics, train_in_process
    hf, folder = tiny_hf(tmp_path, vocab_size=50257, n_embd=32, n_head=2, eos_token_id=50256, bos_token_id=50256)
    data = gpt2_bpe_dataset(tmp_path / "data")
    out = str(tmp_path / "out")
    printed = train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={out}", f"--init_from=hf:{folder}",
                                       "--max_iters=2", "--eval_interval=2"])
    assert f"fine-tuning hf:{folder}" in printed
    records = read_metrics(out)
    run = records[0]
    assert {k: run["config"][k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")} == \
        {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "bias": True}
    # the eval at iter 0 sees GPT-2's own weights: its val loss is transformers' loss on the same windows
    sets = EvalSets({"val": TokenFile(os.path.join(data, "val.bin"), "uint16")}, 32, 4, 4, 1337)
    with torch.no_grad():
        hf_losses = [F.cross_entropy(hf(input_ids=x).logits.flatten(0, 1), y.flatten()).item()
                     for x, y in (sets.batch("val", k, torch.device("cpu")) for k in range(4))]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 2]
    assert evals[0]["val_loss"] == pytest.approx(sum(hf_losses) / 4, abs=1e-5)
    ckpt = checkpoint.load(os.path.join(out, "ckpt.pt"), map_location="cpu")
    assert ckpt["model_args"]["dropout"] == 0.1 and ckpt["model_args"]["vocab_size"] == 50257
    assert not torch.equal(ckpt["model"]["transformer.wte.weight"], hf.transformer.wte.weight)  # it trained
    import sample as sample_py
    capsys.readouterr()
    sample_py.main([f"--init_from=hf:{folder}", "--device=cpu", "--num_samples=1", "--max_new_tokens=5",
                    "--start=Hello"])
    text = capsys.readouterr().out
    assert text.endswith("---------------\n") and text.startswith("Hello")


def test_fine_tuning_on_data_with_another_vocabulary_is_one_line(tmp_path):
    from train_helpers import TINY, make_dataset, train_in_process
    _, folder = tiny_hf(tmp_path, vocab_size=50257, n_embd=32, n_head=2)
    data = make_dataset(str(tmp_path / "bytes"), train_tokens=1200, val_tokens=600)
    with pytest.raises(UserError, match=r"has a vocabulary of 50257 tokens but the dataset has 257; fine-tune it "
                                        r"on a dataset prepared with --tokenizer gpt2"):
        train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", f"--init_from=hf:{folder}"])
    with pytest.raises(UserError, match=r"rope=True cannot be used with init_from='hf:"):
        train_in_process(TINY + [f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", f"--init_from=hf:{folder}",
                                 "--rope=True"])
