"""
metrics.jsonl on rank 0: one flushed JSON line per record (the contract with diagnose, in
DESIGN.md), each fed to the live diagnosis; wandb, when on, gets the same numbers.
"""
import errno
import json
import os
import time


class MetricsLog:
    def __init__(self, path, master):
        self.master, self.path = master, path
        self.dropped = 0      # records a failed write (a full disk) dropped: the run goes on without them
        self.monitor = None   # diagnose.live.LiveMonitor, when on
        self.wandb = None     # the wandb module, when on
        if master and os.path.exists(path):
            with open(path, 'rb+') as f:  # a run killed mid-line left a torn record: drop it
                data = f.read()
                if data and not data.endswith(b'\n'):
                    f.truncate(data.rfind(b'\n') + 1)
        # unbuffered: each record is one write, so a failed one is undone and never retried half
        self.file = open(path, 'ab', buffering=0) if master else None
        self.size = os.fstat(self.file.fileno()).st_size if master else 0

    def write(self, record, observe=True):
        record = {'event': record.pop('event'), 'time': time.time(), **record}
        if not self.master:
            return record
        self.append((json.dumps(record) + '\n').encode())
        if observe and self.monitor is not None:
            self._observe(record)
        return record

    def append(self, line):
        try:
            if self.file.write(line) != len(line):
                raise OSError(errno.ENOSPC, 'a short write')
            self.size += len(line)
        except OSError:
            self.dropped += 1
            try:
                os.ftruncate(self.file.fileno(), self.size)  # no torn line left behind
            except OSError:
                pass

    def warn(self, it, wid, message):
        if not self.master:
            return
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

    # --- the records of the training loop ---
    def train(self, it, tokens, epoch, lr, loss, grad_norm, grad_scale, dt, tokens_per_iter, mfu, lr_mult=None):
        tps = tokens_per_iter / dt
        self.write({'event': 'train', 'iter': it, 'tokens': tokens, 'epoch': epoch, 'lr': lr, 'lr_mult': lr_mult,
                    'loss': loss,
                    'grad_norm': grad_norm, 'grad_scale': grad_scale, 'dt_ms': dt * 1000,
                    'tokens_per_sec': tps, 'mfu': mfu})
        if self.wandb:
            self.wandb.log({k: v for k, v in {'iter': it, 'train/loss': loss, 'lr': lr, 'grad_norm': grad_norm,
                                              'mfu': mfu, 'tokens_per_sec': tps}.items() if v is not None}, step=it)

    def eval(self, it, tokens, epoch, lr, metrics, lr_mult=None):
        """metrics: evaluation.evaluate()'s dict (train_loss, val_loss and their standard errors)."""
        self.write({'event': 'eval', 'iter': it, 'tokens': tokens, 'epoch': epoch, 'lr': lr, 'lr_mult': lr_mult,
                    **metrics})
        if self.wandb:
            self.wandb.log({'iter': it, 'train/loss_eval': metrics['train_loss'], 'val/loss': metrics['val_loss'],
                            'lr': lr}, step=it)

    def close(self):
        if self.wandb:
            self.wandb.finish()
        if self.file:
            self.file.close()


def live_monitor(config, meta, model_facts):
    """diagnose/live.py's monitor, or None where diagnose/live.py is absent."""
    try:
        from diagnose.live import LiveMonitor
    except ImportError as e:  # only the absence of diagnose/live.py turns it off silently
        if e.name not in ('diagnose', 'diagnose.live'):
            raise
        return None
    return LiveMonitor(config, meta, model_facts)


def start_wandb(config, out_dir, run_id):
    import wandb
    wandb.init(project=config['wandb_project'], name=config['wandb_run_name'], id=run_id, resume='allow',
               config=config, dir=out_dir)
    return wandb
