"""A manifest: the ordered chunk list of one file; its BLAKE3 is the file's content id.
Layout: docs/formats.md §2."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gitmodel.errors import GitmodelError

MAGIC = b"GMMANIF1"
_head = struct.Struct("<8sQQ")
_entry = struct.Struct("<32sI")


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
    def decode(cls, data: bytes) -> "Manifest":
        if len(data) < _head.size:
            raise ManifestError("manifest too short")
        magic, size, count = _head.unpack_from(data)
        if magic != MAGIC:
            raise ManifestError("not a gitmodel manifest")
        if len(data) != _head.size + count * _entry.size:
            raise ManifestError("manifest length disagrees with its chunk count")
        chunks = [tuple(e) for e in _entry.iter_unpack(data[_head.size:])]
        if sum(length for _, length in chunks) != size:
            raise ManifestError("manifest chunk lengths do not add up to the file size")
        return cls(size, chunks)
