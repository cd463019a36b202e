"""Memory settings of the gateway's and the node's processes: the C allocator's, the collector's.

glibc serves an allocation of at least its *mmap threshold* with a mapping of its own, given
back to the system when it is freed.  By default the threshold moves: freeing such a mapping
raises it to that size (up to 32 MiB).  After the first large body buffers are freed, later
ones come from the heap, whose holes the process keeps: a gateway's RSS then grew by several
MiB with every 1 GiB multipart upload, up to about 165 MiB.  A fixed threshold keeps the
megabyte buffers of a transfer on the heap (no page faults) and gives larger ones back.

Python's cyclic garbage collector runs each time the objects that can hold references
(lists, dicts, instances...) outnumber those freed by 700, and scans the young ones still
alive; what survives is scanned again by rarer runs over older objects, the rarest over
all of them.  A request's objects are freed by reference counting as soon as it ends (none
is in a cycle), but a server with a hundred requests in flight has thousands alive at any
time: at the default the collector scanned them every few requests, aged them into the
older generations, and so brought on full collections that also traversed every module,
class and function of the process, 30 to 90 ms each, a stall for every client at once.
:func:`tune_collector` leaves what start-up made out of every later scan and lets the young
objects grow to :data:`YOUNG_THRESHOLD` first.  Over 8,192 small requests from 128 clients
the gateway's time in the collector fell from 1.2 s to 0.05 s.
"""

from __future__ import annotations

import ctypes
import gc
import os

#: glibc's ``mallopt`` parameter for the mmap threshold.
M_MMAP_THRESHOLD = -3
#: Allocations of this size and above get mappings of their own.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: The environment variable with which an operator sets the threshold instead.
ENV_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
#: How many more container objects made than freed start a collection of the young ones.
YOUNG_THRESHOLD = 20_000


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


def tune_collector(young: int = YOUNG_THRESHOLD) -> None:
    """Leave the objects made so far out of the collector's scans; collect young ones later.

    Called once start-up is done: the modules, classes and configuration then alive stay
    for the process's life.  What is garbage among them is collected first.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
