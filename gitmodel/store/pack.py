"""Pack files and their indexes: where objects (chunks and manifests) live on disk.
Layout and publishing rules: docs/formats.md §3 and §4."""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import blake3

from gitmodel.errors import GitmodelError
from gitmodel.store import files
from gitmodel.store.codec import DELTA

PACK_MAGIC = b"GMPACK01"
INDEX_MAGIC = b"GMIDX001"
CHUNK, MANIFEST = 0, 1

record_head = struct.Struct("<32sBBII")
_index_count = struct.Struct("<I")
_index_entry = struct.Struct("<32sQIIBB")

# Start a new pack past this size: small enough to upload and retry as one object, large
# enough that a 1 GiB checkpoint is a few dozen files.
PACK_TARGET = 64 << 20
IOV_MAX = os.sysconf("SC_IOV_MAX")     # buffers one writev takes


class PackError(GitmodelError, ValueError):
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


# Called with each finished pack: (temporary pack file, its open descriptor, which holds the
# file's lock, pack name, index bytes, entries).
# The local store renames the file into place; a push uploads it.
PackSink = Callable[[Path, int, str, bytes, dict[bytes, Entry]], None]


class PackWriter:
    """Appends records to temporary packs; each pack that reaches the target size, and the
    last one on `finish`, goes to `sink` (which publishes it). A temporary pack is locked
    while it is written, so a sweep can tell it from one a killed process left. An object
    added twice is written once per pack, unless the first copy is a delta and the second
    whole: a delta's base must keep a whole copy (codec.DELTA's bases are read from one)."""

    def __init__(self, tmp_dir: Path, sink: PackSink, target: int = PACK_TARGET,
                 make_dir: Callable[[Path], None] | None = None):
        self._tmp_dir, self._sink, self._target = tmp_dir, sink, target
        self._make_dir = make_dir or (lambda path: path.mkdir(parents=True, exist_ok=True))
        self._file = None
        self.published: list[tuple[str, dict[bytes, Entry]]] = []
        self.pending: dict[bytes, Entry] = {}      # the open pack's records

    def add(self, oid: bytes, kind: int, encoding: int, raw_length: int, payload) -> None:
        """Append a record; `payload` is bytes-like, or a list of bytes-like parts (written
        as they are, never joined in memory)."""
        held = self.pending.get(oid)
        if held is not None:
            if held.encoding != DELTA or encoding == DELTA:
                return
            self._publish()           # a whole copy after a delta: keep both, in two packs
        if self._file is None:
            self._open()
        offset = self._size
        parts = payload if isinstance(payload, list) else [payload]
        stored = sum(map(len, parts))
        try:
            self._write([record_head.pack(oid, kind, encoding, raw_length, stored), *parts])
        except BaseException:                  # interrupted mid-record: leave no partial one
            self._file.truncate(offset)
            self._file.seek(offset)
            self._size = offset
            raise
        self.pending[oid] = Entry("", offset, stored, raw_length, kind, encoding)
        if self._size >= self._target:
            self._publish()

    def finish(self) -> list[tuple[str, dict[bytes, Entry]]]:
        """Publish the open pack; returns every pack this writer published."""
        if self._file is not None:
            self._publish()
        return self.published

    def abort(self) -> None:
        if self._file is not None:
            file, self._file, self.pending = self._file, None, {}
            try:
                file.close()           # flushes: on a full disk that fails, but closes anyway
            except OSError:
                pass
            finally:
                Path(file.name).unlink(missing_ok=True)

    def _open(self) -> None:
        self._make_dir(self._tmp_dir)
        self._file = tempfile.NamedTemporaryFile(dir=self._tmp_dir, prefix="pack-", delete=False,
                                                 buffering=0)
        files.lock(self._file.fileno())
        self._size = 0
        self._write([PACK_MAGIC])

    def _write(self, parts: list) -> None:
        """Write the parts with writev: one system call a record, and no copy in Python (the
        kernel takes the bytes from each part where it lies)."""
        views = [v for v in (memoryview(p).cast("B") for p in parts) if len(v)]
        while views:
            written = os.writev(self._file.fileno(), views[:IOV_MAX])
            self._size += written
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]

    def _publish(self) -> None:
        self._file.flush()
        name, index = encode_index(self.pending)
        entries = {oid: Entry(name, e.offset, e.stored_length, e.raw_length, e.kind, e.encoding)
                   for oid, e in self.pending.items()}
        file, self._file, self.pending = self._file, None, {}
        path = Path(file.name)
        try:
            self._sink(path, file.fileno(), name, index, entries)   # locked meanwhile
        finally:
            try:
                file.close()
            finally:
                path.unlink(missing_ok=True)
        self.published.append((name, entries))


def publish_into(pack_dir: Path, permissions: files.Permissions | None = None) -> PackSink:
    """The sink of a local store. The pack and its index both reach the disk, under
    temporary names, before either is renamed into place, pack first: a full disk leaves
    nothing in `pack_dir`, and a crash at worst a pack without an index (invisible, and
    indexed again by the next command that opens the store)."""
    permissions = permissions or files.Permissions()

    def publish(path: Path, fd: int, name: str, index: bytes, entries: dict[bytes, Entry]) -> None:
        os.fsync(fd)
        os.chmod(path, permissions.file())
        index_tmp = Path(f"{path}.idx")
        with files.written(index_tmp, index, permissions.file()):   # unlinked if this fails
            permissions.make_dir(pack_dir)
            os.replace(path, pack_dir / f"{name}.pack")
            os.replace(index_tmp, pack_dir / f"{name}.idx")
        files.fsync_dir(pack_dir)
    return publish


def scan(read: Callable[[int], bytes]) -> Iterator[tuple[bytes, Entry, bytes]]:
    """Walk a pack's records from the start: (id, entry, whole record) each, the entry's pack
    name left empty. Stops at the end or at the first record that is cut short; raises
    PackError if the file is not a pack."""
    if read(len(PACK_MAGIC)) != PACK_MAGIC:
        raise PackError("not a gitmodel pack")
    offset = len(PACK_MAGIC)
    while True:
        head = read(record_head.size)
        if len(head) < record_head.size:
            return
        oid, kind, encoding, raw_length, stored_length = record_head.unpack(head)
        payload = read(stored_length)
        if len(payload) < stored_length:
            return
        yield oid, Entry("", offset, stored_length, raw_length, kind, encoding), head + payload
        offset += len(head) + stored_length
