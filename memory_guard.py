"""
Will the run fit? Before anything is allocated: the memory estimate (facts.memory_estimate)
beside the device's memory, as one start-up line, or a one-line refusal naming the fix.
During the run: an out-of-memory error turned into the same one line, never a traceback.
"""
import contextlib
import os

import torch

import facts
from errors import UserError

OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")


def available_memory(dev):
    """(bytes the run may use on dev, a few words saying what they are), or (None, why) when unknown."""
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return free, f"{facts.format_bytes(free)} free of {facts.format_bytes(total)}"
    if dev.type == "mps":
        if hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
            n = torch.mps.recommended_max_memory()
            return n, f"{facts.format_bytes(n)} recommended"
        return None, "unknown"
    n = available_ram()
    return n, (f"{facts.format_bytes(n)} of RAM available" if n is not None else "unknown")


def available_ram():
    """MemAvailable (Linux: free plus reclaimable cache), else the free physical pages, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, vocab_size, dev, ddp=False, available=None):
    """The start-up line 'memory: needs about X of Y (...)'; raises UserError with the fix when the
    estimate exceeds the device's memory. available overrides the device's figure (bytes)."""
    config = {**config, "ddp": ddp}
    est = facts.memory_estimate_for_config(config, vocab_size, dev.type)
    if available is None:
        available, what = available_memory(dev)
    else:
        what = f"{facts.format_bytes(available)} given"
    parts = ", ".join(f"{k} {facts.format_bytes(est[k])}" for k in ("params", "grads", "optimizer",
                                                                      "activations", "logits"))
    if available is None:
        return f"memory: needs about {facts.format_bytes(est['total'])} ({parts}); the device's memory is unknown"
    fits, message = facts.memory_verdict(config, vocab_size, dev.type, available)
    if not fits:
        raise UserError(f"this run will not fit in {dev.type} memory: {message}")
    return f"memory: needs about {facts.format_bytes(est['total'])} ({parts}); {what}"


def is_out_of_memory(exc):
    """True for a CUDA/MPS out-of-memory error or the CPU allocator's failure."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MARKERS)


def out_of_memory_error(exc, config, vocab_size, dev, where, ddp=False):
    """A UserError in one line for an out-of-memory exception raised during `where` ('a training
    step', 'an evaluation'). The device held less than this run needed, whatever the estimate said
    (another process may share it), so the fix asked for is one that needs half as much."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    config = {**config, "ddp": ddp}
    est = facts.memory_estimate_for_config(config, vocab_size, dev.type)["total"]
    fix = facts.memory_advice(config, vocab_size, dev.type, est // 2)
    return UserError(f"out of memory during {where} ({first}); the estimate was {facts.format_bytes(est)}; "
                     f"{fix}; the last checkpoint in {config.get('out_dir', 'out_dir')} is intact")


@contextlib.contextmanager
def on_out_of_memory(config, vocab_size, dev, where, ddp=False):
    """with on_out_of_memory(...): step()  -- an out-of-memory error inside becomes the one-line
    UserError of out_of_memory_error(); any other error passes unchanged."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise out_of_memory_error(e, config, vocab_size, dev, where, ddp) from None
