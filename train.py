"""
Train a GPT on a prepared dataset (data/<dataset>/{train.bin, val.bin, meta.json}).

On one CPU or GPU:
$ python train.py config/train_demo_cpu.py --max_iters=500
With DDP on one node of 8 GPUs:
$ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m_fineweb.py
Across 2 nodes (run on each, --node_rank=0 on the master):
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 train.py ...
Resume an interrupted run exactly (same data order, RNG, optimizer, LR):
$ python train.py config/train_demo_cpu.py --init_from=resume

The defaults below are the config keys; `python train.py --help` lists them.
"""
import contextlib
import json
import math
import os
import platform
import secrets
import signal
import sys
import time



def quit_during_startup(signum, frame):
    """Ctrl-C / SIGTERM before the training loop: leave at once. A KeyboardInterrupt raised inside
    an import (torch's, or numpy's lazy submodules) can leave a half-imported module behind that
    fails later with an unrelated traceback; nothing worth saving exists yet. The training loop
    installs its own handler (save a checkpoint, then exit)."""
    sys.stderr.write(f"interrupted by {signal.Signals(signum).name} before training started\n")
    sys.stderr.flush()
    os._exit(130)


signal.signal(signal.SIGINT, quit_during_startup)
signal.signal(signal.SIGTERM, quit_during_startup)

import torch  # noqa: E402  (after the handlers: importing torch takes seconds)
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import checkpoint  # noqa: E402
import facts  # noqa: E402
from configurator import configure  # noqa: E402
from dataloader import SAMPLING, TokenFile, TrainLoader, fixed_windows, num_windows, to_device  # noqa: E402
from errors import UserError, exit_on_user_error  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'  # run folder: metrics.jsonl, config.json, ckpt.pt, best.pt
eval_interval = 2000  # evaluate (and checkpoint) every this many iterations
log_interval = 1  # log a train record every this many iterations
eval_iters = 200  # batches per split in each evaluation (the same batches every time)
eval_only = False  # evaluate once and exit
always_save_checkpoint = True  # write ckpt.pt at every eval (best.pt is written only when val improves)
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt, exactly where it stopped)
# wandb logging
wandb_log = False  # log to Weights & Biases (works offline with WANDB_MODE=offline)
wandb_project = 'nanogpt'  # wandb project
wandb_run_name = 'gpt'  # wandb run name
# data
dataset = 'fineweb_single'  # folder name under data/
data_dir = ''  # dataset folder; '' means data/<dataset>
gradient_accumulation_steps = 40  # micro-batches per iteration, over all ranks (split across DDP ranks)
batch_size = 12  # sequences per micro-batch (per rank)
block_size = 1024  # context length in tokens
sampling = 'epoch'  # 'epoch': each epoch a seeded permutation of non-overlapping windows; 'random': i.i.d. offsets (nanoGPT)
seed = 1337  # seeds model init, dropout and the data order
# model
n_layer = 12  # transformer blocks
n_head = 12  # attention heads
n_embd = 768  # embedding width
dropout = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = False  # biases in Linear and LayerNorm layers, like GPT-2
# adamw optimizer
learning_rate = 6e-4  # max learning rate
max_iters = 600000  # total number of training iterations
weight_decay = 1e-1  # on matrices and embeddings only
beta1 = 0.9  # AdamW beta1
beta2 = 0.95  # AdamW beta2
grad_clip = 1.0  # clip gradients at this norm; 0 disables
# learning rate schedule
decay_lr = True  # False: constant learning_rate, no warmup
lr_schedule = 'cosine'  # 'cosine', 'wsd' (warmup-stable-decay) or 'constant' (after warmup)
warmup_iters = 2000  # linear warmup steps
lr_decay_iters = 600000  # cosine: reaches min_lr here (~= max_iters per Chinchilla)
min_lr = 6e-5  # final learning rate (~= learning_rate/10 per Chinchilla)
decay_frac = 0.2  # wsd: fraction of max_iters spent decaying to min_lr at the end
# DDP settings
backend = 'auto'  # 'auto' (nccl on GPU, gloo on CPU), 'nccl' or 'gloo'
# system
device = 'auto'  # 'auto' (cuda, else mps, else cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 where supported, else float16 on GPU; float32 on CPU), 'float32', 'bfloat16', 'float16'
compile = True  # torch.compile the model (falls back to eager with a warning where it cannot work)
peak_flops = None  # device peak FLOP/s for MFU; None looks the device up in facts.PEAK_FLOPS
cpu_threads = 0  # torch threads on CPU; 0 keeps torch's default (one per core)
# robustness
max_bad_steps = 10  # stop after this many non-finite steps in a row (their updates are skipped)
early_stop = False  # stop when the live diagnosis confirms overfitting (best.pt is kept)
live_diagnose = True  # run diagnose/live.py's checks on the metrics as they are written
fault_inject = ''  # FOR TESTING ONLY: 'loss@3,grad@5-6,sigterm@8' makes the loss / gradients non-finite, or sends SIGTERM, at those iterations
# -----------------------------------------------------------------------------
config_keys = [k for k in globals() if k not in _before_defaults and not k.startswith('_')]
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
FAULT_KINDS = ('loss', 'grad', 'sigterm', 'sigint')


def parse_faults(spec):
    """'loss@3,grad@5-6' -> {'loss': {3}, 'grad': {5, 6}}"""
    faults = {k: set() for k in FAULT_KINDS}
    for item in filter(None, (s.strip() for s in spec.split(','))):
        kind, _, when = item.partition('@')
        try:
            lo, _, hi = when.partition('-')
            iters = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            iters = None
        if kind not in faults or iters is None:
            raise UserError(f"fault_inject item {item!r} is not KIND@ITER or KIND@FIRST-LAST with KIND one of "
                            f"{', '.join(FAULT_KINDS)}; e.g. --fault_inject=loss@3,grad@5-6")
        faults[kind].update(iters)
    return faults


def validate(c):
    """One-line errors for impossible settings, before anything is loaded."""
    def need(ok, problem, fix):
        if not ok:
            raise UserError(f"{problem}; {fix}")
    for k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'n_layer', 'n_head', 'n_embd',
              'eval_iters', 'eval_interval', 'log_interval', 'max_bad_steps'):
        need(c[k] >= 1, f"{k}={c[k]} must be at least 1", f"e.g. --{k}=1")
    need(c['max_iters'] >= 0, f"max_iters={c['max_iters']} is negative", "use --max_iters=0 or more")
    need(c['warmup_iters'] >= 0, f"warmup_iters={c['warmup_iters']} is negative", "use --warmup_iters=0 or more")
    need(c['n_embd'] % c['n_head'] == 0, f"n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}",
         "pick n_embd a multiple of n_head (e.g. n_head=12 with n_embd=768)")
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
    need(0 <= c['dropout'] < 1, f"dropout={c['dropout']} is outside [0, 1)", "e.g. --dropout=0.1")
    need(c['weight_decay'] >= 0, f"weight_decay={c['weight_decay']} is negative", "e.g. --weight_decay=0.1")
    for k in ('beta1', 'beta2'):
        need(0 <= c[k] < 1, f"{k}={c[k]} is outside [0, 1)", f"e.g. --{k}=0.9")
    need(c['cpu_threads'] >= 0, f"cpu_threads={c['cpu_threads']} is negative", "use 0 for torch's default")
    need(c['grad_clip'] >= 0, f"grad_clip={c['grad_clip']} is negative", "use --grad_clip=0 to disable clipping")
    need(c['dtype'] in DTYPES, f"unknown dtype {c['dtype']!r}", f"use one of {', '.join(DTYPES)}")
    need(c['sampling'] in SAMPLING, f"unknown sampling {c['sampling']!r}", f"use one of {', '.join(SAMPLING)}")
    need(c['init_from'] in ('scratch', 'resume'), f"init_from={c['init_from']!r} is not supported",
         "use 'scratch' or 'resume'")
    need(c['backend'] in ('auto', 'nccl', 'gloo'), f"unknown backend {c['backend']!r}", "use auto, nccl or gloo")
    dev = c['device']
    need(dev in ('auto', 'cpu', 'cuda', 'mps') or dev.startswith('cuda:'), f"unknown device {dev!r}",
         "use auto, cpu, cuda, cuda:N or mps")
    pf = c['peak_flops']
    need(pf is None or (isinstance(pf, (int, float)) and not isinstance(pf, bool) and pf > 0),
         f"peak_flops={pf!r} is not a positive number", "e.g. --peak_flops=58.3e12, or leave it None")
    parse_faults(c['fault_inject'])


def resolve_device(requested, ddp_local_rank):
    if requested == 'auto':
        if torch.cuda.is_available():
            requested = 'cuda'
        elif getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available():
            requested = 'mps'
        else:
            requested = 'cpu'
    if requested.startswith('cuda'):
        if not torch.cuda.is_available():
            raise UserError(f"device {requested!r} but CUDA is not available; use --device=cpu (or auto)")
        if ddp_local_rank is not None:
            requested = f'cuda:{ddp_local_rank}'  # one GPU per process
        if ':' in requested:
            torch.cuda.set_device(requested)
    if requested == 'mps' and not torch.backends.mps.is_available():
        raise UserError("device 'mps' but MPS is not available; use --device=cpu (or auto)")
    return torch.device(requested)


def resolve_dtype(requested, device):
    if requested == 'auto':
        if device.type == 'cuda':
            return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        return 'float32'
    if requested == 'bfloat16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise UserError(f"{torch.cuda.get_device_name()} does not support bfloat16; use --dtype=float16")
    return requested


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    if device.type == 'mps':
        return 'Apple MPS'
    return platform.processor() or platform.machine() or 'cpu'


def compile_unavailable(device):
    """Why torch.compile cannot work here, or None."""
    if not hasattr(torch, 'compile'):
        return "this torch has no torch.compile"
    if device.type == 'mps':
        return "torch.compile does not support MPS training well"
    if device.type == 'cuda':
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (needed by torch.compile on GPU)"
        if torch.cuda.get_device_capability(device)[0] < 7:
            return "the GPU is older than compute capability 7.0 (triton needs 7.0+)"
    if device.type == 'cpu':
        import shutil
        if not (shutil.which('cc') or shutil.which('gcc') or shutil.which('g++') or shutil.which('cl')):
            return "no C++ compiler found (torch.compile on CPU needs one)"
    return None


def format_eta(seconds):
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsLog:
    """metrics.jsonl on rank 0: one flushed JSON line per record, each fed to the live diagnosis."""

    def __init__(self, path, master):
        self.master = master
        self.monitor = None
        if master and os.path.exists(path):
            with open(path, 'rb+') as f:  # a run killed mid-line left a torn record: drop it
                data = f.read()
                if data and not data.endswith(b'\n'):
                    f.truncate(data.rfind(b'\n') + 1)
        self.file = open(path, 'a') if master else None

    def write(self, record, observe=True):
        record = {'event': record.pop('event'), 'time': time.time(), **record}
        if not self.master:
            return record
        self.file.write(json.dumps(record) + '\n')
        self.file.flush()
        if observe and self.monitor is not None:
            self._observe(record)
        return record

    def warn(self, it, wid, message):
        print(message if message.startswith('warning: ') else f"warning: {message}", flush=True)
        self.write({'event': 'warning', 'iter': it, 'id': wid, 'message': message}, observe=False)

    def _observe(self, record):
        # Guard: a bug in the live diagnosis must never end a training run, so any error
        # disables it with one warning and training goes on.
        try:
            found = self.monitor.observe(record)
        except Exception as e:
            self.monitor = None
            self.warn(record.get('iter'), 'live_diagnose.error',
                      f"live diagnosis disabled after an error: {type(e).__name__}: {e}")
            return
        for f in found or []:
            if isinstance(f, dict):
                self.warn(record.get('iter'), f.get('id'), f.get('message'))
            else:
                self.warn(record.get('iter'), None, str(f))

    def close(self):
        if self.file:
            self.file.close()


def keep_better_best(out_dir, best_val_loss, best_iter):
    """On resume: best.pt is written before ckpt.pt, so a kill between the two leaves a best.pt
    better than ckpt.pt knows of; keep its value, so that a worse val never overwrites it."""
    best_path = os.path.join(out_dir, 'best.pt')
    try:
        best = torch.load(best_path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # missing or unreadable: ckpt.pt's record stands
        return best_val_loss, best_iter
    if best.get('best_val_loss', float('inf')) < best_val_loss:
        return best['best_val_loss'], best.get('iter_num')
    return best_val_loss, best_iter


def write_json_atomic(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def main():
    globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:], help_source=__file__))
    config = {k: globals()[k] for k in config_keys}
    validate(config)
    faults = parse_faults(fault_inject)

    # --- processes and device ---
    ddp = int(os.environ.get('RANK', -1)) != -1
    if ddp:
        rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    else:
        rank, local_rank, world_size = 0, None, 1
    master = rank == 0
    dev = resolve_device(device, local_rank)
    if ddp:
        if gradient_accumulation_steps % world_size != 0:
            raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} does not divide over "
                            f"{world_size} ranks; use a multiple of {world_size} "
                            f"(e.g. --gradient_accumulation_steps={world_size * max(1, round(gradient_accumulation_steps / world_size))})")
        be = backend if backend != 'auto' else ('nccl' if dev.type == 'cuda' else 'gloo')
        dist.init_process_group(backend=be, **({'device_id': dev} if dev.type == 'cuda' else {}))
    micro_steps = gradient_accumulation_steps // world_size
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    run_dtype = resolve_dtype(dtype, dev)
    config.update(device=str(dev) if not ddp else dev.type, dtype=run_dtype)
    tokens_per_iter = facts.tokens_per_iter(batch_size, block_size, gradient_accumulation_steps)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[run_dtype]
    autocast = contextlib.nullcontext() if run_dtype == 'float32' else torch.autocast(dev.type, dtype=ptdtype)

    # --- data ---
    ddir = data_dir or os.path.join('data', dataset)
    config['data_dir'] = ddir
    meta = facts.read_dataset_meta(ddir)
    train_file = TokenFile(os.path.join(ddir, 'train.bin'), meta['dtype'])
    val_file = TokenFile(os.path.join(ddir, 'val.bin'), meta['dtype'])
    tokenizer = meta['tokenizer']
    token_vocab = int(tokenizer['vocab_size'])

    # --- model, from scratch or from the checkpoint ---
    ckpt = None
    if init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        ckpt = checkpoint.load(ckpt_path, map_location=dev)
        checkpoint.require(ckpt, ('model', 'model_args', 'optimizer', 'iter_num', 'best_val_loss', 'tokens_seen',
                                  'loader', 'rng_states'), ckpt_path, "start with --init_from=scratch")
        model_args = dict(ckpt['model_args'])
        if model_args.get('token_vocab_size') not in (None, token_vocab):
            raise UserError(f"the checkpoint was trained on a vocabulary of {model_args['token_vocab_size']} tokens "
                            f"but {ddir} has {token_vocab}; resume with the dataset it was trained on")
        for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias'):
            if config[k] != model_args[k] and master:
                print(f"note: {k}={config[k]} ignored on resume; the checkpoint has {k}={model_args[k]}")
            config[k] = globals()[k] = model_args[k]
        model_args['dropout'] = dropout
    else:
        model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                          vocab_size=facts.padded_vocab_size(token_vocab), token_vocab_size=token_vocab,
                          dropout=dropout)
    for split, f in (('train', train_file), ('val', val_file)):
        if num_windows(f.num_tokens, block_size) < 1:
            raise UserError(f"block_size={block_size} is larger than the data: {split}.bin in {ddir} has only "
                            f"{f.num_tokens} tokens; use --block_size={max(1, f.num_tokens - 1)} or less, or more data")
    torch.manual_seed(seed)  # the same initial weights on every rank
    raw_model = GPT(GPTConfig(**model_args))
    if ckpt is not None:
        raw_model.load_state_dict(checkpoint.clean_state_dict(ckpt['model']))
    raw_model.to(dev)
    torch.manual_seed(seed + rank)  # dropout differs across ranks
    counts = facts.param_counts(n_layer, n_embd, model_args['vocab_size'], block_size, bias)
    fpt = facts.flops_per_token(n_layer, n_embd, model_args['vocab_size'], block_size, bias)
    optimizer, fused = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), dev.type)
    scaler = torch.amp.GradScaler(dev.type) if run_dtype == 'float16' else None

    # --- run state (restored on resume) ---
    iter_num, best_val_loss, best_iter, tokens_seen, last_eval_iter = 0, float('inf'), None, 0, None
    wandb_run_id = None
    loader = TrainLoader(train_file, block_size, batch_size, gradient_accumulation_steps, rank, world_size,
                         seed, sampling, dev)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt['optimizer'])
        if scaler is not None and ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
        iter_num, best_val_loss, best_iter = ckpt['iter_num'], ckpt['best_val_loss'], ckpt.get('best_iter')
        tokens_seen, last_eval_iter = ckpt['tokens_seen'], ckpt.get('last_eval_iter')
        wandb_run_id = ckpt.get('wandb_run_id')
        loader.load_state_dict(ckpt['loader'])
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"out_dir {out_dir} is a file; give a folder with --out_dir=")
    if master:
        os.makedirs(out_dir, exist_ok=True)
        checkpoint.remove_stale_temporaries(out_dir)
        if ckpt is not None:
            best_val_loss, best_iter = keep_better_best(out_dir, best_val_loss, best_iter)
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    if master and ckpt is None and os.path.exists(metrics_path):
        # a new run in an old folder: keep the previous log beside it rather than mixing the two
        os.replace(metrics_path, metrics_path + '.old')
        print(f"note: a new run in {out_dir}; the previous metrics.jsonl is now metrics.jsonl.old")
    log = MetricsLog(metrics_path, master)
    pending_warnings = []

    # --- compile, falling back to eager where it cannot work ---
    model = raw_model
    use_compile = compile
    if use_compile:
        why = compile_unavailable(dev)
        if why is None:
            model = torch.compile(raw_model)
            try:
                # compile errors surface at the first call: try one step now (RNG untouched)
                with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == 'cuda' else []):
                    x = torch.zeros(batch_size, block_size, dtype=torch.long, device=dev)
                    y = torch.zeros_like(x)  # not x itself: dynamo guards on aliasing
                    with autocast:
                        _, loss = model(x, y)
                    loss.backward()
            except Exception as e:
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                model = raw_model
                torch._dynamo.reset()
            raw_model.zero_grad(set_to_none=True)
        if why is not None:
            use_compile = False
            pending_warnings.append(f"compile=True cannot work here ({why}); running eagerly")
    eval_model = model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if dev.type == 'cuda' else None)

    # RNG states last, so that nothing above consumes them
    if ckpt is not None:
        states = ckpt.get('rng_states') or []
        if len(states) == world_size:
            torch.set_rng_state(states[rank]['cpu'].cpu())
            if dev.type == 'cuda' and states[rank].get('cuda') is not None:
                torch.cuda.set_rng_state(states[rank]['cuda'].cpu(), dev)
        else:
            pending_warnings.append(f"the checkpoint has RNG states for {len(states)} ranks, this run has "
                                    f"{world_size}: dropout will not replay exactly")
    del ckpt

    # --- run record, config.json, wandb ---
    dev_name = device_name(dev)
    peak = peak_flops if peak_flops is not None else (
        facts.peak_flops_for(dev_name, run_dtype) if dev.type == 'cuda' else None)
    model_facts = {'params': counts['params'], 'non_embedding_params': counts['non_embedding_params'],
                   'flops_per_token': fpt}
    if master:
        write_json_atomic(config, os.path.join(out_dir, 'config.json'))
        if live_diagnose:
            try:
                from diagnose.live import LiveMonitor
            except ImportError as e:  # only the absence of diagnose/live.py turns it off silently
                if e.name not in ('diagnose', 'diagnose.live'):
                    raise
                LiveMonitor = None
            if LiveMonitor is not None:
                log.monitor = LiveMonitor(config, meta, model_facts)
    log.write({'event': 'run', 'config': config, 'model': model_facts, 'data': meta,
               'system': {'device_name': dev_name, 'peak_flops': peak, 'world_size': world_size,
                          'torch': torch.__version__, 'dtype': run_dtype, 'compile': use_compile,
                          'fused_adamw': fused},
               'resumed_from_iter': iter_num if init_from == 'resume' else None})
    for w in pending_warnings:
        if master:
            log.warn(iter_num, 'setup', w)
    if master:
        print(f"{'resuming at iter ' + str(iter_num) if init_from == 'resume' else 'training from scratch'}: "
              f"{counts['params'] / 1e6:.2f}M parameters ({counts['non_embedding_params'] / 1e6:.2f}M non-embedding), "
              f"{tokens_per_iter:,} tokens per iteration, {world_size} rank(s), {dev_name}, {run_dtype}, "
              f"compile {use_compile}, fused AdamW {fused}", flush=True)
    wandb = None
    if wandb_log and master:
        import wandb
        wandb_run_id = wandb_run_id or secrets.token_hex(4)  # kept in the checkpoint: a resume continues this run
        wandb.init(project=wandb_project, name=wandb_run_name, id=wandb_run_id, resume='allow', config=config,
                   dir=out_dir)

    # --- fixed evaluation sets: the same windows at every eval ---
    eval_sets = {split: (f, fixed_windows(f, block_size, eval_iters * batch_size, seed))
                 for split, f in (('train', train_file), ('val', val_file))}

    @torch.no_grad()
    def evaluate():
        """Mean and standard error of the loss over eval_iters batches per split, in eval mode."""
        eval_model.eval()
        out = {}
        for split, (f, starts) in eval_sets.items():
            losses = torch.zeros(eval_iters, device=dev)
            for k in range(rank, eval_iters, world_size):  # the batches are split over ranks
                x, y = to_device(f.rows(starts[k * batch_size:(k + 1) * batch_size], block_size + 1), dev)
                with autocast:
                    _, loss = eval_model(x, y)
                losses[k] = loss.float()
            if ddp:
                dist.all_reduce(losses)
            losses = losses.double().cpu().numpy()
            se = float(losses.std(ddof=1) / math.sqrt(eval_iters)) if eval_iters > 1 else float('nan')
            out[split] = (float(losses.mean()), se)
        eval_model.train()
        return out

    def save(best):
        """ckpt.pt (and best.pt when best) from every rank's state; rank 0 writes."""
        rng = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state(dev) if dev.type == 'cuda' else None}
        rng_states = [None] * world_size
        if ddp:
            dist.all_gather_object(rng_states, rng)
        else:
            rng_states = [rng]
        saved_at.append(iter_num)  # on every rank: the decision to save again must agree across ranks
        if not master:
            return
        state = {
            'model': checkpoint.clean_state_dict(raw_model.state_dict()),
            'optimizer': optimizer.state_dict(),
            'scaler': scaler.state_dict() if scaler is not None else None,
            'model_args': model_args, 'config': config, 'tokenizer': tokenizer,
            'iter_num': iter_num, 'best_val_loss': best_val_loss, 'best_iter': best_iter,
            'tokens_seen': tokens_seen, 'last_eval_iter': last_eval_iter, 'loader': loader.state_dict(),
            'rng_states': rng_states, 'world_size': world_size, 'wandb_run_id': wandb_run_id,
        }
        # best.pt first: a kill between the two writes then leaves best.pt ahead of ckpt.pt, which
        # a resume tolerates (it keeps the better best.pt), never a stale best.pt beside a newer ckpt.pt
        ckpt_path, best_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'best.pt')
        if best:
            checkpoint.save_atomic(state, best_path)
            checkpoint.copy_atomic(best_path, ckpt_path)
        else:
            checkpoint.save_atomic(state, ckpt_path)
        log.write({'event': 'checkpoint', 'iter': iter_num, 'path': ckpt_path, 'best': best,
                   'best_val_loss': best_val_loss})

    saved_at = []  # iterations checkpointed by this process

    # --- SIGINT / SIGTERM: finish the iteration, save, exit cleanly. A second Ctrl-C interrupts at
    # once, except under torchrun, which follows a terminal's SIGINT with its own SIGTERM to every
    # rank (and a SIGKILL 30 s later): there the first signal is the one that counts ---
    stop_signal = []

    def on_signal(signum, frame):
        if stop_signal and signum == signal.SIGINT and not ddp:
            raise KeyboardInterrupt
        if not stop_signal:
            stop_signal.append(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # --- the training loop ---
    end_reason, error = None, None
    bad_in_a_row, bad_total, first_bad = 0, 0, None
    step_s_total, data_s_total, steps_timed, dt_ema = 0.0, 0.0, 0, None
    eval_s = None
    params = [p for p in raw_model.parameters()]
    first_iter = iter_num
    # decisions to stop must agree across DDP ranks: a signal counts once all ranks have
    # reduced its flag at a step; an early stop is rank 0's live diagnosis, broadcast
    stop_agreed, early_stop_reason = False, None

    def agreed_early_stop():
        reason = log.monitor.stop_reason if log.monitor is not None else None
        if ddp:
            flag = torch.tensor(float(reason is not None), device=dev)
            dist.broadcast(flag, 0)
            reason = reason or ('early stop (rank 0)' if flag.item() else None)
        return reason

    while True:
        lr = facts.lr_from_config(iter_num, config)
        if iter_num >= max_iters:
            end_reason = 'max_iters'
        elif stop_agreed:
            end_reason = 'signal'
        elif early_stop_reason:
            end_reason = 'early_stop'

        # evaluate every eval_interval and at the end; checkpoint when val improves (best.pt) or always
        if eval_only or (last_eval_iter != iter_num and (iter_num % eval_interval == 0
                                                         or end_reason in ('max_iters', 'early_stop'))):
            t_eval = time.perf_counter()
            losses = evaluate()
            last_eval_iter = iter_num
            (tl, tse), (vl, vse) = losses['train'], losses['val']
            if master:
                print(f"step {iter_num}: train loss {tl:.4f}, val loss {vl:.4f}", flush=True)
            log.write({'event': 'eval', 'iter': iter_num, 'tokens': tokens_seen,
                       'epoch': tokens_seen / meta['train_tokens'], 'lr': lr, 'train_loss': tl, 'val_loss': vl,
                       'train_loss_se': tse, 'val_loss_se': vse})
            if wandb:
                wandb.log({'iter': iter_num, 'train/loss_eval': tl, 'val/loss': vl, 'lr': lr}, step=iter_num)
            improved = vl < best_val_loss  # a worse val never replaces the best (nanoGPT's bug)
            if improved:
                best_val_loss, best_iter = vl, iter_num
            if not eval_only and (improved or always_save_checkpoint or end_reason):
                save(best=improved)
            eval_s = time.perf_counter() - t_eval
            early_stop_reason = agreed_early_stop()
        if eval_only:
            end_reason = 'eval_only'
        if early_stop_reason and not end_reason:
            continue  # early stop found at this eval: go round once more to stop
        if end_reason:
            if end_reason != 'eval_only' and (not saved_at or saved_at[-1] != iter_num):
                save(best=False)
            break

        # one optimizer step over gradient_accumulation_steps micro-batches
        if iter_num in faults['sigterm'] or iter_num in faults['sigint']:
            os.kill(os.getpid(), signal.SIGTERM if iter_num in faults['sigterm'] else signal.SIGINT)
        for group in optimizer.param_groups:
            group['lr'] = lr
        t0 = time.perf_counter()
        wait0 = loader.wait_s
        loss_sum = torch.zeros((), device=dev)
        for micro_step in range(micro_steps):
            x, y = loader.next_batch()
            # under DDP, only the last micro-step all-reduces the gradients
            sync = model.no_sync() if ddp and micro_step < micro_steps - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    _, loss = model(x, y)
                loss = loss / micro_steps
                if iter_num in faults['loss']:
                    loss = loss * float('nan')
                loss_sum += loss.detach().float()
                (scaler.scale(loss) if scaler is not None else loss).backward()
        if iter_num in faults['grad']:
            params[0].grad.fill_(float('nan'))
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float('inf'))
        flags = torch.tensor([float(bool(stop_signal))], device=dev)
        if ddp:  # the loss is the mean over every rank's micro-batches; a signal on any rank stops all
            grad_bad = (~torch.isfinite(grad_norm)).float().reshape(1)
            reduced = torch.cat([(loss_sum / world_size).reshape(1), flags, grad_bad])
            dist.all_reduce(reduced)
            loss_sum, flags = reduced[0], reduced[1:2]
            grad_norm = torch.where(reduced[2] > 0, torch.full_like(grad_norm, float('nan')), grad_norm)
        lossf, gnorm, stop_any = torch.cat([loss_sum.reshape(1), grad_norm.float().reshape(1), flags]).tolist()
        if stop_any:
            stop_agreed = True
            if not stop_signal:
                stop_signal.append('a signal to another rank')
        # a non-finite loss or grad norm skips the update; fp16 overflows are the scaler's to handle
        overflow = scaler is not None and math.isfinite(lossf) and not math.isfinite(gnorm) and scaler.get_scale() >= 1
        bad = not math.isfinite(lossf) or (not math.isfinite(gnorm) and not overflow)
        if bad:
            if scaler is not None:
                scaler.update()
        elif scaler is not None:
            scaler.step(optimizer)  # skips the step itself when it found inf/nan in the gradients
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        data_dt = loader.wait_s - wait0
        tokens_seen += tokens_per_iter

        if iter_num != first_iter:  # the first step of a process includes compilation and warm-up
            step_s_total += dt
            data_s_total += data_dt
            steps_timed += 1
        dt_ema = dt if dt_ema is None else 0.9 * dt_ema + 0.1 * dt
        if bad:
            bad_in_a_row += 1
            bad_total += 1
            first_bad = iter_num if bad_in_a_row == 1 else first_bad
            what = 'loss' if not math.isfinite(lossf) else 'gradient norm'
            if master:
                log.warn(iter_num, 'nonfinite', f"iter {iter_num}: non-finite {what} (loss {lossf}, grad norm "
                         f"{gnorm}); update skipped ({bad_in_a_row} in a row, {bad_total} in all)")
        else:
            bad_in_a_row = 0

        if iter_num % log_interval == 0 or bad or iter_num == max_iters - 1:
            tps = tokens_per_iter / dt
            mfu = fpt * tokens_per_iter / dt / (peak * world_size) if peak else None
            if master:
                remaining = (max_iters - iter_num - 1) * dt_ema
                if eval_s:
                    remaining += eval_s * ((max_iters - iter_num - 1) // eval_interval + 1)
                mfu_text = f"{mfu * 100:.2f}%" if mfu is not None else "n/a"
                print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, mfu {mfu_text}, "
                      f"{tps:,.0f} tok/s, eta {format_eta(remaining)}", flush=True)
            log.write({'event': 'train', 'iter': iter_num, 'tokens': tokens_seen,
                       'epoch': tokens_seen / meta['train_tokens'], 'lr': lr, 'loss': lossf, 'grad_norm': gnorm,
                       'grad_scale': scaler.get_scale() if scaler is not None else None, 'dt_ms': dt * 1000,
                       'tokens_per_sec': tps, 'mfu': mfu})
            if wandb:
                wandb.log({k: v for k, v in {'iter': iter_num, 'train/loss': lossf, 'lr': lr, 'grad_norm': gnorm,
                                             'mfu': mfu, 'tokens_per_sec': tps}.items() if v is not None},
                          step=iter_num)
        iter_num += 1
        if bad_in_a_row >= max_bad_steps:
            end_reason = 'nonfinite'
            error = (f"{bad_in_a_row} non-finite steps in a row (iters {first_bad}-{iter_num - 1}), updates skipped; "
                     f"stopped with the last good checkpoint in {out_dir} intact; lower --learning_rate, "
                     f"set --grad_clip=1.0, or use --dtype=bfloat16/float32")
            break

    # --- the end ---
    peak_mem = torch.cuda.max_memory_allocated(dev) if dev.type == 'cuda' else None
    if dev.type == 'cpu':
        try:
            import resource
            peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
        except ImportError:  # Windows
            pass
    log.write({'event': 'end', 'iter': iter_num, 'reason': end_reason, 'best_val_loss': best_val_loss,
               'stats': {'bad_steps': bad_total, 'steps_timed': steps_timed, 'step_s': step_s_total,
                         'data_wait_s': data_s_total, 'peak_memory_bytes': peak_mem}})
    if master and end_reason == 'signal':
        print(f"stopped by {stop_signal[0]} at iter {iter_num}; resume with --init_from=resume", flush=True)
    if master and end_reason == 'early_stop':
        print(f"{early_stop_reason}; stopped at iter {iter_num}, best.pt (iter {best_iter}) kept", flush=True)
    if wandb:
        wandb.finish()
    loader.close()
    log.close()
    if ddp:
        dist.barrier()  # every rank, or gloo can abort at exit
        dist.destroy_process_group()
    if error:
        raise UserError(error)


def main_quiet_on_other_ranks():
    """Under torchrun every rank meets the same config error; only rank 0 prints it."""
    under_torchrun = 'RANK' in os.environ
    try:
        main()
    except UserError as e:
        if not under_torchrun:
            raise
        if int(os.environ['RANK']) == 0:
            print(f"error: {e}", file=sys.stderr)
        else:
            time.sleep(2)  # torchrun stops every rank when the first one exits: let rank 0 say why first
        leave_now(2)
    if under_torchrun:
        leave_now(0)


def leave_now(status):
    """Exit a torchrun rank without interpreter finalization: gloo's worker threads can still hold
    tensors then, and freeing them during finalization aborts the process now and then ('terminate
    called without an active exception') after a run that finished cleanly. Everything is written,
    closed and the process group destroyed by the time this runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == '__main__':
    exit_on_user_error(main_quiet_on_other_ranks)
