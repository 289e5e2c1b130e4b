"""Capacity vs data: tokens per parameter and the compute-optimal size for this compute.

Only the *sizes* from the Chinchilla law are used (N_opt, D_opt for the compute): its losses are
nats of its own tokenizer on MassiveText, not comparable with a byte or GPT-2 BPE vocabulary.
"""
import math

from diagnose.detectors.common import fmt_count, missing, num, params
from diagnose.findings import Finding
from diagnose.scaling import compute_optimal

REPEAT_OK = 4       # epochs that are nearly as good as new data (Muennighoff et al. 2023)


def head_size(n_embd):
    """GPT-2's 64 for n_embd >= 128, else 32 (a head narrower than that learns little)."""
    return 64 if n_embd >= 128 else 32


def suggest_shape(n_target, vocab, block):
    """(n_layer, n_embd, n_head, params) of a GPT whose parameter count is closest to n_target:
    n_embd a multiple of the head size, n_embd / n_layer near GPT-2's 64 (768 / 12)."""
    from facts import padded_vocab_size, param_counts
    widths = [32, 64, 96] + list(range(128, 8193, 64))
    best = None
    for n_embd in widths:
        for n_layer in range(1, 97):
            aspect = n_embd / n_layer
            if not 8 <= aspect <= 256:
                continue
            n = param_counts(n_layer, n_embd, padded_vocab_size(vocab), block)["params"]
            score = abs(math.log(n / n_target)) + 0.05 * abs(math.log2(aspect / 64))
            if best is None or score < best[0]:
                best = (score, n_layer, n_embd, n_embd // head_size(n_embd), n)
    return best[1:]


def detect(run):
    n = params(run)
    tpi = run.tokens_per_iter()
    last = run.last_iter()
    if not n or not tpi or last is None:
        lacks = ([] if n else missing("params")) + ([] if tpi else missing("tokens_per_iter"))
        return [Finding("capacity.tokens_per_param", "info", "tokens per parameter unknown",
                        "Needs the parameter count and tokens per iteration.", missing=lacks)]
    max_iters = int(run.config.get("max_iters") or last + 1)
    tokens = tpi * max_iters
    ratio = tokens / n
    flops = 6.0 * n * tokens
    n_opt, d_opt = compute_optimal(flops)
    tt = run.train_tokens()
    ev = {"params": n, "planned_tokens": tokens, "tokens_per_param": num(ratio), "compute_flops": flops,
          "optimal_params": int(n_opt), "optimal_tokens": int(d_opt),
          "optimal_tokens_per_param": num(d_opt / n_opt)}
    if ratio < 5:
        sev, what = "notice", ("large for the tokens it will see", "a smaller model trained longer")
    elif ratio > 100:
        sev, what = "notice", ("small for this compute (over-trained for its size)", "a larger model trained on fewer tokens")
    else:
        sev, what = "info", ("close to compute-optimal", None)
    expl = (f"{fmt_count(tokens)} tokens planned ({max_iters} iterations x {tpi:,}) for {fmt_count(n)} parameters "
            f"is {ratio:.3g} tokens per parameter. For this compute ({flops:.2g} FLOPs = 6 N D) the Chinchilla "
            f"law (Hoffmann et al. 2022, Besiroglu et al. 2024 refit) puts the lowest loss at "
            f"~{fmt_count(n_opt)} parameters on {fmt_count(d_opt)} tokens, ~{d_opt / n_opt:.0f} tokens per "
            f"parameter (Hoffmann et al.: ~20). The model is {what[0]}")
    expl += f": {what[1]} would reach a lower loss for the same compute." if what[1] else "."
    recs = []
    vocab, block = run.vocab_size(), run.config.get("block_size")
    if what[1] and vocab and block:
        n_layer, n_embd, n_head, n_s = suggest_shape(n_opt, vocab, int(block))
        iters = max(1, int(round(d_opt / tpi)))
        ev["suggested"] = {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "params": n_s,
                           "max_iters": iters, "tokens": iters * tpi}
        recs = [f"--n_layer={n_layer}", f"--n_embd={n_embd}", f"--n_head={n_head}",
                f"--max_iters={iters}", f"--lr_decay_iters={iters}"]
        expl += (f" A coherent shape of that size: n_layer={n_layer}, n_embd={n_embd}, n_head={n_head} "
                 f"(head size {n_embd // n_head}, {fmt_count(n_s)} parameters) for {iters} iterations.")
        if n_s > 2 * n:
            recs.append("a bigger model needs more memory: keep tokens/iter by lowering --batch_size "
                        "and raising --gradient_accumulation_steps by the same factor")
    if tt:
        ev["train_tokens"] = tt
        if tokens > REPEAT_OK * tt:
            expl += (f" The dataset has {fmt_count(tt)} unique tokens, so this plan repeats it "
                     f"{tokens / tt:.3g} times; past ~{REPEAT_OK} epochs repeats are worth less than new "
                     "data (see data.repetition).")
        if what[1] and "suggested" in ev:
            e_opt = ev["suggested"]["tokens"] / tt
            expl += (f" The suggested run would see the data {e_opt:.3g} times"
                     + (", within what repeats well." if e_opt <= REPEAT_OK else
                        f": more than ~{REPEAT_OK}, so it needs more unique data too."))
    title = f"{ratio:.3g} tokens per parameter at the planned end ({fmt_count(tokens)} tokens, {fmt_count(n)} params): {what[0]}"
    return [Finding("capacity.tokens_per_param", sev, title, expl, evidence=ev, recommendations=recs)]
