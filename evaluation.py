"""
One evaluation: the mean loss (and its standard error) over the same fixed windows of each
split every time, in eval mode, the batches split over the DDP ranks; and the val split's bits
per byte (bpb.py) where the dataset's tokenizer can be loaded.
"""
import math

import torch
import torch.distributed as dist

import bpb
from dataloader import fixed_windows, to_device
from errors import UserError


def token_byte_lengths_for(tokenizer_info, note=print):
    """bpb.token_byte_lengths of the dataset's tokenizer as a tensor, or None (with a note) when
    the tokenizer cannot be loaded here (e.g. GPT-2's BPE file is missing): no val_bpb then."""
    from tokenizer import load_tokenizer
    try:
        return torch.from_numpy(bpb.token_byte_lengths(load_tokenizer(tokenizer_info)))
    except UserError as e:
        note(f"note: the eval records have no val_bpb: the dataset's tokenizer cannot be loaded ({e})")
        return None


def load_hellaswag(path, tokenizer_info):
    """(tokenizer, examples) of train.py's hellaswag_file (a local file; nothing is downloaded)."""
    from eval_hellaswag import read_hellaswag
    from tokenizer import load_tokenizer
    return load_tokenizer(tokenizer_info), read_hellaswag(path)


@torch.no_grad()
def hellaswag_fields(model, hellaswag, rt):
    """The eval record's hellaswag_* fields: eval_hellaswag's scores, the examples split over ranks."""
    from eval_hellaswag import hellaswag_eval, hellaswag_summary
    tok, examples = hellaswag
    with rt.autocast:
        sums = hellaswag_eval(model, tok, examples, rt.device, rt.rank, rt.world_size)
    if rt.ddp:
        keys = sorted(sums)
        t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=rt.device)
        dist.all_reduce(t)
        sums = {k: int(v) for k, v in zip(keys, t.tolist())}
    return hellaswag_summary(sums)


class EvalSets:
    """eval_iters batches of batch_size windows per split, chosen once (seeded). byte_lengths:
    token_byte_lengths_for()'s tensor, for val_bpb; None leaves it out."""

    def __init__(self, files, block_size, batch_size, eval_iters, seed, byte_lengths=None):
        self.block_size, self.batch_size, self.eval_iters = block_size, batch_size, eval_iters
        self.byte_lengths = byte_lengths
        self.splits = {split: (f, fixed_windows(f, block_size, eval_iters * batch_size, seed))
                       for split, f in files.items()}

    def batch(self, split, k, device):
        f, starts = self.splits[split]
        return to_device(f.rows(starts[k * self.batch_size:(k + 1) * self.batch_size], self.block_size + 1), device)


@torch.no_grad()
def evaluate(model, eval_sets, rt):
    """{'train_loss', 'train_loss_se', 'val_loss', 'val_loss_se'} and, with byte lengths,
    'val_bpb': the val targets' summed nats / (ln 2 x the UTF-8 bytes they decode to)."""
    model.eval()
    n = eval_sets.eval_iters
    lengths = eval_sets.byte_lengths.to(rt.device) if eval_sets.byte_lengths is not None else None
    out = {}
    for split in eval_sets.splits:
        losses = torch.zeros(n, device=rt.device)
        target_bytes = torch.zeros(n, dtype=torch.float64, device=rt.device)
        for k in range(rt.rank, n, rt.world_size):  # the batches are split over ranks
            x, y = eval_sets.batch(split, k, rt.device)
            with rt.autocast:
                _, loss = model(x, y)
            losses[k] = loss.float()
            if lengths is not None and split == 'val':
                target_bytes[k] = lengths[y].sum()
        if rt.ddp:
            dist.all_reduce(losses)
            dist.all_reduce(target_bytes)
        targets_per_batch = eval_sets.batch_size * eval_sets.block_size
        if lengths is not None and split == 'val':  # every batch has the same number of targets
            nats = losses.double().sum() * targets_per_batch
            out['val_bpb'] = bpb.bpb_from_sums(nats.item(), target_bytes.sum().item())
        losses = losses.double().cpu().numpy()
        out[f'{split}_loss'] = float(losses.mean())
        out[f'{split}_loss_se'] = float(losses.std(ddof=1) / math.sqrt(n)) if n > 1 else float('nan')
    model.train()
    keys = ('train_loss', 'val_loss', 'train_loss_se', 'val_loss_se') + (('val_bpb',) if 'val_bpb' in out else ())
    return {k: out[k] for k in keys}
