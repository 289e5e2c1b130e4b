"""glibc's malloc told to keep freed memory for reuse: one place for prepare.py and train.py.

By default glibc hands every freed block over ~128 KB (a batch of tokens, an activation, an
attention matrix) back to the OS, and the next allocation of that size gets fresh pages, zeroed one
fault at a time: ~3.7 us a page on this project's VM, 10-14k faults (~45 ms) a step of the CPU demo
config. Kept, the same blocks are reused: no faults, and a peak footprint that is the same.
"""
import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
KEEP_BELOW = 32 << 20   # blocks up to 32 MB come from the heap (glibc's own upper limit for this)
TRIM_ABOVE = 64 << 20   # and the heap keeps up to 64 MB free at its top


def keep_freed_memory():
    """Returns whether it did: False where the C library is not glibc (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return False
