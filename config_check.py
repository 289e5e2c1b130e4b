"""One-line errors for impossible train.py settings, before anything is loaded."""
import os

import facts
import hf_gpt2
import optim
from dataloader import SAMPLING
from errors import UserError
from fault_hooks import parse_faults
from runtime import DTYPES


def need(ok, problem, fix):
    if not ok:
        raise UserError(f"{problem}; {fix}")


def validate(c):
    for k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'n_layer', 'n_head', 'n_embd',
              'eval_iters', 'eval_interval', 'log_interval', 'max_bad_steps'):
        need(c[k] >= 1, f"{k}={c[k]} must be at least 1", f"e.g. --{k}=1")
    need(c['max_iters'] >= 0, f"max_iters={c['max_iters']} is negative", "use --max_iters=0 or more")
    need(c['warmup_iters'] >= 0, f"warmup_iters={c['warmup_iters']} is negative", "use --warmup_iters=0 or more")
    need(c['n_embd'] % c['n_head'] == 0, f"n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}",
         "pick n_embd a multiple of n_head (e.g. n_head=12 with n_embd=768)")
    validate_optimizer(c)
    optim.check_config(c)
    need(0 <= c['dropout'] < 1, f"dropout={c['dropout']} is outside [0, 1)", "e.g. --dropout=0.1")
    need(c['cpu_threads'] >= 0, f"cpu_threads={c['cpu_threads']} is negative", "use 0 for torch's default")
    need(c['dtype'] in DTYPES, f"unknown dtype {c['dtype']!r}", f"use one of {', '.join(DTYPES)}")
    need(c['sampling'] in SAMPLING, f"unknown sampling {c['sampling']!r}", f"use one of {', '.join(SAMPLING)}")
    need(c['init_from'] in ('scratch', 'resume') or hf_gpt2.is_hf_source(c['init_from']),
         f"init_from={c['init_from']!r} is not supported",
         f"use 'scratch', 'resume', {', '.join(hf_gpt2.GPT2_HUB_NAMES)} or hf:PATH (a Hugging Face GPT-2 folder)")
    need(c['backend'] in ('auto', 'nccl', 'gloo'), f"unknown backend {c['backend']!r}", "use auto, nccl or gloo")
    dev = c['device']
    need(dev in ('auto', 'cpu', 'cuda', 'mps') or dev.startswith('cuda:'), f"unknown device {dev!r}",
         "use auto, cpu, cuda, cuda:N or mps")
    pf = c['peak_flops']
    need(pf is None or (isinstance(pf, (int, float)) and not isinstance(pf, bool) and pf > 0),
         f"peak_flops={pf!r} is not a positive number", "e.g. --peak_flops=58.3e12, or leave it None")
    hs = c['hellaswag_file']
    need(not hs or os.path.isfile(hs), f"hellaswag_file {hs!r} not found",
         "download hellaswag_val.jsonl from https://github.com/rowanz/hellaswag (data/) and pass "
         "--hellaswag_file=PATH, or leave it ''")
    parse_faults(c['fault_inject'])


def validate_optimizer(c):
    """The learning rate, its schedule and AdamW's settings."""
    need(c['learning_rate'] > 0, f"learning_rate={c['learning_rate']} must be positive", "e.g. --learning_rate=6e-4")
    need(c['min_lr'] >= 0, f"min_lr={c['min_lr']} is negative", "use --min_lr=0 or more")
    need(c['min_lr'] <= c['learning_rate'], f"min_lr={c['min_lr']} is above learning_rate={c['learning_rate']}",
         f"set --min_lr to about learning_rate/10 (e.g. --min_lr={c['learning_rate'] / 10:g})")
    need(c['lr_schedule'] in facts.LR_SCHEDULES, f"unknown lr_schedule {c['lr_schedule']!r}",
         f"use one of {', '.join(facts.LR_SCHEDULES)}")
    if c['decay_lr'] and c['lr_schedule'] == 'cosine':
        need(c['lr_decay_iters'] >= c['warmup_iters'],
             f"lr_decay_iters={c['lr_decay_iters']} ends before warmup_iters={c['warmup_iters']}",
             "set --lr_decay_iters to about max_iters")
    need(0 < c['decay_frac'] <= 1, f"decay_frac={c['decay_frac']} is outside (0, 1]", "e.g. --decay_frac=0.2")
    need(c['weight_decay'] >= 0, f"weight_decay={c['weight_decay']} is negative", "e.g. --weight_decay=0.1")
    for k in ('beta1', 'beta2'):
        need(0 <= c[k] < 1, f"{k}={c[k]} is outside [0, 1)", f"e.g. --{k}=0.9")
    need(c['grad_clip'] >= 0, f"grad_clip={c['grad_clip']} is negative", "use --grad_clip=0 to disable clipping")


def check_world_size(c, world_size):
    g = c['gradient_accumulation_steps']
    need(g % world_size == 0, f"gradient_accumulation_steps={g} does not divide over {world_size} ranks",
         f"use a multiple of {world_size} (e.g. --gradient_accumulation_steps={world_size * max(1, round(g / world_size))})")
