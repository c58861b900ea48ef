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
import os
import struct
import tempfile
import threading
from dataclasses import dataclass

from gitmodel.scratch import scratch

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


def _buffers(n: int):
    """Scratch arrays of n elements: float64 for the sums, uint32 for widening bf16."""
    return scratch("stats.wide", n, "f8"), scratch("stats.bits", n, "u4")


def floats(data, dtype: str, bits=None):
    """The elements of a F64/F32/F16/BF16 buffer as a numpy array (bf16 widened to float32,
    into `bits` when given)."""
    import numpy as np
    if dtype == "BF16":
        raw = np.frombuffer(data, "<u2")
        if bits is None:
            bits = np.empty(raw.size, np.uint32)
        np.left_shift(raw, 16, out=bits, dtype=np.uint32)
        return bits.view(np.float32)
    return np.frombuffer(data, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])


def summarize(data, dtype: str) -> Partial:
    """Statistics of whole elements (numpy; releases the GIL on large arrays)."""
    import numpy as np
    n = len(data) // (STATS_DTYPES[dtype])
    wide, bits = _buffers(n)
    x = floats(data, dtype, bits)
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
    start = np.zeros(1, np.intp)
    wide = wide[:x.size]
    with np.errstate(over="ignore", invalid="ignore"):     # huge F64 values: norm=inf
        np.copyto(wide, x)
        total = float(np.add.reduceat(wide, start)[0])
        squares = float(np.add.reduceat(np.square(wide, out=wide), start)[0])
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


GROUP_BYTES = 1 << 20       # chunks summarised together: bounds the scratch memory per thread


def chunk_partials(chunks: list, dtype: str, offset: int, ids: list[bytes] | None = None,
                   cache: "StatsCache | None" = None) -> list[tuple[bytes, Partial | None, bytes, bytes | None]]:
    """Worker side: for each of these consecutive chunks of one tensor (the first at byte
    `offset` of it), (bytes before its first element boundary, statistics of its whole
    elements, bytes after its last boundary, a new cache record or None). Chunks found in
    `cache` (by id, dtype and phase) are not computed again; the others are summarised
    by `_group_partials` in groups of about GROUP_BYTES."""
    width = STATS_DTYPES[dtype]
    out: list = [None] * len(chunks)
    pending: list[int] = []                      # consecutive chunks still to compute
    position, start_of_pending = offset, offset

    def compute() -> None:
        group, size, at = [], 0, start_of_pending
        for i in pending + [None]:
            if i is None or (group and size + len(chunks[i]) > GROUP_BYTES):
                for j, result in zip(group, _group_partials([chunks[j] for j in group], dtype, at)):
                    record = None
                    if cache is not None and ids is not None and result[1] is not None:
                        record = StatsCache.record(ids[j], dtype, (at_of[j]) % width, result[1])
                    out[j] = (*result, record)
                at += size
                group, size = [], 0
            if i is not None:
                group.append(i)
                size += len(chunks[i])

    at_of = {}
    for i, chunk in enumerate(chunks):
        at_of[i] = position
        hit = cache.get(ids[i], dtype, position % width) if cache is not None and ids else None
        if hit is not None:
            if pending:
                compute()
                pending = []
            skip = -position % width
            whole = (len(chunk) - skip) // width * width
            out[i] = (bytes(chunk[:skip]), hit, bytes(chunk[skip + whole:]), None)
        else:
            if not pending:
                start_of_pending = position
            pending.append(i)
        position += len(chunk)
    if pending:
        compute()
    return out


class StatsCache:
    """Statistics of chunks already summarised, so re-adding a checkpoint whose tensors
    mostly did not change skips their arithmetic. Layout: docs/formats.md §4.

    A record holds exactly what `_group_partials` computes (which depends only on the chunk's
    bytes, dtype and phase), so a pointer is the same with or without the cache. Loading keeps
    the file's bytes as they are and sorts the ids' first 8 bytes beside them
    (store.table.IdSearch), which loads far faster than a dict of records."""

    VERSION = 1
    _body = struct.Struct("<B32sBBQddddQQQ")
    SIZE = _body.size + 8
    MAX_BYTES = 64 << 20
    CODES = {"F64": 1, "F32": 2, "F16": 3, "BF16": 4}

    def __init__(self, path):
        self.path = path
        self._records = None        # (record rows, IdSearch) once loaded; False if none
        self._lock = threading.Lock()

    @classmethod
    def record(cls, oid: bytes, dtype: str, phase: int, p: Partial) -> bytes:
        import blake3
        body = cls._body.pack(cls.VERSION, oid, cls.CODES[dtype], phase, p.count, p.total,
                              p.squares, p.low, p.high, p.zeros, p.nan, p.inf)
        return body + blake3.blake3(body).digest()[:8]

    @classmethod
    def _valid(cls, record: bytes) -> tuple | None:
        """The record's fields if its check and version hold."""
        import blake3
        body = record[:cls._body.size]
        if blake3.blake3(body).digest()[:8] != record[cls._body.size:]:
            return None
        fields = cls._body.unpack(body)
        return fields if fields[0] == cls.VERSION else None

    def get(self, oid: bytes, dtype: str, phase: int) -> Partial | None:
        if self._records is None:
            with self._lock:
                if self._records is None:
                    self._records = self._load()
        if not self._records:
            return None
        rows, search = self._records
        code = self.CODES[dtype]
        for row in search.find(oid):
            if rows[row, 33] == code and rows[row, 34] == phase:    # before the costlier check
                fields = self._valid(rows[row].tobytes())
                if fields is not None:
                    return Partial(*fields[4:])
        return None

    def _load(self):
        import numpy as np
        from gitmodel.store.table import IdSearch
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                whole = size - size % self.SIZE
                start = max(0, whole - self.MAX_BYTES // self.SIZE * self.SIZE)
                f.seek(start)
                data = f.read(whole - start)            # the newest MAX_BYTES at most
        except OSError:
            return False
        if size > self.MAX_BYTES or size % self.SIZE:
            data = self._compact(data)
        count = len(data) // self.SIZE
        if not count:
            return False
        rows = np.frombuffer(data, np.uint8, count=count * self.SIZE).reshape(count, self.SIZE)
        return rows, IdSearch(rows, 1)

    def _compact(self, data: bytes) -> bytes:
        """Keep the newest valid record of each (chunk, dtype, phase), up to half of
        MAX_BYTES of them; returns what was kept."""
        keep, kept, seen = (self.MAX_BYTES // 2) // self.SIZE, [], set()
        for at in range(len(data) - self.SIZE, -1, -self.SIZE):
            if len(kept) == keep:
                break
            record = data[at:at + self.SIZE]
            if record[1:35] not in seen and self._valid(record) is not None:
                seen.add(record[1:35])
                kept.append(record)
        data = b"".join(reversed(kept))
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".stats-cache-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)            # as `append` creates it (mkstemp makes 0600)
            os.replace(tmp, self.path)      # records appended meanwhile by others are lost
        except OSError:
            pass
        return data

    def append(self, records: list[bytes]) -> None:
        if not records:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"".join(records))
            finally:
                os.close(fd)
        except OSError:
            pass                                        # a cache: losing it costs time only


def _group_partials(chunks: list, dtype: str, offset: int) -> list[tuple[bytes, Partial | None, bytes]]:
    """Worker side, for consecutive chunks of one tensor, the first at byte `offset` of it:
    for each chunk (bytes before its first element boundary, statistics of its whole
    elements, bytes after its last boundary).

    One set of numpy calls covers the whole group (`reduceat` over each chunk's elements):
    per-chunk calls cost more in call overhead and GIL hand-offs than in arithmetic. A
    chunk's numbers depend only on its own elements, never on how chunks were batched."""
    import numpy as np
    width = STATS_DTYPES[dtype]
    edges, spans, position = [], [], offset
    for chunk in chunks:
        skip = -position % width
        if skip >= len(chunk):
            edges.append((bytes(chunk), b""))
            spans.append(None)
        else:
            whole = (len(chunk) - skip) // width * width
            edges.append((bytes(chunk[:skip]), bytes(chunk[skip + whole:])))
            spans.append((position + skip, whole // width) if whole else None)
        position += len(chunk)
    results: list = [None] * len(chunks)
    wanted = [i for i, span in enumerate(spans) if span is not None]
    if wanted:
        first = spans[wanted[0]][0]                     # tensor offset of the first element
        last_start, last_count = spans[wanted[-1]]
        count = (last_start - first) // width + last_count
        data = b"".join(chunks)[first - offset:first - offset + count * width]
        wide, bits = _buffers(count)
        x = floats(data, dtype, bits)
        starts = [(spans[i][0] - first) // width for i in wanted]
        ends = [start + spans[i][1] for start, i in zip(starts, wanted)]
        # reduceat sums from each index to the next: interleave starts with the gaps that
        # follow (a cut element or nothing), whose results are ignored
        index = []
        for start, end in zip(starts, ends):
            index += [start, end]
        if index[-1] == count:
            index.pop()
        index = np.array(index, dtype=np.intp)
        low = np.minimum.reduceat(x, index)[::2]
        high = np.maximum.reduceat(x, index)[::2]
        zero_at = np.flatnonzero(x == 0)                 # zeros are few: count by position
        zeros = np.searchsorted(zero_at, ends) - np.searchsorted(zero_at, starts)
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(wide, x)
            totals = np.add.reduceat(wide, index)[::2]
            squares = np.add.reduceat(np.square(wide, out=wide), index)[::2]
        for k, i in enumerate(wanted):
            if math.isfinite(low[k]) and math.isfinite(high[k]):
                results[i] = Partial(ends[k] - starts[k], float(totals[k]), float(squares[k]),
                                     float(low[k]), float(high[k]), int(zeros[k]))
            else:                                       # NaN or Inf inside: count them apart
                results[i] = summarize(data[starts[k] * width:ends[k] * width], dtype)
    return [(head, part, tail) for (head, tail), part in zip(edges, results)]


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
            variance = t.squares / t.count - mean * mean
            std = math.nan if math.isnan(variance) else math.sqrt(max(0.0, variance))   # NaN: overflowed
            out += [f"norm={math.sqrt(t.squares):.4g}", f"mean={mean:.4g}", f"std={std:.4g}",
                    f"min={t.low:.4g}", f"max={t.high:.4g}"]
        if t.zeros:
            out.append(f"zeros={100 * t.zeros / elements:.3g}%")
        if t.nan:
            out.append(f"nan={t.nan}")
        if t.inf:
            out.append(f"inf={t.inf}")
        return tuple(out)
