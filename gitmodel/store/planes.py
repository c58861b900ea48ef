"""Byte planes and the word arithmetic of deltas: the loops under codec's GROUPED and DELTA
encodings (docs/formats.md §3).

Each runs compiled (`_planes.c`, built with gitmodel when a C compiler is there) or, failing
that, as numpy calls with the same results byte for byte. Compiled, a chunk's planes are joined
in one pass at several times numpy's speed, and undoing a delta is one pass, not five: fewer
and shorter trips away from the GIL, which is what limits the pool's threads (figures and
reasons: docs/design.md, "Compiled loops"). GITMODEL_NATIVE=0 in the environment uses numpy
(for comparing the two)."""

from __future__ import annotations

import os

try:
    from gitmodel.store import _planes as _native
except ImportError:          # built without a C compiler, or on a big-endian machine
    _native = None
if os.environ.get("GITMODEL_NATIVE") == "0":
    _native = None

WORDS = {2: "<u2", 4: "<u4", 8: "<u8"}      # widths whose deltas are integer differences


def compiled() -> bool:
    """Whether the compiled loops are in use."""
    return _native is not None


def split(data, width: int, out):
    """The byte planes of the first `out.size` bytes of data, into `out` (a C-contiguous
    (width, n) uint8 array: row k holds byte k of each element); returns `out`."""
    if _native is not None:
        _native.split(data, width, out)
    else:                  # one strided copy: one trip away from the GIL
        import numpy as np
        n = out.shape[1]
        np.copyto(out, np.frombuffer(data, np.uint8, count=n * width).reshape(n, width).T)
    return out


def join(planes: list, out) -> None:
    """Interleave the planes (n bytes each) into the first n * len(planes) bytes of out."""
    if _native is not None:
        _native.join(planes, out)
        return
    import numpy as np     # one strided copy per plane, outside the GIL
    width, n = len(planes), len(planes[0])
    elements = np.frombuffer(out, np.uint8, count=n * width).reshape(n, width)
    for k, plane in enumerate(planes):
        elements[:, k] = np.frombuffer(plane, np.uint8)


def zigzag_subtract(out, ref, width: int, at: int, count: int) -> None:
    """The `count` little-endian words of `width` bytes at byte `at` of out := the zigzag of
    their integer difference from ref's: d = out - ref, (d << 1) ^ (d >> (bits - 1))."""
    import numpy as np
    target = np.frombuffer(out, WORDS[width], count=count, offset=at)
    np.subtract(target, np.frombuffer(ref, WORDS[width], count=count, offset=at), out=target)
    d = target.view(WORDS[width].replace("u", "i"))
    sign = np.right_shift(d, 8 * width - 1)
    np.left_shift(d, 1, out=d)
    np.bitwise_xor(d, sign, out=d)


def unzigzag_add(out, ref, width: int, at: int, count: int) -> None:
    """The inverse of zigzag_subtract: the words := ref's plus (z >> 1) ^ -(z & 1)."""
    if _native is not None:
        _native.unzigzag_add(out, ref, width, at, count)
        return
    import numpy as np
    z = np.frombuffer(out, WORDS[width], count=count, offset=at)
    low = np.bitwise_and(z, z.dtype.type(1))
    np.right_shift(z, z.dtype.type(1), out=z)
    np.negative(low, out=low)
    np.bitwise_xor(z, low, out=z)
    np.add(z, np.frombuffer(ref, WORDS[width], count=count, offset=at), out=z)
