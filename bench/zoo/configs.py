"""
The zoo's runs: datasets and train.py / nanoGPT configs that produce each verdict by construction.

Each run names the verdict it is built for; the generator checks the numbers (checks.py) and a
run whose metrics do not show its verdict is dropped, never kept with a wrong label.

Datasets (built by generate.py from the embedded demo corpus, byte tokenizer, vocabulary 257):
  demo   all 345 documents (~554k train tokens): a model of ~0.1M params sees < 1 epoch
  small  the first 60 documents (~133k train tokens): a few epochs without damage
  tiny   12 documents (~19k train tokens): many epochs, memorised
  micro  6 documents (a few thousand train tokens): tens of epochs in a few hundred iterations
  nano   2 documents, one of them val (7k train tokens): ~36 epochs in 500 iterations
  tiny_leak  tiny with val.bin a copy of train.bin (the validation split leaks the training data)
"""

# shared by every train.py run: CPU, fp32, eager, one thread, one micro-batch per iteration
# (the mean over the iteration is then also the last micro-batch's loss, so every format renders
# honestly), a train record every iteration
BASE = dict(device="cpu", dtype="float32", compile=False, cpu_threads=1, gradient_accumulation_steps=1,
            log_interval=1, always_save_checkpoint=False, live_diagnose=False,
            n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, dropout=0.0, bias=False,
            eval_interval=25, eval_iters=20, learning_rate=3e-3, min_lr=3e-4, warmup_iters=20,
            lr_schedule="cosine", decay_lr=True, beta2=0.99, weight_decay=0.1, grad_clip=1.0, seed=1337)

# name -> (number of demo documents, or None for all; val documents)
DATASETS = {"demo": (None, None), "small": (60, 6), "tiny": (12, 3), "micro": (6, 2), "nano": (2, 1)}
LEAKS = {"tiny_leak": "tiny"}  # name -> dataset whose train.bin becomes val.bin too


def run(name, verdict, dataset, why, fallback=(), **overrides):
    """A train.py run built for `verdict`; `fallback`: the verdicts it is relabelled to, in order, when
    its metrics do not show `verdict` (e.g. an overfitting attempt whose val never rises is repetition)."""
    cfg = dict(BASE, **overrides)
    cfg.setdefault("lr_decay_iters", cfg["max_iters"])
    return dict(name=name, verdict=verdict, dataset=dataset, why=why, trainer="train.py", config=cfg,
                fallback=list(fallback))


RUNS = [
    run("healthy_cosine", "healthy", "demo", "0.37 epoch of demo, cosine to the end: val falls throughout",
        max_iters=400),
    run("healthy_wsd", "healthy", "demo", "0.37 epoch, warmup-stable-decay, another seed",
        max_iters=400, lr_schedule="wsd", seed=7),
    run("healthy_dropout_wide", "healthy", "demo", "0.3 epoch, 3 x 96 with dropout 0.1",
        max_iters=300, n_layer=3, n_head=3, n_embd=96, dropout=0.1, learning_rate=2e-3, seed=11),
    run("healthy_short", "healthy", "demo", "a short run stopped while val still falls fast (constant LR)",
        max_iters=150, decay_lr=False, seed=3),
    run("overfit_tiny", "overfitting", "tiny", "4 x 128 (0.8M params) on 19k tokens, ~16 epochs, no dropout",
        max_iters=600, n_layer=4, n_head=4, n_embd=128, learning_rate=2e-3, min_lr=2e-4, fallback=["repeat"]),
    run("overfit_tiny_const", "overfitting", "tiny",
        "2 x 128 on 19k tokens at a constant LR, ~11 epochs, no dropout", max_iters=400, n_layer=2, n_head=2,
        n_embd=128, learning_rate=2e-3, lr_schedule="constant", seed=5, fallback=["repeat"]),
    run("overfit_micro", "overfitting", "micro", "2 x 128 on a few thousand tokens, tens of epochs, no dropout",
        max_iters=500, n_layer=2, n_head=2, n_embd=128, learning_rate=2e-3, lr_schedule="constant", seed=9,
        fallback=["repeat"]),
    run("overfit_nano", "overfitting", "nano", "2 x 128 on one document (7k tokens), ~36 epochs, no dropout",
        max_iters=500, n_layer=2, n_head=2, n_embd=128, learning_rate=2e-3, lr_schedule="constant", seed=9,
        fallback=["repeat"]),
    run("repeat_small_dropout", "repeat", "small", "2 x 64 with dropout 0.2 on 133k tokens, ~2.7 epochs",
        max_iters=700, dropout=0.2, eval_interval=50),
    run("plateau_tiny_model", "plateau", "demo", "1 x 16 (8k params) at a constant LR: flat at its capacity",
        max_iters=600, n_layer=1, n_head=1, n_embd=16, learning_rate=1e-2, decay_lr=False, eval_interval=50,
        fallback=["healthy"]),
    run("plateau_width_8", "plateau", "demo", "1 x 8 (2k params) at a constant LR: at its capacity within 200 iters",
        max_iters=600, n_layer=1, n_head=1, n_embd=8, learning_rate=2e-2, decay_lr=False, eval_interval=50,
        seed=4, fallback=["healthy"]),
    run("lr_too_low", "lr_limited", "demo", "lr 5e-5: still falling slowly, far above the same model at 3e-3",
        max_iters=400, learning_rate=5e-5, min_lr=5e-6),
    run("cosine_stopped_early", "lr_limited", "demo",
        "cosine planned over 4000 iterations, stopped at 400: the LR never decays", max_iters=400,
        lr_decay_iters=4000),
    run("diverge_lr_high", "divergence", "demo",
        "warmup to lr 2.0 over 100 iterations, no clipping: falls at first, then blows up and stays up",
        max_iters=250, learning_rate=2.0, warmup_iters=100, lr_schedule="constant", grad_clip=0.0),
    run("spikes_lr_edge", "spikes", "demo",
        "warmup to lr 0.3 over 40 iterations, no clipping: loss spikes that recover", max_iters=300,
        learning_rate=0.3, warmup_iters=40, lr_schedule="constant", grad_clip=0.0),
    run("spikes_lr_edge_b", "spikes", "demo", "lr 2e-2 without clipping, another seed", max_iters=300,
        learning_rate=2e-2, min_lr=2e-3, warmup_iters=0, grad_clip=0.0, seed=21, fallback=["healthy"]),
    run("loss_scale_fp16", "loss_scale", "demo",
        "float16 with a GradScaler on CPU, warmup to lr 2.0 without clipping: overflows halve the loss scale",
        max_iters=150, dtype="float16", learning_rate=2.0, warmup_iters=50, lr_schedule="constant",
        grad_clip=0.0, eval_interval=50, eval_iters=5, max_bad_steps=1000),
    run("lr_frozen", "not_learning", "demo",
        "learning_rate 1e-9 (train.py refuses 0): the weights do not move, val is the same at every eval",
        max_iters=150, learning_rate=1e-9, min_lr=1e-10),
    run("leak_val_is_train", "leakage", "tiny_leak",
        "the overfit_tiny_const config with val.bin = train.bin: val falls with train and equals it",
        max_iters=400, n_layer=2, n_head=2, n_embd=128, learning_rate=2e-3, lr_schedule="constant", seed=5),
]

# the unmodified nanoGPT (../shared/anchors/nanoGPT) on the same data, 4 micro-batches per iteration
NANOGPT_BASE = dict(device="cpu", dtype="float32", compile=False, gradient_accumulation_steps=4, batch_size=2,
                    block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=False, eval_interval=25,
                    eval_iters=20, log_interval=1, learning_rate=3e-3, min_lr=3e-4, warmup_iters=20,
                    beta2=0.99, weight_decay=0.1, grad_clip=1.0, always_save_checkpoint=False)


def nanogpt_run(name, verdict, dataset, why, fallback=(), **overrides):
    cfg = dict(NANOGPT_BASE, **overrides)
    cfg.setdefault("lr_decay_iters", cfg["max_iters"])
    return dict(name=name, verdict=verdict, dataset=dataset, why=why, trainer="nanoGPT", config=cfg,
                fallback=list(fallback))


NANOGPT_RUNS = [
    nanogpt_run("nanogpt_healthy", "healthy", "demo", "0.37 epoch of demo, cosine, 4 micro-batches of 2",
                max_iters=400, eval_iters=100),  # nanoGPT evaluates on random batches: more of them
    nanogpt_run("nanogpt_overfit", "overfitting", "nano",
                "2 x 128 on one document (7k tokens), ~36 epochs, 4 micro-batches",
                max_iters=500, n_layer=2, n_head=2, n_embd=128, learning_rate=2e-3, lr_decay_iters=100000,
                fallback=["repeat"]),
    nanogpt_run("nanogpt_plateau", "plateau", "demo", "1 x 16 at a constant LR, 4 micro-batches",
                max_iters=600, n_layer=1, n_head=1, n_embd=16, learning_rate=1e-2, decay_lr=False,
                eval_interval=50, fallback=["healthy"]),
    nanogpt_run("nanogpt_diverge", "divergence", "demo", "warmup to lr 2.0 over 100 iterations, no clipping",
                max_iters=250, learning_rate=2.0, warmup_iters=100, lr_decay_iters=100000, min_lr=2.0,
                grad_clip=0.0),
]

ALL_RUNS = RUNS + NANOGPT_RUNS
