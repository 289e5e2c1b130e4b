"""
The GPT-2 recipe against the modern one, side by side on CPU, on the same text and token budget.

    python bench/bench_recipe.py                       # baseline vs modern, 2 seeds, + ablation table
    python bench/bench_recipe.py --no-ablation --seeds 1

Both recipes train the same shape (the reference run's 12 x 384 with 12 heads scaled down in
depth and width only: head size 32 kept) on data/demo (CPython's documentation, byte tokens;
prepared here when missing), fp32, no compile. Printed: each recipe's final val loss, the
fraction of the baseline's tokens the modern recipe needs to reach the baseline's final val
loss (interpolated between its evals), the modern recipe's final loss when its whole schedule
is squeezed into half the tokens, and an ablation table (each option alone on the baseline).

train.py takes every option now (e.g. --optimizer=muon --rope=True --norm=rmsnorm, or
config/train_fineweb_4070_modern.py); this bench keeps its own minimal loop, for the float32
Newton-Schulz below and no per-run start-up, built from the project's parts: model.GPT, optim.build, dataloader's
TrainLoader and fixed_windows, and facts.lr_at for the schedules. The loop does what train.py's
does on CPU at fp32 without gradient accumulation: set each group's LR from the schedule's
multiplier, forward, backward, clip at 1.0, step.

One change to torch for speed: torch.optim.Muon orthogonalises in bfloat16, and bfloat16
matmuls are ~28x slower than float32 ones on an AVX2 CPU (measured: 69 ms against 2.5 ms for
the 128 x 512 products of one Newton-Schulz step); here that iteration runs in float32 (the same
iteration, more precise), which makes a Muon step cost what an AdamW step costs. On a GPU,
train.py uses torch's own.
"""
import argparse
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import facts  # noqa: E402
import optim  # noqa: E402
from dataloader import TokenFile, TrainLoader, fixed_windows, to_host  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

DATA = os.path.join(ROOT, 'data', 'demo')


def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz in float32 instead of bfloat16."""
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


def orthogonalise_in_float32():
    import torch.optim._muon as muon_impl
    if not hasattr(muon_impl, '_zeropower_via_newtonschulz'):
        sys.exit("this torch's Muon has no _zeropower_via_newtonschulz to run in float32; update the bench")
    muon_impl._zeropower_via_newtonschulz = newton_schulz_float32

# the reference config's recipe (config/train_fineweb_4070.py), schedule proportions kept:
# warmup 500 / 20000 iterations, cosine to lr / 10
BASELINE = dict(model={}, dropout=0.1, optimizer='adamw', learning_rate=1e-3, min_lr=1e-4, beta2=0.99,
                weight_decay=0.1, lr_schedule='cosine', warmup_frac=0.025, decay_frac=0.2)
# config/train_fineweb_4070_modern.py's recipe; dropout, weight decay, betas and warmup as the baseline's
MODERN = dict(model=dict(rope=True, norm='rmsnorm', qk_norm=True, mlp_act='relu2', tie_embeddings=False,
                         zero_init=True, logit_softcap=30.0),
              dropout=0.1, optimizer='muon', learning_rate=3e-3, muon_lr=3e-3, min_lr=0.0, beta2=0.99,
              weight_decay=0.1, lr_schedule='wsd', warmup_frac=0.025, decay_frac=0.2)
# each change alone on top of the baseline (the modern recipe's value of it)
ABLATIONS = {
    'rope': dict(model=dict(rope=True)),
    'rmsnorm': dict(model=dict(norm='rmsnorm')),
    'qk_norm': dict(model=dict(qk_norm=True)),
    'relu2': dict(model=dict(mlp_act='relu2')),
    'untied head': dict(model=dict(tie_embeddings=False)),
    'zero_init': dict(model=dict(zero_init=True)),
    'softcap 30': dict(model=dict(logit_softcap=30.0)),
    'muon': dict(optimizer='muon', muon_lr=MODERN['muon_lr']),
    'wsd': dict(lr_schedule='wsd', min_lr=0.0, decay_frac=MODERN['decay_frac']),
    'adamw lr 3e-3': dict(learning_rate=3e-3, min_lr=3e-4),
}


# each model option switched back to GPT-2's in the modern recipe (--leave-one-out)
GPT2_VALUES = dict(rope=False, norm='layernorm', qk_norm=False, mlp_act='gelu', tie_embeddings=True,
                   zero_init=False, logit_softcap=0.0)


def recipe_with(base, change):
    r = dict(base, **{k: v for k, v in change.items() if k != 'model'})
    r['model'] = dict(base['model'], **change.get('model', {}))
    return r


def lr_config(r, iters):
    return dict(learning_rate=r['learning_rate'], min_lr=r['min_lr'], warmup_iters=round(r['warmup_frac'] * iters),
                lr_decay_iters=iters, max_iters=iters, lr_schedule=r['lr_schedule'], decay_frac=r['decay_frac'])


def train(r, shape, seed, iters, eval_every, train_file, val_windows):
    """Train one recipe; [(tokens, val loss)] at every eval, the last at the end."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=shape['n_layer'], n_head=shape['n_head'], n_embd=shape['n_embd'],
                          block_size=shape['block'], vocab_size=facts.padded_vocab_size(257), token_vocab_size=257,
                          dropout=r['dropout'], **r['model']))
    opt = optim.build(model, r['optimizer'], learning_rate=r['learning_rate'], muon_lr=r.get('muon_lr', 0.0),
                      weight_decay=r['weight_decay'], betas=(0.9, r['beta2']), device_type='cpu')
    loader = TrainLoader(train_file, shape['block'], shape['batch'], 1, 0, 1, seed, 'epoch', torch.device('cpu'))
    sched = lr_config(r, iters)
    tokens_per_iter = shape['batch'] * shape['block']
    curve = []
    for it in range(iters + 1):
        if it % eval_every == 0 or it == iters:
            curve.append((it * tokens_per_iter, evaluate(model, val_windows)))
        if it == iters:
            break
        opt.set_lr_multiplier(facts.lr_from_config(it, sched) / r['learning_rate'])
        x, y = loader.next_batch()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    loader.close()
    return curve


@torch.no_grad()
def evaluate(model, windows):
    model.eval()
    losses = [model(x, y)[1].item() for x, y in windows]
    model.train()
    return sum(losses) / len(losses)


def tokens_to_reach(curve, target):
    """Tokens at which the val curve first reaches target, linear between evals; None if never."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return t1 if l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def val_windows(shape, count):
    f = TokenFile(os.path.join(DATA, 'val.bin'), 'uint16')
    starts = fixed_windows(f, shape['block'], count * shape['batch'], seed=0)
    cpu = torch.device('cpu')
    return [to_host(f.rows(starts[i:i + shape['batch']], shape['block'] + 1), cpu)
            for i in range(0, len(starts), shape['batch'])]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float('nan')


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--n-layer', type=int, default=4)
    p.add_argument('--n-embd', type=int, default=128)
    p.add_argument('--block', type=int, default=128)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--iters', type=int, default=150)
    p.add_argument('--eval-every', type=int, default=15)
    p.add_argument('--eval-batches', type=int, default=4)
    p.add_argument('--seeds', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--no-ablation', action='store_true')
    p.add_argument('--leave-one-out', metavar='OPTIONS',
                   help="only train the modern recipe, whole and without each of these comma-separated model "
                        "options (e.g. norm,qk_norm,zero_init), seed 0")
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help="override a modern-recipe setting, e.g. --set muon_lr=0.01 (for measuring the recipe)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    orthogonalise_in_float32()
    if not os.path.exists(os.path.join(DATA, 'meta.json')):
        subprocess.run([sys.executable, os.path.join(ROOT, 'data', 'fineweb_single', 'prepare.py'), '--demo'],
                       check=True)
    modern = dict(MODERN)
    for kv in args.set:
        k, v = kv.split('=', 1)
        modern[k] = type(MODERN[k])(v)
    shape = dict(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_embd // 32, block=args.block, batch=args.batch)
    train_file = TokenFile(os.path.join(DATA, 'train.bin'), 'uint16')
    windows = val_windows(shape, args.eval_batches)
    tokens = args.iters * args.batch * args.block
    print(f"shape {shape}, {args.iters} iterations = {tokens:,} tokens ({tokens / train_file.num_tokens:.2f} epochs "
          f"of data/demo), {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    t_start = time.time()
    if args.leave_one_out:
        leave_one_out(modern, args.leave_one_out.split(','), shape, args, train_file, windows)
        print(f"total {time.time() - t_start:.0f} s, load average now {os.getloadavg()[0]:.1f}")
        return
    runs = {'baseline': [], 'modern': [], 'modern, half the tokens': []}
    for seed in range(args.seeds):
        runs['baseline'].append(train(BASELINE, shape, seed, args.iters, args.eval_every, train_file, windows))
        runs['modern'].append(train(modern, shape, seed, args.iters, args.eval_every, train_file, windows))
        runs['modern, half the tokens'].append(
            train(modern, shape, seed, args.iters // 2, args.eval_every, train_file, windows))
        print(f"  seed {seed}: baseline {runs['baseline'][-1][-1][1]:.4f}, modern {runs['modern'][-1][-1][1]:.4f}, "
              f"modern at half {runs['modern, half the tokens'][-1][-1][1]:.4f}  ({time.time() - t_start:.0f} s)")
    report(runs, tokens)
    if not args.no_ablation:
        ablation(runs['baseline'], shape, args, train_file, windows, tokens)
    print(f"total {time.time() - t_start:.0f} s, load average now {os.getloadavg()[0]:.1f}")


def report(runs, tokens):
    print(f"\n{'recipe':<26} {'final val loss (per seed)':<28} mean")
    for name, curves in runs.items():
        finals = [c[-1][1] for c in curves]
        print(f"{name:<26} {', '.join(f'{x:.4f}' for x in finals):<28} {mean(finals):.4f}")
    fractions = [(tokens_to_reach(m, b[-1][1]) or float('nan')) / tokens for b, m in zip(runs['baseline'], runs['modern'])]
    print(f"tokens the modern recipe needs to reach the baseline's final val loss: "
          f"{', '.join(f'{f:.2f}' for f in fractions)} x the baseline's (goal <= 0.5)")
    half = [b[-1][1] - h[-1][1] for b, h in zip(runs['baseline'], runs['modern, half the tokens'])]
    print(f"modern with half the tokens ends below the baseline's final loss by: {', '.join(f'{d:+.4f}' for d in half)}")


def ablation(baselines, shape, args, train_file, windows, tokens):
    base_final = baselines[0][-1][1]
    print(f"\nablation, seed 0: each option alone on the baseline (final {base_final:.4f})")
    print(f"{'option':<14} {'final val':>9} {'vs baseline':>11} {'tokens to baseline final':>25}")
    for name, change in ABLATIONS.items():
        curve = train(recipe_with(BASELINE, change), shape, 0, args.iters, args.eval_every, train_file, windows)
        reach = tokens_to_reach(curve, base_final)
        frac = f"{reach / tokens:.2f}x" if reach is not None else "not reached"
        print(f"{name:<14} {curve[-1][1]:>9.4f} {curve[-1][1] - base_final:>+11.4f} {frac:>25}", flush=True)


def leave_one_out(modern, options, shape, args, train_file, windows):
    whole = train(modern, shape, 0, args.iters, args.eval_every, train_file, windows)[-1][1]
    print(f"\nleave one out, seed 0: the modern recipe (final {whole:.4f}) without one option")
    print(f"{'without':<16} {'final val':>9} {'vs modern':>10}")
    for name in options:
        curve = train(recipe_with(modern, dict(model={name: GPT2_VALUES[name]})), shape, 0, args.iters,
                      args.eval_every, train_file, windows)
        print(f"{name:<16} {curve[-1][1]:>9.4f} {curve[-1][1] - whole:>+10.4f}", flush=True)


if __name__ == '__main__':
    main()
