"""Which training recipe a run used: its optimizer and the model options that depart from GPT-2's
(model.GPTConfig's defaults, repeated here because diagnose never imports model.py/torch)."""

GPT2_OPTIONS = {"rope": False, "norm": "layernorm", "qk_norm": False, "mlp_act": "gelu",
                "tie_embeddings": True, "zero_init": False, "logit_softcap": 0.0}
MODERN_CONFIG = "config/train_fineweb_4070_modern.py"


def recipe_of(run):
    """(optimizer, {option: value} of the options not at GPT-2's value), or None when the run record
    says neither (a log of another trainer, or one written before the options existed)."""
    c = run.config
    if "optimizer" not in c and not any(k in c for k in GPT2_OPTIONS):
        return None
    changed = {k: c[k] for k, off in GPT2_OPTIONS.items() if k in c and c[k] != off}
    return str(c.get("optimizer", "adamw")), changed


def is_gpt2_recipe(run):
    r = recipe_of(run)
    return r is not None and r[0] == "adamw" and not r[1]


def recipe_line(run):
    """One line for the report: the optimizer (with Muon's LR) and the options, or None."""
    r = recipe_of(run)
    if r is None:
        return None
    opt, changed = r
    words = f"optimizer {opt}" + (f" (muon_lr {run.config['muon_lr']:g})" if opt == "muon" and
                                  isinstance(run.config.get("muon_lr"), (int, float)) else "")
    if not changed:
        return words + ", GPT-2 model (learned positions, LayerNorm, GELU, tied head)"
    return words + ", model options " + ", ".join(f"{k}={v}" for k, v in changed.items())


def modern_recipe_advice(run):
    """The modern config as a command line with its one-line why, for a GPT-2-recipe run; else None."""
    if not is_gpt2_recipe(run):
        return None
    return (f"python train.py {MODERN_CONFIG}  (the modern recipe, Muon + RoPE + RMSNorm + ...: a lower loss "
            "for the same tokens on this run's model size; its comments give the measured gains)")
