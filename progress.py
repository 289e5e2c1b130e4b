"""
Step timing for the log lines and the end record: the ETA, and the totals that bench/ reads
(the first step of a process, with compilation and warm-up, is left out of them).
"""
from train_setup import format_duration


class StepTimes:
    def __init__(self, first_iter):
        self.first_iter = first_iter
        self.step_s, self.data_wait_s, self.steps_timed = 0.0, 0.0, 0
        self.dt_ema = None
        self.eval_s = None    # the last evaluation (and checkpoint), for the ETA

    def add(self, it, result):
        if it != self.first_iter:
            self.step_s += result.dt
            self.data_wait_s += result.data_dt
            self.steps_timed += 1
        self.dt_ema = result.dt if self.dt_ema is None else 0.9 * self.dt_ema + 0.1 * result.dt

    def eta(self, it, max_iters, eval_interval):
        remaining = (max_iters - it - 1) * self.dt_ema
        if self.eval_s:
            remaining += self.eval_s * ((max_iters - it - 1) // eval_interval + 1)
        return format_duration(remaining)

    def stats(self, bad_steps, peak_memory_bytes):
        return {'bad_steps': bad_steps, 'steps_timed': self.steps_timed, 'step_s': self.step_s,
                'data_wait_s': self.data_wait_s, 'peak_memory_bytes': peak_memory_bytes}
