"""Garbage collection of a local store: remove the objects no live checkpoint needs.

The caller names the live checkpoints (their manifest ids: git/liveness.py finds them in a
repository). Live objects are those manifests, their chunks, everything stored in the grace period (whose
manifests count as live too: a recent add may refer to old chunks it found already stored),
and the bases of every copy of a live delta, transitively. Each pack is then kept, removed
(nothing in it is live), or rewritten with only its live records (when a few percent of its
bytes are garbage, or when it is one of several small packs). Rewritten records are verified; a pack with a damaged record is left as
it is. New packs are published (fsynced) before any old pack is removed.

Concurrency (docs/design.md "Garbage collection"): every process that writes to the store
holds a shared flock on `gc.lock` from its first pack writer until it exits, so a git command
that cleaned files has written its index before the lock is free; gc holds the exclusive
lock throughout, after waiting for the writers. Readers take no lock: one that meets a
removed pack reloads the pack list and finds the object's new copy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gitmodel.errors import GitmodelError
from gitmodel.store import codec
from gitmodel.store.objects import (MANIFEST, CorruptObject, MissingObjects, Store, StoreError,
                                    StoreVersionError, check_record)
from gitmodel.store.pack import PACK_MAGIC, Entry, PackError, record_head, scan

# A pack is rewritten once this fraction of its bytes is garbage: copying a pack's live records
# costs little next to how rarely gc runs, and a store should end close to its live size.
GARBAGE_TO_REWRITE = 0.05
SMALL_PACK = 8 << 20         # packs below this size are merged into one when there are several
DAY = 86400.0


class GcError(GitmodelError):
    pass


@dataclass
class PackFate:
    name: str
    size: int
    live_bytes: int
    action: str                  # "keep", "remove", "rewrite", "damaged"


@dataclass
class GcReport:
    live_checkpoints: int = 0
    live_objects: int = 0
    packs: list[PackFate] = field(default_factory=list)
    bytes_before: int = 0        # every pack's size
    bytes_after: int = 0         # every pack's size afterwards (estimated in a dry run)
    objects_removed: int = 0
    damaged: list[str] = field(default_factory=list)       # packs left alone, why
    dry_run: bool = False

    def count(self, action: str) -> int:
        return sum(1 for p in self.packs if p.action == action)

    @property
    def reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after


def recent_objects(store: Store, days: float) -> set[bytes]:
    """Objects with a copy in a pack written less than `days` ago (by the pack's mtime)."""
    now, packs = time.time(), set()
    for name in store.packs():
        try:
            if now - (store.pack_dir / f"{name}.pack").stat().st_mtime < days * DAY:
                packs.add(name)
        except FileNotFoundError:
            continue
    return {oid for oid, entry in store.entries() if entry.pack in packs}


def live_objects(store: Store, manifests: Iterable[bytes], recent: set[bytes] = frozenset(),
                 aside: set[tuple[bytes, str]] | None = None) -> set[bytes]:
    """The live manifests (given, plus the recent ones), their chunks, the recent objects,
    and the bases of every stored copy of a live delta (but the copies `aside`, see
    set_aside), transitively. A live manifest the store holds but cannot read stops the
    collection: its chunks could not be told from garbage."""
    roots = set(manifests) | {oid for oid in recent if _is_manifest(store, oid)}
    live: set[bytes] = set(recent)
    for oid in roots:
        if not store.copies(oid):
            continue                    # not here: nothing of it to keep (a copy known to
                                        # be damaged still counts: its chunks may be here)
        live.add(oid)
        try:
            manifest = store.read_manifest(oid)
        except (StoreError, ValueError) as err:
            raise GcError(f"the checkpoint {oid.hex()[:16]} is live but its manifest cannot be "
                          f"read ({err}); which chunks it needs is unknown",
                          "Nothing was removed. Store a good copy first: add the file again "
                          "(`git add --renormalize PATH` if the work tree holds it) or fetch "
                          "it (`gitmodel fetch`); then gc") from None
        live.update(cid for cid, _ in manifest.chunks)
    todo = list(live)
    aside = set_aside(store) if aside is None else aside
    while todo:
        oid = todo.pop()
        for entry in store.copies(oid):
            if entry.encoding != codec.DELTA or (oid, entry.pack) in aside:
                continue
            for base in _bases_of_copy(store, oid, entry):
                if base not in live:
                    live.add(base)
                    todo.append(base)
    return live


def set_aside(store: Store, verify: bool = True) -> set[tuple[bytes, str]]:
    """Copies marked damaged (bad, or deltas whose bases are lost) of objects with another copy
    that reads well now: garbage, though their objects are not. (object, pack) each. Without
    `verify` (an estimate, as `gitmodel status` makes), another copy whose bases are all here
    counts as reading well, unread: a store repaired by a fetch can have a model's worth of
    marked copies, and status would decode all of them every time."""
    out = set()
    for oid, packs in store.damaged().items():
        others = [e for e in store.copies(oid) if e.pack not in packs]
        good = any(_reads(store, oid, e) for e in others) if verify else \
            bool(others) and not store.missing(store.with_bases([oid])[1:])
        if good:
            out.update((oid, pack) for pack in packs)
    return out


def _reads(store: Store, oid: bytes, entry: Entry) -> bool:
    try:
        store.read_copy(oid, entry)
        return True
    except (StoreError, StoreVersionError, OSError):
        return False


def _is_manifest(store: Store, oid: bytes) -> bool:
    return any(e.kind == MANIFEST for e in store.copies(oid))


def _bases_of_copy(store: Store, oid: bytes, entry: Entry) -> list[bytes]:
    record = store.record(oid, entry)
    try:
        return codec.delta_bases(memoryview(record)[record_head.size:])
    except codec.CodecError as err:
        raise CorruptObject(oid, str(err)) from None


def decide(sizes: dict[str, int], live: set[bytes], entries: Iterable[tuple[bytes, Entry]],
           aside: set[tuple[bytes, str]] = frozenset()) -> list[PackFate]:
    """Each pack's fate, from its size and the live records among `entries` (every object's
    copies, by pack; those `aside` are garbage): removed when nothing in it is live, rewritten
    when more than GARBAGE_TO_REWRITE of it is garbage or it is one of several small packs,
    else kept."""
    live_bytes: dict[str, int] = dict.fromkeys(sizes, 0)
    for oid, entry in entries:
        if oid in live and entry.pack in live_bytes and (oid, entry.pack) not in aside:
            live_bytes[entry.pack] += record_head.size + entry.stored_length
    small = [n for n in sizes if 0 < live_bytes[n] and sizes[n] < SMALL_PACK]
    fates = []
    for name in sorted(sizes):
        garbage = sizes[name] - len(PACK_MAGIC) - live_bytes[name]
        if live_bytes[name] == 0:
            action = "remove"
        elif garbage > GARBAGE_TO_REWRITE * sizes[name] or (len(small) > 1 and name in small):
            action = "rewrite"
        else:
            action = "keep"
        fates.append(PackFate(name, sizes[name], live_bytes[name], action))
    return fates


def estimate_after(fates: list[PackFate]) -> int:
    """The packs' size once the fates are carried out (rewritten packs: their live records)."""
    return sum(p.size if p.action == "keep" else p.live_bytes if p.action == "rewrite" else 0
               for p in fates)


def collect(store: Store, manifests: Iterable[bytes], recent: set[bytes] = frozenset(),
            dry_run: bool = False, progress: Callable[[str], None] = lambda line: None) -> GcReport:
    """Remove what the live `manifests` and the `recent` objects (see recent_objects) do not
    need. The caller holds the store's gc lock (`Store.lock_for_gc`) and listed `manifests`
    after taking it."""
    store.reload()
    # A dry run (and `gitmodel status`) estimates under no lock, where a pack may be between
    # its file's publication and its index's (an add at work); a damaged index is no moment.
    _refuse_unindexed(store, only_damaged=dry_run)
    sizes = {name: _size(store, name) for name in store.packs()}
    aside = set_aside(store, verify=not dry_run)
    live = live_objects(store, manifests, recent, aside)
    report = GcReport(dry_run=dry_run, live_objects=len(live), bytes_before=sum(sizes.values()))

    report.packs = decide(sizes, live, store.entries(), aside)

    rewrite = [p.name for p in report.packs if p.action == "rewrite"]
    remove = [p.name for p in report.packs if p.action == "remove"]
    if dry_run:
        report.bytes_after = estimate_after(report.packs)
        report.objects_removed = _count_removed(store, live, set(remove) | set(rewrite))
        return report

    kept_packs = {p.name for p in report.packs if p.action == "keep"}
    written = _rewrite(store, rewrite, live, kept_packs, report, progress, aside)
    # A rewrite that kept every record of a pack gives a pack of the same name: keep it.
    gone = {p.name for p in report.packs if p.action in ("remove", "rewrite")} - written
    report.objects_removed = _count_removed(store, live, gone)
    store.remove_packs(gone)
    progress(f"deleted {len(gone)} pack file(s): emptied, or replaced by their rewrite")
    report.bytes_after = store_bytes(store)
    return report


def _refuse_unindexed(store: Store, only_damaged: bool = False) -> None:
    """A pack without a usable index hides which checkpoints it holds: the chunks of a live
    one whose manifest is there would look like garbage elsewhere."""
    hidden = sorted(name for name in _pack_files(store) - set(store.packs())
                    if not only_damaged or name in store.damaged_indexes)
    if hidden:
        why = store.damaged_indexes.get(hidden[0], "no index (a crash, or another process indexing it)")
        raise GcError(f"{len(hidden)} pack(s) have no usable index (e.g. {hidden[0]}: {why}), so "
                      "which checkpoints they hold is unknown and nothing can be told garbage",
                      "Nothing was removed. Run `gitmodel fsck --repair`, then gc again")


def store_bytes(store: Store) -> int:
    """The size of every pack file on disk (listed or not: one whose index is damaged still
    takes its room)."""
    return sum(_size(store, name) for name in _pack_files(store))


def _pack_files(store: Store) -> set[str]:
    """The packs whose files are on disk, indexed or not."""
    try:
        return {n[:-5] for n in os.listdir(store.pack_dir) if n.startswith("pack-") and n.endswith(".pack")}
    except FileNotFoundError:
        return set()


def _size(store: Store, pack: str) -> int:
    try:
        return (store.pack_dir / f"{pack}.pack").stat().st_size
    except FileNotFoundError:
        return 0


def _count_removed(store: Store, live: set[bytes], packs: set[str]) -> int:
    """Objects whose every copy is in `packs` and that are not live."""
    out = set()
    for oid, entry in store.entries():
        if entry.pack in packs and oid not in live:
            if all(e.pack in packs for e in store.copies(oid)):
                out.add(oid)
    return len(out)


class Written:
    """The objects a rewrite of packs has written, to write each once: a whole copy stands in
    for any other, a delta only for another delta (a delta's bases are read from whole
    copies, which must survive)."""

    def __init__(self):
        self.whole: set[bytes] = set()
        self.any: set[bytes] = set()

    def redundant(self, oid: bytes, encoding: int) -> bool:
        return oid in (self.any if encoding == codec.DELTA else self.whole)

    def add(self, oid: bytes, encoding: int) -> None:
        self.any.add(oid)
        if encoding != codec.DELTA:
            self.whole.add(oid)


def _rewrite(store: Store, packs: list[str], live: set[bytes], kept_packs: set[str],
             report: GcReport, progress: Callable[[str], None],
             aside: set[tuple[bytes, str]] = frozenset()) -> set[str]:
    """Copy the live records of `packs` into new packs, verified, leaving out the copies
    `aside` and a copy another one makes redundant; returns the names of the packs written.
    A pack with a damaged live record is kept as it is.

    A whole copy is redundant only next to another whole copy, kept or written; a delta, next
    to any copy. A delta's bases are read from whole copies, so every whole copy a kept delta
    may need survives: keeping a delta instead could leave two chunks only as deltas of each
    other (a repack cut short stores chunks both ways). A kept pack's copy is read before it
    stands in for the one left out."""
    if not packs:
        return set()
    kept: dict[bytes, list[Entry]] = {}
    for oid, entry in store.entries():
        if entry.pack in kept_packs and oid in live and entry.pack not in store.damaged().get(oid, ()):
            kept.setdefault(oid, []).append(entry)
    written = Written()                     # kept copies that read well count as written

    def redundant(oid: bytes, encoding: int) -> bool:
        if written.redundant(oid, encoding):
            return True
        for entry in kept.pop(oid, ()):        # read once, when first it matters
            if _reads(store, oid, entry):
                written.add(oid, entry.encoding)
        return written.redundant(oid, encoding)

    writer = store.writer()
    try:
        for i, name in enumerate(packs, 1):
            records = []
            try:
                with open(store.pack_dir / f"{name}.pack", "rb") as f:
                    for oid, entry, record in scan(f.read):
                        if oid not in live or (oid, name) in aside or redundant(oid, entry.encoding):
                            continue
                        entry = Entry(name, entry.offset, entry.stored_length, entry.raw_length,
                                      entry.kind, entry.encoding)
                        check_record(oid, entry, record, store.bases)
                        records.append((oid, entry, record))
            except (CorruptObject, MissingObjects, PackError, OSError) as err:
                report.damaged.append(f"{name}: {err}")
                for fate in report.packs:
                    if fate.name == name:
                        fate.action = "damaged"
                continue
            for oid, entry, record in records:
                writer.add(oid, entry.kind, entry.encoding, entry.raw_length,
                           memoryview(record)[record_head.size:])
                written.add(oid, entry.encoding)
            progress(f"rewrote {i}/{len(packs)} pack(s)")
        store.publish(writer)              # fsynced and visible before any old pack goes
    except BaseException:
        writer.abort()
        raise
    return {name for name, _ in writer.published}
