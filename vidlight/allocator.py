"""The C allocator kept from handing large blocks back to the kernel between frames.

A video pipeline allocates and frees the same large arrays for every batch: frames, model
outputs, torch's intermediate tensors (torch's CPU allocator keeps no cache). glibc's malloc
serves blocks above a threshold that adapts up to 32 MiB from fresh memory mappings, and it
returns freed memory at the top of its heaps to the kernel; the next batch then faults the
memory back in, 4 kB at a time, each page zeroed by the kernel. Zero-DCE++ at 720p spent
10-13 ms of system time per frame on it (4,000-6,000 page faults per frame, start-up not
counted).

:func:`keep_freed_memory` fixes the threshold at its 32 MiB maximum and has freed memory kept
up to :data:`KEEP_BYTES` per heap, so a batch reuses the memory the last one freed. Blocks
above 32 MiB are still mapped afresh (a 1080p batch of four 16-bit frames is 50 MB; the
enhancer makes that one with numpy, whose large arrays the kernel backs with huge pages). The
resident memory then stays at the run's peak rather than falling between batches; it is
still bounded by the pipeline's queues. The command line applies it when it starts (and in
its Ray workers); a program that calls :func:`vidlight.enhance_video` can call it once too.
Where the user set glibc's allocator up (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``), it
changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_BYTES = 32 * 1024 * 1024  # the most glibc accepts on 64-bit systems
KEEP_BYTES = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for the whole process as the module docstring says; whether it
    applied (only on Linux with glibc, and not where the user set the allocator up)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)
    kept = mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
    return bool(mapped and kept)
