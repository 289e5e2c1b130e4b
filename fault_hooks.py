"""
FOR TESTING ONLY: train.py's --fault_inject, e.g. 'loss@3,grad@5-6,sigterm@8'. The training
step calls one FaultHooks object at three defined points; with an empty spec each call is a
no-op. tests/test_faults.py and bench/faults.py use it to make the loss or the gradients
non-finite, or to send this process a signal, at chosen iterations.
"""
import os
import signal

from errors import UserError

FAULT_KINDS = ('loss', 'grad', 'sigterm', 'sigint')


def parse_faults(spec):
    """'loss@3,grad@5-6' -> {'loss': {3}, 'grad': {5, 6}, 'sigterm': set(), 'sigint': set()}"""
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


class FaultHooks:
    def __init__(self, spec=''):
        self.faults = parse_faults(spec)

    def step_start(self, it):
        """Before the step: send this process SIGTERM or SIGINT."""
        for kind, sig in (('sigterm', signal.SIGTERM), ('sigint', signal.SIGINT)):
            if it in self.faults[kind]:
                os.kill(os.getpid(), sig)
                return

    def loss(self, it, loss):
        """Each micro-batch's loss: non-finite at the chosen iterations."""
        return loss * float('nan') if it in self.faults['loss'] else loss

    def gradients(self, it, params):
        """After the backward passes: one non-finite gradient at the chosen iterations."""
        if it in self.faults['grad']:
            params[0].grad.fill_(float('nan'))
