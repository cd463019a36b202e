"""The C allocator's setting for processes that move large bodies through memory.

glibc serves an allocation of at least its *mmap threshold* with a mapping of its own, given
back to the system when it is freed.  By default the threshold moves: freeing such a mapping
raises it to that size (up to 32 MiB).  After the first large body buffers are freed, later
ones come from the heap, whose holes the process keeps: a gateway's RSS then grew by several
MiB with every 1 GiB multipart upload, up to about 165 MiB.  A fixed threshold keeps the
megabyte buffers of a transfer on the heap (no page faults) and gives larger ones back.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's ``mallopt`` parameter for the mmap threshold.
M_MMAP_THRESHOLD = -3
#: Allocations of this size and above get mappings of their own.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: The environment variable with which an operator sets the threshold instead.
ENV_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``size`` bytes; whether it was set.

    Nothing is done where the C library is not glibc, or where the operator set the
    threshold in the environment.
    """
    if ENV_THRESHOLD in os.environ:
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, size))
