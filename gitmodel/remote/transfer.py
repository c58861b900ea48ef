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

import dataclasses
import itertools
import os
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gitmodel.remote import progress
from gitmodel.remote.backend import Listing, RangesUnsupported, RemoteError, Retrying
from gitmodel.remote.view import RemoteView
from gitmodel.store import codec, files
from gitmodel.store.codec import Bases
from gitmodel.store.manifest import UNNAMED
from gitmodel.store.objects import (MANIFEST, MAX_CHAIN, ChainTooLong, CorruptObject, MissingBase,
                                    MissingObjects, Store, StoreVersionError, check_record, goes_round)
from gitmodel.store.pack import (PACK_MAGIC, Entry, PackError, PackWriter, decode_index, record_head,
                                 verify_index)
from gitmodel.store.table import ObjectTable

# S3 takes objects under 100 MiB in one PUT (s3fs switches to multipart at twice its 50 MiB
# part size), so a 1 GiB checkpoint uploads in about a dozen packs of two requests each.
REMOTE_PACK_TARGET = 96 << 20
UPLOADS_IN_FLIGHT = 2
COALESCE_GAP = 1 << 20
MAX_RANGE = 8 << 20
READS_IN_FLIGHT = 8

# What an object refers to, from its kind and bytes (a manifest: its chunks); decided above
# this package (gitmodel.stored.references), which knows what objects mean.
References = Callable[[int, bytes], Iterable[bytes]]


class RemoteMissing(RemoteError):
    def __init__(self, view: RemoteView, oids: list[bytes]):
        self.oids = oids
        super().__init__(view.describe_missing(len(oids), oids[0]))


@dataclass
class TransferStats:
    objects: int = 0
    bytes: int = 0          # stored (compressed) bytes moved
    packs: int = 0
    failed: dict[bytes, str] = field(default_factory=dict)   # objects not moved, and why
    skipped: int = 0        # damaged packs not copied, each object of them held by another


GC_NOTE_STALE = 900.0   # seconds: a gc's note older than this is from a gc that died
GC_POLL = 1.0
RECENT_PACK = 3600.0    # seconds: a pack this young is safe from a remote gc's grace (a day)


def settled_listing(backend: Retrying, say: Callable[[str], None] = lambda line: None,
                    clock: str | None = None):
    """The remote's listing once no gc is removing packs from it: gcs at work (their notes,
    remote/collect.py) are waited for, up to GC_NOTE_STALE seconds in all. `clock`: a push's
    note just written, whose time there tells the remote's clock (else this machine's)."""
    start, told, offset = time.monotonic(), False, None
    while True:
        listing = backend.list_packs()
        if offset is None:
            written = listing.pushing.get(clock) if clock else None
            offset = written - time.time() if written is not None else 0.0
        now = time.time() + offset
        busy = [name for name, when in listing.collecting.items()
                if when is None or now - when < GC_NOTE_STALE]
        if not busy:
            return listing
        if time.monotonic() - start > GC_NOTE_STALE:
            say(f"a gc of remote {backend} has been removing packs for {GC_NOTE_STALE:.0f} s "
                f"({busy[0]}); going on without it")
            return listing
        if not told:
            newest = max(busy, key=lambda name: listing.collecting.get(name) or now)
            began = listing.collecting.get(newest)
            left = max(60.0, GC_NOTE_STALE - (now - began) if began is not None else GC_NOTE_STALE)
            say(f"waiting for a gc of remote {backend} to finish removing packs (its note "
                f"{newest}: at most {left / 60:.0f} more minute(s); a gc that was killed "
                "holds it that long, or until its note is deleted)")
            told = True
        time.sleep(GC_POLL)


# A push's note (`packs/push-<16 hex>.pending`) names the checkpoints it put on the remote. The
# pre-push hook ends before git updates the remote's refs (after sending git's own objects),
# so for a while no ref a gc reads names what the push uploaded or relied on: a gc keeps what
# a note names until the note is PUSH_NOTE_AGE old, and more if the gc read the refs longer
# ago (sync.push writes it before its last check of the remote and again when done). Ages
# are on the remote's clock (the mtime of a file just written there): a client whose clock
# runs fast must not take live notes for old ones.
PUSH_NOTE_AGE = 3600.0
PUSH_NOTE_SWEEP = 86400.0       # a push removes notes this old: far past any gc's use of them


def announce_push(backend: Retrying, manifest_ids: list[bytes], name: str | None = None) -> str:
    """Write the note of a push of these checkpoints (again, if `name` is given)."""
    name = name or f"push-{os.urandom(8).hex()}.pending"
    backend.put_note(name, "".join(f"{oid.hex()}\n" for oid in manifest_ids).encode())
    return name


def remote_clock(backend: Retrying) -> tuple[float | None, Listing]:
    """The remote's time now, from an empty note written there, and the listing that showed
    it; None when the remote keeps no times or this client may not write there (a gc that
    cannot write removes nothing: it only reports)."""
    try:
        probe = announce_push(backend, [])
    except RemoteError:
        return None, backend.list_packs()
    try:
        listing = backend.list_packs()
    finally:
        remove_quietly(backend, probe)
    return listing.pushing.pop(probe, None), listing


def remove_quietly(backend: Retrying, note: str) -> None:
    """Remove a note nothing relies on, if this client may (an empty one is void anyway)."""
    try:
        backend.remove_note(note)
    except RemoteError:
        pass


def void_push_notes(listing, now: float | None, older: float = PUSH_NOTE_AGE) -> list[str]:
    """Notes written more than `older` seconds before `now` (the remote's time; None: none)."""
    if now is None:
        return []
    return [name for name, when in listing.pushing.items() if when is not None and now - when > older]


def pushed_checkpoints(backend: Retrying, listing, now: float | None, older: float = PUSH_NOTE_AGE) -> set[bytes]:
    """The checkpoints that notes written at most `older` seconds before `now` name (every
    note's, when the remote keeps no times)."""
    void = set(void_push_notes(listing, now, older))
    live = [name for name in listing.pushing if name not in void]

    def read(name: str) -> bytes:
        try:
            return backend.read_note(name)
        except FileNotFoundError:                 # void, and removed meanwhile
            return b""
    found: set[bytes] = set()
    with ThreadPoolExecutor(READS_IN_FLIGHT) as pool:
        for text in pool.map(read, sorted(live)):
            for line in text.split():
                if len(line) == 64:
                    try:
                        found.add(bytes.fromhex(line.decode("ascii")))
                    except ValueError:
                        pass
    return found


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

def upload(store: Store, view: RemoteView, oids: Iterable[bytes], quiet: bool = False,
           target: int = REMOTE_PACK_TARGET, force: bool = False,
           again: Iterable[bytes] = ()) -> TransferStats:
    """Send the objects the remote lacks (with `force`, all of them), and those in `again`
    whatever the remote has. Raises MissingObjects if the local store lacks some, and
    CorruptObject rather than send a damaged one."""
    if view.listing is None:                  # a caller that just looked (push) saves a listing
        view.refresh()
    again = set(again)
    force_one = lambda oid: force or oid in again      # noqa: E731
    wanted = [oid for oid in dict.fromkeys([*oids, *again]) if force_one(oid) or oid not in view.entries]
    closure, whole = to_send(store, view, wanted)
    wanted = [oid for oid in closure if force_one(oid) or oid not in view.entries]
    absent = store.missing(wanted)
    if absent:
        raise MissingObjects(absent)
    located = sorted(((store.locate(oid), oid) for oid in wanted),
                     key=lambda item: (item[0].kind == MANIFEST, item[0].pack, item[0].offset))
    # Sizes for progress: a delta going whole is counted at its raw length until it is encoded.
    size = lambda entry, oid: record_head.size + (entry.raw_length if oid in whole else entry.stored_length)  # noqa: E731
    stats = TransferStats(objects=len(located))
    if not located:
        return stats
    view.create()
    # Manifests sent again to pin them (sync.push) go first, in a pack of their own: a remote
    # gc that lists the remote from then on keeps what they need, which the rest of this
    # upload relies on. Their chunks are on the remote already (that is why they are pinned).
    pinned = [(entry, oid) for entry, oid in located if oid in again and entry.kind == MANIFEST]
    rest = [(entry, oid) for entry, oid in located if not (oid in again and entry.kind == MANIFEST)]

    sent = set(closure)

    def read(batch: list[bytes]) -> list:
        out = []
        for oid in batch:
            entry, record, data = store.read_checked(oid, whole=True)   # never spread a damaged object
            payload = memoryview(record)[record_head.size:]
            if entry.encoding == codec.DELTA and not all(b in sent for b in codec.delta_bases(payload)):
                whole.add(oid)               # a copy other than to_send's (that one was bad)
            if oid in whole and entry.encoding == codec.DELTA:
                encoding, payload = codec.encode(data, codec.delta_elements(payload)[0])
                entry = dataclasses.replace(entry, encoding=encoding, stored_length=len(payload))
            out.append((oid, entry, payload))
        return out

    with ThreadPoolExecutor(2) as pool:
        for group in (g for g in (pinned, rest) if g):
            batches = [[oid for _, oid in group[i:i + 64]] for i in range(0, len(group), 64)]
            records = (item for batch in ordered(pool, read, batches, window=4) for item in batch)
            stats.packs += len(send_records(store, view, _counted(records, stats),
                                            sum(size(e, oid) for e, oid in group), f"push to {view.name}",
                                            quiet or group is pinned, target, resend=force))
    return stats


def _counted(records: Iterable[tuple[bytes, Entry, bytes | memoryview]], stats: TransferStats):
    for oid, entry, payload in records:
        stats.bytes += record_head.size + len(payload)
        yield oid, entry, payload


def to_send(store: Store, view: RemoteView, oids: list[bytes]) -> tuple[list[bytes], set[bytes]]:
    """What must be on the remote once these objects are sent: them and the bases of their
    deltas (a remote never holds a delta without its base; bases are chunks, so they go before
    any manifest), and which of the deltas go whole. A delta whose base is neither among these
    nor on the remote goes whole: that base is a version this upload does not carry (the
    checked-out version of an unpushed branch, which the repack kept whole), whose weights
    must not leave with it. So does a delta whose base the remote holds only as a delta: a
    base is whole by design. An object is sent from a whole copy if the store has one
    (Store.locate_whole). Bases the remote has are listed too: the caller checks they are
    still there once it is done."""
    sending = set(oids)
    out, whole = dict.fromkeys(oids), set()
    todo = list(out)

    def usable(base: bytes) -> bool:
        if base in sending:
            return True
        there = view.entries.copies(base)
        return bool(there) and any(e.encoding != codec.DELTA for e in there)
    while todo:
        oid = todo.pop()
        bases = store.bases_to_send(oid)
        if not all(usable(base) for base in bases):
            whole.add(oid)
            continue
        for base in bases:
            if base not in out:
                out[base] = None
                todo.append(base)
    return list(out), whole


def send_records(store: Store, view: RemoteView, records: Iterable[tuple[bytes, Entry, bytes | memoryview]],
                 total: int, label: str, quiet: bool = False, target: int = REMOTE_PACK_TARGET,
                 resend: bool = False) -> list[str]:
    """Write (oid, entry, payload) records, chunks before manifests, into new packs uploaded
    to the remote (temporary files in the store's tmp/); the names of the packs uploaded.
    With `resend`, a pack of the same name found there is replaced whatever its size (a
    repair: the pack rebuilt from good copies is named like the damaged one)."""
    store.sweep_tmp()
    with progress.bar(total, label, quiet) as bar, _Uploader(view, bar, resend) as uploader:
        writer = PackWriter(store.tmp_dir, uploader.send, target, make_dir=store.permissions.make_dir)
        try:
            for oid, entry, payload in records:
                writer.add(oid, entry.kind, entry.encoding, entry.raw_length, payload)
            writer.finish()
            uploader.wait()
        except BaseException:
            writer.abort()
            raise
    return [name for name, _ in writer.published]


class _Uploader:
    """PackWriter sink that uploads finished packs in the background, a few at a time."""

    def __init__(self, view: RemoteView, bar, resend: bool = False):
        self._view, self._bar, self._resend = view, bar, resend
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="gitmodel-upload")
        self._pending: deque[Future] = deque()
        self._files: dict[Path, int] = {}       # packs handed over and not yet sent: their lock

    def send(self, path: Path, fd: int, name: str, index: bytes, entries: dict[bytes, Entry]) -> None:
        owned = path.with_name(path.name + ".upload")      # the writer deletes `path` on return
        os.replace(path, owned)
        self._files[owned] = os.dup(fd)          # shares the writer's lock: in use until sent
        if any(e.kind == MANIFEST for e in entries.values()):
            self.wait()                                    # every chunk first
        while len(self._pending) >= UPLOADS_IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._put, owned, name, index))

    def _put(self, path: Path, name: str, index: bytes) -> None:
        try:
            size = path.stat().st_size
            listing = self._view.listing
            # A pack that arrived whole before (an interrupted upload) is not sent again, if
            # recent: an old one may be garbage to a remote gc, which protects only recent
            # packs and what they need (a pin that kept its old copy would pin nothing).
            arrived = not self._resend and listing is not None and listing.sizes.get(name) == size and \
                (listing.mtimes.get(name) or 0) > time.time() - RECENT_PACK
            if not arrived:
                self._view.backend.put_pack(path, name)
            self._view.backend.put_index(name, index)
            self._view.add(name, index)
            self._bar.update(size - len(PACK_MAGIC))
        finally:
            self._release(path)

    def _release(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fd = self._files.pop(path, None)
        if fd is not None:
            os.close(fd)

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_Uploader":
        return self

    def __exit__(self, *exc) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        for path in list(self._files):           # after a failure: packs never sent
            self._release(path)


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


def whole_first(table: ObjectTable, oid: bytes) -> Entry:
    """The remote copy to read: a whole one if there is one (bases are whole by design; a
    remote can hold an object twice, e.g. after an older gitmodel pushed a store that a
    repack cut short had left so)."""
    entry = table[oid]
    if entry.encoding != codec.DELTA:
        return entry
    return next((e for e in table.copies(oid) if e.encoding != codec.DELTA), entry)


# Told of a delta whose bases are not there yet: (oid, entry, record as read, missing base ids).
Deferred = Callable[[bytes, Entry, memoryview, list[bytes]], None]


def read_objects(view: RemoteView, oids: Iterable[bytes], failed: dict[bytes, str],
                 quiet: bool = True, bases: Bases | None = None,
                 deferred: Deferred | None = None,
                 recheck: Bases | None = None,
                 sizes: dict[bytes, int] | None = None) -> Iterator[tuple[bytes, Entry, memoryview]]:
    """(oid, entry, payload) for each object, read from the remote and verified, chunks before
    manifests. Objects that cannot be had (absent, damaged in every copy, a read that failed)
    go into `failed` with the reason, and the rest still come: one bad object costs only what
    needs it. Deltas are verified against `bases` (the local store's); one whose base is not
    there yet is handed, unverified, to `deferred` (in order, on the caller's thread; the
    record is a view of the read, to be copied if kept).
    `sizes`: the file size pointers give for manifests (check_record's `size`); a manifest
    without one is bounded as one no pointer names (manifest.UNNAMED)."""
    oids = list(dict.fromkeys(oids))
    sizes = sizes or {}
    absent = [oid for oid in oids if oid not in view.entries]
    if absent:
        reason = view.describe_missing(len(absent), absent[0])
        failed.update(dict.fromkeys(absent, reason))
    located = [(oid, whole_first(view.entries, oid)) for oid in oids if oid in view.entries]
    chunks = [item for item in located if item[1].kind != MANIFEST]
    manifests = [item for item in located if item[1].kind == MANIFEST]
    ranges = _coalesce(chunks) + _coalesce(manifests)
    total = sum(record_head.size + e.stored_length for _, e in located)

    def fetch(r: _Range) -> list:
        try:
            data = memoryview(view.backend.read_range(r.pack, r.start, r.end))
        except RangesUnsupported:
            raise                           # the server's doing, not these objects' damage
        except RemoteError as err:              # names the remote, and says what to do
            return [(oid, entry, None, err.full()) for oid, entry in r.records]
        except OSError as err:
            return [(oid, entry, None, f"remote {view}: {err}") for oid, entry in r.records]
        if len(data) != r.end - r.start:
            return [(oid, entry, None, f"remote {view}: {r.pack}.pack is shorter than its index says")
                    for oid, entry in r.records]
        out = []
        for oid, entry in r.records:
            try:
                at = entry.offset - r.start
                record = data[at:at + record_head.size + entry.stored_length]
                try:
                    _check(oid, entry, record, bases, recheck, sizes.get(oid, UNNAMED))
                except CorruptObject as err:
                    if err.oid != oid:              # a base here is damaged: its repair
                        raise RemoteError(f"a base of {oid.hex()}: {err}", err.hint) from None
                    entry, record = _other_copy(view, oid, entry, err, bases, sizes.get(oid, UNNAMED))
                out.append((oid, entry, record[record_head.size:], None))
            except RangesUnsupported:
                raise
            except MissingBase as err:
                if deferred is None:
                    out.append((oid, entry, None, err.full()))
                else:
                    out.append((oid, entry, (record, err.oids), "deferred"))
            except (RemoteError, StoreVersionError) as err:
                out.append((oid, entry, None, err.full()))
        return out

    with progress.bar(total, f"fetch from {view.name}", quiet) as bar, \
            ThreadPoolExecutor(READS_IN_FLIGHT, thread_name_prefix="gitmodel-fetch") as pool:
        for records in ordered(pool, fetch, ranges, window=READS_IN_FLIGHT):
            for oid, entry, payload, error in records:
                bar.update(record_head.size + entry.stored_length)
                if error == "deferred":
                    deferred(oid, entry, *payload)
                elif error is not None:
                    failed[oid] = error
                else:
                    yield oid, entry, payload


def _check(oid: bytes, entry: Entry, record, bases: Bases | None, recheck: Bases | None,
           size: int | None = None) -> None:
    """check_record, and for a delta that fails it, again with `recheck` (each base checked
    here, one that does not read well raising MissingBase naming it): the fast reads of bases
    trust the store's copies, and a base here that is a delta of a damaged chunk made a good
    remote copy fail (the remote blamed), or named that chunk, not the base, as lacking."""
    try:
        check_record(oid, entry, record, bases, size=size)
    except (CorruptObject, MissingObjects) as err:
        if recheck is None or entry.encoding != codec.DELTA or \
                (isinstance(err, CorruptObject) and err.oid != oid):
            raise
        check_record(oid, entry, record, recheck)


def _other_copy(view: RemoteView, oid: bytes, damaged: Entry, error: CorruptObject,
                bases: Bases | None, size: int | None = None) -> tuple[Entry, memoryview]:
    """A good copy, from another of the remote's packs, of an object whose record in
    `damaged.pack` failed its check (two clients that pushed at once may both have sent it)."""
    for entry in view.entries.copies(oid):
        if entry == damaged:
            continue
        end = entry.offset + record_head.size + entry.stored_length
        try:
            record = memoryview(view.backend.read_range(entry.pack, entry.offset, end))
            check_record(oid, entry, record, bases, size=size)
        except RangesUnsupported:
            raise
        except (CorruptObject, MissingObjects, RemoteError, OSError):
            continue
        return entry, record
    raise RemoteError(f"remote {view}: {error}; no other copy there is good",
                      f"`gitmodel fsck --remote {view.name} --repair`, run in a clone that has "
                      "the file, uploads good copies")


def download(store: Store, view: RemoteView, oids: Iterable[bytes], quiet: bool = False,
             known: dict[bytes, tuple[Entry, bytes]] | None = None,
             again: frozenset[bytes] = frozenset(),
             sizes: dict[bytes, int] | None = None) -> TransferStats:
    """Fetch into the store the given objects it lacks (and those in `again`, though it has
    them), and the bases of the deltas among them. `known`: objects already read from the
    remote and verified (manifests), stored after the rest. `sizes`: the file size each
    manifest's pointer gives (read_objects). Objects that could not be fetched
    are in the result's `failed`; everything else is stored, chunks before the manifests that
    need them."""
    oids = list(dict.fromkeys(oids))
    if not oids:
        return TransferStats()
    store.hold_writer_lock()     # before deciding what is here: a gc then cannot take it away
    need = store.missing(oids)
    need += [oid for oid in oids if oid in again and oid not in need]
    stats = TransferStats()
    if not need:
        return stats
    known = known or {}
    fetch = [oid for oid in need if oid not in known]
    if view.listing is None or any(oid not in view.entries for oid in fetch):
        view.refresh()
    is_manifest = lambda oid: oid in view.entries and view.entries[oid].kind == MANIFEST
    manifests = [oid for oid in fetch if is_manifest(oid)]
    already = ((oid, *known[oid]) for oid in need if oid in known)
    writer = store.writer()
    try:
        _download_chunks(store, view, [oid for oid in fetch if not is_manifest(oid)], stats, quiet, writer)
        _add_all(writer, itertools.chain(read_objects(view, manifests, stats.failed, quiet, sizes=sizes),
                                         already), stats)
    finally:
        # Keep what arrived, even when interrupted: every record was verified, and chunks
        # come before manifests, so a published manifest never lacks its chunks. A repeated
        # fetch asks only for the rest.
        store.publish(writer)
    stats.packs = len(writer.published)
    return stats


def _download_chunks(store: Store, view: RemoteView, oids: list[bytes], stats: TransferStats,
                     quiet: bool, writer: PackWriter, depth: int = 0,
                     based_on: dict[bytes, list[bytes]] | None = None) -> None:
    """Fetch chunks into the writer. Deltas whose bases the store lacks wait in a temporary
    file (_Waiting) while what arrived is published and their bases are fetched (recursively:
    a base may be a delta too); then they are read back, verified and added. `based_on`
    gathers the waiting deltas' bases, to tell a cycle of deltas on the remote from a base
    that is merely missing."""
    based_on = {} if based_on is None else based_on
    unreadable: set[bytes] = set()
    recheck = _good_bases(store, unreadable)
    with _Waiting(store.tmp_dir, based_on) as waiting:
        _add_all(writer, read_objects(view, oids, stats.failed, quiet, store.bases, waiting.add, recheck), stats)
        if not waiting.oids:
            return
        bases = list(dict.fromkeys(b for oid in waiting.oids for b in based_on[oid]))
        store.publish(writer)
        if depth < MAX_CHAIN:
            absent = store.missing(bases)
            _download_chunks(store, view, absent + [b for b in bases if b in unreadable and b not in absent],
                             stats, quiet, writer, depth + 1, based_on)
            store.publish(writer)
        _add_all(writer, _verified(store, view, waiting, recheck, based_on, stats), stats)


class _Waiting:
    """Deltas fetched before their bases, until the bases are stored: their records go to a
    nameless temporary file in the store's tmp/, not memory, for they can be most of a file
    (an older version stored as differences from a newer one the store lacks)."""

    def __init__(self, tmp_dir: Path, based_on: dict[bytes, list[bytes]]):
        self._tmp_dir, self._based_on = tmp_dir, based_on
        self._file = None                  # made for the first delta: most fetches have none
        self.oids: list[bytes] = []
        self._entries: list[Entry] = []

    def add(self, oid: bytes, entry: Entry, record: memoryview, missing: list[bytes]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._tmp_dir)
        self._based_on[oid] = codec.delta_bases(record[record_head.size:])
        self._file.write(record)
        self.oids.append(oid)
        self._entries.append(entry)

    def records(self) -> Iterator[tuple[bytes, Entry, bytes]]:
        """Each delta's record as it was read from the remote, in the order they came."""
        self._file.seek(0)
        for oid, entry in zip(self.oids, self._entries):
            yield oid, entry, self._file.read(record_head.size + entry.stored_length)

    def __enter__(self) -> "_Waiting":
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


def _verified(store: Store, view: RemoteView, waiting: _Waiting, recheck: Bases,
              based_on: dict[bytes, list[bytes]], stats: TransferStats):
    """The waiting deltas whose check passes now that their bases are stored; the others go
    into stats.failed, with the reason."""
    for oid, entry, record in waiting.records():
        try:
            _check(oid, entry, record, store.bases, recheck)
        except (CorruptObject, MissingObjects) as err:
            why = str(err)
            if isinstance(err, MissingBase) and goes_round(oid, based_on, set()):
                why = (f"chunk {oid.hex()} is stored there only as a difference from chunks "
                       "that are, in turn, differences from it (a cycle of deltas, none stored "
                       "whole: an older gitmodel's push). `gitmodel fsck --remote "
                       f"{view.name} --repair`, run in a clone whose store holds the file, "
                       "uploads whole copies")
            stats.failed[oid] = f"remote {view}: {why}"
            continue
        yield oid, entry, memoryview(record)[record_head.size:]


def _good_bases(store: Store, unreadable: set[bytes]) -> Bases:
    """The store's base reader for checking again a fetched delta that failed its check, each
    base checked against its id: one here that does not read well (a delta of a damaged
    chunk) counts as absent, and is gathered in `unreadable` to be fetched too."""
    def read(ids: list[bytes]) -> list[bytes]:
        out, lacking = [], []
        for oid in ids:
            try:
                store.verify_bases([oid])              # (forgets a cached copy)
                out.append(store.read(oid))
            except (CorruptObject, MissingObjects):    # bad, or a delta of what is lost here
                lacking.append(oid)
        if lacking:                                    # each one named: all are fetched
            unreadable.update(oid for oid in lacking if store.has(oid))
            raise MissingObjects(lacking)
        return out
    return read


def _add_all(writer: PackWriter, records: Iterable[tuple[bytes, Entry, memoryview]], stats: TransferStats) -> None:
    for oid, entry, payload in records:
        writer.add(oid, entry.kind, entry.encoding, entry.raw_length, payload)
        stats.objects += 1
        stats.bytes += len(payload)


def remote_bases(view: RemoteView, store: Store | None) -> Bases:
    """Reads a delta's bases from the local store, or else from the remote (verified, and
    recursively for bases that are deltas too), storing nothing: for checking a remote."""
    return _bases_from(view.backend.read_range, lambda: view.entries, store)


def _bases_from(read_range: Callable[[str, int, int], bytes], table: Callable[[], ObjectTable],
                store: Store | None) -> Bases:
    cache: dict[bytes, bytes] = {}
    lock = threading.Lock()                 # the reading threads share the cache
    chain = threading.local()               # how deep this thread is in bases of bases

    def one(oid: bytes) -> bytes:
        depth = getattr(chain, "depth", 0)
        if depth >= MAX_CHAIN:              # deltas there of each other: a cycle, not a network error
            raise ChainTooLong(oid)
        chain.depth = depth + 1
        try:
            return _one(oid)
        finally:
            chain.depth = depth

    def _one(oid: bytes) -> bytes:
        if store is not None and store.has(oid):
            try:
                return store.read(oid)
            except (CorruptObject, MissingObjects):
                pass                          # the remote's copy may be good: it is what counts
        with lock:
            data = cache.get(oid)
        if data is None:
            entry = table().get(oid)
            if entry is None:
                raise MissingObjects([oid])
            end = entry.offset + record_head.size + entry.stored_length
            try:
                record = read_range(entry.pack, entry.offset, end)
            except RangesUnsupported:
                raise
            except (RemoteError, OSError) as err:
                raise MissingObjects([oid], str(err)) from None
            data = bytes(check_record(oid, entry, record, bases))
            with lock:
                cache[oid] = data
                while len(cache) > 64:
                    cache.pop(next(iter(cache)))
        return data

    def bases(ids: list[bytes]) -> list[bytes]:
        return [one(oid) for oid in ids]
    return bases


def read_manifests(view: RemoteView, oids: Iterable[bytes], failed: dict[bytes, str],
                   sizes: dict[bytes, int] | None = None) -> dict[bytes, tuple[Entry, bytes]]:
    """Manifests read from the remote and verified, kept in memory (they are small): to list
    their chunks, then to be stored by `download(..., known=...)` without a second read.
    `sizes`: the file size each one's pointer gives, where known (bounds what is decoded)."""
    oids = list(oids)
    if view.listing is None or any(oid not in view.entries for oid in oids):
        view.refresh()
    return {oid: (entry, bytes(payload))
            for oid, entry, payload in read_objects(view, oids, failed, sizes=sizes)}


# ----------------------------------------------------------------------------- mirror

def mirror(source: Retrying, dest: Retrying, tmp_dir: Path, references: References,
           quiet: bool = False, log: Callable[[str], None] = lambda line: None) -> TransferStats:
    """Copy every pack `dest` lacks from `source`, verifying each record on the way.

    Pack files go first, all of them, without their indexes (so invisible); then the indexes,
    a pack's only after those of the packs holding its manifests' chunks. Interrupted, the
    destination shows only complete checkpoints, and a repeated mirror skips pack files that
    arrived whole."""
    from gitmodel.store.objects import MARKER, VERSION, check_version
    from gitmodel.remote.backend import marker_repair
    check_version(source.read_marker(), f"remote {source}", **marker_repair(source))
    check_version(dest.read_marker(), f"remote {dest}", **marker_repair(dest))
    have = source.list_packs()
    if not have.exists:
        raise RemoteError(f"{source} has no packs folder: nothing to mirror (is the path right?)")
    there = dest.list_packs()
    if there.temporaries:
        dest.sweep(there)
    # A pack the destination holds at another size than the source's was cut short (or is
    # not the same file): sent again. Same-size damage is fsck --remote's to find.
    wanted = sorted((have.published - there.published) |
                    {name for name in have.published & there.published
                     if have.sizes.get(name) is not None and there.sizes.get(name) is not None
                     and have.sizes[name] != there.sizes[name]})
    indexes = {}
    for name in wanted:
        try:
            indexes[name] = source.read_index(name)
            decode_index(name, indexes[name])
        except (PackError, FileNotFoundError):
            indexes.pop(name, None)
            log(f"skipping {name}: its index on {source} is incomplete, damaged or gone")
    entries = {name: decode_index(name, data) for name, data in indexes.items()}
    stats = TransferStats(packs=len(entries), objects=sum(len(e) for e in entries.values()))
    total = sum(record_head.size + e.stored_length for es in entries.values() for e in es.values())
    if entries and not there.exists and dest.read_marker() is None:
        dest.write_marker(MARKER.format(VERSION))
    needs: dict[str, set[bytes]] = {}              # pack -> objects its objects refer to
    tmp_dir.mkdir(parents=True, exist_ok=True)
    source_table: list[ObjectTable] = []

    def every_source_index() -> ObjectTable:       # read once, when the first delta needs it
        if not source_table:
            table = ObjectTable()
            for name in sorted(have.published):
                try:
                    table.add_indexes([(name, *verify_index(name, indexes.get(name) or source.read_index(name)))])
                except (PackError, FileNotFoundError):
                    continue
            source_table.append(table)
        return source_table[0]
    bases = _bases_from(source.read_range, every_source_index, None)
    damaged: dict[str, str] = {}
    with progress.bar(total, f"mirror to {dest.name}", quiet) as bar:
        for name in sorted(entries):
            path = tmp_dir / f"{name}.mirror"
            try:
                src = source.open_pack(name)
            except FileNotFoundError as err:       # removed since the listing (a gc)
                damaged[name] = str(err)
                log(f"not copying {name}: it is gone from {source}")
                continue
            try:
                with src, open(path, "wb") as out:
                    files.lock(out.fileno())       # held until uploaded: a sweep leaves it alone
                    try:
                        size, needs[name] = _copy_verified(src, out, name, entries[name],
                                                           references, bar.update, bases)
                    except (CorruptObject, PackError, FileNotFoundError) as err:
                        damaged[name] = str(err)   # the others are still copied
                        log(f"not copying {name}: it is damaged or gone on {source} ({err})")
                        continue
                    out.flush()
                    stats.bytes += size
                    if there.sizes.get(name) != size:
                        dest.put_pack(path, name)
            finally:
                path.unlink(missing_ok=True)
    # A copied pack whose objects cite objects only a damaged pack holds stays invisible: the
    # destination shows no checkpoint it cannot give whole. Objects of a damaged pack with a
    # copy in another pack (a repair's upload), copied now or there before, are not lacking.
    there_before = _objects_of(source, (have.published & there.published) - set(entries)) if damaged else set()
    withheld: set[str] = set()
    while True:                  # a withheld pack's objects are lacking too: until nothing moves
        gone = set(damaged) | withheld
        lacking = {oid for name in gone for oid in entries[name]} - there_before - \
            {oid for name in entries if name not in gone for oid in entries[name]}
        more = {name for name in entries if name not in gone and needs.get(name, set()) & lacking}
        if not more:
            break
        withheld |= more
    spared = {name for name in damaged if not set(entries[name]) & lacking}
    for name in sorted(spared):
        log(f"not copying {name}: it is damaged, and every object in it has a good copy in another pack")
    stats.skipped = len(spared)
    stats.packs -= len(spared)
    stats.objects -= sum(len(entries[name]) for name in spared)
    damaged = {name: why for name, why in damaged.items() if name not in spared}
    for name in _publication_order({n: e for n, e in entries.items() if n not in damaged and
                                    n not in spared and n not in withheld}, needs):
        dest.put_index(name, indexes[name])
        log(f"copied {name} ({len(entries[name])} objects)")
    # A pack file found whole at the destination was not sent again; a gc of the destination
    # may have removed it since, leaving the index just sent without it.
    probe = announce_push(dest, [])                    # its time there tells the remote's clock
    try:
        there = settled_listing(dest, log, probe)
    finally:
        remove_quietly(dest, probe)
    lost = sorted(set(entries) - set(damaged) - spared - withheld - there.published)
    if lost:
        raise RemoteError(f"{len(lost)} pack(s) copied to {dest} were removed from it while the "
                          f"mirror ran (e.g. {lost[0]}; a gc of {dest}?)", "Run the mirror again")
    vanished = {name for name in damaged if name not in source.list_packs().published}
    if vanished:
        raise RemoteError(f"{len(vanished)} pack(s) of {source} were removed from it while the "
                          f"mirror ran (e.g. {sorted(vanished)[0]}; a gc of {source} rewrites "
                          "packs into new ones)" + (f", and {len(damaged) - len(vanished)} more "
                                                    "are damaged" if len(damaged) > len(vanished) else ""),
                          f"What was copied is kept ({dest} shows only whole checkpoints); run "
                          "the mirror again to copy the rest")
    if damaged:
        first = next(iter(damaged))
        raise RemoteError(f"remote {source}: {len(damaged)} pack(s) are damaged or gone and were "
                          f"not copied to {dest} (first: {first}.pack: {damaged[first]})"
                          + (f"; {len(withheld)} pack(s) that need them were copied but not "
                             "published" if withheld else ""),
                          f"The other {len(entries) - len(damaged) - len(withheld)} pack(s) were "
                          f"copied. Repair {source} (`gitmodel fsck --remote {source.name} "
                          "--all --repair` from a clone that has the files), then mirror again")
    return stats


def _objects_of(source: Retrying, packs: set[str]) -> set[bytes]:
    """The objects the indexes of these packs list (those that read and verify)."""
    found: set[bytes] = set()
    for name in sorted(packs):
        try:
            found.update(decode_index(name, source.read_index(name)))
        except (PackError, FileNotFoundError):
            continue
    return found


def _publication_order(entries: dict[str, dict[bytes, Entry]], needs: dict[str, set[bytes]]) -> list[str]:
    """Packs ordered so that each comes after the copied packs holding what its objects refer
    to (objects in no copied pack are already at the destination)."""
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


def _copy_verified(src, out, name: str, entries: dict[bytes, Entry], references: References,
                   advance, bases: Bases) -> tuple[int, set[bytes]]:
    """Stream a pack from src to out, checking that its records are exactly those its index
    lists, each intact. Returns the bytes copied and the ids its objects refer to."""
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
        try:
            data = check_record(oid, entry, record, bases)
        except MissingObjects as err:
            raise PackError(f"object {oid.hex()} in {name}.pack: {err}") from None
        if entry.encoding == codec.DELTA:
            cited.update(codec.delta_bases(record[record_head.size:]))
        try:
            cited.update(references(entry.kind, data))
        except ValueError as err:
            raise PackError(f"object {oid.hex()} in {name}.pack: {err}") from None
        out.write(record)
        position += len(record)
        advance(len(record))
    if src.read(1):
        raise PackError(f"{name}.pack has bytes its index does not list")
    return position, cited
