"""
HellaSwag accuracy of a run's checkpoint, on a local copy of the official validation file:
$ python eval_hellaswag.py --out_dir=out-fineweb-4070 --file=hellaswag_val.jsonl
The file (one JSON object per line: ctx, endings, label) is never downloaded by this code; get
hellaswag_val.jsonl from https://github.com/rowanz/hellaswag (data/) on a machine with a network.

Each example is a context and 4 endings. The model reads the context (after an end-of-text
token, as every training document starts) and each ending in turn; it picks the ending with the
lowest loss over the ending's tokens:
- acc: the summed loss (the ending's log-likelihood);
- acc_norm: the mean loss per token (length-normalised, as llm.c and build-nanogpt score it).
Standard errors are those of a mean of 0/1 outcomes, as lm-eval reports them: sqrt(p(1-p)/(n-1)).
"""
import contextlib
import json
import math
import os
import sys

try:
    import torch
    from torch.nn import functional as F

    import checkpoint as ckpt_io
    from configurator import configure
    from errors import UserError, exit_on_user_error
except KeyboardInterrupt:
    sys.exit(130)

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
out_dir = 'out'  # the run folder with best.pt / ckpt.pt
checkpoint = 'best'  # 'best' (best.pt, lowest val loss) or 'latest' (ckpt.pt)
file = ''  # hellaswag_val.jsonl (required; never downloaded)
max_examples = 0  # evaluate only the first N examples; 0 for all
device = 'auto'  # 'auto' (cuda, else mps, else cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 on a GPU that has it, else float32), 'float32', 'bfloat16', 'float16'
bpe_file = ''  # GPT-2 ranks file for offline use ('' searches tiktoken's caches)
# -----------------------------------------------------------------------------
config_keys = [k for k in globals() if k not in _before_defaults and not k.startswith('_')]


def read_hellaswag(path):
    """[{'ctx': str, 'endings': [str] * 4, 'label': int}] from the official jsonl format."""
    if not os.path.isfile(path):
        raise UserError(f"HellaSwag file {path!r} not found; download hellaswag_val.jsonl from "
                        f"https://github.com/rowanz/hellaswag (data/) and pass --file=PATH")
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
                ctx, endings, label = ex["ctx"], ex["endings"], int(ex["label"])
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path} line {n} is not a HellaSwag example ({type(e).__name__}: {e}); "
                                f"each line is a JSON object with ctx, endings and label")
            if not isinstance(endings, list) or len(endings) < 2 or not 0 <= label < len(endings):
                raise UserError(f"{path} line {n}: label {label} does not index its {len(endings)} endings")
            examples.append({"ctx": ctx, "endings": endings, "label": label})
    if not examples:
        raise UserError(f"{path} has no examples; give hellaswag_val.jsonl")
    return examples


def render_example(tokenizer, example, block_size):
    """(tokens, mask): one row per ending, the end-of-text token + context + ' ' + ending, padded to the
    longest row; mask is 1 on the ending's tokens. A row longer than block_size + 1 loses its start."""
    ctx = [tokenizer.eot_token] + tokenizer.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        end = tokenizer.encode(" " + ending)
        row, mask = (ctx + end)[-(block_size + 1):], ([0] * len(ctx) + [1] * len(end))[-(block_size + 1):]
        rows.append(row)
        masks.append(mask)
    width = max(len(r) for r in rows)
    tokens = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(m)] = torch.tensor(m)
    return tokens, mask


@torch.no_grad()
def ending_losses(model, tokens, mask, n_vocab):
    """(summed loss, token count) of each row's ending. Logits beyond the tokenizer's vocabulary (the
    padding rows) are left out, as generation leaves them out."""
    x, y, m = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), mask[:, 1:].float()
    logits, _ = model(x, y)  # with targets our GPT returns the logits of every position
    nats = F.cross_entropy(logits[..., :n_vocab].float().transpose(1, 2), y, reduction="none")
    return (nats * m).sum(dim=1), m.sum(dim=1)


def pick(sum_losses, counts):
    """(the ending with the lowest summed loss, the one with the lowest mean loss per token)."""
    return int(torch.argmin(sum_losses)), int(torch.argmin(sum_losses / counts))


def hellaswag_eval(model, tokenizer, examples, device, rank=0, world_size=1):
    """Sums over this rank's share of the examples (every world_size-th from rank):
    {'n', 'correct', 'correct_norm'}. Add them over ranks (all_reduce), then hellaswag_summary().
    The model is put in eval mode and back; autocast, if any, is the caller's."""
    raw = getattr(model, "module", model)  # DDP
    block_size = getattr(raw, "config").block_size
    was_training = model.training
    model.eval()
    sums = {"n": 0, "correct": 0, "correct_norm": 0}
    for example in examples[rank::world_size]:
        tokens, mask = render_example(tokenizer, example, block_size)
        sum_losses, counts = ending_losses(model, tokens.to(device), mask.to(device), tokenizer.n_vocab)
        pred, pred_norm = pick(sum_losses.double().cpu(), counts.double().cpu())
        sums["n"] += 1
        sums["correct"] += int(pred == example["label"])
        sums["correct_norm"] += int(pred_norm == example["label"])
    model.train(was_training)
    return sums


def hellaswag_summary(sums):
    """Accuracies and their standard errors from the (all-reduced) sums, with the metrics-log names."""
    n = sums["n"]

    def se(p):
        return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan")

    acc, acc_norm = sums["correct"] / n, sums["correct_norm"] / n
    return {"hellaswag_n": n, "hellaswag_acc": acc, "hellaswag_acc_se": se(acc),
            "hellaswag_acc_norm": acc_norm, "hellaswag_acc_norm_se": se(acc_norm)}


def load_model(path, dev):
    from model import GPT, GPTConfig
    from tokenizer import load_tokenizer
    ckpt = ckpt_io.load(path, map_location=dev,
                        fix="give the run folder with --out_dir (train.py writes best.pt and ckpt.pt there)")
    ckpt_io.require(ckpt, ("model", "model_args", "tokenizer"), path, "evaluate a run of this repository's train.py")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt_io.clean_state_dict(ckpt["model"]))
    return model.to(dev), load_tokenizer(ckpt["tokenizer"], bpe_file=bpe_file or None)


def main():
    globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:], help_source=__file__,
                               program='eval_hellaswag.py'))
    if not file:
        raise UserError("give the HellaSwag file with --file=PATH (hellaswag_val.jsonl; it is never downloaded)")
    if checkpoint not in ('best', 'latest'):
        raise UserError(f"checkpoint={checkpoint!r} is not 'best' or 'latest'; e.g. --checkpoint=best")
    examples = read_hellaswag(file)[:max_examples or None]
    dev = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if device == 'auto' else device)
    run_dtype = dtype if dtype != 'auto' else (
        'bfloat16' if dev.type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32')
    if run_dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"unknown dtype {run_dtype!r}; use auto, float32, bfloat16 or float16")
    path = os.path.join(out_dir, 'best.pt' if checkpoint == 'best' else 'ckpt.pt')
    model, tok = load_model(path, dev)
    autocast = contextlib.nullcontext() if run_dtype == 'float32' else torch.autocast(
        dev.type, dtype=getattr(torch, run_dtype))
    with autocast:
        s = hellaswag_summary(hellaswag_eval(model, tok, examples, dev))
    print(f"hellaswag on {s['hellaswag_n']} examples of {file} ({path}):")
    print(f"acc      {s['hellaswag_acc']:.4f} ± {s['hellaswag_acc_se']:.4f}  (lowest summed loss)")
    print(f"acc_norm {s['hellaswag_acc_norm']:.4f} ± {s['hellaswag_acc_norm_se']:.4f}  (lowest mean loss per token)")


if __name__ == '__main__':
    exit_on_user_error(main)
