"""Capacity vs data: tokens per parameter and the compute-optimal size for this compute."""
from diagnose.detectors.common import fmt_tokens, missing, num, params
from diagnose.findings import Finding
from diagnose.scaling import chinchilla_loss, compute_optimal


def suggest_shape(n_target, vocab, block):
    """(n_layer, n_embd) whose parameter count is closest to n_target, n_embd/n_layer near 64 (GPT-2's)."""
    from facts import padded_vocab_size, param_counts
    best = None
    for n_layer in range(2, 49):
        for n_embd in range(128, 4097, 64):
            if not 32 <= n_embd / n_layer <= 128:
                continue
            n = param_counts(n_layer, n_embd, padded_vocab_size(vocab), block)["params"]
            score = abs(n / n_target - 1) + 0.05 * abs(n_embd / n_layer / 64 - 1)
            if best is None or score < best[0]:
                best = (score, n_layer, n_embd, n)
    return best[1:]


def detect(run):
    n = params(run)
    tpi = run.tokens_per_iter()
    last = run.last_iter()
    if not n or not tpi or last is None:
        lacks = ([] if n else missing("params")) + ([] if tpi else missing("tokens_per_iter"))
        return [Finding("capacity.tokens_per_param", "info", "tokens per parameter unknown",
                        "Needs the parameter count and tokens per iteration.", missing=lacks)]
    max_iters = run.config.get("max_iters") or last + 1
    tokens = tpi * max_iters
    ratio = tokens / n
    flops = 6.0 * n * tokens
    n_opt, d_opt = compute_optimal(flops)
    ev = {"params": n, "planned_tokens": tokens, "tokens_per_param": num(ratio), "compute_flops": flops,
          "optimal_params": int(n_opt), "optimal_tokens": int(d_opt),
          "chinchilla_loss_this": num(chinchilla_loss(n, tokens)), "chinchilla_loss_optimal": num(chinchilla_loss(n_opt, d_opt))}
    recs = []
    vocab, block = run.vocab_size(), run.config.get("block_size")
    if vocab and block and (n_opt / n > 2 or n / n_opt > 2):
        n_layer, n_embd, n_s = suggest_shape(n_opt, vocab, int(block))
        ev["suggested"] = {"n_layer": n_layer, "n_embd": n_embd, "params": n_s,
                           "max_iters": int(d_opt / tpi)}
        recs = [f"--n_layer={n_layer}", f"--n_embd={n_embd}", f"--n_head={max(1, n_embd // 64)}",
                f"--max_iters={int(d_opt / tpi)}"]
    if ratio < 5:
        sev, what = "notice", "the model is large for the tokens it will see: more iterations (or a smaller model) use the compute better"
    elif ratio > 100:
        sev, what = "notice", "the model is small for this compute: a larger model trained on fewer tokens would reach a lower loss"
    else:
        sev, what = "info", "close to compute-optimal"
    tt = run.train_tokens()
    data_note = ""
    if tt and tokens > 4 * tt:
        data_note = (f" But the dataset has only {fmt_tokens(tt)} unique tokens: beyond ~4 epochs more "
                     "tokens are repeats (see data.repetition), so more unique data comes first.")
    return [Finding("capacity.tokens_per_param", sev,
                    f"{ratio:.3g} tokens per parameter ({fmt_tokens(tokens)} tokens, {n / 1e6:.1f}M params): {what.split(':')[0]}",
                    f"Chinchilla (Besiroglu et al. 2024 refit) puts the compute-optimal size for "
                    f"{flops:.2g} FLOPs at {n_opt / 1e6:.0f}M parameters on {fmt_tokens(d_opt)} tokens "
                    f"(~{d_opt / n_opt:.0f} tokens per parameter); {what}.{data_note}",
                    evidence=ev, recommendations=recs)]
