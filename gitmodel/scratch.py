"""Per-thread reusable numpy arrays for the hot loops (byte planes, statistics).

A fresh array of hundreds of KiB is mapped and unmapped on every use, and its page faults
cost more than the arithmetic done in it; a warm one reused by the same thread does not."""

from __future__ import annotations

import threading

_local = threading.local()


def scratch(name: str, size: int, dtype):
    """This thread's array `name`, `size` elements of `dtype` (contents left over from its
    last use). The caller must be done with it before asking for `name` again."""
    import numpy as np
    array = getattr(_local, name, None)
    if array is None or array.size < size:
        array = np.empty(max(size, 1 << 16), dtype)
        setattr(_local, name, array)
    return array[:size]


# glibc's malloc, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD and M_ARENA_MAX (see mallopt(3)).
_MMAP_THRESHOLD, _TRIM_THRESHOLD, _ARENA_MAX = -3, -1, -8


def keep_freed_memory() -> None:
    """Have the C allocator keep freed blocks for reuse. Each decoded chunk (~190 KiB) is a
    fresh buffer; by default glibc maps and unmaps blocks that size on every use, and the page
    faults, taken under one process-wide lock, serialise the threads restoring a file. With
    blocks under 16 MiB kept in the heap and up to 64 MiB of free heap kept, buffers are
    reused: a 90 MB checkout decodes about 1.5x faster. Two arenas at most. No-op where glibc
    is absent."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_MMAP_THRESHOLD, 16 << 20)
    mallopt(_TRIM_THRESHOLD, 64 << 20)
    # Each thread that allocates gets an arena of its own (up to eight per core), and each
    # keeps what it frees: a clone's eight fetch threads reading 8 MiB ranges kept ~100 MiB.
    mallopt(_ARENA_MAX, 2)
