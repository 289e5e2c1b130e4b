"""
When training stops, decided in one place and agreed across DDP ranks: max_iters, SIGINT /
SIGTERM (finish the iteration, save, exit cleanly), an early stop from the live diagnosis,
and too many non-finite steps in a row.

A second Ctrl-C interrupts at once, except under torchrun, which follows a terminal's SIGINT
with its own SIGTERM to every rank (and a SIGKILL 30 s later): there the first signal counts.
A signal counts once all ranks have reduced its flag at a step (train_step); an early stop is
rank 0's live diagnosis, broadcast.
"""
import signal

import torch
import torch.distributed as dist


class StopControl:
    def __init__(self, rt, max_bad_steps):
        self.rt, self.max_bad_steps = rt, max_bad_steps
        self.signal_name = None          # the signal this process got (or 'a signal to another rank')
        self.signal_agreed = False       # every rank knows of a signal
        self.early_stop_reason = None
        self.bad_in_a_row, self.bad_total, self.first_bad = 0, 0, None
        self._previous = {}

    # --- signals ---
    def install(self):
        self._previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self):
        """The handlers from before install(), for a caller that goes on after training (train.py
        itself keeps them to the end: a late signal then still means 'stop', not 'die')."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_signal(self, signum, frame):
        if self.signal_name and signum == signal.SIGINT and not self.rt.ddp:
            raise KeyboardInterrupt
        if not self.signal_name:
            self.signal_name = signal.Signals(signum).name

    @property
    def signal_requested(self):
        return self.signal_name is not None

    def after_step(self, it, result):
        """Take note of step `it`: the agreed stop flag and its health."""
        if result.stop_any:
            self.signal_agreed = True
            self.signal_name = self.signal_name or 'a signal to another rank'
        if result.bad:
            self.bad_in_a_row += 1
            self.bad_total += 1
            if self.bad_in_a_row == 1:
                self.first_bad = it
        else:
            self.bad_in_a_row = 0

    # --- the live diagnosis ---
    def check_early_stop(self, monitor):
        """After an eval: rank 0's monitor's stop reason, the same on every rank."""
        reason = monitor.stop_reason if monitor is not None else None
        if self.rt.ddp:
            flag = torch.tensor(float(reason is not None), device=self.rt.device)
            dist.broadcast(flag, 0)
            reason = reason or ('early stop (rank 0)' if flag.item() else None)
        self.early_stop_reason = reason

    # --- the decision ---
    def end_reason(self, it, max_iters):
        """Why to stop before iteration `it`, or None."""
        if it >= max_iters:
            return 'max_iters'
        if self.signal_agreed:
            return 'signal'
        if self.early_stop_reason:
            return 'early_stop'
        return None

    @property
    def too_many_bad_steps(self):
        return self.bad_in_a_row >= self.max_bad_steps
