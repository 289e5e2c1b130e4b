"""
nanoGPT's out/ckpt.pt as a checkpoint of this repository, for sample.py and for
train.py --init_from=resume.

nanoGPT saves {model, optimizer, model_args, iter_num, best_val_loss, config}. Its parameter
names are ours (transformer.wte / wpe / h.N.ln_1 / attn.c_attn / attn.c_proj / ln_2 /
mlp.c_fc / mlp.c_proj / ln_f, lm_head tied to wte), in the same order, and its AdamW groups
are ours (tensors of 2 or more dimensions decayed, the rest not), so the weights and the
optimizer state carry over as they are. What a nanoGPT checkpoint lacks: the tokenizer (found
as nanoGPT's sample.py finds it: data/<dataset>/meta.pkl, else GPT-2), the data order and the
RNG state. The file is read with weights_only=True (checkpoint.load): no code runs on load.
"""
import os
import re

import checkpoint
import facts
from data_formats import GPT2_INFO, char_tokenizer_info, read_meta_pkl
from errors import UserError

NANOGPT_KEYS = ("model", "model_args", "iter_num", "config")
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
CAUSAL_MASK = re.compile(r"(^|\.)attn\.bias$")  # nanoGPT's mask buffer without flash attention
NOT_RESTORED = ("the data order and the RNG state are not in a nanoGPT checkpoint: the batches and "
                "the dropout masks from here on differ from those nanoGPT would have drawn")


def is_nanogpt_checkpoint(ckpt):
    """A dict with nanoGPT's keys and none of the ones only this repository's train.py writes."""
    return (isinstance(ckpt, dict) and all(k in ckpt for k in NANOGPT_KEYS)
            and "tokenizer" not in ckpt and "loader" not in ckpt)


def load_nanogpt(path, tokenizer=None, data_dir=None, map_location="cpu"):
    """(checkpoint, note): nanoGPT's ckpt.pt at path in this repository's format; see convert()."""
    ckpt = checkpoint.load(path, map_location=map_location)
    if not is_nanogpt_checkpoint(ckpt):
        raise UserError(f"{path} is not a nanoGPT checkpoint (it lacks one of {', '.join(NANOGPT_KEYS)}); "
                        f"give nanoGPT's out/ckpt.pt")
    return convert(ckpt, path, tokenizer=tokenizer, data_dir=data_dir)


def convert(ckpt, path, tokenizer=None, data_dir=None):
    """(checkpoint, note): a loaded nanoGPT checkpoint with the keys train.py and sample.py read.

    tokenizer: the tokenizer info of the dataset a resumed run trains on (its meta['tokenizer']);
    None looks for data_dir/meta.pkl, or data/<its config's dataset>/meta.pkl, as nanoGPT's
    sample.py does, and takes GPT-2 without one. note: the line to print."""
    config = dict(ckpt["config"]) if isinstance(ckpt["config"], dict) else {}
    model_args = model_args_of(ckpt, path)
    if tokenizer is None:
        tokenizer, found = tokenizer_of(config, data_dir)
    else:
        found = "the dataset's"
    if tokenizer["vocab_size"] > model_args["vocab_size"]:
        raise UserError(f"{path} has a vocabulary of {model_args['vocab_size']} but its tokenizer ({found}) has "
                        f"{tokenizer['vocab_size']} tokens; give the dataset it was trained on")
    model_args["token_vocab_size"] = tokenizer["vocab_size"]
    iter_num = int(ckpt["iter_num"])
    # nanoGPT's config has every key (the defaults are its train.py's); its gradient_accumulation_steps
    # is the count over all ranks, as ours
    batch_size, grad_accum = int(config.get("batch_size", 12)), int(config.get("gradient_accumulation_steps", 40))
    block_size = model_args["block_size"]
    best = ckpt.get("best_val_loss")
    ours = {
        "model": {k: v for k, v in checkpoint.clean_state_dict(ckpt["model"]).items() if not CAUSAL_MASK.search(k)},
        "optimizer": ckpt.get("optimizer"),
        "scaler": None,
        "model_args": model_args, "config": config, "tokenizer": tokenizer,
        "iter_num": iter_num, "best_val_loss": float(best) if best is not None else float("inf"),
        "best_iter": None, "last_eval_iter": iter_num,  # nanoGPT saves right after an evaluation
        "tokens_seen": iter_num * facts.tokens_per_iter(batch_size, block_size, grad_accum),
        # windows as many as nanoGPT's iterations drew: the epoch count goes on from there
        "loader": {"pos": iter_num * batch_size * grad_accum, "block_size": block_size,
                   "seed": 1337, "sampling": "random"},
        "rng_states": [], "world_size": None, "wandb_run_id": None,
        "converted_from": "nanogpt",
    }
    note = (f"note: {path} is a nanoGPT checkpoint (iter {iter_num}, tokenizer {tokenizer['name']}: {found}): "
            f"its weights, optimizer state and iteration count are restored; {NOT_RESTORED}")
    return ours, note


def model_args_of(ckpt, path):
    args = ckpt["model_args"]
    missing = [k for k in MODEL_ARGS if not isinstance(args, dict) or k not in args]
    if missing:
        raise UserError(f"{path}'s model_args lack {', '.join(missing)}; give a checkpoint written by nanoGPT's train.py")
    out = {k: args[k] for k in MODEL_ARGS}
    out["dropout"] = float(args.get("dropout", 0.0))
    return out


def tokenizer_of(config, data_dir=None):
    """(tokenizer info, where it came from) of a nanoGPT run, as nanoGPT's sample.py finds it."""
    folder = data_dir or (os.path.join("data", config["dataset"]) if config.get("dataset") else None)
    meta_pkl = os.path.join(folder, "meta.pkl") if folder else None
    if meta_pkl and os.path.exists(meta_pkl):
        return char_tokenizer_info(read_meta_pkl(meta_pkl), meta_pkl), meta_pkl
    return dict(GPT2_INFO, eot_position="append"), "GPT-2, no meta.pkl found"
