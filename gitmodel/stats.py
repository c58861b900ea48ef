"""Tensor statistics for the pointer, computed while a checkpoint streams through clean.

Each chunk of a float tensor is summarised in a worker thread (numpy): count, sum and sum of
squares (float64, numpy's pairwise summation: plain C, the same order on every machine; no
BLAS, whose threading changes the order), min, max, zeros, NaN and Inf counts, over the whole
elements inside the chunk. An element cut by a chunk boundary is rebuilt from the two chunks'
edge bytes in the main thread. Partials are added in file order. Chunk boundaries depend only
on the bytes, so the statistics, and the pointer, are a pure function of the file. Only finite
values enter mean, std, norm, min and max. std = sqrt(E[x²] - E[x]²): in float64 this keeps
4 significant digits unless std is below ~1e-6 of the mean.

Line fields (4 significant digits): norm mean std min max, then zeros=<percent> nan=<n> inf=<n>
when non-zero.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

STATS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_SCALAR = {"F64": struct.Struct("<d"), "F32": struct.Struct("<f"), "F16": struct.Struct("<e")}


@dataclass
class Partial:
    count: int = 0             # finite elements
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0

    def merge(self, other: "Partial") -> None:
        if other.count:
            self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.zeros += other.zeros
        self.nan += other.nan
        self.inf += other.inf


def _floats(data, dtype: str):
    import numpy as np
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])


def summarize(data, dtype: str) -> Partial:
    """Statistics of whole elements (numpy; releases the GIL on large arrays)."""
    import numpy as np
    x = _floats(data, dtype)
    if not x.size:
        return Partial()
    low, high = x.min(), x.max()
    zeros = int(x.size - np.count_nonzero(x))
    nan = inf = 0
    if not (np.isfinite(low) and np.isfinite(high)):
        nan = int(np.count_nonzero(np.isnan(x)))
        inf = int(np.count_nonzero(np.isinf(x)))
        x = x[np.isfinite(x)]
        if not x.size:
            return Partial(zeros=zeros, nan=nan, inf=inf)
        low, high = x.min(), x.max()
    wide = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):     # huge F64 values: norm=inf
        total = float(wide.sum())
        squares = float(np.square(wide, out=wide).sum())
    return Partial(wide.size, total, squares, float(low), float(high), zeros, nan, inf)


def _scalar(element: bytes, dtype: str) -> Partial:
    if dtype == "BF16":
        value = struct.unpack("<f", b"\0\0" + element)[0]
    else:
        value = _SCALAR[dtype].unpack(element)[0]
    if math.isnan(value):
        return Partial(nan=1)
    if math.isinf(value):
        return Partial(inf=1)
    return Partial(1, value, value * value, value, value, int(value == 0))


def chunk_partial(chunk, dtype: str, offset: int) -> tuple[bytes, Partial | None, bytes]:
    """Worker side, for a chunk at byte `offset` of its tensor: (bytes before its first
    element boundary, statistics of its whole elements, bytes after its last boundary)."""
    width = STATS_DTYPES[dtype]
    skip = -offset % width
    if skip >= len(chunk):
        return bytes(chunk), None, b""
    whole = (len(chunk) - skip) // width * width
    return (bytes(chunk[:skip]), summarize(chunk[skip:skip + whole], dtype),
            bytes(chunk[skip + whole:]))


class TensorStats:
    """Main-thread side: merges chunk partials in file order."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.width = STATS_DTYPES[dtype]
        self.total = Partial()
        self.submitted = 0           # bytes handed to workers so far (the clean loop's count)
        self._pending = b""          # the start of an element cut by a chunk boundary

    def add(self, head: bytes, partial: Partial | None, tail: bytes) -> None:
        if head:
            self._pending += head
            if len(self._pending) == self.width:
                self.total.merge(_scalar(self._pending, self.dtype))
                self._pending = b""
        if partial is not None:
            self.total.merge(partial)
        if tail:
            self._pending = tail

    def fields(self) -> tuple[str, ...]:
        t = self.total
        if t.count == 0 and not (t.nan or t.inf):
            return ()
        elements = t.count + t.nan + t.inf
        out = []
        if t.count:
            mean = t.total / t.count
            std = math.sqrt(max(0.0, t.squares / t.count - mean * mean))
            out += [f"norm={math.sqrt(t.squares):.4g}", f"mean={mean:.4g}", f"std={std:.4g}",
                    f"min={t.low:.4g}", f"max={t.high:.4g}"]
        if t.zeros:
            out.append(f"zeros={100 * t.zeros / elements:.3g}%")
        if t.nan:
            out.append(f"nan={t.nan}")
        if t.inf:
            out.append(f"inf={t.inf}")
        return tuple(out)
