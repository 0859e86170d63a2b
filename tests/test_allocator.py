"""keep_freed_memory: a large block freed by one batch is reused by the next, without the
kernel faulting its pages in again (each case in a fresh interpreter: the allocator's state is
the process's)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)

# Allocates, touches and frees 24 MiB twice with the C allocator; prints the page faults of
# the second round (its 6,144 pages faulted in again, or none).
PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "tuned":
    from vidlight.allocator import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 24 * 1024 * 1024
def round_trip():
    block = libc.malloc(n)
    ctypes.memset(block, 1, n)
    libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_round_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_blocks_are_reused_without_faulting_their_pages_again() -> None:
    pages = 24 * 1024 * 1024 // 4096
    assert _second_round_faults("plain") > pages // 2  # glibc's default maps the block afresh
    assert _second_round_faults("tuned") < pages // 20
