"""
Checkpoint files: written atomically (atomic.py: a temporary name, fsync, rename), so a crash
or a kill mid-write leaves the previous checkpoint intact; loaded with weights_only=True (no
arbitrary code from a checkpoint file) after a CRC check of every member.
"""
import gc
import os
import shutil
import zipfile

import torch

import facts
from atomic import stale_temporaries, write_atomic
from errors import UserError

CKPT, BEST = "ckpt.pt", "best.pt"


def save_atomic(obj, path):
    def write(tmp):
        try:
            torch.save(obj, tmp)
            return
        except RuntimeError as e:  # torch's serializer on a full disk: an OSError like any other
            if not is_write_failure(e):
                raise
            said = str(e).strip().splitlines()[0].rpartition("] . ")[2][:80]  # 'unexpected pos A vs B'
        # torch's failed writer still holds the file open from its frames: freed, the temporary's
        # space comes back as soon as atomic.py removes it
        gc.collect()
        raise OSError(None, f"no room to write it: a full disk or a file-size limit; torch: {said}", tmp)
    write_atomic(path, write)


def copy_atomic(src, path):
    """One checkpoint file from another (best.pt -> ckpt.pt) without serializing the state twice."""
    write_atomic(path, lambda tmp: shutil.copyfile(src, tmp))


def save_run(state, out_dir, best):
    """ckpt.pt, and best.pt first when best: a kill between the two writes then leaves best.pt
    ahead of ckpt.pt, which a resume tolerates (keep_better_best), never a stale best.pt beside
    a newer ckpt.pt. Returns ckpt.pt's path."""
    ckpt_path, best_path = os.path.join(out_dir, CKPT), os.path.join(out_dir, BEST)
    if best:
        save_atomic(state, best_path)
        copy_atomic(best_path, ckpt_path)
    else:
        save_atomic(state, ckpt_path)
    return ckpt_path


def remove_stale_temporaries(out_dir):
    """Delete ckpt.pt.tmpPID / best.pt.tmpPID files that a killed run left half-written
    (each as large as a checkpoint: repeated kills would fill the disk). Nothing ever loads them."""
    for path in stale_temporaries(out_dir, (CKPT, BEST)):
        os.remove(path)


def load(path, map_location="cpu", fix="check --out_dir, or start with --init_from=scratch"):
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found; {fix}")
    try:
        with zipfile.ZipFile(path) as z:  # torch.load does not check the CRCs: a flipped bit would load
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"{bad} fails its CRC check")
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupted or foreign file
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}: {first}); "
                        f"use another checkpoint, or {fix}")


def require(ckpt, keys, path, fix):
    """A one-line error when a checkpoint lacks what this program needs (a nanoGPT or foreign file)."""
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a checkpoint of this repository; {fix}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this repository's train.py (it lacks "
                        f"{', '.join(missing)}); {fix}")


def keep_better_best(out_dir, best_val_loss, best_iter):
    """On resume: best.pt is written before ckpt.pt, so a kill between the two leaves a best.pt
    better than ckpt.pt knows of; keep its value, so that a worse val never overwrites it."""
    try:
        best = torch.load(os.path.join(out_dir, BEST), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing or unreadable: ckpt.pt's record stands
        return best_val_loss, best_iter
    if best.get("best_val_loss", float("inf")) < best_val_loss:
        return best["best_val_loss"], best.get("iter_num")
    return best_val_loss, best_iter


def clean_state_dict(state_dict):
    """Drop the prefixes torch.compile ('_orig_mod.') and DDP ('module.') add."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


# -----------------------------------------------------------------------------
# the space checkpoints need: checked at start-up, named when a save fails

TORCH_WRITE_FAILED = ("inline_container.cc", "unexpected pos", "file write failed")  # torch's serializer
SAVE_OVERHEAD_BYTES = 64 << 10  # config, RNG states, loader state, the zip's headers (a few KB to ~40 KB)


def checkpoint_bytes(config, vocab_size):
    """About the size of one checkpoint file: the fp32 weights and the optimizer's state (AdamW: 2
    fp32 moments per parameter; Muon: 1 for the hidden matrices), from facts' parameter counts."""
    p = facts.param_counts(config["n_layer"], config["n_embd"], vocab_size, config["block_size"],
                           config["bias"])["params"]
    hidden = config["n_layer"] * 12 * config["n_embd"] ** 2
    optimizer = 8 * p if config.get("optimizer", "adamw") == "adamw" else 4 * hidden + 8 * (p - hidden)
    return 4 * p + optimizer + SAVE_OVERHEAD_BYTES


def format_size(n):
    """Bytes for a one-line message: 512 kB, 12.3 MB, 1.5 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.0f} kB"


def free_bytes(folder):
    return shutil.disk_usage(folder).free


def space_problem(out_dir, size, free=None):
    """At start-up: None when out_dir's filesystem holds ckpt.pt, best.pt and the temporary of a save
    beside them (a checkpoint of `size` bytes each, what is there already counted); a warning line
    when only the first save fits; raises UserError when not even that one would."""
    free = free_bytes(out_dir) if free is None else free
    present = {name: os.path.getsize(os.path.join(out_dir, name)) for name in (CKPT, BEST)
               if os.path.exists(os.path.join(out_dir, name))}
    # the first save writes best.pt, then ckpt.pt's temporary beside it; a file there is replaced
    # only once its successor is complete
    first = size if BEST in present else 2 * size
    every = 3 * size - sum(present.values())  # ckpt.pt + best.pt + one temporary, at most
    fix = "free some space, give another --out_dir, or set --always_save_checkpoint=False (fewer saves)"
    if free < first:
        raise UserError(f"{out_dir} has {format_size(free)} free but a checkpoint needs {format_size(first)} there "
                        f"(about {format_size(size)} each: weights and optimizer state); {fix}")
    if free < every:
        return (f"{out_dir} has {format_size(free)} free: room for the first checkpoint but not for "
                f"ckpt.pt, best.pt and a save's temporary ({format_size(every)} more, about {format_size(size)} "
                f"each); a save that does not fit is skipped and training goes on; {fix}")
    return None


def is_write_failure(exc):
    """A save that failed for the disk's sake: any OSError, or torch's serializer failing to write."""
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError)
                                        and any(m in str(exc) for m in TORCH_WRITE_FAILED))
