"""
Checkpoint files: written atomically (atomic.py: a temporary name, fsync, rename), so a crash
or a kill mid-write leaves the previous checkpoint intact; loaded with weights_only=True (no
arbitrary code from a checkpoint file) after a CRC check of every member.
"""
import os
import shutil
import zipfile

import torch

from atomic import stale_temporaries, write_atomic
from errors import UserError

CKPT, BEST = "ckpt.pt", "best.pt"


def save_atomic(obj, path):
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


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
