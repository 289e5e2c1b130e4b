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

The defaults below are the config keys; `python train.py --help` lists them. The stages of the
loop live in small modules: runtime (device, dtype, compile, DDP), train_setup (data, model,
optimizer), train_step, evaluation, run_state (checkpoint save and restore), stop_control,
metrics_log.
"""
import os
import sys
import time


def quit_during_startup(signum, frame, name=None):
    """Ctrl-C / SIGTERM before the training loop: leave at once. A KeyboardInterrupt raised inside
    an import (torch's, or numpy's lazy submodules) can leave a half-imported module behind that
    fails later with an unrelated traceback; nothing worth saving exists yet. The training loop
    installs its own handler (save a checkpoint, then exit)."""
    sys.stderr.write(f"interrupted by {name or signal.Signals(signum).name} before training started\n")
    sys.stderr.flush()
    os._exit(130)


if __name__ == '__main__':  # (an import, as the tests do, leaves the caller's handlers alone)
    try:  # importing signal takes milliseconds (enum, functools): a Ctrl-C meanwhile is the same line
        import signal
        signal.signal(signal.SIGINT, quit_during_startup)
        signal.signal(signal.SIGTERM, quit_during_startup)
    except KeyboardInterrupt:
        quit_during_startup(None, None, name='SIGINT')

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'  # run folder: metrics.jsonl, config.json, ckpt.pt, best.pt
eval_interval = 2000  # evaluate (and checkpoint) every this many iterations
log_interval = 1  # log a train record every this many iterations
eval_iters = 200  # batches per split in each evaluation (the same batches every time)
eval_only = False  # evaluate once and exit
always_save_checkpoint = True  # write ckpt.pt at every eval (best.pt is written only when val improves)
init_from = 'scratch'  # 'scratch', 'resume' (from out_dir/ckpt.pt, exactly where it stopped), or GPT-2 weights to fine-tune: gpt2, gpt2-medium, gpt2-large, gpt2-xl (Hugging Face cache) or hf:PATH (a local folder)
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
rope = False  # rotary position embeddings instead of a learned position table
norm = 'layernorm'  # 'layernorm' (GPT-2) or 'rmsnorm' (parameter-free)
qk_norm = False  # RMS-normalise q and k per head before attention
mlp_act = 'gelu'  # 'gelu' (GPT-2) or 'relu2'
tie_embeddings = True  # the LM head shares the token embedding's weights; False: its own vocab x n_embd matrix
zero_init = False  # zero-initialise the residual output projections and the untied LM head
logit_softcap = 0.0  # logits become cap * tanh(logits / cap); 0 is off
# optimizer
optimizer = 'adamw'  # 'adamw', or 'muon': Muon on the blocks' 2-D matrices, AdamW (learning_rate) on the rest
learning_rate = 6e-4  # peak LR of AdamW (with muon: of the embeddings, head, norms and biases)
muon_lr = 3e-3  # optimizer='muon': Muon's peak LR, on the same schedule
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
hellaswag_file = ''  # a HellaSwag jsonl (ctx, endings, label; e.g. the official hellaswag_val.jsonl) scored at every eval into the eval record; '' is off; never downloaded
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

import secrets  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import cpu_load  # noqa: E402
# before torch loads libgomp, which reads its wait policy once; an import (the tests') leaves it alone
OMP_WAIT_NOTE = cpu_load.choose_omp_wait_policy() if __name__ == '__main__' else None
import torch  # noqa: E402  (after the handlers: importing torch takes seconds)

import checkpoint  # noqa: E402
import facts  # noqa: E402
import hf_gpt2  # noqa: E402
import optim  # noqa: E402
import memory_guard  # noqa: E402
import runtime  # noqa: E402
import train_setup as setup  # noqa: E402
from atomic import write_json_atomic  # noqa: E402
from config_check import check_world_size, validate  # noqa: E402,F401  (tests call train.validate)
from configurator import Config, configure  # noqa: E402
from data_formats import dataset_location  # noqa: E402
from errors import UserError, exit_on_user_error  # noqa: E402
from evaluation import EvalSets, evaluate, hellaswag_fields, load_hellaswag, token_byte_lengths_for  # noqa: E402
from fault_hooks import FaultHooks  # noqa: E402
from metrics_log import MetricsLog, live_monitor, start_wandb  # noqa: E402
from model import OPTION_KEYS  # noqa: E402
from progress import StepTimes  # noqa: E402
from run_state import RunState, Saver, load_for_resume, restore_rng, restore_training  # noqa: E402
from stop_control import StopControl  # noqa: E402
from train_step import train_step  # noqa: E402


@dataclass
class Run:
    """Everything the loop works with, set up by start()."""
    c: Config                 # the resolved config (keys as attributes)
    rt: runtime.Runtime
    t: object                 # train_step.Training: model, optimizer, scaler, loader
    eval_model: object
    state: RunState
    log: MetricsLog
    saver: Saver
    stop: StopControl
    hooks: FaultHooks
    times: StepTimes
    eval_sets: EvalSets
    train_tokens: int         # tokens in train.bin: an epoch
    tokens_per_iter: int
    flops_per_token: int
    peak_flops: float         # of one device, None where unknown
    vocab_size: int           # the model's (padded): the memory estimate's
    hellaswag: tuple = None   # (tokenizer, examples) of hellaswag_file, or None

    def out_of_memory_is_one_line(self, where):
        """`with r.out_of_memory_is_one_line('a training step'):` an OOM inside ends the run in one line."""
        return memory_guard.on_out_of_memory(self.c, self.vocab_size, self.rt.device, where, self.rt.ddp)

    @property
    def epoch(self):
        return self.state.tokens_seen / self.train_tokens


def main(argv=None):
    """Train with the defaults, then argv's config files and --key=value (sys.argv by default)."""
    argv = sys.argv[1:] if argv is None else argv
    c = Config(configure({k: globals()[k] for k in config_keys}, argv, help_source=__file__))
    validate(c)
    r = start(c)
    while True:
        it = r.state.iter_num
        lr = facts.lr_from_config(it, c)
        end_reason = r.stop.end_reason(it, c.max_iters)
        # evaluate every eval_interval and at the end; checkpoint when val improves (best.pt) or always
        if c.eval_only or (r.state.last_eval_iter != it and (it % c.eval_interval == 0
                                                              or end_reason in ('max_iters', 'early_stop'))):
            evaluate_and_checkpoint(r, lr, end_reason)
        if c.eval_only:
            end_reason = 'eval_only'
        elif r.stop.early_stop_reason and not end_reason:
            continue  # early stop found at this eval: go round once more to stop
        if end_reason:
            if end_reason != 'eval_only' and r.saver.last_saved_iter != it:
                r.saver.save(r.t, r.state, best=False)
            break

        with r.out_of_memory_is_one_line('a training step'):
            result = train_step(r.t, r.rt, it, lr / c.learning_rate, r.stop, r.hooks)
        r.state.tokens_seen += r.tokens_per_iter
        r.times.add(it, result)
        r.stop.after_step(it, result)
        log_step(r, it, lr, result)
        r.state.iter_num += 1
        if r.stop.too_many_bad_steps:
            end_reason = 'nonfinite'
            break
    finish(r, end_reason)


def evaluate_and_checkpoint(r, lr, end_reason):
    t0 = time.perf_counter()
    first = r.times.eval_s is None
    if first and r.rt.master:
        print(f"evaluating ({r.c.eval_iters} batches of {r.c.batch_size} x {r.c.block_size} tokens per split) ...",
              flush=True)
    with r.out_of_memory_is_one_line('an evaluation'):  # before any save: no checkpoint is half-written
        metrics = evaluate(r.eval_model, r.eval_sets, r.rt)
        if r.hellaswag is not None:
            metrics.update(hellaswag_fields(r.eval_model, r.hellaswag, r.rt))
    it = r.state.iter_num
    if r.rt.master:
        bpb_text = f", val bpb {metrics['val_bpb']:.4f}" if 'val_bpb' in metrics else ""
        print(f"step {it}: train loss {metrics['train_loss']:.4f}, val loss {metrics['val_loss']:.4f}{bpb_text}",
              flush=True)
    r.log.eval(it, r.state.tokens_seen, r.epoch, lr, metrics, lr_mult=lr / r.c.learning_rate)
    improved = r.state.record_eval(metrics['val_loss'])
    if not r.c.eval_only and (improved or r.c.always_save_checkpoint or end_reason):
        r.saver.save(r.t, r.state, best=improved)
    r.times.eval_s = time.perf_counter() - t0
    if first and r.rt.master and r.times.eval_s >= 1:
        print(f"(the first evaluation and checkpoint took {r.times.eval_s:.1f}s)", flush=True)
    r.stop.check_early_stop(r.log.monitor)


def log_step(r, it, lr, result):
    """A warning for a skipped step; the `iter N:` line and train record every log_interval."""
    stop = r.stop
    if result.bad:
        r.log.warn(it, 'nonfinite', f"iter {it}: non-finite {result.what_went_bad} (loss {result.loss}, grad norm "
                   f"{result.grad_norm}); update skipped ({stop.bad_in_a_row} in a row, {stop.bad_total} in all)")
    if not (it % r.c.log_interval == 0 or result.bad or it == r.c.max_iters - 1):
        return
    mfu = (r.flops_per_token * r.tokens_per_iter / result.dt / (r.peak_flops * r.rt.world_size)
           if r.peak_flops else None)
    if r.rt.master:
        mfu_text = f"{mfu * 100:.2f}%" if mfu is not None else "n/a"
        print(f"iter {it}: loss {result.loss:.4f}, time {result.dt * 1000:.2f}ms, mfu {mfu_text}, "
              f"{r.tokens_per_iter / result.dt:,.0f} tok/s, eta {r.times.eta(it, r.c.max_iters, r.c.eval_interval)}",
              flush=True)
    scaler = r.t.scaler
    r.log.train(it, r.state.tokens_seen, r.epoch, lr, result.loss, result.grad_norm,
                scaler.get_scale() if scaler is not None else None, result.dt, r.tokens_per_iter, mfu,
                lr_mult=lr / r.c.learning_rate)


def start(c):
    """From a validated config to a Run: processes and device, data, model (from scratch or the
    checkpoint), run folder, compile, logs; the signal handlers last."""
    check_world_size(c, runtime.ranks_from_env()[2])
    rt = runtime.setup(c.device, c.dtype, c.backend, c.cpu_threads)
    c.update(device=str(rt.device) if not rt.ddp else rt.device.type, dtype=rt.dtype,
             data_dir=dataset_location(c.data_dir, c.dataset))
    data = setup.open_dataset(c.data_dir)
    say = print if rt.master else (lambda *a, **k: None)
    # the wait policy was chosen before the config was read; with one thread (cpu_threads=1) it is moot
    for note in (OMP_WAIT_NOTE if torch.get_num_threads() > 1 else None, data.note):
        if note:
            say(note)
    ckpt = (load_for_resume(c.out_dir, rt.device, say, tokenizer=data.meta['tokenizer'])
            if c.init_from == 'resume' else None)
    if ckpt is not None:
        optim.require_same_kind(optim.recorded_kind(ckpt['optimizer']), c.optimizer,
                                os.path.join(c.out_dir, checkpoint.CKPT))
    if hf_gpt2.is_hf_source(c.init_from):
        model_args, weights = setup.hf_model_args(c, data, {k: globals()[k] for k in config_keys}, note=say)
    else:
        model_args = setup.model_args_for(c, data, ckpt, note=say)
        weights = checkpoint.clean_state_dict(ckpt['model']) if ckpt is not None else None
    setup.check_block_fits(data, c.block_size)
    say(memory_guard.check_memory(c, model_args['vocab_size'], rt.device, ddp=rt.ddp), flush=True)  # before allocating
    t, fused = setup.build_training(c, model_args, data, rt, weights)
    del weights
    state = RunState.from_checkpoint(ckpt)
    if ckpt is not None:
        restore_training(t, ckpt)
    metrics_path = setup.prepare_run_folder(c.out_dir, rt, resuming=ckpt is not None)
    ckpt_size = checkpoint.checkpoint_bytes(c, model_args['vocab_size'])
    space_warning = checkpoint.space_problem(c.out_dir, ckpt_size) if rt.master and not c.eval_only else None
    if rt.master and ckpt is not None:
        state.best_val_loss, state.best_iter = checkpoint.keep_better_best(
            c.out_dir, state.best_val_loss, state.best_iter)
    log = MetricsLog(metrics_path, rt.master)
    fpt = facts.flops_per_token(c.n_layer, c.n_embd, model_args['vocab_size'], c.block_size, c.bias,
                                **t.raw_model.config.counting_options())
    estimate = setup.cpu_time_estimate(c, fpt, rt)
    if estimate:
        say(estimate, flush=True)
    eval_model, compiled, compile_warning = setup.compile_model(t, rt, c, announce=lambda m: say(m, flush=True))
    warnings = [w for w in (space_warning, compile_warning) if w]
    if ckpt is not None:
        warnings += [w for w in [restore_rng(ckpt, rt)] if w]
    del ckpt
    r = Run(c, rt, t, eval_model, state, log, Saver(c.out_dir, rt, log, model_args, dict(c), data.meta['tokenizer']),
            StopControl(rt, c.max_bad_steps), FaultHooks(c.fault_inject), StepTimes(state.iter_num),
            EvalSets({'train': data.train, 'val': data.val}, c.block_size, c.batch_size, c.eval_iters, c.seed,
                     token_byte_lengths_for(data.meta['tokenizer'], note=say)),
            data.meta['train_tokens'], facts.tokens_per_iter(c.batch_size, c.block_size, c.gradient_accumulation_steps),
            fpt, c.peak_flops if c.peak_flops is not None else (
                facts.peak_flops_for(rt.device_name, rt.dtype) if rt.device.type == 'cuda' else None),
            model_args['vocab_size'])
    r.saver.size, r.saver.last_good_iter = ckpt_size, (state.iter_num if c.init_from == 'resume' else None)
    if c.hellaswag_file:
        r.hellaswag = load_hellaswag(c.hellaswag_file, data.meta['tokenizer'])
    write_run_record(r, data.meta, model_args, compiled, fused, warnings)
    r.stop.install()
    return r


def write_run_record(r, meta, model_args, compiled, fused, warnings):
    """config.json, the live diagnosis, the `run` record, the start-up line, wandb."""
    c, rt = r.c, r.rt
    counts = facts.param_counts(c.n_layer, c.n_embd, model_args['vocab_size'], c.block_size, c.bias,
                                **r.t.raw_model.config.counting_options())
    model_facts = {'params': counts['params'], 'non_embedding_params': counts['non_embedding_params'],
                   'flops_per_token': r.flops_per_token, 'optimizer': c.optimizer,
                   **{k: model_args[k] for k in OPTION_KEYS}}
    if rt.master:
        write_json_atomic(os.path.join(c.out_dir, 'config.json'), c)
        if c.live_diagnose:
            r.log.monitor = live_monitor(c, meta, model_facts)
    resumed = r.state.iter_num if c.init_from == 'resume' else None
    r.log.write({'event': 'run', 'config': c, 'model': model_facts, 'data': meta,
                 'system': {'device_name': rt.device_name, 'peak_flops': r.peak_flops, 'world_size': rt.world_size,
                            'torch': torch.__version__, 'dtype': rt.dtype, 'compile': compiled,
                            'fused_adamw': fused, 'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY')},
                 'resumed_from_iter': resumed})
    for w in warnings:
        r.log.warn(r.state.iter_num, 'setup', w)
    if rt.master:
        begin = ('resuming at iter ' + str(resumed) if resumed is not None else
                 f'fine-tuning {c.init_from}' if hf_gpt2.is_hf_source(c.init_from) else 'training from scratch')
        print(f"{begin}: "
              f"{counts['params'] / 1e6:.2f}M parameters ({counts['non_embedding_params'] / 1e6:.2f}M non-embedding), "
              f"{r.tokens_per_iter:,} tokens per iteration, {rt.world_size} rank(s), {rt.device_name}, {rt.dtype}, "
              f"compile {compiled}, optimizer {c.optimizer}, fused AdamW {fused}", flush=True)
    if c.wandb_log and rt.master:
        r.state.wandb_run_id = r.state.wandb_run_id or secrets.token_hex(4)  # kept in the checkpoint
        r.log.wandb = start_wandb(c, c.out_dir, r.state.wandb_run_id)


def finish(r, end_reason):
    """The `end` record, the closing line, everything closed; a non-finite stop is an error."""
    stop, it = r.stop, r.state.iter_num
    r.log.write({'event': 'end', 'iter': it, 'reason': end_reason, 'best_val_loss': r.state.best_val_loss,
                 'stats': r.times.stats(stop.bad_total, runtime.peak_memory_bytes(r.rt.device))})
    if r.rt.master and end_reason == 'signal':
        print(f"stopped by {stop.signal_name} at iter {it}; resume with --init_from=resume", flush=True)
    if r.rt.master and end_reason == 'early_stop':
        print(f"{stop.early_stop_reason}; stopped at iter {it}, best.pt (iter {r.state.best_iter}) kept", flush=True)
    if r.rt.master and r.log.dropped:
        print(f"warning: {r.log.dropped} records could not be written to {r.log.path} and were dropped "
              f"(the disk is full?)", flush=True)
    r.t.loader.close()
    r.log.close()
    if r.rt.ddp:
        runtime.leave_process_group()
    if r.saver.failure and end_reason != 'nonfinite':  # the final save: the run's last iterations are lost
        again = ("resume with --init_from=resume" if r.saver.last_good_iter is not None
                 else "run again (or give another --out_dir)")
        raise UserError(f"{r.saver.failure}; the run ended without saving iter {it}: free some space and {again}")
    if end_reason == 'nonfinite':
        raise UserError(f"{stop.bad_in_a_row} non-finite steps in a row (iters {stop.first_bad}-{it - 1}), updates "
                        f"skipped; stopped with the last good checkpoint in {r.c.out_dir} intact; lower "
                        f"--learning_rate, set --grad_clip=1.0, or use --dtype=bfloat16/float32")


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
