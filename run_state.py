"""
The state of a run that a checkpoint stores, and its save and restore: a resume continues
exactly where the run stopped (weights, optimizer moments, scaler, data position, every rank's
RNG, the counters below), so an interrupted and resumed run equals an uninterrupted one bit for bit.
"""
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

import checkpoint
from nanogpt_compat import convert as nanogpt_convert, is_nanogpt_checkpoint

# what train.py needs of a checkpoint to resume (a nanoGPT or foreign file lacks some)
RESUME_KEYS = ('model', 'model_args', 'optimizer', 'iter_num', 'best_val_loss', 'tokens_seen', 'loader',
               'rng_states')


@dataclass
class RunState:
    iter_num: int = 0
    best_val_loss: float = math.inf
    best_iter: int = None
    tokens_seen: int = 0
    last_eval_iter: int = None
    wandb_run_id: str = None

    @classmethod
    def from_checkpoint(cls, ckpt):
        if ckpt is None:
            return cls()
        return cls(ckpt['iter_num'], ckpt['best_val_loss'], ckpt.get('best_iter'), ckpt['tokens_seen'],
                   ckpt.get('last_eval_iter'), ckpt.get('wandb_run_id'))

    def record_eval(self, val_loss):
        """Note an eval at iter_num; True when val_loss is the best so far (a worse val never
        replaces the best: nanoGPT's bug)."""
        self.last_eval_iter = self.iter_num
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_iter = val_loss, self.iter_num
            return True
        return False


def load_for_resume(out_dir, device, announce=print, tokenizer=None):
    """out_dir/ckpt.pt, checked to hold what a resume needs; says how long loading took. A
    nanoGPT checkpoint is converted (tokenizer: the dataset's), saying what it lacks."""
    path = os.path.join(out_dir, checkpoint.CKPT)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    big = size > 50e6  # a small one loads in a blink: no line for it
    if big:
        announce(f"loading {path} ({size / 1e6:,.0f} MB) ...")
    t0 = time.perf_counter()
    ckpt = checkpoint.load(path, map_location=device)
    if is_nanogpt_checkpoint(ckpt):
        ckpt, note = nanogpt_convert(ckpt, path, tokenizer=tokenizer)
        announce(note)
    checkpoint.require(ckpt, RESUME_KEYS, path, "start with --init_from=scratch")
    if big:
        announce(f"loaded in {time.perf_counter() - t0:.1f}s")
    return ckpt


def restore_training(t, ckpt):
    """Optimizer, scaler and data position from the checkpoint (the weights came with the model)."""
    t.optimizer.load_state_dict(ckpt['optimizer'])
    if t.scaler is not None and ckpt.get('scaler'):
        t.scaler.load_state_dict(ckpt['scaler'])
    t.loader.load_state_dict(ckpt['loader'])


def restore_rng(ckpt, rt):
    """This rank's RNG states, last, so that nothing in the set-up consumes them. Returns a
    warning when the checkpoint was made with another number of ranks, else None."""
    states = ckpt.get('rng_states') or []
    if len(states) != rt.world_size:
        return (f"the checkpoint has RNG states for {len(states)} ranks, this run has {rt.world_size}: "
                f"dropout will not replay exactly")
    torch.set_rng_state(states[rt.rank]['cpu'].cpu())
    if rt.device.type == 'cuda' and states[rt.rank].get('cuda') is not None:
        torch.cuda.set_rng_state(states[rt.rank]['cuda'].cpu(), rt.device)
    return None


class Saver:
    """Writes ckpt.pt (and best.pt) from every rank's state; rank 0 writes, all ranks take part."""

    def __init__(self, out_dir, rt, log, model_args, config, tokenizer):
        self.out_dir, self.rt, self.log = out_dir, rt, log
        self.fixed = {'model_args': model_args, 'config': config, 'tokenizer': tokenizer}
        self.last_saved_iter = None  # on every rank: the decision to save again must agree across ranks
        self.size = None             # bytes of one checkpoint: estimated at start-up, measured once saved
        self.last_good_iter = None   # the iteration in ckpt.pt
        self.failure = None          # the line saying why the latest save failed; None once one succeeds

    def rng_states(self):
        dev = self.rt.device
        rng = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state(dev) if dev.type == 'cuda' else None}
        if not self.rt.ddp:
            return [rng]
        states = [None] * self.rt.world_size
        dist.all_gather_object(states, rng)
        return states

    def save(self, t, state, best):
        rng_states = self.rng_states()
        self.last_saved_iter = state.iter_num
        if not self.rt.master:
            return
        ckpt = {
            'model': checkpoint.clean_state_dict(t.raw_model.state_dict()),
            'optimizer': t.optimizer.state_dict(),
            'scaler': t.scaler.state_dict() if t.scaler is not None else None,
            **self.fixed, **asdict(state), 'loader': t.loader.state_dict(),
            'rng_states': rng_states, 'world_size': self.rt.world_size,
        }
        try:
            path = checkpoint.save_run(ckpt, self.out_dir, best)
        except (OSError, RuntimeError) as e:
            if not checkpoint.is_write_failure(e):
                raise
            self.failed(e, state.iter_num)
            return
        self.failure, self.last_good_iter, self.size = None, state.iter_num, os.path.getsize(path)
        self.log.write({'event': 'checkpoint', 'iter': state.iter_num, 'path': path, 'best': best,
                        'best_val_loss': state.best_val_loss})

    def failed(self, e, it):
        """A save that could not be written (full disk, quota, read-only folder): the files there
        are the previous ones (atomic writes), the temporary is gone; one warning, and training goes on."""
        path = getattr(e, 'filename', None) or os.path.join(self.out_dir, checkpoint.CKPT)
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e).splitlines()[0]
        try:
            free = checkpoint.format_size(checkpoint.free_bytes(self.out_dir))
        except OSError:
            free = 'unknown'
        kept = (f"the last good checkpoint is iter {self.last_good_iter}" if self.last_good_iter is not None
                else "there is no checkpoint yet")
        need = f"about {checkpoint.format_size(self.size)}" if self.size else "an unknown size"
        self.failure = (f"saving {path} at iter {it} failed ({reason}): it needs {need} and {free} is free; "
                        f"{kept}")
        self.log.warn(it, 'checkpoint.save_failed', f"{self.failure}; training goes on and the next save tries "
                      f"again (free some space, or another --out_dir next time)")
