"""
What train.py sets up before its loop: the dataset, the model's shape (from the config or
the checkpoint), the model and its optimizer, the run folder, compile, and a time estimate
for a config that lands on a CPU.
"""
import os
import time
from dataclasses import dataclass

import torch

import checkpoint
import facts
import hf_gpt2
import optim
import runtime
import data_formats
from dataloader import TrainLoader, num_windows
from errors import UserError
from model import GPT, OPTION_KEYS, GPTConfig
from train_step import Training

SHAPE_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias')  # fixed by a checkpoint


@dataclass
class Dataset:
    dir: str
    meta: dict
    train: object             # token_files.TokenFile or ShardedTokens
    val: object
    note: str = None          # what was assumed of a nanoGPT folder or llm.c shards, or None

    @property
    def token_vocab(self):
        return int(self.meta['tokenizer']['vocab_size'])


def open_dataset(location):
    """The dataset in `location` (a folder or a glob), in any layout data_formats reads."""
    d = data_formats.open_dataset(location)
    return Dataset(location, d.meta, d.train, d.val, d.note)


def check_block_fits(data, block_size):
    for split, f in (('train', data.train), ('val', data.val)):
        if num_windows(f.num_tokens, block_size) < 1:
            raise UserError(f"block_size={block_size} is larger than the data: {split}.bin in {data.dir} has only "
                            f"{f.num_tokens} tokens; use --block_size={max(1, f.num_tokens - 1)} or less, or more data")


def model_args_for(config, data, ckpt, note=print):
    """GPTConfig's arguments: from the config, or on resume from the checkpoint, whose shape
    then wins over the config's (config is updated to match, each change noted)."""
    if ckpt is None:
        return dict(n_layer=config['n_layer'], n_head=config['n_head'], n_embd=config['n_embd'],
                    block_size=config['block_size'], bias=config['bias'],
                    vocab_size=facts.padded_vocab_size(data.token_vocab), token_vocab_size=data.token_vocab,
                    dropout=config['dropout'], **{k: config[k] for k in OPTION_KEYS})
    model_args = dict(ckpt['model_args'])
    for k in OPTION_KEYS:  # checkpoints from before the options lack them: GPT-2's values
        model_args[k] = model_args.get(k, getattr(GPTConfig, k))
    if model_args.get('token_vocab_size') not in (None, data.token_vocab):
        raise UserError(f"the checkpoint was trained on a vocabulary of {model_args['token_vocab_size']} tokens "
                        f"but {data.dir} has {data.token_vocab}; resume with the dataset it was trained on")
    for k in SHAPE_KEYS + OPTION_KEYS:
        if config[k] != model_args[k]:
            note(f"note: {k}={config[k]} ignored on resume; the checkpoint has {k}={model_args[k]}")
        config[k] = model_args[k]
    model_args['dropout'] = config['dropout']
    return model_args


def hf_model_args(config, data, defaults, note=print):
    """(model_args, state dict) of GPT-2 weights in the Hugging Face layout (--init_from=gpt2...,
    or hf:PATH): the architecture comes from the weights, the config's shape keys are set to it
    (a key the user set that contradicts it is a UserError); dropout comes from the config."""
    source = config['init_from']
    for k in OPTION_KEYS:
        if config[k] != getattr(GPTConfig, k):
            raise UserError(f"{k}={config[k]!r} cannot be used with init_from={source!r}: its weights are plain "
                            f"GPT-2's; remove --{k} (or train the modern recipe with --init_from=scratch)")
    model_args, state_dict, notes = hf_gpt2.load_hf_gpt2(
        source, requested=hf_gpt2.requested_arch(config, defaults), token_vocab=data.token_vocab)
    for n in notes:
        note(f"note: {n}")
    for k in SHAPE_KEYS:
        config[k] = model_args[k]
    model_args.update(dropout=config['dropout'], **{k: getattr(GPTConfig, k) for k in OPTION_KEYS})
    return model_args, state_dict


def create_model_and_optimizer(config, model_args, rt, weights=None):
    """(raw_model, optimizer, scaler, fused): the same initial weights on every rank (or the
    given weights: a checkpoint's or imported ones), the config's optim.Optimizers, a GradScaler for float16."""
    torch.manual_seed(config['seed'])
    model = GPT(GPTConfig(**model_args))
    if weights is not None:
        model.load_state_dict(weights)
    model.to(rt.device)
    torch.manual_seed(config['seed'] + rt.rank)  # dropout differs across ranks
    optimizer = optim.build_from_config(model, config, rt.device.type)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.dtype == 'float16' else None
    return model, optimizer, scaler, optimizer.fused


def build_training(config, model_args, data, rt, weights=None):
    """The Training bundle (eager model, not yet compiled or wrapped) and whether AdamW is fused."""
    raw_model, optimizer, scaler, fused = create_model_and_optimizer(config, model_args, rt, weights)
    loader = TrainLoader(data.train, config['block_size'], config['batch_size'],
                         config['gradient_accumulation_steps'], rt.rank, rt.world_size, config['seed'],
                         config['sampling'], rt.device)
    t = Training(raw_model, raw_model, optimizer, scaler, loader,
                 config['gradient_accumulation_steps'] // rt.world_size, config['grad_clip'])
    return t, fused


def prepare_run_folder(out_dir, rt, resuming):
    """The folder made, stale temporaries removed; a new run in an old folder keeps the previous
    metrics.jsonl beside it. Returns the metrics.jsonl path."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"out_dir {out_dir} is a file; give a folder with --out_dir=")
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    if rt.master:
        os.makedirs(out_dir, exist_ok=True)
        checkpoint.remove_stale_temporaries(out_dir)
        if not resuming and os.path.exists(metrics_path):
            os.replace(metrics_path, metrics_path + '.old')  # a rename of a whole file: atomic already
            print(f"note: a new run in {out_dir}; the previous metrics.jsonl is now metrics.jsonl.old")
    return metrics_path


def compile_model(t, rt, config, announce=print):
    """t.model compiled where it can work (saying how long it took), else eager; DDP-wrapped
    under torchrun. Returns (model for evaluation, compiled?, warning or None)."""
    warning = None
    if config['compile']:
        if rt.master:
            announce(f"compiling the model (torch.compile, one trial step of {config['batch_size']} x "
                     f"{config['block_size']} tokens) ...")
        t0 = time.perf_counter()
        t.model, why = runtime.compile_or_eager(t.raw_model, rt, (config['batch_size'], config['block_size']))
        if why is None and rt.master:
            announce(f"compiled in {time.perf_counter() - t0:.1f}s (the first steps compile more)")
        if why is not None:
            warning = f"compile=True cannot work here ({why}); running eagerly"
    eval_model = t.model
    if rt.ddp:
        t.model = runtime.wrap_ddp(t.model, rt)
    return eval_model, config['compile'] and warning is None, warning


def cpu_time_estimate(config, flops_per_token, rt):
    """On a CPU: a note with the estimated time per iteration when it is long (a config made for
    a GPU), from the FLOPs of an iteration and a rough FLOP/s measured by a matmul; else None."""
    if rt.device.type != 'cpu':
        return None
    tokens = facts.tokens_per_iter(config['batch_size'], config['block_size'], config['gradient_accumulation_steps'])
    flops = flops_per_token * tokens / rt.world_size
    if flops / 1e12 < 1.0:  # under a second even at 1 TFLOP/s: no need to measure
        return None
    rate = runtime.cpu_matmul_flops()
    seconds = flops / rate
    if seconds < 2.0:
        return None
    hint = "; torch.compile on a CPU also takes minutes for a model this size (--compile=False)" \
        if config['compile'] else ""
    return (f"note: this config runs on the CPU ({rt.device_name}): at least {format_duration(seconds)} per "
            f"iteration of {tokens:,} tokens ({flops_per_token * tokens / 1e12:,.1f} TFLOP at the "
            f"{rate / 1e9:,.1f} GFLOP/s a matmul measured here); a config made for a GPU wants a GPU, or "
            f"a smaller batch_size x gradient_accumulation_steps or model{hint}")


def format_duration(seconds):
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
