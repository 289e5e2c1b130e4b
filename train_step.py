"""
One optimizer step over gradient_accumulation_steps micro-batches, with nanoGPT's arithmetic
(the loss divided by the micro-steps, gradients clipped, AdamW), plus: a non-finite loss or
gradient norm skips the update, and under DDP one all-reduce carries the loss, a stop flag
and the gradients' health, so every rank takes the same decisions.
"""
import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Training:
    """What a step changes: the model (as called, and the plain module), optimizer, scaler, data."""
    model: object        # compiled and/or DDP-wrapped: what the forward calls
    raw_model: object    # the plain GPT, whose state the checkpoint stores
    optimizer: object
    scaler: object       # torch.amp.GradScaler for float16, else None
    loader: object       # dataloader.TrainLoader
    micro_steps: int     # this rank's micro-batches per iteration
    grad_clip: float

    def __post_init__(self):
        self.params = list(self.raw_model.parameters())


@dataclass
class StepResult:
    loss: float          # the mean over every rank's micro-batches
    grad_norm: float     # before clipping
    bad: bool            # non-finite loss or gradient norm: the update was skipped
    stop_any: bool       # some rank was asked to stop
    dt: float            # seconds
    data_dt: float       # of which waiting for batches

    @property
    def what_went_bad(self):
        return 'loss' if not math.isfinite(self.loss) else 'gradient norm'


def train_step(t, rt, it, lr_mult, stop, hooks):
    """Iteration `it` at the schedule's multiplier lr_mult of every group's peak LR (optim.Optimizers).
    stop.signal_requested (a StopControl's) is read after
    the backward passes, so that a signal that came during the step stops every rank after it."""
    hooks.step_start(it)
    t.optimizer.set_lr_multiplier(lr_mult)
    t0, wait0 = time.perf_counter(), t.loader.wait_s
    loss_sum = torch.zeros((), device=rt.device)
    for micro_step in range(t.micro_steps):
        x, y = t.loader.next_batch()
        # under DDP, only the last micro-step all-reduces the gradients
        sync = t.model.no_sync() if rt.ddp and micro_step < t.micro_steps - 1 else contextlib.nullcontext()
        with sync:
            with rt.autocast:
                _, loss = t.model(x, y)
            loss = hooks.loss(it, loss / t.micro_steps)
            loss_sum += loss.detach().float()
            (t.scaler.scale(loss) if t.scaler is not None else loss).backward()
    hooks.gradients(it, t.params)
    if t.scaler is not None:
        t.scaler.unscale_(t.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(t.params, t.grad_clip if t.grad_clip > 0 else float('inf'))
    flags = torch.tensor([float(stop.signal_requested)], device=rt.device)
    if rt.ddp:  # the loss is the mean over every rank's micro-batches; a signal on any rank stops all
        grad_bad = (~torch.isfinite(grad_norm)).float().reshape(1)
        reduced = torch.cat([(loss_sum / rt.world_size).reshape(1), flags, grad_bad])
        dist.all_reduce(reduced)
        loss_sum, flags = reduced[0], reduced[1:2]
        grad_norm = torch.where(reduced[2] > 0, torch.full_like(grad_norm, float('nan')), grad_norm)
    lossf, gnorm, stop_any = torch.cat([loss_sum.reshape(1), grad_norm.float().reshape(1), flags]).tolist()
    bad = apply_update(t, lossf, gnorm)
    return StepResult(lossf, gnorm, bad, bool(stop_any), time.perf_counter() - t0, t.loader.wait_s - wait0)


def apply_update(t, lossf, gnorm):
    """The optimizer step unless the loss or gradient norm is non-finite; returns whether it was
    skipped as bad. fp16 overflows (a finite loss, inf gradients) are the scaler's to handle."""
    overflow = t.scaler is not None and math.isfinite(lossf) and not math.isfinite(gnorm) and t.scaler.get_scale() >= 1
    bad = not math.isfinite(lossf) or (not math.isfinite(gnorm) and not overflow)
    if t.scaler is not None:
        if not bad:
            t.scaler.step(t.optimizer)  # skips the step itself when it found inf/nan in the gradients
        t.scaler.update()
    elif not bad:
        t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    return bad
