"""Git's pkt-line framing: 4 hex digits of length (including themselves), then the payload;
"0000" is a flush packet that ends a list or a stream of content."""

from __future__ import annotations

from typing import BinaryIO

MAX_PAYLOAD = 65516
FLUSH = b"0000"


class ProtocolError(Exception):
    pass


class PacketReader:
    def __init__(self, stream: BinaryIO):
        self._stream = stream

    def packet(self) -> bytes | None:
        """The next payload, or None for a flush packet. Raises EOFError at a clean end."""
        head = self._stream.read(4)
        if not head:
            raise EOFError
        if len(head) < 4:
            raise ProtocolError("truncated packet length")
        try:
            length = int(head, 16)
        except ValueError:
            raise ProtocolError(f"bad packet length {head!r}") from None
        if length == 0:
            return None
        if length < 4 or length > MAX_PAYLOAD + 4:
            raise ProtocolError(f"bad packet length {length}")
        payload = self._stream.read(length - 4)
        if len(payload) != length - 4:
            raise ProtocolError("truncated packet")
        return payload

    def text_list(self) -> list[str]:
        """Text packets up to the next flush, without their trailing newlines."""
        items = []
        while (payload := self.packet()) is not None:
            items.append(payload.decode("utf-8").rstrip("\n"))
        return items


class ContentReader:
    """File-like view of content packets up to the next flush."""

    def __init__(self, packets: PacketReader):
        self._packets = packets
        self._buffer = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        parts, have = [self._buffer], len(self._buffer)
        while (n < 0 or have < n) and not self._done:
            payload = self._packets.packet()
            if payload is None:
                self._done = True
            else:
                parts.append(payload)
                have += len(payload)
        data = b"".join(parts)
        if n < 0 or len(data) <= n:
            self._buffer = b""
            return data
        self._buffer = data[n:]
        return data[:n]

    def drain(self) -> None:
        """Skip whatever content is left (needed before answering after a failure)."""
        self._buffer = b""
        while not self._done:
            if self._packets.packet() is None:
                self._done = True


class PacketWriter:
    def __init__(self, stream: BinaryIO):
        self._stream = stream

    def text(self, *lines: str) -> None:
        for line in lines:
            data = (line + "\n").encode("utf-8")
            self._stream.write(b"%04x" % (len(data) + 4) + data)

    def flush(self) -> None:
        self._stream.write(FLUSH)
        self._stream.flush()

    def content(self, data: bytes) -> None:
        view = memoryview(data)
        write = self._stream.write
        for start in range(0, len(view), MAX_PAYLOAD):
            piece = view[start:start + MAX_PAYLOAD]
            write(b"%04x" % (len(piece) + 4))
            write(piece)
