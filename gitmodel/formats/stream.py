"""A read-only byte stream that can show bytes ahead without consuming them."""

from __future__ import annotations

from typing import BinaryIO, Protocol


class _Readable(Protocol):
    def read(self, n: int) -> bytes: ...


class PeekableStream:
    """Wraps anything with `read(n)`; `peek(n)` returns up to n upcoming bytes (fewer only at
    end of stream) without consuming them. Peeks beyond `max_peek` bytes are refused so a
    hostile header cannot make us buffer without bound."""

    def __init__(self, raw: _Readable | BinaryIO, max_peek: int = 128 << 20):
        self._raw = raw
        self._buffer = bytearray()
        self._eof = False
        self.max_peek = max_peek
        self.position = 0          # bytes consumed so far
        # Read ahead to save calls on pipes; a random-access source (one with `skip`) is read
        # exactly, so looking at headers never touches the data after them.
        self._read_ahead = 1 if hasattr(raw, "skip") else 1 << 16

    def peek(self, n: int) -> bytes:
        if n > self.max_peek:
            raise ValueError(f"peek of {n} bytes exceeds the {self.max_peek}-byte limit")
        while len(self._buffer) < n and not self._eof:
            data = self._raw.read(max(n - len(self._buffer), self._read_ahead))
            if not data:
                self._eof = True
            else:
                self._buffer += data
        return bytes(self._buffer[:n])

    def read(self, n: int) -> bytes:
        """Up to n bytes; fewer only at end of stream."""
        if self._buffer:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            if len(data) < n and not self._eof:
                data += self._read_raw(n - len(data))
        else:
            data = self._read_raw(n)
        self.position += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill `view` as far as the stream goes; returns the bytes written (0 at the end)."""
        filled = 0
        if self._buffer:
            filled = min(len(self._buffer), len(view))
            view[:filled] = self._buffer[:filled]
            del self._buffer[:filled]
        while filled < len(view) and not self._eof:
            n = self._readinto_raw(view[filled:])
            if not n:
                self._eof = True
            filled += n
        self.position += filled
        return filled

    def skip(self, n: int) -> int:
        """Consume up to n bytes without returning them; a source with `skip(n)` (random
        access) is not read at all. Returns the bytes skipped."""
        dropped = min(n, len(self._buffer))
        del self._buffer[:dropped]
        skip_raw = getattr(self._raw, "skip", None)
        rest = n - dropped
        while rest > 0 and not self._eof:
            step = skip_raw(rest) if skip_raw else len(self._raw.read(min(rest, 1 << 20)))
            if not step:
                self._eof = True
            rest -= step
        self.position += n - rest
        return n - rest

    def _readinto_raw(self, view: memoryview) -> int:
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            return readinto(view) or 0
        data = self._raw.read(len(view))
        view[:len(data)] = data
        return len(data)

    def _read_raw(self, n: int) -> bytes:
        parts = []
        while n > 0 and not self._eof:
            data = self._raw.read(n)
            if not data:
                self._eof = True
                break
            parts.append(data)
            n -= len(data)
        return b"".join(parts)
