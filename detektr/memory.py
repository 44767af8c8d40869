"""How much freed memory a process keeps for reuse (glibc's malloc), instead of faulting it back in for every frame."""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters of glibc
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems


def keep_freed_memory(megabytes: int) -> bool:
    """Let this process keep up to `megabytes` of freed memory for reuse; False where not glibc.

    A worker allocates and frees the same sizes for every frame (the bytes it fetches, the
    decoded image, the detector's buffers), and ingest the entries it reads. glibc hands freed
    memory at the top of its heaps back to the kernel and serves large blocks with fresh mmaps, so
    each frame pays page faults to get it back. Raising the trim threshold (and fixing the mmap
    threshold at its ceiling) keeps the memory in the process: its size then stays at its
    high-water mark.
    """
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trimmed = mallopt(_M_TRIM_THRESHOLD, min(megabytes * 1024 * 1024, 2**31 - 1))
    mapped = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    return bool(trimmed and mapped)
