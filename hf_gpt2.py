"""
GPT-2 in the Hugging Face transformers layout, read into this repository's GPT:

    model_args, state_dict, notes = load_hf_gpt2('gpt2')           # OpenAI's weights via the HF cache
    model_args, state_dict, notes = load_hf_gpt2('hf:path/to/dir')  # a local folder

A folder holds config.json and model.safetensors (or pytorch_model.bin, read with
weights_only=True). Hub names are looked up in huggingface_hub's cache first and downloaded
only when that fails. transformers itself is not needed; huggingface_hub only for hub names,
safetensors only for .safetensors files, all imported when called (the training core never
needs them).

The vocabulary is kept at the checkpoint's size (50257 for GPT-2), not padded to 50304: our
loss and HF's are a softmax over every row of the tied head, and no value of the 47 extra rows
leaves that softmax unchanged, so a padded import would not reproduce GPT-2's loss.
"""
import json
import os

from errors import UserError

GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HF_PREFIX = "hf:"
GPT2_VOCAB = 50257
# what a user may set in train.py that the weights decide; dropout is free (it is not a weight)
ARCH_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
# HF's Conv1D keeps its weight as (in, out), the transpose of nn.Linear's (out, in)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# our MLP is the exact (erf) GELU; GPT-2's "gelu_new" is its tanh approximation (|difference| < 5e-4)
GELU_EXACT = ("gelu",)
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
REQUIRES_HF = "pip install -r requirements-hf.txt (or pip install '.[hf]')"


def is_hf_source(init_from):
    """Whether train.py / sample.py's init_from names Hugging Face weights."""
    return init_from in GPT2_HUB_NAMES or init_from.startswith(HF_PREFIX)


def load_hf_gpt2(init_from, requested=None, token_vocab=None):
    """(model_args for GPTConfig, state dict in our naming, notes to print) from a hub name or hf:PATH.

    requested: the architecture keys the user set (e.g. {'n_layer': 6}); one that contradicts the
    weights is a UserError naming it, except a shorter block_size, which crops the position embedding
    (as nanoGPT's crop_block_size does). token_vocab: the dataset's vocabulary size, checked too."""
    requested = requested or {}
    folder = resolve_hf_folder(init_from)
    hf_config = read_hf_config(folder)
    model_args, notes = model_args_from_hf_config(hf_config, source=init_from)
    check_requested(model_args, requested, init_from)
    if token_vocab is not None and token_vocab != model_args["token_vocab_size"]:
        raise UserError(f"{init_from} has a vocabulary of {model_args['token_vocab_size']} tokens but the "
                        f"dataset has {token_vocab}; fine-tune it on a dataset prepared with --tokenizer gpt2")
    state_dict = state_dict_from_hf(read_hf_weights(folder), model_args, source=init_from)
    block = requested.get("block_size", model_args["block_size"])
    if block < model_args["block_size"]:
        state_dict["transformer.wpe.weight"] = state_dict["transformer.wpe.weight"][:block].clone()
        model_args["block_size"] = block
    return model_args, state_dict, notes


def tokenizer_info_for(model_args, source):
    """The tokenizer (as a checkpoint stores it) of imported weights: GPT-2's BPE for a 50257-token
    vocabulary; anything else has no tokenizer this repository knows."""
    if model_args["token_vocab_size"] != GPT2_VOCAB:
        raise UserError(f"{source} has a vocabulary of {model_args['token_vocab_size']} tokens, not GPT-2's "
                        f"{GPT2_VOCAB}; this repository has no tokenizer for it")
    return {"name": "gpt2", "vocab_size": GPT2_VOCAB, "eot_token": GPT2_VOCAB - 1, "eot_position": "prepend"}


def requested_arch(config, defaults):
    """The architecture keys a resolved config sets to something other than the script's defaults:
    what the user asked for, to be checked against the weights."""
    return {k: config[k] for k in ARCH_KEYS if k in config and config[k] != defaults.get(k)}


# -----------------------------------------------------------------------------
# finding the files


def resolve_hf_folder(init_from):
    """The local folder with config.json and the weights for a hub name or hf:PATH."""
    if init_from.startswith(HF_PREFIX):
        folder = os.path.expanduser(init_from[len(HF_PREFIX):])
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise UserError(f"{init_from}: {folder} has no config.json; give a folder written by "
                            f"transformers' save_pretrained (config.json + model.safetensors)")
        return folder
    if init_from not in GPT2_HUB_NAMES:
        raise UserError(f"init_from={init_from!r} is not a GPT-2 name; use one of "
                        f"{', '.join(GPT2_HUB_NAMES)} or hf:PATH")
    return hub_snapshot(init_from)


def hub_snapshot(name):
    """huggingface_hub's cached snapshot of `name` (config + safetensors), downloading it if needed."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"init_from={name} needs huggingface_hub; {REQUIRES_HF}, or use --init_from=hf:PATH")
    patterns = ["config.json", "model.safetensors"]
    try:
        return snapshot_download(repo_id=name, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass  # not cached
    how = (f"on a machine with a network run `hf download {name} config.json model.safetensors` "
           f"(older huggingface_hub: `huggingface-cli download ...`) and copy its cache "
           f"(~/.cache/huggingface) here, or pass --init_from=hf:PATH to a folder with those files")
    try:
        folder = snapshot_download(repo_id=name, allow_patterns=patterns)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"GPT-2 weights {name!r} are not in the Hugging Face cache and cannot be "
                        f"downloaded ({type(e).__name__}: {first}); {how}")
    return folder


def read_hf_config(folder):
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}); give a folder written by transformers' save_pretrained")
    if config.get("model_type") != "gpt2":
        raise UserError(f"{path} describes a {config.get('model_type')!r} model; only the GPT-2 layout "
                        f"(model_type gpt2) can be loaded into this repository's GPT")
    return config


def read_hf_weights(folder):
    """The tensors of model.safetensors or pytorch_model.bin, on the CPU."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            if name.endswith(".safetensors"):
                try:
                    from safetensors.torch import load_file
                except ImportError:
                    raise UserError(f"{path} needs safetensors; {REQUIRES_HF}")
                return load_file(path)
            import torch
            return torch.load(path, map_location="cpu", weights_only=True)
        except UserError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise UserError(f"cannot read {path} ({type(e).__name__}: {first}); download it again")
    raise UserError(f"{folder} has none of {', '.join(WEIGHT_FILES)}; give a folder written by "
                    f"transformers' save_pretrained")


# -----------------------------------------------------------------------------
# config and weights


def model_args_from_hf_config(c, source):
    """GPTConfig arguments for an HF GPT2Config dict, and notes; what our GPT cannot express is refused."""
    def refuse(key, value, why):
        raise UserError(f"{source}: config.json has {key}={value!r}, which this repository's GPT does not "
                        f"implement ({why}); only plain GPT-2 models can be loaded")

    n_embd = c.get("n_embd", 768)
    checks = [  # (key, value, the value our GPT implements, why)
        ("n_inner", c.get("n_inner"), (None, 4 * n_embd), "the MLP is 4 x n_embd wide"),
        ("layer_norm_epsilon", c.get("layer_norm_epsilon", 1e-5), (1e-5,), "LayerNorm eps is 1e-5"),
        ("scale_attn_weights", c.get("scale_attn_weights", True), (True,), "attention is scaled by 1/sqrt(head size)"),
        ("scale_attn_by_inverse_layer_idx", c.get("scale_attn_by_inverse_layer_idx", False), (False,),
         "no per-layer attention scaling"),
        ("add_cross_attention", c.get("add_cross_attention", False), (False,), "a decoder only"),
        ("tie_word_embeddings", c.get("tie_word_embeddings", True), (True,), "the LM head is the token embedding"),
        ("activation_function", c.get("activation_function", "gelu_new"), GELU_EXACT + GELU_TANH, "the MLP is a GELU"),
    ]
    for key, value, allowed, why in checks:
        if value not in allowed:
            refuse(key, value, why)
    notes = []
    if c.get("activation_function", "gelu_new") in GELU_TANH:
        notes.append(f"{source} was trained with the tanh approximation of GELU ({c.get('activation_function', 'gelu_new')}); "
                     f"this repository's GPT uses the exact GELU, as nanoGPT does (they differ by < 5e-4 per activation)")
    vocab = c.get("vocab_size", 50257)
    model_args = dict(n_layer=c.get("n_layer", 12), n_head=c.get("n_head", 12), n_embd=n_embd,
                      block_size=c.get("n_positions", 1024), bias=True, vocab_size=vocab,
                      token_vocab_size=vocab, dropout=0.0)
    return model_args, notes


def check_requested(model_args, requested, source):
    """A UserError for the first architecture key the user set to something the weights contradict."""
    for key in ARCH_KEYS:
        if key == "block_size" and key in requested and 0 < requested[key] <= model_args[key]:
            continue  # a shorter context: the position embedding is cropped
        if key in requested and requested[key] != model_args[key]:
            raise UserError(f"{key}={requested[key]!r} contradicts the weights of {source}, which have "
                            f"{key}={model_args[key]!r}; remove --{key} (the architecture comes from the weights)")


def state_dict_from_hf(hf_sd, model_args, source):
    """HF GPT-2 tensors in this repository's naming: transformer.* kept, Conv1D weights transposed,
    lm_head tied to wte (as our GPT ties them); the attention-mask buffers of old files dropped."""
    out = {}
    for key, value in hf_sd.items():
        key = key[len("transformer."):] if key.startswith("transformer.") else key
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue  # causal-mask buffers; the head is the tied wte
        if key.endswith(CONV1D_WEIGHTS):
            value = value.t()
        out["transformer." + key] = value.contiguous()
    if "transformer.wte.weight" not in out:
        raise UserError(f"{source}: the weights have no wte.weight; not a GPT-2 checkpoint")
    head = hf_sd.get("lm_head.weight")
    if head is not None and not head.equal(hf_sd.get("transformer.wte.weight", hf_sd.get("wte.weight"))):
        raise UserError(f"{source}: lm_head.weight differs from wte.weight (an untied head), which this "
                        f"repository's GPT does not implement")
    out["lm_head.weight"] = out["transformer.wte.weight"]
    expected = expected_shapes(model_args)
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    if missing or unexpected:
        raise UserError(f"{source}: the weights do not match config.json (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); download them again")
    for key, shape in expected.items():
        if tuple(out[key].shape) != shape:
            raise UserError(f"{source}: {key} has shape {tuple(out[key].shape)} but config.json implies "
                            f"{shape}; the weights and config.json do not belong together")
    return out


def expected_shapes(model_args):
    """{key: shape} of our GPT's state dict for a bias=True config (the GPT-2 layout)."""
    d, V, T = model_args["n_embd"], model_args["vocab_size"], model_args["block_size"]
    shapes = {"transformer.wte.weight": (V, d), "transformer.wpe.weight": (T, d),
              "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,), "lm_head.weight": (V, d)}
    per_block = {"ln_1.weight": (d,), "ln_1.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
                 "attn.c_attn.weight": (3 * d, d), "attn.c_attn.bias": (3 * d,),
                 "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
                 "mlp.c_fc.weight": (4 * d, d), "mlp.c_fc.bias": (4 * d,),
                 "mlp.c_proj.weight": (d, 4 * d), "mlp.c_proj.bias": (d,)}
    for i in range(model_args["n_layer"]):
        shapes.update({f"transformer.h.{i}.{k}": v for k, v in per_block.items()})
    return shapes
