"""Pack files and their indexes: where objects (chunks and manifests) live on disk.

A pack is immutable and named after its index: `pack-<hex>.pack` where hex is the BLAKE3 of the
index's body (below, without its trailer). The index lists every object's id, place, size and
encoding, so equal names mean equal objects at equal places; the payload bytes themselves are
covered by the object ids, which readers verify on every read. (Hashing the whole pack to name
it would cost a second pass over every stored byte.)
  8 bytes   magic b"GMPACK01"
  records   each: 32-byte object id, u8 kind, u8 encoding, u32 raw length, u32 stored length,
            then the stored payload. Object id = BLAKE3 of the object's raw (decoded) bytes.
A pack is self-describing: its index can be rebuilt by walking the records.

Its index `pack-<hex>.idx` lists the records sorted by id:
  8 bytes   magic b"GMIDX001"
  u32       record count n
  n x       32-byte id, u64 record offset in the pack, u32 stored length, u32 raw length,
            u8 kind, u8 encoding
  32 bytes  BLAKE3 of everything above
A pack is visible only once its index exists: the pack is renamed into place first, then the
index, so readers never see an index pointing into a partial pack.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import blake3

PACK_MAGIC = b"GMPACK01"
INDEX_MAGIC = b"GMIDX001"
CHUNK, MANIFEST = 0, 1

record_head = struct.Struct("<32sBBII")
_index_count = struct.Struct("<I")
_index_entry = struct.Struct("<32sQIIBB")

# Start a new pack past this size: small enough to upload and retry as one object, large
# enough that a 1 GiB checkpoint is a few dozen files.
PACK_TARGET = 64 << 20


class PackError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    """Where one object lives: its record in a pack."""
    pack: str           # pack name, "pack-<hex>"
    offset: int         # of the record header in the pack file
    stored_length: int
    raw_length: int
    kind: int
    encoding: int


def encode_index(entries: dict[bytes, Entry]) -> tuple[str, bytes]:
    """(pack name, index file bytes) for a pack holding these entries."""
    parts = [INDEX_MAGIC, _index_count.pack(len(entries))]
    for oid in sorted(entries):
        e = entries[oid]
        parts.append(_index_entry.pack(oid, e.offset, e.stored_length, e.raw_length, e.kind, e.encoding))
    body = b"".join(parts)
    digest = blake3.blake3(body).digest()
    return "pack-" + digest.hex(), body + digest


def verify_index(pack: str, data: bytes) -> tuple[memoryview, int]:
    """The entries of a pack's index file, checked against its trailer and its pack name:
    (the n entries' bytes, n). Raises PackError."""
    body, trailer = data[:-32], data[-32:]
    if len(data) < 12 + 32 or body[:8] != INDEX_MAGIC or blake3.blake3(body).digest() != trailer \
            or pack != "pack-" + trailer.hex():
        raise PackError(f"{pack}.idx is damaged")
    (count,) = _index_count.unpack_from(body, 8)
    if len(body) != 12 + count * _index_entry.size:
        raise PackError(f"{pack}.idx has the wrong length")
    return memoryview(body)[12:], count


def decode_index(pack: str, data: bytes) -> dict[bytes, Entry]:
    entries, _ = verify_index(pack, data)
    return {
        oid: Entry(pack, offset, stored, raw, kind, encoding)
        for oid, offset, stored, raw, kind, encoding in _index_entry.iter_unpack(entries)
    }


# Called with each finished pack: (temporary pack file, pack name, index bytes, entries).
# The local store renames the file into place; a push uploads it.
PackSink = Callable[[Path, str, bytes, dict[bytes, Entry]], None]


class PackWriter:
    """Appends records to temporary packs; each pack that reaches the target size, and the
    last one on `finish`, goes to `sink` (which publishes it)."""

    def __init__(self, tmp_dir: Path, sink: PackSink, target: int = PACK_TARGET):
        self._tmp_dir, self._sink, self._target = tmp_dir, sink, target
        self._file = None
        self.published: list[tuple[str, dict[bytes, Entry]]] = []
        self.pending: dict[bytes, Entry] = {}      # the open pack's records

    def add(self, oid: bytes, kind: int, encoding: int, raw_length: int, payload) -> None:
        if oid in self.pending:
            return
        if self._file is None:
            self._open()
        offset = self._size
        try:
            self._write(record_head.pack(oid, kind, encoding, raw_length, len(payload)))
            self._write(payload)
        except BaseException:                  # interrupted mid-record: leave no partial one
            self._file.truncate(offset)
            self._file.seek(offset)
            self._size = offset
            raise
        self.pending[oid] = Entry("", offset, len(payload), raw_length, kind, encoding)
        if self._size >= self._target:
            self._publish()

    def finish(self) -> list[tuple[str, dict[bytes, Entry]]]:
        """Publish the open pack; returns every pack this writer published."""
        if self._file is not None:
            self._publish()
        return self.published

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            os.unlink(self._file.name)
            self._file = None
            self.pending = {}

    def _open(self) -> None:
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(dir=self._tmp_dir, prefix="pack-", delete=False)
        self._size = 0
        self._write(PACK_MAGIC)

    def _write(self, data) -> None:
        self._file.write(data)
        self._size += len(data)

    def _publish(self) -> None:
        self._file.close()
        name, index = encode_index(self.pending)
        entries = {oid: Entry(name, e.offset, e.stored_length, e.raw_length, e.kind, e.encoding)
                   for oid, e in self.pending.items()}
        path, self._file, self.pending = Path(self._file.name), None, {}
        try:
            self._sink(path, name, index, entries)
        finally:
            path.unlink(missing_ok=True)
        self.published.append((name, entries))


def publish_into(pack_dir: Path) -> PackSink:
    """The sink of a local store: rename the pack into place, then write its index."""
    def publish(path: Path, name: str, index: bytes, entries: dict[bytes, Entry]) -> None:
        pack_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, pack_dir / f"{name}.pack")
        index_tmp = Path(f"{path}.idx")
        index_tmp.write_bytes(index)
        os.replace(index_tmp, pack_dir / f"{name}.idx")
    return publish
