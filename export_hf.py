"""
Export a run's checkpoint as a Hugging Face transformers GPT-2 that loads with no custom code:
$ python export_hf.py --out_dir=out-fineweb-4070 --hf_dir=hf-fineweb-4070
$ python export_hf.py --out_dir=out-fineweb-4070 --hf_dir=hf-fineweb-4070 --checkpoint=latest --force=True
The folder gets config.json, model.safetensors, GPT-2's tokenizer files and a README.md model
card; it is written to a temporary folder that is renamed into place. Then
  AutoModelForCausalLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR), or
  lm_eval --model hf --model_args pretrained=DIR --tasks hellaswag
Only what a stock GPT-2 expresses exactly is exported: a GPT-2 BPE dataset, and every model
option at its GPT-2 value; anything else is refused in one line naming it.
"""
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile

try:
    import torch

    import checkpoint as ckpt_io
    from configurator import configure
    from errors import UserError, exit_on_user_error
    from hf_gpt2 import CONV1D_WEIGHTS, REQUIRES_HF, expected_shapes
    from model import GPTConfig
except KeyboardInterrupt:
    sys.exit(130)

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
out_dir = 'out'  # the run folder with best.pt / ckpt.pt
hf_dir = ''  # the folder to write (required)
checkpoint = 'best'  # 'best' (best.pt, lowest val loss) or 'latest' (ckpt.pt)
force = False  # replace hf_dir if it exists
bpe_file = ''  # GPT-2 ranks file for offline use ('' searches tiktoken's caches)
# -----------------------------------------------------------------------------
config_keys = [k for k in globals() if k not in _before_defaults and not k.startswith('_')]

# GPTConfig fields that a GPT-2 config.json expresses whatever their value (bias=False is
# exported as zero biases); every other field must keep its default (the GPT-2 behaviour)
EXPRESSED_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias",
                    "token_vocab_size")


def check_exportable(model_args, tokenizer_info, config_cls=GPTConfig):
    """A UserError naming the first thing a stock transformers GPT-2 cannot reproduce exactly."""
    name = tokenizer_info.get("name") if isinstance(tokenizer_info, dict) else tokenizer_info
    if name != "gpt2":
        raise UserError(f"the run was trained with the {name!r} tokenizer, which has no Hugging Face tokenizer "
                        f"that loads without custom code; only runs on a GPT-2 BPE dataset (--tokenizer gpt2) "
                        f"can be exported")
    for field in dataclasses.fields(config_cls):
        if field.name in EXPRESSED_FIELDS or field.name not in model_args:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if model_args[field.name] != default:
            raise UserError(f"the model has {field.name}={model_args[field.name]!r}, which no stock transformers "
                            f"GPT-2 expresses (it needs {field.name}={default!r}); this run cannot be exported")


def token_vocab(model_args, tokenizer_info):
    return model_args.get("token_vocab_size") or tokenizer_info["vocab_size"]


def hf_config(model_args, tokenizer_info):
    """transformers' GPT2Config for our model: the exact GELU, our LayerNorm eps, a tied head, and the
    tokenizer's vocabulary (the padding rows are cut: HF would otherwise sample ids no tokenizer decodes)."""
    from transformers import GPT2Config
    p = model_args.get("dropout", 0.0)
    return GPT2Config(vocab_size=token_vocab(model_args, tokenizer_info), n_positions=model_args["block_size"],
                      n_embd=model_args["n_embd"], n_layer=model_args["n_layer"], n_head=model_args["n_head"],
                      activation_function="gelu", layer_norm_epsilon=1e-5, resid_pdrop=p, embd_pdrop=p,
                      attn_pdrop=p, tie_word_embeddings=True, bos_token_id=tokenizer_info["eot_token"],
                      eos_token_id=tokenizer_info["eot_token"], architectures=["GPT2LMHeadModel"])


def hf_state_dict(state_dict, model_args, tokenizer_info):
    """Our tensors in HF's GPT-2 naming: Conv1D weights transposed, wte cut to the tokenizer's
    vocabulary, lm_head left out (config.json ties it to wte; safetensors refuses shared tensors),
    and zeros for the biases a bias=False model has not."""
    sd = ckpt_io.clean_state_dict(state_dict)
    out = {}
    for key, shape in expected_shapes(dict(model_args, bias=True)).items():
        if key == "lm_head.weight":
            continue
        value = sd[key] if key in sd else torch.zeros(shape, dtype=sd["transformer.wte.weight"].dtype)
        if key.endswith(CONV1D_WEIGHTS):
            value = value.t()
        if key == "transformer.wte.weight":
            value = value[:token_vocab(model_args, tokenizer_info)]
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def last_val_loss(out_dir, iter_num):
    """(iter, val_loss) of the last eval record at or before iter_num in metrics.jsonl, or None."""
    path = os.path.join(out_dir, "metrics.jsonl")
    found = None
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if r.get("event") == "eval" and r.get("iter", iter_num + 1) <= iter_num:
                    found = (r["iter"], r.get("val_loss"))
    return found


def model_card(ckpt, val, command, hf_dir):
    """README.md: what the model is, what it was trained on, how to use it."""
    a, c = ckpt["model_args"], ckpt.get("config", {})
    origin = c.get("init_from", "scratch")
    origin = {"scratch": "Trained from scratch", "resume": "Trained (the last start resumed a run)"}.get(
        origin, f"Fine-tuned from `{origin}`")
    val_text = f"{val[1]:.4f} at iteration {val[0]}" if val and val[1] is not None else "not recorded"
    n_params = sum(v.numel() for k, v in ckpt["model"].items() if k != "lm_head.weight")
    return f"""---
library_name: transformers
tags: [gpt2, nanogpt]
---
# GPT-2-architecture model, {n_params / 1e6:.1f}M parameters

{origin} with this repository's `train.py`; exported with
`{command}` on {datetime.date.today().isoformat()}.

- data: dataset `{c.get('dataset', '?')}` (`{c.get('data_dir', '?')}`), GPT-2 BPE tokenizer
- training: {ckpt.get('iter_num', '?')} iterations, {ckpt.get('tokens_seen', 0):,} tokens seen
- validation loss: {val_text} (nats per token on the dataset's val split)
- architecture: {a['n_layer']} layers, {a['n_head']} heads, {a['n_embd']} wide, context {a['block_size']} tokens,
  biases {'on' if a.get('bias') else 'off (exported as zeros)'}, exact GELU, LM head tied to the token embedding

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{hf_dir}")
tokenizer = AutoTokenizer.from_pretrained("{hf_dir}")
```

HellaSwag with the EleutherAI harness: `lm_eval --model hf --model_args pretrained={hf_dir} --tasks hellaswag`
"""


def write_export(hf_dir, config, tensors, encoding, card, force):
    """Every file into a temporary folder beside hf_dir, then renamed into place."""
    from safetensors.torch import save_file
    from hf_tokenizer import write_gpt2_tokenizer
    hf_dir = os.path.abspath(hf_dir)
    if os.path.exists(hf_dir) and not force:
        raise UserError(f"{hf_dir} exists; choose another --hf_dir or replace it with --force=True")
    parent = os.path.dirname(hf_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(hf_dir)}.tmp", dir=parent)
    try:
        config.to_json_file(os.path.join(tmp, "config.json"))
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        write_gpt2_tokenizer(tmp, encoding, config.n_positions)
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(card)
        if os.path.exists(hf_dir):  # force: move the old one aside, then drop it once the new one is in
            old = tmp + ".old"
            os.rename(hf_dir, old)
            os.rename(tmp, hf_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, hf_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def export_checkpoint(ckpt_path, hf_dir, force=False, bpe_file=None, command=None):
    """Export the checkpoint at ckpt_path (this repository's format) to hf_dir."""
    ckpt = ckpt_io.load(ckpt_path, fix="give the run folder with --out_dir (train.py writes best.pt and ckpt.pt there)")
    ckpt_io.require(ckpt, ("model", "model_args", "tokenizer"), ckpt_path, "export a run of this repository's train.py")
    model_args, tok_info = ckpt["model_args"], ckpt["tokenizer"]
    check_exportable(model_args, tok_info)
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(f"export_hf.py needs transformers and safetensors; {REQUIRES_HF}")
    from tokenizer import load_tokenizer
    encoding = load_tokenizer(tok_info, bpe_file=bpe_file).encoding
    val = last_val_loss(os.path.dirname(ckpt_path), ckpt.get("iter_num", 0)) if os.path.basename(ckpt_path) == "ckpt.pt" \
        else (ckpt.get("best_iter"), ckpt.get("best_val_loss"))
    card = model_card(ckpt, val, command or f"export_hf.py {ckpt_path} -> {hf_dir}", hf_dir)
    write_export(hf_dir, hf_config(model_args, tok_info), hf_state_dict(ckpt["model"], model_args, tok_info),
                 encoding, card, force)


def main():
    globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:], help_source=__file__,
                               program='export_hf.py'))
    if not hf_dir:
        raise UserError("give the folder to write with --hf_dir=DIR")
    if checkpoint not in ('best', 'latest'):
        raise UserError(f"checkpoint={checkpoint!r} is not 'best' or 'latest'; e.g. --checkpoint=best")
    path = os.path.join(out_dir, 'best.pt' if checkpoint == 'best' else 'ckpt.pt')
    command = "python export_hf.py " + " ".join(sys.argv[1:])
    export_checkpoint(path, hf_dir, force=force, bpe_file=bpe_file or None, command=command)
    print(f"wrote {hf_dir} from {path}; load it with AutoModelForCausalLM.from_pretrained({hf_dir!r})")


if __name__ == '__main__':
    exit_on_user_error(main)
