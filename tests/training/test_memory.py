"""retain_freed_memory: glibc keeps freed blocks for reuse, so a repeated allocation stops faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: allocate 24 MiB, touch it, free it, allocate again. Under glibc's defaults the
# first block is an mmap (above the 128 KiB initial threshold) that free() unmaps; after
# retain_freed_memory() both come from the heap, the second reuses the first and faults nothing in.
_PROBE = """
import ctypes, ctypes.util, resource, sys
from recsys.training.memory import retain_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
assert retain_freed_memory() and retain_freed_memory()  # idempotent
size = 24 << 20
first = libc.malloc(size)
libc.memset(first, 1, size)
libc.free(first)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = libc.malloc(size)
libc.memset(second, 1, size)
print(first == second, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True)
    same, faults = out.stdout.split()
    assert same == "True"
    assert int(faults) < 100  # touching 24 MiB of fresh pages would be thousands of faults
