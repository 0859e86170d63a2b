"""keep_freed_memory: the large blocks a batch frees are reused by the next batch, without the
kernel faulting their pages in again (each case in a fresh interpreter: the allocator's state
is the process's)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)

# A "batch": two 24 MiB blocks allocated, written and freed together, four times. Prints the
# page faults of the fourth, in the steady state: with glibc's defaults the heap is trimmed
# after every batch (48 MiB freed at its top is over its adapted trim threshold), so each
# batch faults its 12,288 pages in again.
PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "tuned":
    from vidlight.allocator import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 24 * 1024 * 1024
def batch():
    blocks = [libc.malloc(n) for _ in range(2)]
    for block in blocks:
        ctypes.memset(block, 1, n)
    for block in blocks:
        libc.free(block)
for _ in range(3):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _steady_batch_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(done.stdout)


def test_freed_blocks_are_reused_without_faulting_their_pages_again() -> None:
    pages = 2 * 24 * 1024 * 1024 // 4096
    assert _steady_batch_faults("plain") > pages // 2  # glibc's defaults: every batch afresh
    assert _steady_batch_faults("tuned") < pages // 20


def test_the_users_own_allocator_settings_are_left_alone() -> None:
    probe = "from vidlight.allocator import keep_freed_memory; print(keep_freed_memory())"
    settings = {"MALLOC_TRIM_THRESHOLD_": "1048576", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}
    for name, value in settings.items():
        env = {**os.environ, name: value}
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
        assert done.stdout.strip() == "False", name
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=clean)
    assert done.stdout.strip() == "True"
