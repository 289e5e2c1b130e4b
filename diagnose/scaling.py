"""
Published scaling-law constants the detectors use, in one place.

- Chinchilla (Hoffmann et al. 2022) L(N, D) = E + A/N^alpha + B/D^beta with the refit
  constants of Besiroglu et al. (2024, "Chinchilla Scaling: A replication attempt").
- Data-constrained scaling (Muennighoff et al. 2023): repeated tokens are worth less.
- GPT-3 (Brown et al. 2020, Table 2.1): peak LR by model size.
"""
import math

E, A, B, ALPHA, BETA = 1.8172, 482.01, 2085.43, 0.3478, 0.3658   # Besiroglu et al. 2024
R_D_STAR = 15.4   # Muennighoff et al. 2023: repetitions at which repeated data's value decays by 1/e

# (params, peak LR, batch tokens) of the GPT-3 family
GPT3_LR = [(125e6, 6.0e-4, 0.5e6), (350e6, 3.0e-4, 0.5e6), (760e6, 2.5e-4, 0.5e6),
           (1.3e9, 2.0e-4, 1e6), (2.7e9, 1.6e-4, 1e6), (6.7e9, 1.2e-4, 2e6),
           (13e9, 1.0e-4, 2e6), (175e9, 0.6e-4, 3.2e6)]


def chinchilla_loss(n, d):
    return E + A / n ** ALPHA + B / d ** BETA


def compute_optimal(flops):
    """(N_opt, D_opt) minimising chinchilla_loss at C = 6 N D."""
    g = (ALPHA * A / (BETA * B)) ** (1.0 / (ALPHA + BETA))
    n = g * (flops / 6.0) ** (BETA / (ALPHA + BETA))
    return n, flops / 6.0 / n


def effective_tokens(unique, seen):
    """Tokens of new data that `seen` tokens drawn from `unique` ones are worth (Muennighoff et al.)."""
    if unique <= 0:
        return 0.0
    if seen <= unique:
        return float(seen)
    repeats = seen / unique - 1.0
    return unique * (1.0 + R_D_STAR * (1.0 - math.exp(-repeats / R_D_STAR)))


# Below GPT-3's smallest model the table says nothing: small models train well anywhere from ~1e-3
# (nanoGPT's shakespeare_char, 10M params; this project's reference run, 41M) to ~1e-2.
SMALL_LR_LOW, SMALL_LR_HIGH = 3e-4, 3e-2


def gpt3_lr(params):
    """GPT-3's peak LR for a model size, log-log interpolated inside the table, never extrapolated:
    below 125M it is the 125M value (a floor, not a prediction), above 175B the 175B value."""
    xs = [math.log(p) for p, _, _ in GPT3_LR]
    ys = [math.log(lr) for _, lr, _ in GPT3_LR]
    x = math.log(max(params, 1.0))
    if x <= xs[0]:
        return math.exp(ys[0])
    for i in range(len(xs) - 1):
        if x <= xs[i + 1]:
            t = (x - xs[i]) / (xs[i + 1] - xs[i])
            return math.exp(ys[i] + t * (ys[i + 1] - ys[i]))
    return math.exp(ys[-1])
