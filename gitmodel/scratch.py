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
