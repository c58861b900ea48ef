"""Shared by the format reader tests: consume a layout as clean does, and round-trip a file
through the real clean and smudge paths."""

from __future__ import annotations

import io
import sys
import tempfile

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


def clean_restore(data: bytes, root: str | None = None) -> tuple[bytes, bytes]:
    """(pointer text, restored bytes) through the real clean and smudge paths, in a store at
    `root` (default: a temporary one, removed after)."""
    if root is None:
        with tempfile.TemporaryDirectory() as temporary:
            return clean_restore(data, temporary)
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


def damage(draw, data: bytes, ops: int = 3, focus: int | None = None, insert_max: int = 64) -> bytes:
    """Hypothesis helper: 1..ops random truncations, byte flips, insertions, deletions and
    overwrites of `data`; with `focus`, positions favour the first `focus` bytes (headers)."""
    from hypothesis import strategies as st
    out = bytearray(data)
    for _ in range(draw(st.integers(1, ops))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "overwrite"]))
        anywhere = st.integers(0, len(out))
        at = draw(st.one_of(st.integers(0, min(focus, len(out))), anywhere) if focus else anywhere)
        if kind == "truncate":
            del out[at:]
        elif kind == "flip" and at < len(out):
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=insert_max))
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, insert_max))]
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            out[at:at + len(patch)] = patch
    return bytes(out)


def assert_survives(data: bytes) -> None:
    """Damaged input: the reader walks it without raising, and the store gives it back exactly."""
    walk_layout(data)
    text, restored = clean_restore(data)
    assert restored == data
    assert not data or pointer.parse(text).size == len(data)


def assert_checkout_restores(repo, digests: dict[str, str]) -> None:
    """Delete the committed files, check them out again: each has its sha256 back, and git
    sees nothing modified."""
    from conftest import sha256
    for name in digests:
        (repo.path / name).unlink()
    repo.git("checkout", "--", *digests)
    assert {name: sha256(repo.path / name) for name in digests} == digests
    assert repo.status() == ""


def pointers_shallow_and_deep(data: bytes) -> tuple[str, str]:
    """The file's pointer (nothing stored) computed near the top of the stack, and again
    150 frames below Python's recursion limit (as in a deep caller: the merge driver)."""
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        try:
            clean = lambda: checkpoint.clean(io.BytesIO(data), store, write=False).decode()
            return clean(), _at_stack_depth(sys.getrecursionlimit() - 150, clean)
        finally:
            store.close()


def _at_stack_depth(frames: int, call):
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return _deeper(frames - depth, call)


def _deeper(n: int, call):
    return _deeper(n - 1, call) if n > 0 else call()
