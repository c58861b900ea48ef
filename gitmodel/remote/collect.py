"""Garbage collection of a remote: remove the packs (or the records) no live checkpoint needs.

The same rules as the local store's (store/gc.py), with what a remote allows: there is no
lock, so concurrent pushes are protected by time instead. Packs written within the grace
period are left alone and their manifests count as live; a push that relies on a manifest
the remote holds only in an old pack sends it again (sync.push), so a checkpoint being pushed
is always named by a recent pack. Before removing anything the remote is listed again, and a
pack that appeared meanwhile protects whatever its manifests need. Rewritten records are read
back and verified, uploaded in new packs, and only then are the old packs removed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from gitmodel.remote import transfer
from gitmodel.remote.view import RemoteView
from gitmodel.store import codec
from gitmodel.store.gc import DAY, GcError, GcReport, decide, estimate_after
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import MANIFEST, CorruptObject, Store, StoreError
from gitmodel.store.pack import Entry, record_head

READS_IN_FLIGHT = 8


def collect(view: RemoteView, store: Store, manifests: Iterable[bytes], grace_days: float,
            dry_run: bool = False, progress: Callable[[str], None] = lambda line: None) -> GcReport:
    """Remove from the remote what the live `manifests` and its recent packs do not need.
    `store` serves manifests it holds (the rest are read from the remote) and temporary files."""
    view.refresh()
    listing = view.listing
    now = time.time()
    sizes = {name: listing.sizes.get(name) or 0 for name in view.packs}
    recent = {name for name in view.packs
              if (listing.mtimes.get(name) or now) > now - grace_days * DAY}
    live = _live(view, store, set(manifests), recent, progress)
    report = GcReport(dry_run=dry_run, live_objects=len(live), bytes_before=sum(sizes.values()))
    report.packs = decide(sizes, live, view.entries.items())
    for fate in report.packs:
        if fate.name in recent and fate.action != "keep":
            fate.action = "keep"                  # another client's push may rely on it
    report.objects_removed = _removed(view, live, {p.name for p in report.packs if p.action != "keep"})
    if dry_run:
        report.bytes_after = estimate_after(report.packs)
        return report

    rewrite = [p.name for p in report.packs if p.action == "rewrite"]
    written = _rewrite(view, store, rewrite, live, report, progress)
    gone = {p.name for p in report.packs if p.action in ("remove", "rewrite")} - written
    gone -= _needed_by_new_packs(view, store, set(sizes) | written, gone, progress)
    for name in sorted(gone):
        view.backend.remove_pack(name)
    progress(f"removed {len(gone)} pack(s)")
    view.refresh()
    kept = {p.name for p in report.packs if p.name not in gone}
    for fate in report.packs:
        if fate.name in kept and fate.action in ("remove", "rewrite"):
            fate.action = "keep"
    report.bytes_after = sum(view.listing.sizes.get(name) or 0 for name in view.packs)
    return report


def _live(view: RemoteView, store: Store, roots: set[bytes], recent: set[str],
          progress: Callable[[str], None]) -> set[bytes]:
    """Live objects on the remote: the roots' and recent manifests' chunks, everything in a
    recent pack, and the bases of every remote copy of a live delta, transitively."""
    live = {oid for oid, entry in view.entries.items() if entry.pack in recent}
    roots = {oid for oid in roots if oid in view.entries}
    roots |= {oid for oid in live if view.entries.get(oid).kind == MANIFEST}
    live |= roots
    for oid, manifest in _manifests(view, store, roots).items():
        live.update(cid for cid, _ in manifest.chunks)
    progress(f"{len(roots)} live checkpoint(s) on the remote")
    todo = [oid for oid in live if oid in view.entries]
    while todo:
        deltas = [(oid, e) for oid in todo for e in view.entries.copies(oid) if e.encoding == codec.DELTA]
        todo = []
        for base in _bases(view, deltas):
            if base not in live:
                live.add(base)
                todo.append(base)
    return live


def _manifests(view: RemoteView, store: Store, oids: set[bytes]) -> dict[bytes, Manifest]:
    """The manifests, from the local store where it has them, else from the remote. One that
    cannot be read stops the collection: its chunks could not be told from garbage."""
    found, failed = {}, {}
    for oid in oids:
        if store.has(oid):
            try:
                found[oid] = store.read_manifest(oid)
                continue
            except (StoreError, ValueError):
                pass                                  # the remote's copy may be good
    remote = transfer.read_manifests(view, [o for o in oids if o not in found], failed)
    for oid, (entry, payload) in remote.items():
        found[oid] = Manifest.decode(codec.decode(entry.encoding, payload, entry.raw_length))
    unreadable = [oid for oid in oids if oid not in found]
    if unreadable:
        why = failed.get(unreadable[0], "not readable")
        raise GcError(f"the checkpoint {unreadable[0].hex()[:16]} is live but its manifest cannot "
                      f"be read from remote {view} or the local store ({why})",
                      "Nothing was removed. `gitmodel fsck --remote NAME` says what is damaged")
    return found


def _bases(view: RemoteView, deltas: list[tuple[bytes, Entry]]) -> set[bytes]:
    """The bases the remote copies of these deltas name (their headers, read from the remote)."""
    def head(item: tuple[bytes, Entry]) -> list[bytes]:
        oid, entry = item
        start = entry.offset + record_head.size
        length = min(codec.delta_header_length(codec.MAX_BASES), entry.stored_length)
        data = view.backend.read_range(entry.pack, start, start + length)
        try:
            return codec.delta_bases(data)
        except codec.CodecError as err:
            raise CorruptObject(oid, f"on remote {view}: {err}") from None
    with ThreadPoolExecutor(READS_IN_FLIGHT) as pool:
        return {base for bases in pool.map(head, deltas) for base in bases}


def _removed(view: RemoteView, live: set[bytes], packs: set[str]) -> int:
    """Objects whose every remote copy is in `packs` and that are not live."""
    return len({oid for oid, entry in view.entries.items() if entry.pack in packs and oid not in live
                and all(e.pack in packs for e in view.entries.copies(oid))})


def _rewrite(view: RemoteView, store: Store, packs: list[str], live: set[bytes],
             report: GcReport, progress: Callable[[str], None]) -> set[str]:
    """Upload the live records of `packs` in new packs (each object once, and not when a pack
    that stays holds it), read back from the remote and verified; returns the packs written.
    A pack one of whose live records cannot be read is kept."""
    if not packs:
        return set()
    staying = {p.name for p in report.packs if p.action == "keep"}
    doomed = set(packs)
    wanted = sorted({oid for oid, entry in view.entries.items() if entry.pack in doomed and oid in live
                     and not any(e.pack in staying for e in view.entries.copies(oid))})
    failed: dict[bytes, str] = {}
    records = transfer.read_objects(view, wanted, failed, bases=transfer.remote_bases(view, store))
    total = sum(record_head.size + view.entries.get(oid).stored_length for oid in wanted)
    written = transfer.send_records(store, view, records, total, f"gc of {view.name}", quiet=True)
    for oid, why in failed.items():
        for entry in view.entries.copies(oid):
            if entry.pack in doomed:
                report.damaged.append(f"{entry.pack}: {why}")
                for fate in report.packs:
                    if fate.name == entry.pack:
                        fate.action = "damaged"
    progress(f"rewrote {len(packs)} pack(s) into {len(written)}")
    return set(written)


def _needed_by_new_packs(view: RemoteView, store: Store, known: set[str], gone: set[str],
                         progress: Callable[[str], None]) -> set[str]:
    """Packs among `gone` that packs published since the collection began need (a push that
    ran meanwhile): list the remote again and keep whatever their manifests refer to."""
    view.refresh()
    fresh = view.packs - known
    if not fresh:
        return set()
    progress(f"{len(fresh)} pack(s) appeared meanwhile; keeping what they need")
    roots = {oid for oid, entry in view.entries.items() if entry.pack in fresh and entry.kind == MANIFEST}
    needed = {oid for oid, entry in view.entries.items() if entry.pack in fresh}
    for manifest in _manifests(view, store, roots).values():
        needed.update(cid for cid, _ in manifest.chunks)
    deltas = [(oid, e) for oid in needed for e in view.entries.copies(oid) if e.encoding == codec.DELTA]
    needed |= _bases(view, deltas)
    return {e.pack for oid in needed for e in view.entries.copies(oid) if e.pack in gone}
