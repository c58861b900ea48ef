"""A manifest: the ordered chunk list of one file; its BLAKE3 is the file's content id.
Layout: docs/formats.md §2."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gitmodel.errors import GitmodelError
from gitmodel.store.chunker import MAX_SIZE

MAGIC = b"GMMANIF1"
_head = struct.Struct("<8sQQ")
_entry = struct.Struct("<32sI")
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


@dataclass(frozen=True)
class Manifest:
    size: int
    chunks: list[tuple[bytes, int]]     # (chunk id, length) in file order

    def encode(self) -> bytes:
        parts = [_head.pack(MAGIC, self.size, len(self.chunks))]
        parts.extend(_entry.pack(cid, length) for cid, length in self.chunks)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, size: int | None = None) -> "Manifest":
        """The manifest in `data` (of a file of `size` bytes, when known: see check_head)."""
        size, _ = check_head(bytes(data[:HEAD_SIZE]), len(data), size)
        chunks = [tuple(e) for e in _entry.iter_unpack(data[_head.size:])]
        if sum(length for _, length in chunks) != size:
            raise ManifestError("manifest chunk lengths do not add up to the file size")
        if any(not 0 < length <= MAX_SIZE for _, length in chunks):
            raise ManifestError(f"manifest lists a chunk of 0 bytes or over {MAX_SIZE}")
        return cls(size, chunks)
