"""The local object store: packs under one directory, and a table of where each object is.

    <root>/packs/pack-<hex>.pack   immutable, content-addressed packs
    <root>/packs/pack-<hex>.idx    their indexes (a pack without one is not yet visible)
    <root>/tmp/                    packs being written (left by a killed process: swept after a day)

Many processes may add at once: each writes its own temporary pack and publishes it by rename.
Two processes that store the same object both keep a copy; that wastes space, never loses data.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import blake3

from gitmodel.store import codec
from gitmodel.store.manifest import Manifest
from gitmodel.store.pack import CHUNK, MANIFEST, Entry, PackWriter, publish_into, record_head, verify_index
from gitmodel.store.table import ObjectTable


class StoreError(Exception):
    pass


class MissingObjects(StoreError):
    def __init__(self, oids: list[bytes]):
        self.oids = oids
        super().__init__(f"{len(oids)} object(s) missing, first {oids[0].hex()}")


class CorruptObject(StoreError):
    def __init__(self, oid: bytes, why: str):
        self.oid = oid
        super().__init__(f"object {oid.hex()} is corrupt: {why}")


class Store:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.pack_dir = self.root / "packs"
        self.tmp_dir = self.root / "tmp"
        self._index = ObjectTable()
        self._loaded: set[str] = set()
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._swept = False
        self._refreshing = threading.Lock()
        self.refresh()

    # ----- index -----

    def refresh(self) -> None:
        """Pick up packs published since the last look (by this or another process)."""
        if not self.pack_dir.is_dir():
            return
        with self._refreshing:              # threads refreshing at once add each pack once
            fresh = [path.stem for path in sorted(self.pack_dir.glob("pack-*.idx"))
                     if path.stem not in self._loaded]
            self._index.add_indexes([(name, *verify_index(name, (self.pack_dir / f"{name}.idx").read_bytes()))
                                     for name in fresh])
            self._loaded.update(fresh)

    def has(self, oid: bytes) -> bool:
        return oid in self._index

    def locate(self, oid: bytes) -> Entry | None:
        return self._index.get(oid)

    def missing(self, oids) -> list[bytes]:
        """The given ids not in the store, looking again on disk before answering."""
        absent = [oid for oid in oids if oid not in self._index]
        if absent:
            self.refresh()
            absent = [oid for oid in absent if oid not in self._index]
        return absent

    def packs(self) -> list[str]:
        return sorted(self._loaded)

    def entries(self) -> list[tuple[bytes, Entry]]:
        """Every object with its location (an object in two packs twice), in pack order."""
        return sorted(self._index.items(), key=lambda item: (item[1].pack, item[1].offset))

    # ----- writing -----

    def writer(self) -> PackWriter:
        if not self._swept:
            self._swept = True
            sweep(self.tmp_dir)
        return PackWriter(self.tmp_dir, publish_into(self.pack_dir))

    def publish(self, writer: PackWriter) -> None:
        """Finish the writer's packs and make their objects visible to this Store."""
        for name, entries in writer.finish():
            with self._refreshing:
                if name not in self._loaded:
                    self._index.add_entries(name, entries)
                    self._loaded.add(name)

    # ----- reading -----

    def read(self, oid: bytes) -> bytes:
        """The object's bytes, verified against its id."""
        return self.read_checked(oid)[2]

    def read_checked(self, oid: bytes) -> tuple[Entry, bytes, bytes]:
        """(index entry, record as stored, bytes) of the object, verified. If a copy is
        damaged and another pack holds the object too, that copy serves; if none is good,
        the first copy's error is raised."""
        copies = self._index.copies(oid)
        if not copies:
            self.refresh()
            copies = self._index.copies(oid)
            if not copies:
                raise MissingObjects([oid])
        first_error = None
        for entry in copies:
            try:
                record = self._read_record(oid, entry)
                return entry, record, check_record(oid, entry, record)
            except CorruptObject as err:
                first_error = first_error or err
        raise first_error

    def read_copy(self, oid: bytes, entry: Entry) -> bytes:
        """The bytes of this one copy of the object, verified (for checking every copy)."""
        return check_record(oid, entry, self._read_record(oid, entry))

    def _read_record(self, oid: bytes, entry: Entry) -> bytes:
        size = record_head.size + entry.stored_length
        try:
            record = os.pread(self._fd(entry.pack), size, entry.offset)
        except OSError as err:
            raise CorruptObject(oid, f"cannot read {entry.pack}.pack: {err.strerror}") from None
        if len(record) != size:
            raise CorruptObject(oid, f"{entry.pack}.pack is truncated")
        return record

    def read_manifest(self, oid: bytes) -> Manifest:
        data = self.read(oid)
        if self._index.get(oid).kind != MANIFEST:
            raise CorruptObject(oid, "not a manifest")
        try:
            return Manifest.decode(data)
        except ValueError as err:
            raise CorruptObject(oid, str(err)) from None

    def _fd(self, pack: str) -> int:
        fd = self._fds.get(pack)
        if fd is None:
            with self._lock:
                fd = self._fds.get(pack)
                if fd is None:
                    fd = os.open(self.pack_dir / f"{pack}.pack", os.O_RDONLY)
                    self._fds[pack] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


STALE_AFTER = 24 * 3600      # seconds without a write after which a temporary file is dead


def sweep(tmp_dir: Path) -> None:
    """Remove temporary packs a killed process left behind. A live writer touches its file
    at least every few seconds, so a day without a write means nobody will publish it."""
    try:
        paths = list(tmp_dir.iterdir())
    except OSError:
        return
    cutoff = time.time() - STALE_AFTER
    for path in paths:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def check_record(oid: bytes, entry: Entry, record: bytes | memoryview) -> bytes:
    """The object's bytes from its stored record, after checking the record header against the
    index entry and the decoded bytes against the id. Raises CorruptObject."""
    if len(record) != record_head.size + entry.stored_length:
        raise CorruptObject(oid, f"record in {entry.pack}.pack has the wrong length")
    head = record_head.unpack_from(record)
    if head != (oid, entry.kind, entry.encoding, entry.raw_length, entry.stored_length):
        raise CorruptObject(oid, f"record header in {entry.pack}.pack disagrees with its index")
    try:
        data = codec.decode(entry.encoding, memoryview(record)[record_head.size:], entry.raw_length)
    except codec.CodecError as err:
        raise CorruptObject(oid, str(err)) from None
    if blake3.blake3(data).digest() != oid:
        raise CorruptObject(oid, "content does not match its id")
    return data


__all__ = ["CHUNK", "MANIFEST", "CorruptObject", "check_record", "MissingObjects", "Store", "StoreError"]
