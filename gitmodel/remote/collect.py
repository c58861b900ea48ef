"""Garbage collection of a remote: remove the packs (or the records) no live checkpoint needs.

The same rules as the local store's (store/gc.py), with what a remote allows: there is no
lock, so concurrent pushes are protected by time and notes instead. Packs written within the
grace period are left alone and their manifests count as live; a push that relies on a
manifest the remote holds only in an old pack sends it again (sync.push), so a checkpoint
being pushed is always named by a recent pack; and the checkpoints a push's note names stay
live for an hour after it ends, until git has updated the refs that name them, whatever the
grace. Before removing anything the remote is listed again, and a pack that appeared
meanwhile, or a push's note, protects whatever its manifests need. Rewritten records are read
back and verified, uploaded in new packs, and only then are the old packs removed.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from shlex import quote
from typing import Callable, Iterable

from gitmodel.remote import transfer
from gitmodel.remote.backend import RemoteError
from gitmodel.remote.view import VANISHED, RemoteView
from gitmodel.store import codec
from gitmodel.store.gc import DAY, GcError, GcReport, decide, estimate_after
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import (CHUNK, MANIFEST, MARKER, MAX_CHAIN, VERSION, CorruptObject, Store,
                                    StoreError, marker_version)
from gitmodel.store.pack import Entry, record_head

HEADER_READS_IN_FLIGHT = 32     # delta headers: tiny reads, bound by latency, not bandwidth
ATTEMPTS = 3                    # collections begun anew when packs vanish under one


class _RemoteChanged(Exception):
    """Packs this collection read from were removed meanwhile (another gc's work)."""


def collect(view: RemoteView, store: Store, manifests: Iterable[bytes], grace_days: float,
            dry_run: bool = False, progress: Callable[[str], None] = lambda line: None,
            refs_read: float | None = None, pointer_sizes: dict[bytes, int] | None = None) -> GcReport:
    """Remove from the remote what the live `manifests` and its recent packs do not need.
    `store` serves manifests and re-encoded copies it holds, and temporary files.
    `refs_read`: when (time.monotonic()) the refs naming `manifests` were read: pushes'
    notes written since an hour before then are honoured. `pointer_sizes`: the file size the
    pointers of `manifests` give (what bounds each read from the remote; one that no pointer
    names, from a recent pack or a push's note, is bounded as manifest.UNNAMED).

    Two gcs of one remote may overlap: one that finds packs it read from removed before it
    removed anything (the other gc rewrote them) begins again from a fresh listing, rather
    than taking the vanished records for damage. What it uploaded by then are extra copies
    of live records, which a later gc folds."""
    refs_read = time.monotonic() if refs_read is None else refs_read
    manifests = list(manifests)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _collect_once(view, store, manifests, grace_days, dry_run, progress, refs_read,
                                 pointer_sizes or {})
        except _RemoteChanged as err:
            progress(f"{err}: another gc of this remote removed them; listing it again "
                     f"({attempt} of {ATTEMPTS})")
    raise GcError(f"packs of remote {view} kept vanishing while this gc read them: other gcs "
                  "of it are running", "Nothing was removed by this gc; run it again once they "
                  "have finished")


def _vanished(view: RemoteView, read: Iterable[str]) -> set[str]:
    """Packs among `read` that the remote no longer lists."""
    try:
        listed = view.backend.list_packs()
    except RemoteError:
        return set()
    return set(read) - listed.published if listed.exists else set()


def _unless_vanished(view: RemoteView, read: Iterable[str]) -> None:
    gone = _vanished(view, read)
    if gone:
        raise _RemoteChanged(f"{len(gone)} pack(s) it read from vanished (e.g. {sorted(gone)[0]})")


def _collect_once(view: RemoteView, store: Store, manifests: list[bytes], grace_days: float,
                  dry_run: bool, progress: Callable[[str], None], refs_read: float,
                  pointer_sizes: dict[bytes, int]) -> GcReport:

    def notes_kept() -> float:                 # how old a push's note may be, and protect
        return transfer.PUSH_NOTE_AGE + (time.monotonic() - refs_read)
    if dry_run:                 # writes nothing: ages by this machine's clock, an estimate
        view.refresh()
        remote_now = time.time()
    else:
        remote_now, first = transfer.remote_clock(view.backend)
        view.refresh(first)
    listing = view.listing
    damaged = {name: why for name, why in view.damaged.items() if why != VANISHED}
    if damaged:                    # what their packs hold is unknown: it may be what keeps others
        name, why = sorted(damaged.items())[0]
        raise GcError(f"{len(damaged)} pack index(es) on remote {view} are damaged (e.g. "
                      f"{name}: {why}), so which checkpoints their packs hold is unknown and "
                      "nothing can be told garbage",
                      "Nothing was removed. Delete that index from the remote (its pack then "
                      f"counts as absent), run `gitmodel fsck --remote {quote(view.name)} --all --repair` to upload "
                      "again what the checkpoints need, then gc")
    now = remote_now if remote_now is not None else time.time()
    sizes = {name: listing.sizes.get(name) or 0 for name in view.packs}
    recent = {name for name in view.packs
              if (listing.mtimes.get(name) or now) > now - grace_days * DAY}
    pushed = transfer.pushed_checkpoints(view.backend, listing, remote_now, notes_kept())
    if remote_now is not None:                 # a client that cannot write removes nothing
        pushed |= _marked(view, progress, dry_run)
    if pushed:
        progress(f"{len(pushed)} checkpoint(s) kept that pushes of the last hour sent or relied on "
                 "(their refs may not have arrived yet; a push's note protects them for an hour)")
    plan = _Plan(view, store, sizes, recent, pointer_sizes)
    try:
        plan.settle(set(manifests) | pushed, progress)
    except (GcError, RemoteError, StoreError, OSError):
        _unless_vanished(view, sizes)
        raise
    report = GcReport(dry_run=dry_run, live_objects=len(plan.live), bytes_before=sum(sizes.values()),
                      packs=plan.fates)
    leaving = plan.leaving()
    if dry_run:
        report.objects_removed = _removed(view, plan.live, leaving)
        report.bytes_after = estimate_after(report.packs)
        return report

    written, failed = _rewrite(view, store, plan, progress)
    if failed:                            # keep everything: what stays may need what failed
        _unless_vanished(view, sizes)
        report.damaged.extend(failed)
        gone: set[str] = set()
    else:
        gone = leaving - written
    # From its last look at the remote until its last removal, gc leaves a note beside the
    # packs: a push that finishes meanwhile waits for it to go, then checks that what it relied
    # on is still there (sync.push), since a pack it published after that look is not seen.
    note = f"gc-{os.urandom(8).hex()}.running" if gone else None
    try:
        if note:
            for stale in _stale_notes(listing, now):     # left by gcs that died
                view.backend.remove_note(stale)
            view.backend.put_note(note, f"{socket.gethostname()} {os.getpid()}\n".encode())
            try:
                gone -= _needed_by_new_packs(view, store, plan, set(sizes) | written, gone,
                                             progress, note, notes_kept(), written)
            except (GcError, RemoteError, StoreError, OSError):
                _unless_vanished(view, set(sizes) | written)
                raise
        report.objects_removed = _removed(view, plan.live, gone)
        written_at = time.monotonic()
        for name in sorted(gone):
            if time.monotonic() - written_at > transfer.GC_NOTE_STALE / 3:   # still at work
                view.backend.put_note(note, f"{socket.gethostname()} {os.getpid()}\n".encode())
                written_at = time.monotonic()
            view.backend.remove_pack(name)
    finally:
        if note:
            try:
                view.backend.remove_note(note)
            except RemoteError as err:
                progress(f"warning: could not remove {note} ({err}); pushes to this remote wait "
                         f"for it up to {transfer.GC_NOTE_STALE / 60:.0f} minutes")
    progress(f"deleted {len(gone)} pack file(s): emptied, or replaced by their rewrite")
    # Pushes' notes a day old (not younger ones: another gc that read its refs earlier may
    # still honour them), where this client may.
    for void in transfer.void_push_notes(listing, remote_now, transfer.PUSH_NOTE_SWEEP):
        transfer.remove_quietly(view.backend, void)
    view.refresh()
    for fate in report.packs:
        if fate.name not in gone and fate.action in ("remove", "rewrite"):
            fate.action = "damaged" if failed else "keep"
    report.bytes_after = sum(view.listing.sizes.get(name) or 0 for name in view.packs)
    return report


def _marked(view: RemoteView, progress: Callable[[str], None], dry_run: bool = False) -> set[bytes]:
    """Before a gc removes anything from a remote marked below VERSION, whose writers may
    include gitmodel versions that leave no push notes: mark it VERSION, which such versions
    refuse to read or write, and leave a note naming every checkpoint it holds, for a push
    of theirs that began before the mark and relies on them (the note, as a push's, keeps
    them for an hour). The checkpoints named, to keep in this gc too."""
    if marker_version(view.backend.read_marker()) == VERSION:
        return set()
    held = {oid for oid, entry in view.entries.items() if entry.kind == MANIFEST}
    if dry_run:
        progress(f"remote {view} is store version 1: a gc would first mark it {VERSION} and keep "
                 f"its {len(held)} checkpoint(s) for an hour (older gitmodel versions' pushes "
                 "leave no note for a gc)")
        return held
    transfer.announce_push(view.backend, sorted(held))
    view.backend.write_marker(MARKER.format(VERSION))
    progress(f"marked remote {view} as store version {VERSION}: older gitmodel versions, whose "
             "pushes leave no note for a gc, now refuse it and ask to be upgraded; its "
             f"{len(held)} checkpoint(s) are kept for an hour, for a push of theirs that may "
             "still be under way")
    return held


class _Plan:
    """Which remote objects are live, and which packs go.

    A rewritten pack's live records can be copied from the remote as they are, or sent from
    the local store, whose copies a repack may have re-encoded (deltas against a newer
    keyframe than the remote's). Sending the local copy is what lets a dropped keyframe go:
    the remote's old deltas needed it as their base, the local ones do not. Which records
    are rewritten depends on what is live, and what is live on which copies survive, so the
    plan is settled by iteration: from the conservative closure (the bases of every remote
    copy), until the set of packs that go stops changing; failing that, the conservative
    closure is used."""

    def __init__(self, view: RemoteView, store: Store, sizes: dict[str, int], recent: set[str],
                 pointer_sizes: dict[bytes, int]):
        self.view, self.store, self.sizes, self.recent = view, store, sizes, recent
        self.pointer_sizes = pointer_sizes
        self.live: set[bytes] = set()
        self.local: set[bytes] = set()          # live objects the rewrite sends from the store
        self.fates: list = []
        self._heads: dict[tuple[str, int], list[bytes]] = {}     # remote delta copy -> bases
        self._lean: set[bytes] = set()
        self._bases_seen: tuple[int, set[bytes]] = (0, set())

    def settle(self, roots: set[bytes], progress: Callable[[str], None]) -> None:
        seed = self._seed(roots, progress)
        conservative = self._closure(seed, set(), set())
        # What would be live if every record the store has were sent from it: a remote delta
        # whose base is not in there is worth re-sending, even from a pack without garbage.
        self._lean = self._closure(seed, set(self.sizes), {o for o in conservative if self._sendable(o)})
        live, fates = conservative, self._decide(conservative)
        for _ in range(4):
            leaving = _leaving(fates)
            local = self._without_chains({oid for oid in live if self._sendable(oid)
                                          and all(e.pack in leaving for e in self.view.entries.copies(oid))})
            settled = self._closure(seed, leaving, local)
            settled_fates = self._decide(settled)
            if _leaving(settled_fates) == leaving:
                self.live, self.fates, self.local = settled, settled_fates, local & settled
                return
            live, fates = settled, settled_fates
        self.live, self.fates, self.local = conservative, self._decide(conservative), set()

    def leaving(self) -> set[str]:
        return _leaving(self.fates)

    def _seed(self, roots: set[bytes], progress: Callable[[str], None]) -> set[bytes]:
        """Everything in a recent pack, the live and the recent manifests, their chunks."""
        entries = self.view.entries
        seed = {oid for oid, entry in entries.items() if entry.pack in self.recent}
        roots = {oid for oid in roots if oid in entries}
        roots |= {oid for oid in seed if entries.get(oid).kind == MANIFEST}
        seed |= roots
        for manifest in _manifests(self.view, self.store, roots, self.pointer_sizes).values():
            seed.update(cid for cid, _ in manifest.chunks)
        progress(f"{len(roots)} live checkpoint(s) on the remote")
        return seed

    def _decide(self, live: set[bytes]) -> list:
        fates = decide(self.sizes, live, self.view.entries.items())
        stale = {e.pack for oid, e in self.view.entries.items()
                 if e.encoding == codec.DELTA and oid in live and self.store.has(oid)
                 and (e.pack, e.offset) in self._heads
                 and not set(self._heads[(e.pack, e.offset)]) <= self._lean}
        for fate in fates:
            if fate.name in self.recent:
                fate.action = "keep"              # another client's push may rely on it
            elif fate.action == "keep" and fate.name in stale:
                fate.action = "rewrite"           # its deltas hold a base nothing else needs
        return fates

    def _closure(self, seed: set[bytes], leaving: set[str], local: set[bytes]) -> set[bytes]:
        """`seed` and, transitively, the bases its objects need: for an object sent from the
        store (in `local`, or absent from the remote), the store's copy's bases and those of
        its remote copies that stay; for any other, those of every remote copy."""
        entries = self.view.entries
        live, todo = set(seed), list(seed)
        while todo:
            copies = {oid: [e for e in entries.copies(oid) if e.encoding == codec.DELTA and
                            not (self._from_store(oid, local) and e.pack in leaving)] for oid in todo}
            self._read_heads([(oid, e) for oid, es in copies.items() for e in es])
            found = []
            for oid, es in copies.items():
                found += [b for e in es for b in self._heads[(e.pack, e.offset)]]
                if self._from_store(oid, local):
                    found += self.store.bases_to_send(oid)
            todo = [b for b in dict.fromkeys(found) if b not in live]
            live.update(todo)
        return live

    def _sendable(self, oid: bytes) -> bool:
        """Whether the store's copy may replace the remote's: one whose bases the remote holds
        whole, or holds and receives whole with it. A local delta against a version the remote
        never received (an unpushed branch's, kept whole by the repack) would carry that
        version's weights there; one against a base left there only as a delta would make a
        chain, as would one replacing the whole copy of a base that remote deltas use; and
        rewrites of histories reordered by force-pushes close chains into cycles (three
        versions each a delta of the next: none readable)."""
        if not self.store.has(oid):
            return False
        bases = self.store.bases_to_send(oid)
        if bases and oid in self._remote_bases():     # its whole copy there is a base: it stays
            return False
        # A base the remote holds as a delta and the store whole may go with it
        # (_without_chains keeps only those sent)
        return all(self._whole_there(base) or (self.view.entries.copies(base) and
                                               not self.store.bases_to_send(base)) for base in bases)

    def _without_chains(self, local: set[bytes]) -> set[bytes]:
        """`local` less the deltas whose bases would not be whole on the remote after the
        rewrite: whole there, or sent from here (whole: the store holds no chains)."""
        while True:
            chained = {oid for oid in local for base in self.store.bases_to_send(oid)
                       if base not in local and not self._whole_there(base)}
            if not chained:
                return local
            local = local - chained

    def _remote_bases(self) -> set[bytes]:
        """The bases of the remote delta copies read so far (the closure reads those of every
        live object's copies before any copy is judged sendable)."""
        if self._bases_seen[0] != len(self._heads):
            self._bases_seen = (len(self._heads), {b for heads in self._heads.values() for b in heads})
        return self._bases_seen[1]

    def _whole_there(self, oid: bytes) -> bool:
        return any(e.encoding != codec.DELTA for e in self.view.entries.copies(oid))

    def _from_store(self, oid: bytes, local: set[bytes]) -> bool:
        return oid in local or (oid not in self.view.entries and self.store.has(oid))

    def heads(self, entry: Entry) -> list[bytes]:
        """The bases a remote delta copy names (read by remote_bases first)."""
        return self._heads[(entry.pack, entry.offset)]

    def remote_bases(self, deltas: list[tuple[bytes, Entry]]) -> set[bytes]:
        """The bases these remote delta copies name."""
        self._read_heads(deltas)
        return {base for _, e in deltas for base in self._heads[(e.pack, e.offset)]}

    def _read_heads(self, deltas: list[tuple[bytes, Entry]]) -> None:
        """Read the headers of these remote delta copies (their bases), each once."""
        wanted = [(oid, e) for oid, e in deltas if (e.pack, e.offset) not in self._heads]
        if not wanted:
            return

        def head(item: tuple[bytes, Entry]) -> list[bytes]:
            oid, entry = item
            start = entry.offset + record_head.size
            length = min(codec.delta_header_length(codec.MAX_BASES), entry.stored_length)
            data = self.view.backend.read_range(entry.pack, start, start + length)
            try:
                return codec.delta_bases(data)
            except codec.CodecError as err:
                raise CorruptObject(oid, f"on remote {self.view}: {err}") from None
        with ThreadPoolExecutor(HEADER_READS_IN_FLIGHT) as pool:
            for (oid, entry), bases in zip(wanted, pool.map(head, wanted)):
                self._heads[(entry.pack, entry.offset)] = bases


def _leaving(fates: list) -> set[str]:
    return {fate.name for fate in fates if fate.action in ("remove", "rewrite")}


def _manifests(view: RemoteView, store: Store, oids: set[bytes],
               pointer_sizes: dict[bytes, int]) -> dict[bytes, Manifest]:
    """The manifests, from the local store where it has them, else from the remote (bounded
    by the file size their pointers give, or as manifest.UNNAMED). One that cannot be read
    stops the collection: its chunks could not be told from garbage."""
    found, failed = {}, {}
    for oid in oids:
        if store.has(oid):
            try:
                found[oid] = store.read_manifest(oid)
                continue
            except (StoreError, ValueError):
                pass                                  # the remote's copy may be good
    remote = transfer.read_manifests(view, [o for o in oids if o not in found], failed, pointer_sizes)
    for oid, (entry, payload) in remote.items():
        found[oid] = Manifest.decode(codec.decode(entry.encoding, payload, entry.raw_length))
    unreadable = [oid for oid in oids if oid not in found]
    if unreadable:
        why = failed.get(unreadable[0], "not readable")
        fetch = ("`git fetch` the commits that name it (a push's may not have arrived yet), whose "
                 "pointer bounds it, then gc again; ") if unreadable[0] not in pointer_sizes else ""
        raise GcError(f"the checkpoint {unreadable[0].hex()[:16]} is live but its manifest cannot "
                      f"be read from remote {view} or the local store ({why})",
                      f"Nothing was removed. {fetch}`gitmodel fsck --remote NAME` says what is damaged")
    return found


def _removed(view: RemoteView, live: set[bytes], packs: set[str]) -> int:
    """Objects whose every remote copy is in `packs` and that are not live."""
    return len({oid for oid, entry in view.entries.items() if entry.pack in packs and oid not in live
                and all(e.pack in packs for e in view.entries.copies(oid))})


def _rewrite(view: RemoteView, store: Store, plan: _Plan,
             progress: Callable[[str], None]) -> tuple[set[str], list[str]]:
    """Upload the live records of the packs that go, each object once, and none a staying
    pack holds: the store's copy where the plan says so, else the remote's, read back and
    verified. Returns the packs written, and what could not be copied (then nothing goes)."""
    entries, leaving = view.entries, plan.leaving()
    staying = set(plan.sizes) - leaving

    def kept(oid: bytes) -> bool:
        """Whether a staying pack holds a copy that stands in for the leaving ones: a delta
        does not stand in for a whole copy (a base must keep one, and a remote written by an
        older gitmodel may hold chunks as deltas of each other beside whole copies)."""
        copies = entries.copies(oid)
        there = [e for e in copies if e.pack in staying]
        return bool(there) and (any(e.encoding != codec.DELTA for e in there) or
                                all(e.encoding == codec.DELTA for e in copies))
    wanted = sorted(oid for oid in plan.live if not kept(oid) and (oid in entries or store.has(oid)))
    if not wanted:
        return set(), []
    whole_there = {oid for oid in wanted if any(e.pack in staying for e in entries.copies(oid))}
    local = [oid for oid in wanted if (oid in plan.local or oid not in entries) and oid not in whole_there]
    remote = sorted(set(wanted) - set(local))
    failed: dict[bytes, str] = {}

    def from_store(kind: int):
        for oid in local:
            if store.locate(oid).kind != kind:
                continue
            try:
                entry, record, _ = store.read_checked(oid, whole=True)    # as _Plan saw it
            except StoreError as err:
                failed[oid] = err.full()
                continue
            payload = memoryview(record)[record_head.size:]
            if entry.encoding == codec.DELTA and not set(codec.delta_bases(payload)) <= plan.live:
                failed[oid] = "the store's copy is a delta against another base than planned"
                continue
            yield oid, entry, payload

    def records():
        yield from from_store(CHUNK)
        yield from transfer.read_objects(view, remote, failed, bases=transfer.remote_bases(view, store),
                                         sizes=plan.pointer_sizes)
        yield from from_store(MANIFEST)

    total = sum(record_head.size + (entries.get(oid) or store.locate(oid)).stored_length for oid in wanted)
    written = transfer.send_records(store, view, records(), total, f"gc of {view.name}", quiet=True)
    progress(f"rewrote {len(leaving)} pack(s) into {len(written)} ({len(local)} record(s) "
             "from the local store)")
    return set(written), [f"{oid.hex()}: {why}" for oid, why in failed.items()]


def _stale_notes(listing, now: float) -> list[str]:
    return [name for name, when in listing.collecting.items()
            if when is not None and now - when > transfer.GC_NOTE_STALE]


def _needed_by_new_packs(view: RemoteView, store: Store, plan: _Plan, known: set[str],
                         gone: set[str], progress: Callable[[str], None], note: str,
                         notes_kept: float, written: set[str]) -> set[str]:
    """Packs among `gone` that packs published since the collection began need (a push that
    ran meanwhile), or that pushes' notes name: list the remote again and keep whatever their
    manifests refer to. `note`: the gc's own, just written (its time is the remote's now).
    `known`: the packs listed at first and those the gc wrote (`written`)."""
    if notes_kept > transfer.PUSH_NOTE_SWEEP - transfer.PUSH_NOTE_AGE:
        raise GcError(f"this gc read the refs of the git remote {notes_kept / 3600:.0f} hours ago: "
                      "pushes' notes it would need may have been removed since",
                      "Nothing was removed. Run the gc again")
    view.refresh()
    fresh = view.packs - known
    pushed = transfer.pushed_checkpoints(view.backend, view.listing, view.listing.collecting.get(note),
                                         notes_kept)
    if fresh:
        progress(f"{len(fresh)} pack(s) appeared meanwhile; keeping what they need")
    roots = {oid for oid, entry in view.entries.items() if entry.pack in fresh and entry.kind == MANIFEST}
    roots |= {oid for oid in pushed if oid in view.entries}
    needed = {oid for oid, entry in view.entries.items() if entry.pack in fresh}
    for manifest in _manifests(view, store, roots, plan.pointer_sizes).values():
        needed.update(cid for cid, _ in manifest.chunks)
    needed |= roots
    todo = set(needed)
    while todo:                                  # the bases of every copy, transitively
        todo = plan.remote_bases([(oid, e) for oid in todo for e in view.entries.copies(oid)
                                  if e.encoding == codec.DELTA]) - needed
        needed |= todo
    # A pack goes if every object it holds that is needed has a copy elsewhere (a rewrite's),
    kept = {e.pack for oid in needed if all(e.pack in gone for e in view.entries.copies(oid))
            for e in view.entries.copies(oid)}
    # and that copy, if a delta, reads through bases whose copies elsewhere read in turn: two
    # gcs at once, each rewriting a version as a delta of one the other was removing whole,
    # would otherwise leave them deltas of each other there.
    # While another gc is at work (its note), any pack this one listed at first may be one it
    # removes: such whole copies are not relied on (each gc then keeps its old packs, where
    # the two would otherwise each count on the one the other removes).
    mine = view.listing.collecting.get(note)
    others = [name for name, when in view.listing.collecting.items() if name != note
              and (when is None or mine is None or mine - when < transfer.GC_NOTE_STALE)]
    if not (others or fresh or (known - written) - view.packs):
        return kept              # nothing else wrote or removed meanwhile: the plan holds
    check = needed | plan.live
    while True:
        unsure = (gone | (known - written)) if others else gone
        unread = _unreadable_after(view, plan, check, unsure - kept)
        more = {e.pack for oid in unread for e in view.entries.copies(oid) if e.pack in gone} - kept
        if not more:
            return kept
        progress(f"keeping {len(more)} pack(s) whose objects the rewritten packs hold only as "
                 "deltas of objects that are deltas there too (another gc rewrote them meanwhile)")
        kept |= more


def _unreadable_after(view: RemoteView, plan: _Plan, oids: set[bytes], gone: set[str]) -> set[bytes]:
    """The objects among `oids` that no copy outside the packs in `gone` gives: a whole one,
    or a delta whose bases do (in turn, without going round)."""
    known: dict[bytes, bool] = {}
    staying = {oid: [e for e in view.entries.copies(oid) if e.pack not in gone] for oid in oids}
    todo = {oid for oid, copies in staying.items() if all(e.encoding == codec.DELTA for e in copies)}
    while todo:                            # the headers these reads need, read in batches
        deltas = [(oid, e) for oid in todo for e in staying[oid]]
        bases = plan.remote_bases(deltas) - set(staying)
        staying.update({b: [e for e in view.entries.copies(b) if e.pack not in gone] for b in bases})
        todo = {b for b in bases if all(e.encoding == codec.DELTA for e in staying[b])}

    def reads(oid: bytes, path: set[bytes]) -> bool:
        if oid in known:
            return known[oid]
        copies = staying[oid]
        if any(e.encoding != codec.DELTA for e in copies):
            known[oid] = True
            return True
        if oid in path or len(path) >= MAX_CHAIN:
            return False                   # not remembered: another way round may read
        path.add(oid)
        found = any(all(reads(base, path) for base in plan.heads(e)) for e in copies)
        path.discard(oid)
        known[oid] = found
        return found
    return {oid for oid in oids if not reads(oid, set())}
