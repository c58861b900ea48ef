"""A git long-running filter process that does no work: the "git floor".

Usage (as filter.<driver>.process):  python null_filter.py SMUDGE_SOURCE

Speaks git's filter protocol version 2 over pkt-lines on stdin/stdout
(handshake ``git-filter-client``/``version=2`` -> ``git-filter-server``/
``version=2``; capabilities -> ``capability=clean``, ``capability=smudge``)
and then answers requests until git closes the pipe:

* clean:  reads and discards all content, returns the fixed text
  ``null-pointer <size>\\n``;
* smudge: reads and discards the content (the pointer), returns the full
  bytes of SMUDGE_SOURCE.

SMUDGE_SOURCE is mmapped and every page is touched once at start-up, so the
smudge output comes from RAM.  Output goes out in large os.writev calls of
many pkt-line header + payload pieces (payloads of at most 65516 bytes).
Both pipes are widened to 1 MiB with F_SETPIPE_SZ if the kernel allows.

Used by scripts/bench_foundation.py to measure what git itself costs when a
file passes through ANY process filter.  Stdlib only; does not import gitmodel.
"""

import fcntl
import mmap
import os
import sys

MAX_PAYLOAD = 65516
FLUSH = b"0000"
IOV_MAX = 1024                 # iovec entries per os.writev call
READ_BUF = 4 << 20             # input buffer (holds several whole packets)
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
IN_FD, OUT_FD = 0, 1


class ProtocolError(Exception):
    pass


def widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, ValueError):
        pass


def load_source(path: str):
    """mmap the smudge source read-only and fault every page in once."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return b""
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
        mm.madvise(mmap.MADV_WILLNEED)
    view = memoryview(mm)
    bytes(view[::mmap.PAGESIZE])   # one read per page, done in C
    return view


class Reader:
    """pkt-line reader over the raw stdin fd with a large reusable buffer."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray(READ_BUF)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def _need(self, n: int) -> bool:
        """Make n bytes available at self.start; False on EOF before any."""
        while self.end - self.start < n:
            if self.start and self.start + n > len(self.buf):
                left = self.end - self.start
                self.buf[:left] = self.view[self.start:self.end]
                self.start, self.end = 0, left
            got = os.readv(self.fd, [self.view[self.end:]])
            if got == 0:
                if self.end == self.start:
                    return False
                raise ProtocolError("truncated packet")
            self.end += got
        return True

    def _length(self) -> int | None:
        """Payload length of the next packet (None for flush); header consumed."""
        if not self._need(4):
            raise EOFError
        head = bytes(self.view[self.start:self.start + 4])
        self.start += 4
        try:
            length = int(head, 16)
        except ValueError:
            raise ProtocolError(f"bad packet length {head!r}") from None
        if length == 0:
            return None
        if length < 4 or length > MAX_PAYLOAD + 4:
            raise ProtocolError(f"bad packet length {length}")
        return length - 4

    def packet(self) -> bytes | None:
        n = self._length()
        if n is None:
            return None
        if not self._need(n):
            raise ProtocolError("truncated packet")
        data = bytes(self.view[self.start:self.start + n])
        self.start += n
        return data

    def text_list(self) -> list[str]:
        items = []
        while (payload := self.packet()) is not None:
            items.append(payload.decode("utf-8", "surrogateescape").rstrip("\n"))
        return items

    def skip_content(self) -> int:
        """Consume content packets up to the flush; return the content size."""
        total = 0
        while (n := self._length()) is not None:
            if not self._need(n):
                raise ProtocolError("truncated packet")
            self.start += n
            total += n
        return total


def pkt_text(*lines: str) -> bytes:
    out = bytearray()
    for line in lines:
        data = (line + "\n").encode("utf-8", "surrogateescape")
        out += b"%04x" % (len(data) + 4) + data
    return bytes(out)


def writev_all(iov: list) -> None:
    first = 0
    while first < len(iov):
        written = os.writev(OUT_FD, iov[first:first + IOV_MAX])
        while first < len(iov) and written >= len(iov[first]):
            written -= len(iov[first])
            first += 1
        if written:
            iov[first] = memoryview(iov[first])[written:]


def send_response(content) -> None:
    """status=success, flush, content packets, flush, flush (empty status list)."""
    view = memoryview(content).cast("B") if len(content) else memoryview(b"")
    iov: list = [pkt_text("status=success") + FLUSH]
    for start in range(0, len(view), MAX_PAYLOAD):
        piece = view[start:start + MAX_PAYLOAD]
        iov.append(b"%04x" % (len(piece) + 4))
        iov.append(piece)
        if len(iov) >= IOV_MAX:
            writev_all(iov)
            iov = []
    iov.append(FLUSH + FLUSH)
    writev_all(iov)


def handshake(reader: Reader) -> None:
    welcome = reader.text_list()
    if welcome[:1] != ["git-filter-client"] or "version=2" not in welcome[1:]:
        raise ProtocolError(f"unexpected handshake {welcome!r}")
    writev_all([pkt_text("git-filter-server", "version=2") + FLUSH])
    caps = reader.text_list()
    reply = [c for c in ("capability=clean", "capability=smudge") if c in caps]
    writev_all([pkt_text(*reply) + FLUSH])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: null_filter.py SMUDGE_SOURCE\n")
        return 2
    widen_pipe(IN_FD)
    widen_pipe(OUT_FD)
    source = load_source(argv[1])
    reader = Reader(IN_FD)
    try:
        handshake(reader)
        while True:
            headers = reader.text_list()
            command = next((h[8:] for h in headers if h.startswith("command=")), "")
            size = reader.skip_content()
            if command == "clean":
                send_response(b"null-pointer %d\n" % size)
            elif command == "smudge":
                send_response(source)
            else:
                writev_all([pkt_text("status=error") + FLUSH])
    except EOFError:
        return 0
    except (ProtocolError, BrokenPipeError) as exc:
        sys.stderr.write(f"null_filter: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
