"""Content-defined chunking (FastCDC 2020 through pyfastcdc), fed block by block.

The parameters below are part of the pointer format: changing them changes the chunk list, and
so the content id, of every file. A `Cutter` cuts one run of bytes; the caller starts a new
`Cutter` run (via `finish`) wherever a boundary is forced, e.g. at a tensor's start.
"""

from __future__ import annotations

from pyfastcdc import FastCDC

MIN_SIZE = 32 * 1024
AVG_SIZE = 32 * 1024        # pyfastcdc's mean chunk size is AVG_SIZE + MIN_SIZE, so ~64 KiB
MAX_SIZE = 256 * 1024
SEED = 0


class Cutter:
    """Cuts a stream of blocks into the same chunks that cutting their concatenation at once
    would give. A chunk that ends exactly at the end of the bytes seen so far may still grow,
    so it is held back until more bytes arrive or `finish` is called."""

    def __init__(self) -> None:
        self._cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, seed=SEED)
        self._pending = b""

    def feed(self, block: bytes) -> list[memoryview]:
        buf = self._pending + block if self._pending else block
        view = memoryview(buf)
        cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view)]
        if not cuts:
            self._pending = b""
            return []
        last_offset, _ = cuts.pop()
        self._pending = bytes(view[last_offset:])
        return [view[o:o + n] for o, n in cuts]

    def finish(self) -> list[bytes]:
        """The held-back chunk, ending the current run."""
        pending, self._pending = self._pending, b""
        return [pending] if pending else []
