"""
Checkpoints written atomically: to a temporary name in the same folder, flushed
to disk, then renamed over the old one, so a crash or a kill mid-write leaves
the previous checkpoint intact. Loaded with weights_only=True (no arbitrary
code from a checkpoint file).
"""
import os
import shutil
import zipfile

import torch

from errors import UserError


def _write_atomic(path, write):
    """write(tmp) to a temporary name in the same folder, sync it to disk, rename it over path."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path):
    _write_atomic(path, lambda tmp: torch.save(obj, tmp))


def copy_atomic(src, path):
    """One checkpoint file from another (best.pt -> ckpt.pt) without serializing the state twice."""
    _write_atomic(path, lambda tmp: shutil.copyfile(src, tmp))


def remove_stale_temporaries(out_dir):
    """Delete ckpt.pt.tmpPID / best.pt.tmpPID files that a killed run left half-written
    (each as large as a checkpoint: repeated kills would fill the disk). Nothing ever loads them."""
    for name in os.listdir(out_dir):
        stem, dot, pid = name.rpartition(".tmp")
        if dot and stem in ("ckpt.pt", "best.pt") and pid.isdigit() and int(pid) != os.getpid():
            os.remove(os.path.join(out_dir, name))


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


def clean_state_dict(state_dict):
    """Drop the prefixes torch.compile ('_orig_mod.') and DDP ('module.') add."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out
