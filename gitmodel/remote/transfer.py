"""Moving objects between the local store and a remote, and between remotes.

upload   objects the remote lacks are copied, record by record and verified, into new packs of
         about REMOTE_PACK_TARGET bytes, uploaded two at a time; the pack holding manifests goes
         last, so a reader that sees a manifest on the remote finds all its chunks there too.
download objects the store lacks are read from the remote's packs with ranged reads, one per
         run of nearby records (coalesced across gaps up to COALESCE_GAP, capped at MAX_RANGE),
         several at once, verified, and written into local packs (chunks before manifests).
mirror   every pack the destination lacks is streamed through a temporary file, each record
         verified against its index, then uploaded as is (same name, same bytes).
Each is restartable: a pack counts as present on a remote only once its index is there, and
a repeated transfer skips whatever already arrived.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gitmodel.remote import progress
from gitmodel.remote.index import RemoteIndex
from gitmodel.remote.storage import Remote, RemoteError
from gitmodel.store import codec
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import MANIFEST, CorruptObject, MissingObjects, Store, check_record
from gitmodel.store.pack import PACK_MAGIC, Entry, PackError, PackWriter, decode_index, record_head

# S3 takes objects under 100 MiB in one PUT (s3fs switches to multipart at twice its 50 MiB
# part size), so a 1 GiB checkpoint uploads in about a dozen packs of two requests each.
REMOTE_PACK_TARGET = 96 << 20
UPLOADS_IN_FLIGHT = 2
COALESCE_GAP = 1 << 20
MAX_RANGE = 8 << 20
READS_IN_FLIGHT = 8
COPY_BLOCK = 8 << 20


class RemoteMissing(RemoteError):
    def __init__(self, remote: Remote, oids: list[bytes]):
        self.oids = oids
        super().__init__(f"remote {remote} lacks {len(oids)} object(s) (first {oids[0].hex()}); "
                         "was the commit pushed with gitmodel installed?")


@dataclass
class Stats:
    objects: int = 0
    bytes: int = 0          # stored (compressed) bytes moved
    packs: int = 0


def ordered(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """fn over items on the pool, results in order, at most `window` pending at a time."""
    queue: deque[Future] = deque()
    try:
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) >= window:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for future in queue:
            future.cancel()


# ----------------------------------------------------------------------------- upload

def upload(store: Store, index: RemoteIndex, oids: Iterable[bytes], quiet: bool = False,
           target: int = REMOTE_PACK_TARGET) -> Stats:
    """Send the objects the remote lacks. Raises MissingObjects if the local store lacks some."""
    index.refresh()
    wanted = [oid for oid in dict.fromkeys(oids) if oid not in index.entries]
    absent = store.missing(wanted)
    if absent:
        raise MissingObjects(absent)
    located = sorted(((store.locate(oid), oid) for oid in wanted),
                     key=lambda item: (item[0].kind == MANIFEST, item[0].pack, item[0].offset))
    total = sum(record_head.size + entry.stored_length for entry, _ in located)
    stats = Stats(objects=len(located), bytes=total)
    if not located:
        return stats
    batches = [[oid for _, oid in located[i:i + 64]] for i in range(0, len(located), 64)]

    def read(batch: list[bytes]) -> list:
        out = []
        for oid in batch:
            entry, record, _ = store.read_checked(oid)     # never spread a damaged object
            out.append((oid, entry, record))
        return out

    with progress.bar(total, f"push to {index.remote.name}", quiet) as bar, \
            _Uploader(index, bar) as uploader, ThreadPoolExecutor(2) as pool:
        writer = PackWriter(store.tmp_dir, uploader.send, target)
        try:
            for records in ordered(pool, read, batches, window=4):
                for oid, entry, record in records:
                    writer.add(oid, entry.kind, entry.encoding, entry.raw_length,
                               memoryview(record)[record_head.size:])
            writer.finish()
            uploader.wait()
        except BaseException:
            writer.abort()
            raise
    stats.packs = len(writer.published)
    return stats


class _Uploader:
    """PackWriter sink that uploads finished packs in the background, a few at a time."""

    def __init__(self, index: RemoteIndex, bar):
        self._index, self._bar = index, bar
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="gitmodel-upload")
        self._pending: deque[Future] = deque()
        self._files: set[Path] = set()          # packs handed over and not yet sent

    def send(self, path: Path, name: str, index: bytes, entries: dict[bytes, Entry]) -> None:
        owned = path.with_name(path.name + ".upload")      # the writer deletes `path` on return
        os.replace(path, owned)
        self._files.add(owned)
        if any(e.kind == MANIFEST for e in entries.values()):
            self.wait()                                    # every chunk first
        while len(self._pending) >= UPLOADS_IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._put, owned, name, index))

    def _put(self, path: Path, name: str, index: bytes) -> None:
        try:
            self._index.remote.put_pack(path, name, index)
            self._index.add(name, index)
            self._bar.update(path.stat().st_size - len(PACK_MAGIC))
        finally:
            path.unlink(missing_ok=True)
            self._files.discard(path)

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_Uploader":
        return self

    def __exit__(self, *exc) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        for path in self._files:                 # after a failure: packs never sent
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- download

@dataclass(frozen=True)
class _Range:
    pack: str
    start: int
    end: int
    records: list[tuple[bytes, Entry]]


def _coalesce(located: list[tuple[bytes, Entry]]) -> list[_Range]:
    ranges: list[_Range] = []
    for oid, entry in sorted(located, key=lambda item: (item[1].pack, item[1].offset)):
        end = entry.offset + record_head.size + entry.stored_length
        last = ranges[-1] if ranges else None
        if last and last.pack == entry.pack and entry.offset - last.end <= COALESCE_GAP \
                and end - last.start <= MAX_RANGE:
            ranges[-1] = _Range(last.pack, last.start, max(end, last.end), last.records + [(oid, entry)])
        else:
            ranges.append(_Range(entry.pack, entry.offset, end, [(oid, entry)]))
    return ranges


def read_objects(index: RemoteIndex, oids: Iterable[bytes], quiet: bool = True) -> Iterator:
    """(oid, entry, payload) for each object, read from the remote and verified, chunks before
    manifests. Raises RemoteMissing for objects the remote does not have."""
    oids = list(dict.fromkeys(oids))
    absent = [oid for oid in oids if oid not in index.entries]
    if absent:
        raise RemoteMissing(index.remote, absent)
    located = [(oid, index.entries[oid]) for oid in oids]
    chunks = [item for item in located if item[1].kind != MANIFEST]
    manifests = [item for item in located if item[1].kind == MANIFEST]
    ranges = _coalesce(chunks) + _coalesce(manifests)
    total = sum(record_head.size + e.stored_length for _, e in located)

    def fetch(r: _Range) -> list:
        data = memoryview(index.remote.read_range(r.pack, r.start, r.end))
        out = []
        for oid, entry in r.records:
            at = entry.offset - r.start
            record = data[at:at + record_head.size + entry.stored_length]
            try:
                check_record(oid, entry, record)
            except CorruptObject as err:
                entry, record = _other_copy(index, oid, entry, err)
            out.append((oid, entry, record[record_head.size:]))
        return out

    with progress.bar(total, f"fetch from {index.remote.name}", quiet) as bar, \
            ThreadPoolExecutor(READS_IN_FLIGHT, thread_name_prefix="gitmodel-fetch") as pool:
        for records in ordered(pool, fetch, ranges, window=READS_IN_FLIGHT):
            for item in records:
                bar.update(record_head.size + item[1].stored_length)
                yield item


def _other_copy(index: RemoteIndex, oid: bytes, damaged: Entry, error: CorruptObject) -> tuple[Entry, memoryview]:
    """A good copy, from another of the remote's packs, of an object whose record in
    `damaged.pack` failed its check (two clients that pushed at once may both have sent it)."""
    for entry in index.entries.copies(oid):
        if entry == damaged:
            continue
        end = entry.offset + record_head.size + entry.stored_length
        try:
            record = memoryview(index.remote.read_range(entry.pack, entry.offset, end))
            check_record(oid, entry, record)
        except (CorruptObject, RemoteError, OSError):
            continue
        return entry, record
    raise RemoteError(f"remote {index.remote}: {error}")


def download(store: Store, index: RemoteIndex, oids: Iterable[bytes], quiet: bool = False,
             known: dict[bytes, tuple[Entry, bytes]] | None = None) -> Stats:
    """Fetch into the store the given objects it lacks. `known`: objects already read from
    the remote and verified (manifests, by checkpoint_objects), stored after the rest."""
    need = store.missing(list(dict.fromkeys(oids)))
    stats = Stats()
    if not need:
        return stats
    known = known or {}
    fetch = [oid for oid in need if oid not in known]
    if not index.packs:
        index.refresh()
    if any(oid not in index.entries for oid in fetch):
        index.refresh()
    already = ((oid, *known[oid]) for oid in need if oid in known)
    writer = store.writer()
    try:
        for oid, entry, payload in itertools.chain(read_objects(index, fetch, quiet), already):
            writer.add(oid, entry.kind, entry.encoding, entry.raw_length, payload)
            stats.objects += 1
            stats.bytes += len(payload)
    finally:
        # Keep what arrived, even when interrupted: every record was verified, and chunks
        # come before manifests, so a published manifest never lacks its chunks. A repeated
        # fetch asks only for the rest.
        store.publish(writer)
    stats.packs = len(writer.published)
    return stats


def checkpoint_objects(store: Store, index: RemoteIndex, manifest_ids: Iterable[bytes],
                       read: dict[bytes, tuple[Entry, bytes]] | None = None) -> list[bytes]:
    """Every object of these checkpoints: chunk ids, then manifest ids. Manifests missing here
    are read from the remote (kept in memory only: they are small); `read` receives them,
    so that `download(..., known=read)` does not read them twice."""
    manifest_ids = list(dict.fromkeys(manifest_ids))
    absent = set(store.missing(manifest_ids))
    remote_manifests = {}
    if absent:
        if any(oid not in index.entries for oid in absent):
            index.refresh()
        remote_manifests = {oid: (entry, bytes(payload)) for oid, entry, payload in
                            read_objects(index, [m for m in manifest_ids if m in absent])}
    chunks: dict[bytes, None] = {}
    for oid in manifest_ids:
        if oid in absent:
            entry, payload = remote_manifests[oid]
            manifest = Manifest.decode(codec.decode(entry.encoding, payload, entry.raw_length))
        else:
            manifest = store.read_manifest(oid)
        chunks.update(dict.fromkeys(cid for cid, _ in manifest.chunks))
    if read is not None:
        read.update(remote_manifests)
    return list(chunks) + manifest_ids


# ----------------------------------------------------------------------------- mirror

def mirror(source: Remote, dest: Remote, tmp_dir: Path, quiet: bool = False,
           log: Callable[[str], None] = lambda line: None) -> Stats:
    """Copy every pack `dest` lacks from `source`, verifying each record on the way.

    Pack files go first, all of them, without their indexes (so invisible); then the indexes,
    a pack's only after those of the packs holding its manifests' chunks. Interrupted, the
    destination shows only complete checkpoints, and a repeated mirror skips pack files that
    arrived whole."""
    wanted = sorted(source.pack_names() - dest.pack_names())
    indexes = {}
    for name in wanted:
        try:
            indexes[name] = source.read_index(name)
        except (PackError, FileNotFoundError):
            log(f"skipping {name}: its index on {source} is incomplete, damaged or gone")
    entries = {name: decode_index(name, data) for name, data in indexes.items()}
    stats = Stats(packs=len(entries), objects=sum(len(e) for e in entries.values()))
    total = sum(record_head.size + e.stored_length for es in entries.values() for e in es.values())
    needs: dict[str, set[bytes]] = {}              # pack -> chunks its manifests list
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with progress.bar(total, f"mirror to {dest.name}", quiet) as bar:
        for name in sorted(entries):
            path = tmp_dir / f"{name}.mirror"
            try:
                try:
                    with source.open_pack(name) as src, open(path, "wb") as out:
                        size, needs[name] = _copy_verified(src, out, name, entries[name], bar.update)
                except (CorruptObject, PackError, FileNotFoundError) as err:
                    raise RemoteError(f"remote {source}: {name}.pack is damaged or gone ({err}); "
                                      f"it was not copied to {dest}") from None
                stats.bytes += size
                dest.put_pack_file(path, name)
            finally:
                path.unlink(missing_ok=True)
    for name in _publication_order(entries, needs):
        dest.put_index(name, indexes[name])
        log(f"copied {name} ({len(entries[name])} objects)")
    return stats


def _publication_order(entries: dict[str, dict[bytes, Entry]], needs: dict[str, set[bytes]]) -> list[str]:
    """Packs ordered so that each comes after the copied packs holding chunks its manifests
    list (chunks in no copied pack are already at the destination)."""
    holder: dict[bytes, str] = {}
    for name in sorted(entries):
        for oid in entries[name]:
            holder.setdefault(oid, name)
    depends = {name: {holder[c] for c in needs.get(name, ()) if c in holder} - {name}
               for name in entries}
    order, done = [], set()
    while len(order) < len(entries):
        ready = sorted(n for n in entries if n not in done and depends[n] <= done)
        if not ready:                     # a cycle (two writers' packs citing each other)
            ready = sorted(n for n in entries if n not in done)
        order += ready
        done.update(ready)
    return order


def _copy_verified(src, out, name: str, entries: dict[bytes, Entry], advance) -> tuple[int, set[bytes]]:
    """Stream a pack from src to out, checking that its records are exactly those its index
    lists, each intact. Returns the bytes copied and the chunk ids its manifests list."""
    def exact(n: int) -> bytes:
        data = src.read(n)
        if len(data) != n:
            raise PackError(f"{name}.pack is shorter than its index says")
        return data

    if exact(len(PACK_MAGIC)) != PACK_MAGIC:
        raise PackError(f"{name}.pack is not a gitmodel pack")
    out.write(PACK_MAGIC)
    position, cited = len(PACK_MAGIC), set()
    for oid, entry in sorted(entries.items(), key=lambda item: item[1].offset):
        if entry.offset != position:
            raise PackError(f"{name}.idx places records in gaps or overlaps")
        record = exact(record_head.size + entry.stored_length)
        data = check_record(oid, entry, record)
        if entry.kind == MANIFEST:
            try:
                cited.update(cid for cid, _ in Manifest.decode(data).chunks)
            except ValueError as err:
                raise PackError(f"manifest {oid.hex()} in {name}.pack: {err}") from None
        out.write(record)
        position += len(record)
        advance(len(record))
    if src.read(1):
        raise PackError(f"{name}.pack has bytes its index does not list")
    return position, cited
