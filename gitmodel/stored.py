"""Stored checkpoints: which objects a set of checkpoints needs, what an object refers to, and
random access to one stored checkpoint's bytes and tensors.

Every path that moves or checks objects asks here (push, fetch, smudge, fsck, mirror, review),
so a new kind of reference between objects is taught in one place.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gitmodel import formats
from gitmodel.formats import PeekableStream
from gitmodel.store.manifest import Manifest
from gitmodel.errors import GitmodelError
from gitmodel.store.objects import MANIFEST, CorruptObject, Store

Checkpoints = dict[str, str]                # content id (hex) -> a path it is known by
ReadManifest = Callable[[bytes], Manifest]
# fetch(oids, sizes=None) brings the given objects into the store; `sizes`: the file size a
# pointer gives for a manifest among them (what bounds it: transfer.read_objects).
Fetch = Callable[..., None]


def references(kind: int, data: bytes) -> list[bytes]:
    """The objects an object's bytes refer to (a manifest: its chunks, each once)."""
    if kind == MANIFEST:
        return list(dict.fromkeys(cid for cid, _ in Manifest.decode(data).chunks))
    return []


@dataclass
class Needed:
    """What some checkpoints need: chunk ids then manifest ids (the order to store or send
    them in), and the manifests that could not be read, with why."""
    chunks: list[bytes] = field(default_factory=list)
    manifests: list[bytes] = field(default_factory=list)
    unreadable: dict[bytes, str] = field(default_factory=dict)
    needed_by: dict[bytes, list[bytes]] = field(default_factory=dict)   # chunk -> manifests

    @property
    def objects(self) -> list[bytes]:
        return self.chunks + self.manifests


def needed(manifest_ids: Iterable[bytes], read_manifest: ReadManifest) -> Needed:
    """The objects of these checkpoints (by manifest id), each once."""
    result = Needed(manifests=list(dict.fromkeys(manifest_ids)))
    chunks: dict[bytes, list[bytes]] = {}
    for oid in result.manifests:
        try:
            manifest = read_manifest(oid)
        except (GitmodelError, ValueError) as err:
            result.unreadable[oid] = err.full() if isinstance(err, GitmodelError) else str(err)
            continue
        for cid, _ in manifest.chunks:
            users = chunks.setdefault(cid, [])
            if not users or users[-1] != oid:       # a chunk recurring in a file: its once
                users.append(oid)
    result.chunks = list(chunks)
    result.needed_by = chunks
    return result


def content_ids(checkpoints: Iterable[str]) -> list[bytes]:
    return [bytes.fromhex(content) for content in checkpoints]


def read_chunk(store: Store, cid: bytes, length: int, out=None) -> bytes:
    """A chunk's bytes, verified, and of the length its manifest gives (decoded into `out`,
    `length` bytes, if given)."""
    return _of_length(cid, length, store.read(cid, out))


def read_run(store: Store, chunks: list[tuple[bytes, int]]) -> list:
    """The bytes of consecutive chunks of a file, (id, length) each, verified and of the
    lengths the manifest gives (Store.read_run)."""
    return [_of_length(cid, length, data) for (cid, length), data in zip(chunks, store.read_run(chunks))]


def _of_length(cid: bytes, length: int, data):
    if len(data) != length:           # a manifest that lies about a chunk's length
        raise CorruptObject(cid, f"manifest says {length} bytes, chunk has {len(data)}")
    return data


# ----------------------------------------------------------------------------- random access

class _Sequential:
    """read() and skip() from read_at(): the file-like face a PeekableStream needs."""
    size: int
    position: int

    def read(self, n: int) -> bytes:
        data = self.read_at(self.position, n)
        self.position += len(data)
        return data

    def skip(self, n: int) -> int:
        step = max(0, min(n, self.size - self.position))
        self.position += step
        return step


class StoredFile(_Sequential):
    """Random access to a checkpoint in the store: reads decode only the chunks they touch.
    Given `fetch`, chunks the store lacks are fetched first (from a remote), range by range."""

    def __init__(self, store: Store, content: str, fetch: Fetch | None = None):
        self._store, self._fetch = store, fetch
        self.chunks = store.read_manifest(bytes.fromhex(content)).chunks
        self._starts, offset = [], 0
        for _, length in self.chunks:
            self._starts.append(offset)
            offset += length
        self.size = offset
        self.position = 0
        self._cached: tuple[int, bytes] | None = None

    def chunks_in(self, offset: int, n: int) -> list[bytes]:
        """Ids of the chunks holding bytes [offset, offset + n)."""
        if n <= 0 or offset >= self.size:
            return []
        first = bisect.bisect_right(self._starts, offset) - 1
        last = bisect.bisect_left(self._starts, min(offset + n, self.size)) - 1
        return [cid for cid, _ in self.chunks[first:last + 1]]

    def spans_in(self, offset: int, n: int) -> list[tuple[bytes, int, int]]:
        """(id, start in the file, length) of the chunks holding bytes [offset, offset + n),
        each where it lies there (a chunk may recur elsewhere in the file)."""
        if n <= 0 or offset >= self.size:
            return []
        first = bisect.bisect_right(self._starts, offset) - 1
        last = bisect.bisect_left(self._starts, min(offset + n, self.size)) - 1
        return [(cid, self._starts[i], length)
                for i, (cid, length) in enumerate(self.chunks[first:last + 1], start=first)]

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch, in one batch, the missing chunks of these (offset, length) ranges."""
        if self._fetch is None:
            return
        wanted = dict.fromkeys(cid for offset, n in ranges for cid in self.chunks_in(offset, n))
        missing = self._store.missing(list(wanted))
        if missing:
            self._fetch(missing)

    def read_at(self, offset: int, n: int) -> bytes:
        parts, end = [], min(offset + n, self.size)
        self.prefetch([(offset, n)])
        while offset < end:
            i = bisect.bisect_right(self._starts, offset) - 1
            start = self._starts[i]
            if self._cached is None or self._cached[0] != i:
                self._cached = (i, read_chunk(self._store, *self.chunks[i]))
            data = self._cached[1]
            take = min(end, start + len(data)) - offset
            parts.append(data[offset - start:offset - start + take])
            offset += take
        return b"".join(parts)

    def read_span(self, offset: int, n: int) -> bytes:
        """`read_at` without the one-chunk cache or fetching, so threads may call it at once
        (on ranges already fetched)."""
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        first = bisect.bisect_right(self._starts, offset) - 1
        parts = []
        i = first
        while i < len(self.chunks) and self._starts[i] < end:
            data = read_chunk(self._store, *self.chunks[i])
            start = self._starts[i]
            parts.append(memoryview(data)[max(offset - start, 0):min(end - start, len(data))])
            i += 1
        return b"".join(parts)


class FileOnDisk(_Sequential):
    """A checkpoint read from a file on disk (a work-tree file nothing stored), with the face
    of a StoredFile: random reads, and nothing to fetch."""

    def __init__(self, path):
        import os
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self.position = 0

    def read_at(self, offset: int, n: int) -> bytes:
        import os
        return os.pread(self._fd, max(0, min(n, self.size - offset)), offset)

    read_span = read_at

    def prefetch(self, ranges) -> None:
        pass

    def close(self) -> None:
        import os
        os.close(self._fd)


@dataclass(frozen=True)
class Placed:
    """Where one tensor's bytes are in a stored file."""
    offset: int
    length: int
    tensor: formats.Tensor


def locate_tensors(file: StoredFile) -> dict[str, Placed]:
    """Where each tensor's bytes are, by running the format reader over the stored file
    (reading its headers only). None when the reader finds their values unreadable in
    place, as the file's pointer lists none then."""
    stream = PeekableStream(file)
    layout = formats.detect(stream)
    placed: dict[str, Placed] = {}
    for segment in layout.segments:
        if segment.tensor is not None:
            placed.setdefault(segment.tensor.name, Placed(stream.position, segment.length, segment.tensor))
        if stream.skip(segment.length) < segment.length:
            break
    return {} if layout.values_unreadable else placed


def tensor_chunks(file: StoredFile, placed: Placed) -> list[bytes]:
    """The ids of the chunks that make up one tensor (a tensor is always whole chunks)."""
    return file.chunks_in(placed.offset, placed.length)
