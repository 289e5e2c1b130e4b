"""
Sample text from a trained model:
$ python sample.py --out_dir=out-demo --start="def " --num_samples=3 --max_new_tokens=200
The prompt can be read from a file with --start=FILE:prompt.txt. Text is encoded and
decoded with the tokenizer recorded in the checkpoint (from the dataset's meta.json),
so the dataset folder is not needed. GPT-2 itself (or a GPT-2 in the Hugging Face layout):
$ python sample.py --init_from=gpt2 --start="Hello, I'm a language model,"
"""
import math
import os
import sys

try:  # importing torch takes seconds: a Ctrl-C meanwhile should not print a traceback
    import torch

    import checkpoint as ckpt_io
    import hf_gpt2
    import runtime
    from configurator import Config, configure
    from errors import UserError, exit_on_user_error
    from model import GPT, GPTConfig
    from nanogpt_compat import convert as nanogpt_convert, is_nanogpt_checkpoint
    from runtime import DTYPES
except KeyboardInterrupt:
    sys.exit(130)

_before_defaults = set(globals())
# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume': a checkpoint of out_dir; or gpt2, gpt2-medium, gpt2-large, gpt2-xl (Hugging Face cache), hf:PATH (a local folder)
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


def validate(c):
    """One line for each impossible sampling setting."""
    checks = (
        (c['init_from'] == 'resume' or hf_gpt2.is_hf_source(c['init_from']),
         f"init_from={c['init_from']!r} is not supported",
         f"use 'resume' (a run of --out_dir), {', '.join(hf_gpt2.GPT2_HUB_NAMES)} or hf:PATH"),
        (c['checkpoint'] in ('best', 'latest'), f"checkpoint={c['checkpoint']!r} is not 'best' or 'latest'",
         "e.g. --checkpoint=best"),
        (c['num_samples'] >= 1, f"num_samples={c['num_samples']} must be at least 1", "e.g. --num_samples=1"),
        (c['max_new_tokens'] >= 1, f"max_new_tokens={c['max_new_tokens']} must be at least 1",
         "e.g. --max_new_tokens=200"),
        (math.isfinite(c['temperature']) and c['temperature'] >= 0,
         f"temperature={c['temperature']} is negative or not finite", "use 0 (greedy) or more, e.g. --temperature=0.8"),
        (c['top_k'] >= 0, f"top_k={c['top_k']} is negative", "use 0 for all tokens, or e.g. --top_k=200"),
        (c['dtype'] in DTYPES, f"unknown dtype {c['dtype']!r}", f"use one of {', '.join(DTYPES)}"),
        (c['device'] in ('auto', 'cpu', 'cuda', 'mps') or c['device'].startswith('cuda:'),
         f"unknown device {c['device']!r}", "use auto, cpu, cuda, cuda:N or mps"),
    )
    for ok, problem, fix in checks:
        if not ok:
            raise UserError(f"{problem}; {fix}")


def checkpoint_path(out_dir, which):
    """best.pt or ckpt.pt; 'best' falls back to ckpt.pt (with a note) when best.pt is missing."""
    best, latest = os.path.join(out_dir, 'best.pt'), os.path.join(out_dir, 'ckpt.pt')
    if which == 'best' and not os.path.exists(best) and os.path.exists(latest):
        print(f"note: {best} not found, sampling from {latest}", file=sys.stderr)
        return latest
    return best if which == 'best' else latest


def load_model(path, rt):
    ckpt = ckpt_io.load(path, map_location=rt.device,
                        fix="give the run folder with --out_dir (train.py writes best.pt and ckpt.pt there)")
    if is_nanogpt_checkpoint(ckpt):
        ckpt, note = nanogpt_convert(ckpt, path)
        print(note, file=sys.stderr)
    ckpt_io.require(ckpt, ('model', 'model_args', 'tokenizer'), path, "sample from a run of this repository's train.py")
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt_io.clean_state_dict(ckpt['model']))
    return model.eval().to(rt.device), ckpt['tokenizer']


def load_hf_model(init_from, rt):
    """GPT-2 weights in the Hugging Face layout and their tokenizer."""
    model_args, state_dict, notes = hf_gpt2.load_hf_gpt2(init_from)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(state_dict)
    return model.eval().to(rt.device), hf_gpt2.tokenizer_info_for(model_args, init_from)


def read_prompt(start):
    if not start.startswith('FILE:'):
        return start
    path = start[len('FILE:'):]
    if not os.path.isfile(path):
        raise UserError(f"prompt file {path} not found; give --start=FILE:path/to/prompt.txt")
    with open(path, encoding='utf-8') as f:
        return f.read()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    c = Config(configure({k: globals()[k] for k in config_keys}, argv, help_source=__file__, program='sample.py'))
    validate(c)
    rt = runtime.setup(c.device, c.dtype, ranks=(0, None, 1))
    torch.manual_seed(c.seed)
    if c.init_from == 'resume':
        model, tokenizer_info = load_model(checkpoint_path(c.out_dir, c.checkpoint), rt)
    else:
        model, tokenizer_info = load_hf_model(c.init_from, rt)
    if c.compile:
        model.forward = torch.compile(model.forward)  # generate() calls it token by token
    try:
        from tokenizer import GPT2RanksError, load_tokenizer, prompt_ids
    except ImportError as e:
        raise UserError(f"tokenizer.py cannot be imported ({e}); run sample.py from the repository root")
    try:
        tok = load_tokenizer(tokenizer_info, bpe_file=c.bpe_file or None)
    except GPT2RanksError as e:
        raise UserError(f"{e}; give sample.py that file with --bpe_file=PATH") from None
    ids, skip = prompt_ids(tok, read_prompt(c.start))  # after an end-of-text token, as in training
    block = model.config.block_size
    if len(ids) > block:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last {block}", file=sys.stderr)
    x = torch.tensor(ids, dtype=torch.long, device=rt.device)[None, ...]
    with torch.no_grad(), rt.autocast:
        for _ in range(c.num_samples):
            y = model.generate(x, c.max_new_tokens, temperature=c.temperature, top_k=c.top_k or None)
            print(tok.decode(y[0, skip:].tolist()))
            print('---------------')


if __name__ == '__main__':
    exit_on_user_error(main)
