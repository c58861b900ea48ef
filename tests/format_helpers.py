"""Shared by the format reader tests: consume a layout as clean does, and round-trip a file
through the real clean and smudge paths."""

from __future__ import annotations

import io

from gitmodel import checkpoint, pointer
from gitmodel.formats import Layout, PeekableStream, detect
from gitmodel.store.objects import Store


def walk_layout(data: bytes, max_peek: int = 128 << 20, reader=detect):
    """(layout, [(position, segment)], bytes left after the last segment), reading each
    segment's bytes in bounded pieces (a damaged file may claim a huge one)."""
    stream = PeekableStream(io.BytesIO(data), max_peek=max_peek)
    layout = reader(stream) or Layout("opaque", iter(()))
    assert stream.position == 0, "readers only peek"
    segments = []
    for segment in layout.segments:
        assert segment.length >= 0
        segments.append((stream.position, segment))
        if not consume(stream, segment.length):
            break
    return layout, segments, len(data) - stream.position


def consume(stream: PeekableStream, n: int) -> bool:
    """Read n bytes in pieces; False at the end of the stream."""
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if not got:
            return False
        n -= got
    return True


def tensor_lines(segments) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(s.tensor.name, s.tensor.dtype, s.tensor.shape) for _, s in segments if s.tensor]


def clean_restore(data: bytes, root: str) -> tuple[bytes, bytes]:
    """(pointer text, restored bytes) through the real clean and smudge paths."""
    store = Store(root)
    try:
        text = checkpoint.clean(io.BytesIO(data), store)
        if not data:
            assert text == b""                   # an empty file stays empty, no pointer
            return text, data
        out = bytearray()
        checkpoint.Restore(pointer.parse(text), store).write_to(lambda *bufs: [out.extend(b) for b in bufs])
        return text, bytes(out)
    finally:
        store.close()
