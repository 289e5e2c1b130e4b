"""
One evaluation: the mean loss (and its standard error) over the same fixed windows of each
split every time, in eval mode, the batches split over the DDP ranks.
"""
import math

import torch
import torch.distributed as dist

from dataloader import fixed_windows, to_device


class EvalSets:
    """eval_iters batches of batch_size windows per split, chosen once (seeded)."""

    def __init__(self, files, block_size, batch_size, eval_iters, seed):
        self.block_size, self.batch_size, self.eval_iters = block_size, batch_size, eval_iters
        self.splits = {split: (f, fixed_windows(f, block_size, eval_iters * batch_size, seed))
                       for split, f in files.items()}

    def batch(self, split, k, device):
        f, starts = self.splits[split]
        return to_device(f.rows(starts[k * self.batch_size:(k + 1) * self.batch_size], self.block_size + 1), device)


@torch.no_grad()
def evaluate(model, eval_sets, rt):
    """{'train_loss', 'train_loss_se', 'val_loss', 'val_loss_se'} (the eval record's fields)."""
    model.eval()
    n = eval_sets.eval_iters
    out = {}
    for split in eval_sets.splits:
        losses = torch.zeros(n, device=rt.device)
        for k in range(rt.rank, n, rt.world_size):  # the batches are split over ranks
            x, y = eval_sets.batch(split, k, rt.device)
            with rt.autocast:
                _, loss = model(x, y)
            losses[k] = loss.float()
        if rt.ddp:
            dist.all_reduce(losses)
        losses = losses.double().cpu().numpy()
        out[f'{split}_loss'] = float(losses.mean())
        out[f'{split}_loss_se'] = float(losses.std(ddof=1) / math.sqrt(n)) if n > 1 else float('nan')
    model.train()
    return {k: out[k] for k in ('train_loss', 'val_loss', 'train_loss_se', 'val_loss_se')}
