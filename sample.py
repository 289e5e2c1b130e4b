"""
Sample text from a trained model:
$ python sample.py --out_dir=out-demo --start="def " --num_samples=3 --max_new_tokens=200
The prompt can be read from a file with --start=FILE:prompt.txt. Text is encoded and
decoded with the tokenizer recorded in the checkpoint (from the dataset's meta.json),
so the dataset folder is not needed.
"""
import contextlib
import os
import sys

try:  # importing torch takes seconds: a Ctrl-C meanwhile should not print a traceback
    import torch

    import checkpoint as ckpt_io
    from configurator import configure
    from errors import UserError, exit_on_user_error
    from model import GPT, GPTConfig
except KeyboardInterrupt:
    sys.exit(130)

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
out_dir = 'out'  # the run folder with best.pt / ckpt.pt
checkpoint = 'best'  # 'best' (best.pt, lowest val loss) or 'latest' (ckpt.pt)
start = ''  # the prompt, or FILE:path to read it from a file; '' starts a new document
num_samples = 3  # number of samples
max_new_tokens = 200  # tokens generated per sample
temperature = 0.8  # 1.0 samples the model's distribution, lower is more conservative, 0 is greedy
top_k = 200  # sample only among the top_k most likely tokens; 0 for all
seed = 1337  # sampling seed
device = 'auto'  # 'auto' (cuda, else mps, else cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto', 'float32', 'bfloat16', 'float16'
compile = False  # torch.compile the model (slow to start, rarely worth it for sampling)
bpe_file = ''  # GPT-2 ranks file for offline use ('' searches tiktoken's caches)
# -----------------------------------------------------------------------------
config_keys = [k for k in globals() if k not in _before_defaults and not k.startswith('_')]


def checkpoint_path(out_dir, which):
    if which not in ('best', 'latest'):
        raise UserError(f"checkpoint={which!r} is not 'best' or 'latest'; e.g. --checkpoint=best")
    best, latest = os.path.join(out_dir, 'best.pt'), os.path.join(out_dir, 'ckpt.pt')
    if which == 'best' and not os.path.exists(best) and os.path.exists(latest):
        print(f"note: {best} not found, sampling from {latest}", file=sys.stderr)
        return latest
    return best if which == 'best' else latest


def main():
    globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:], help_source=__file__,
                               program='sample.py'))
    if num_samples < 1 or max_new_tokens < 0:
        raise UserError("num_samples must be at least 1 and max_new_tokens at least 0; e.g. --num_samples=1")
    if temperature < 0:
        raise UserError(f"temperature={temperature} is negative; use 0 (greedy) or more")
    if device == 'auto':
        dev = 'cuda' if torch.cuda.is_available() else (
            'mps' if getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available() else 'cpu')
    else:
        dev = device
    if dev.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f"device {dev!r} but CUDA is not available; use --device=cpu (or auto)")
    dev = torch.device(dev)
    run_dtype = dtype
    if run_dtype == 'auto':
        run_dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if dev.type == 'cuda' else 'float32'
    if run_dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"unknown dtype {run_dtype!r}; use auto, float32, bfloat16 or float16")
    torch.manual_seed(seed)

    ckpt = ckpt_io.load(checkpoint_path(out_dir, checkpoint), map_location=dev,
                        fix="give the run folder with --out_dir (train.py writes best.pt and ckpt.pt there)")
    ckpt_io.require(ckpt, ('model', 'model_args', 'tokenizer'), checkpoint_path(out_dir, checkpoint),
                    "sample from a run of this repository's train.py")
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt_io.clean_state_dict(ckpt['model']))
    model.eval().to(dev)
    if compile:
        model.forward = torch.compile(model.forward)  # generate() calls it token by token

    try:
        from tokenizer import load_tokenizer
    except ImportError as e:
        raise UserError(f"tokenizer.py cannot be imported ({e}); run sample.py from the repository root")
    tok = load_tokenizer(ckpt['tokenizer'], bpe_file=bpe_file or None)

    prompt = start
    if prompt.startswith('FILE:'):
        path = prompt[len('FILE:'):]
        if not os.path.isfile(path):
            raise UserError(f"prompt file {path} not found; give --start=FILE:path/to/prompt.txt")
        with open(path, encoding='utf-8') as f:
            prompt = f.read()
    # documents start after an end-of-text token, as in the training data
    ids = [tok.eot_token] + tok.encode(prompt)
    block = ckpt['model_args']['block_size']
    if len(ids) > block:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last {block}", file=sys.stderr)
    x = torch.tensor(ids, dtype=torch.long, device=dev)[None, ...]
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[run_dtype]
    ctx = contextlib.nullcontext() if run_dtype == 'float32' else torch.autocast(dev.type, dtype=ptdtype)
    with torch.no_grad(), ctx:
        for _ in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None)
            print(tok.decode(y[0, 1:].tolist()))
            print('---------------')


if __name__ == '__main__':
    exit_on_user_error(main)
