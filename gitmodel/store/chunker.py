"""Content-defined chunking (FastCDC 2020 through pyfastcdc) over a stream of bytes.

The parameters below are part of the pointer format: changing them changes the chunk list, and
so the content id, of every file. A `Cutter` cuts one run of bytes (the caller starts a new run
wherever a boundary is forced, e.g. at a large tensor's start). Bytes are written straight into
the cutter's buffer (`space` / `filled`), cut once the buffer is full; the last chunk found may
still grow, so it is carried to the next buffer until the run ends. The result is exactly the
chunking of the whole run at once, whatever the sizes of the writes.
"""

from __future__ import annotations

from pyfastcdc import FastCDC

# Large chunks (mean ~190 KiB on random bytes): per-chunk work in Python is the filter's
# overhead (figures: docs/benchmarks.md). Checkpoints lose no dedup by it: chunks restart at
# every tensor, so a changed tensor is whole chunks either way; only a change of a few rows
# inside a large tensor stores more bytes.
MIN_SIZE = 128 * 1024
AVG_SIZE = 128 * 1024       # pyfastcdc's `avg_size`
MAX_SIZE = 1024 * 1024
SEED = 0
BUFFER_SIZE = 8 << 20       # bytes cut at a time


class BufferPool:
    """Reusable cutting buffers (fresh memory is slow to fault in; reuse keeps it warm)."""

    def __init__(self, size: int = BUFFER_SIZE + MAX_SIZE, keep: int = 8):
        self.size, self._keep, self._free = size, keep, []

    def take(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buffer: bytearray | None) -> None:
        if buffer is not None and len(self._free) < self._keep:
            self._free.append(buffer)


class Cutter:
    def __init__(self, pool: BufferPool | None = None):
        self._cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, seed=SEED)
        self._pool = pool or BufferPool()
        self._buffer: bytearray | None = None
        self._used = 0

    def space(self) -> memoryview:
        """Writable room after the bytes buffered so far (never empty)."""
        if self._buffer is None:
            self._buffer, self._used = self._pool.take(), 0
        return memoryview(self._buffer)[self._used:]

    def filled(self, n: int) -> tuple[list[memoryview], bytearray | None]:
        """Record that n bytes were written into `space()`. Returns the chunks completed, and
        the buffer they live in, to hand back to the pool once they are processed."""
        self._used += n
        if self._used < len(self._buffer):
            return [], None
        return self._cut(final=False)

    def finish(self) -> tuple[list[memoryview], bytearray | None]:
        """End the run: every remaining chunk, and their buffer."""
        if self._buffer is None:
            return [], None
        return self._cut(final=True)

    def _cut(self, final: bool) -> tuple[list[memoryview], bytearray | None]:
        buffer, view = self._buffer, memoryview(self._buffer)[:self._used]
        cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view)] if self._used else []
        self._buffer = None
        if not final:
            offset, _ = cuts.pop()              # may still grow: carry it over
            carried = self._used - offset
            self._buffer = self._pool.take()
            self._buffer[:carried] = view[offset:]
            self._used = carried
        return [view[o:o + n] for o, n in cuts], buffer


def cut_all(data: bytes) -> list[bytes]:
    """The chunks of `data` as one run (for tests and tools)."""
    cutter = Cutter(BufferPool(size=max(len(data), MAX_SIZE) + MAX_SIZE))
    view = cutter.space()
    view[:len(data)] = data
    chunks, _ = cutter.filled(len(data))
    more, _ = cutter.finish()
    return [bytes(c) for c in chunks + more]
