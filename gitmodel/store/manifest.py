"""A manifest: the ordered chunk list of one file; its BLAKE3 is the file's content id.
Layout: docs/formats.md §2."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from gitmodel.errors import GitmodelError
from gitmodel.store.chunker import MAX_SIZE

MAGIC = b"GMMANIF1"
_head = struct.Struct("<8sQQ")
_entry = struct.Struct("<32sI")
_entries = np.dtype([("id", "V32"), ("length", "<u4")])       # _entry, as numpy reads it
HEAD_SIZE = _head.size
ENTRY_SIZE = _entry.size


def max_entries(size: int) -> int:
    """The most chunks a file of `size` bytes is cut into (docs/formats.md §3, "Bounds"):
    each chunk but a segment's last holds at least chunker.MIN_SIZE bytes, and no format
    reader gives more than two non-empty segments per five bytes of the file (ONNX's densest:
    a 4-byte field header before each 1-byte tensor; the others spend tens of header bytes per
    tensor), nor any empty segment a chunk. So at most size/2 + 2, with room to spare."""
    return size // 2 + 2


# check_head's `size` for a manifest read from a remote that no pointer names (a remote gc's
# recent packs and pushes' notes): its own size field is its writer's choice, so it may list
# at most UNNAMED_MAX_ENTRIES chunks (docs/formats.md §3, "Bounds").
UNNAMED = -1
UNNAMED_MAX_ENTRIES = 1 << 22


def check_head(head: bytes, raw_length: int, size: int | None = None) -> tuple[int, int]:
    """(file size, chunk count) from a manifest's first HEAD_SIZE bytes, refusing one whose
    length or count no file could have before its entries are decoded. `size`: the size of
    the file it is for, when a pointer says (a count more than that file can have is refused
    too), or UNNAMED. Raises ManifestError."""
    if len(head) < HEAD_SIZE or raw_length < HEAD_SIZE:
        raise ManifestError("manifest too short")
    magic, declared, count = _head.unpack_from(head)
    if magic != MAGIC:
        raise ManifestError("not a gitmodel manifest")
    if raw_length != HEAD_SIZE + count * ENTRY_SIZE:
        raise ManifestError("manifest length disagrees with its chunk count")
    if size == UNNAMED:
        if count > UNNAMED_MAX_ENTRIES:
            raise ManifestError(f"manifest lists {count} chunks, more than is read from a remote "
                                f"for a checkpoint no pointer here names (at most "
                                f"{UNNAMED_MAX_ENTRIES}); not decoded")
        size = None
    for bytes_ in (declared, size):
        if bytes_ is not None and count > max_entries(bytes_):
            raise ManifestError(f"manifest lists {count} chunks, more than a file of {bytes_} "
                                f"bytes is cut into (at most {max_entries(bytes_)}); not decoded")
    return declared, count


class ManifestError(GitmodelError, ValueError):
    pass


class Chunks(Sequence):
    """A manifest's entries, (chunk id, length) in file order, kept as their encoded bytes
    (docs/formats.md §2) and decoded as they are read: as a list of tuples, each entry was
    three Python objects, which a manifest of millions of chunks paid in gigabytes and
    seconds (docs/benchmarks.md)."""

    __slots__ = ("_data",)

    def __init__(self, encoded: bytes | bytearray | memoryview = b""):
        self._data = memoryview(encoded).cast("B")
        if len(self._data) % ENTRY_SIZE:
            raise ManifestError("manifest entries cut short")

    @classmethod
    def of(cls, pairs: Iterable[tuple[bytes, int]]) -> "Chunks":
        return cls(b"".join(_entry.pack(cid, length) for cid, length in pairs))

    def __len__(self) -> int:
        return len(self._data) // ENTRY_SIZE

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        return _entry.iter_unpack(self._data)

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(start, stop, step)]
            return Chunks(self._data[start * ENTRY_SIZE:max(start, stop) * ENTRY_SIZE])
        n = len(self)
        if not -n <= i < n:
            raise IndexError("manifest entry out of range")
        return _entry.unpack_from(self._data, (i % n) * ENTRY_SIZE)

    def __eq__(self, other) -> bool:
        if isinstance(other, Chunks):
            return self._data == other._data
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None          # as a list's: a Manifest is compared, not hashed

    def __repr__(self) -> str:
        return f"Chunks({list(self)!r})" if len(self) <= 8 else f"Chunks(<{len(self)} entries>)"

    def view(self) -> memoryview:
        """The entries' encoded bytes."""
        return self._data

    def lengths(self) -> np.ndarray:
        """Every entry's length, a view of the bytes (uint32)."""
        return np.frombuffer(self._data, _entries)["length"] if self._data else np.zeros(0, "<u4")


@dataclass(frozen=True)
class Manifest:
    size: int
    chunks: Chunks          # (chunk id, length) in file order; given as any such sequence

    def __post_init__(self):
        if not isinstance(self.chunks, Chunks):
            object.__setattr__(self, "chunks", Chunks.of(self.chunks))

    def encode(self) -> bytes:
        return b"".join([_head.pack(MAGIC, self.size, len(self.chunks)), self.chunks.view()])

    @classmethod
    def decode(cls, data: bytes | memoryview, size: int | None = None) -> "Manifest":
        """The manifest in `data` (of a file of `size` bytes, when known: see check_head),
        whose entries stay in `data`, undecoded until read."""
        size, _ = check_head(bytes(data[:HEAD_SIZE]), len(data), size)
        chunks = Chunks(memoryview(data)[HEAD_SIZE:])
        lengths = chunks.lengths()
        if int(lengths.sum(dtype=np.uint64)) != size:
            raise ManifestError("manifest chunk lengths do not add up to the file size")
        if len(lengths) and (lengths.min() == 0 or lengths.max() > MAX_SIZE):
            raise ManifestError(f"manifest lists a chunk of 0 bytes or over {MAX_SIZE}")
        return cls(size, chunks)
