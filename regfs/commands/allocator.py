"""Keeping the C allocator from holding on to memory the daemon has freed.

Application layer (the mount's daemon, ``commands/mount.py``). Chunks are 1 MiB buffers,
allocated and freed by many worker threads. glibc's defaults let each thread's arena keep
what it freed (up to 8 arenas per core) and raise the mmap threshold to 32 MiB as big
blocks are freed, so such buffers stop being returned to the system: 16 concurrent readers
took the daemon to ~330 MiB resident, against ~130 MiB with the two settings below
(measured by tests/mount/test_lazy_cache.py). Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 << 10
"""Buffers from this size up get pages of their own, returned to the system when freed."""
ARENAS = 2


def limit_retention() -> None:
    """Apply the settings with glibc's ``mallopt``; a no-op where it does not exist."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in %s: allocator left as it is", name)
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    for parameter, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_ARENA_MAX, ARENAS)):
        if mallopt(parameter, value) != 1:
            log.debug("mallopt(%d, %d) refused", parameter, value)
