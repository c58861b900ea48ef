"""Git's pkt-line framing: 4 hex digits of length (including themselves), then the payload;
"0000" is a flush packet that ends a list or a stream of content."""

from __future__ import annotations

import fcntl
import os
import re
from typing import BinaryIO

from gitmodel.errors import GitmodelError

MAX_PAYLOAD = 65516
FLUSH = b"0000"
_IOV_MAX = 1024


def widen_pipe(stream: BinaryIO, size: int = 1 << 20) -> None:
    """Ask for a larger pipe buffer (fewer context switches per GiB); harmless if refused."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError, AttributeError):
        pass


class ProtocolError(GitmodelError):
    pass


_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")


def _length(head: bytes) -> int:
    """A packet's length field: exactly 4 hex digits (git reads either case)."""
    if len(head) < 4:
        raise ProtocolError("truncated packet length")
    if not _HEX4.fullmatch(head):
        raise ProtocolError(f"bad packet length {head!r}")
    return int(head, 16)


class PacketReader:
    """Reads packets through its own buffer, filled by reads of up to READ_SIZE that return
    whatever has arrived (never waiting for more than one packet's worth). Reading the pipe in
    large blocks and copying payloads out is about twice as fast as two reads per packet (a
    4-byte head, then the payload), which left git waiting on a full pipe."""

    READ_SIZE = 1 << 20

    def __init__(self, stream: BinaryIO):
        self._read = getattr(stream, "readinto1", None) or stream.readinto
        self._buffer = bytearray(self.READ_SIZE + MAX_PAYLOAD + 4)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0      # unread bytes: _buffer[_start:_end]
        self._eof = False

    def _want(self, n: int) -> bool:
        """Make n unread bytes available (n <= MAX_PAYLOAD + 4); False if the stream ends first."""
        while self._end - self._start < n:
            if self._eof:
                return False
            if self._start and len(self._buffer) - self._start < n + self.READ_SIZE // 2:
                kept = self._end - self._start
                self._view[:kept] = self._view[self._start:self._end]
                self._start, self._end = 0, kept
            got = self._read(self._view[self._end:])
            if not got:
                self._eof = True
            else:
                self._end += got
        return True

    def _take(self, n: int) -> memoryview:
        view = self._view[self._start:self._start + n]
        self._start += n
        return view

    def packet(self) -> bytes | None:
        """The next payload, or None for a flush packet. Raises EOFError at a clean end."""
        length = self.read_header(at_start=True)
        if length is None:
            return None
        if not self._want(length):
            raise ProtocolError("truncated packet")
        return bytes(self._take(length))

    def read_header(self, at_start: bool = False) -> int | None:
        """The payload length of the next packet (None for a flush); the payload is left unread.
        With `at_start`, a stream that ends cleanly here raises EOFError."""
        if not self._want(4):
            if at_start and self._end == self._start:
                raise EOFError
            raise ProtocolError("truncated packet length")
        length = _length(bytes(self._take(4)))
        if length == 0:
            return None
        if length < 4 or length > MAX_PAYLOAD + 4:
            raise ProtocolError(f"bad packet length {length}")
        return length - 4

    def read_payload_into(self, view: memoryview) -> None:
        """Fill `view` from the current packet's payload (at most what is left of it)."""
        if not self._want(len(view)):
            raise ProtocolError("truncated packet")
        view[:] = self._take(len(view))

    def text_list(self) -> list[str]:
        """Text packets up to the next flush, without their trailing newlines. Bytes that are
        not UTF-8 (git path names may hold any) survive as surrogate escapes."""
        items = []
        while (payload := self.packet()) is not None:
            items.append(payload.decode("utf-8", "surrogateescape").removesuffix("\n"))
        return items


class ContentReader:
    """File-like view of content packets up to the next flush. `readinto` copies payloads
    into the caller's buffer."""

    def __init__(self, packets: PacketReader):
        self._packets = packets
        self._left = 0          # unread bytes of the current packet
        self._done = False

    def readinto(self, view: memoryview) -> int:
        """Fill `view` as far as the content goes; returns the bytes written (0 at the end)."""
        view = memoryview(view).cast("B")
        filled = 0
        while filled < len(view) and not self._done:
            if not self._left:
                length = self._packets.read_header()
                if length is None:
                    self._done = True
                    break
                self._left = length
                continue
            n = min(self._left, len(view) - filled)
            self._packets.read_payload_into(view[filled:filled + n])
            self._left -= n
            filled += n
        return filled

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all that is left when n < 0); fewer only at the end."""
        parts, want = [], n if n >= 0 else 1 << 62
        while want > 0:
            buf = bytearray(min(want, 1 << 20))
            got = self.readinto(memoryview(buf))
            if not got:
                break
            parts.append(buf if got == len(buf) else buf[:got])
            want -= got
        return b"".join(parts)

    def drain(self) -> None:
        """Skip whatever content is left (needed before answering after a failure)."""
        scratch = memoryview(bytearray(MAX_PAYLOAD))
        while self.readinto(scratch):
            pass


class PacketWriter:
    def __init__(self, stream: BinaryIO):
        self._stream = stream

    def text(self, *lines: str) -> None:
        for line in lines:
            data = (line + "\n").encode("utf-8", "surrogateescape")    # path names as git sent them
            self._stream.write(b"%04x" % (len(data) + 4) + data)

    def flush(self) -> None:
        self._stream.write(FLUSH)
        self._stream.flush()

    def content(self, *buffers: bytes | bytearray | memoryview) -> None:
        """Send buffers as content packets, gathered into few system calls."""
        self._stream.flush()
        iov: list = []
        for buf in buffers:
            view = memoryview(buf).cast("B")
            for start in range(0, len(view), MAX_PAYLOAD):
                piece = view[start:start + MAX_PAYLOAD]
                iov += (b"%04x" % (len(piece) + 4), piece)
                if len(iov) >= _IOV_MAX:
                    _writev_all(self._stream.fileno(), iov)
                    iov = []
        if iov:
            _writev_all(self._stream.fileno(), iov)


def _writev_all(fd: int, iov: list) -> None:
    first = 0
    while first < len(iov):
        written = os.writev(fd, iov[first:])
        while first < len(iov) and written >= len(iov[first]):
            written -= len(iov[first])
            first += 1
        if written:
            iov[first] = memoryview(iov[first])[written:]
