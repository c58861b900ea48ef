"""Moving checkpoints between the local store and a remote: what to send or bring for a set of
checkpoints, decided from what each side holds (never from what git believes the other side
has), so a push that succeeds has put every checkpoint it was given on the remote."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Iterable

from gitmodel import stored
from gitmodel.remote import transfer
from gitmodel.remote.backend import ReadOnlyRemote, RemoteError
from gitmodel.remote.transfer import TransferStats
from gitmodel.remote.view import RemoteView
from gitmodel.store import codec
from gitmodel.store.manifest import Manifest
from gitmodel.store.objects import CorruptObject, MissingObjects, Store
from gitmodel.stored import Checkpoints
from gitmodel.quoting import quote_path


class NotPushable(RemoteError):
    pass


def _paths(checkpoints: Checkpoints, manifest_ids) -> str:
    """The first few as `path (content id)`: versions of one path differ by the id only."""
    return ", ".join(f"{quote_path(checkpoints[m.hex()])} ({m.hex()[:12]})" if m.hex() in checkpoints else m.hex()[:16]
                     for m in list(manifest_ids)[:3])


def push(store: Store, view: RemoteView, checkpoints: Checkpoints, quiet: bool = False,
         force: bool = False, pin: Iterable[str] | None = None) -> TransferStats:
    """Upload every object these checkpoints need that the remote's indexes do not list
    (whatever git believes the remote has); with `force`, every one of them again, in new
    packs (to repair a remote whose copies are damaged). A checkpoint the local store lacks is
    fine if the remote holds its manifest: chunks always arrive there before their manifest.

    Checkpoints in `pin` (default: all) whose manifests the remote holds only in packs older
    than PIN_AGE have their manifests sent again: a remote gc running meanwhile then sees a
    recent pack naming them, and keeps their chunks (remote/collect.py)."""
    view.refresh()
    manifest_ids = stored.content_ids(checkpoints)
    absent = [m for m in store.missing(manifest_ids) if force or m not in view.entries]
    if absent:
        raise NotPushable(f"{len(absent)} checkpoint(s) to push are in neither the local store nor "
                          f"remote {view} (e.g. {_paths(checkpoints, absent)})",
                          "Nothing was uploaded. Fetch them from where they were committed "
                          "(`gitmodel fsck --all --repair` fetches every commit's from the "
                          "configured remote; `gitmodel fetch REMOTE $(git rev-list REV)` "
                          "those of one history), or add the files again")
    here = [m for m in manifest_ids if store.has(m)]
    need = stored.needed(here, store.read_manifest)
    if need.unreadable:
        raise NotPushable(f"the stored file list of {_paths(checkpoints, need.unreadable)} is "
                          f"damaged: {next(iter(need.unreadable.values()))}",
                          "Nothing was uploaded. `gitmodel fsck` shows the damage; add the "
                          "files again or fetch them from a remote that has them")
    # What must be on the remote when the push is done: the checkpoints' objects, the bases of
    # the deltas it sends (those found there are not sent), and the checkpoints only the
    # remote has.
    closure, _ = transfer.to_send(store, view, [oid for oid in need.objects if oid not in view.entries])
    check = list(dict.fromkeys([*need.objects, *closure,
                                *(m for m in manifest_ids if not store.has(m))]))
    lacking = {m for oid in check if oid not in view.entries for m in need.needed_by.get(oid, [oid])}
    try:
        stats = transfer.upload(store, view, need.objects, quiet=quiet, force=force,
                                again=_to_pin(store, view, manifest_ids if pin is None else
                                              stored.content_ids(pin)))
        # From the end of the pre-push hook until git updates the remote's refs, no ref names
        # these checkpoints: the note does. A gc that lists the remote after it is written keeps
        # them; one that listed before is still removing when the check below starts (and it
        # waits), or is done: either way the check sees what it took.
        note = _announce(view, manifest_ids)
        _check_arrived(store, view, check, stats, quiet, note)
        _announce(view, manifest_ids, note)                 # the hour counts from now
        _sweep_push_notes(view, note)
        return stats
    except ReadOnlyRemote as err:
        if force:                           # a repair: its own hint says it all
            raise
        raise NotPushable(str(err), _read_only_hint(checkpoints, lacking)) from None
    except (MissingObjects, CorruptObject) as err:
        oids = err.oids if isinstance(err, MissingObjects) else [err.oid]
        users = {m for oid in oids for m in need.needed_by.get(oid, [oid])}
        raise NotPushable(f"{_paths(checkpoints, users) or 'a checkpoint'} cannot be pushed: {err}",
                          "Nothing damaged was uploaded. Add the files again from a good copy "
                          "(that stores good chunks; `git add --renormalize PATH` when the work "
                          "tree holds them), or fetch them from a remote that has them; "
                          "`gitmodel fsck` lists what is damaged") from None


def _read_only_hint(checkpoints: Checkpoints, lacking: set[bytes]) -> str:
    """What a push to a remote that refuses writes can do, and what the commits' clones get."""
    where = ("Push through a URL of this store that takes writes (`GITMODEL_REMOTE=URL git "
             "push`, or `gitmodel remote add --local NAME URL` for git remote NAME)")
    if lacking:
        return (f"The push was refused. The remote lacks {len(lacking)} of its checkpoint(s) "
                f"({_paths(checkpoints, lacking)}). {where}. `GITMODEL_SKIP_PUSH=1 git push` "
                "would push the commits without them, and clones could not check those out "
                "until a push uploads them")
    return ("The push was refused. The remote holds every checkpoint it carries, but a push "
            "must also write there what keeps them from a remote gc until git's refs name them "
            f"(a note, fresh copies of old file lists: docs/formats.md §5). {where}, or, since "
            "nothing needs uploading, push the commits without the note: `GITMODEL_SKIP_PUSH=1 "
            "git push` (clones check them out from the remote)")


def _check_arrived(store: Store, view: RemoteView, oids: list[bytes], stats: TransferStats,
                   quiet: bool, note: str | None = None) -> None:
    """Look at the remote again, once no gc is removing packs from it: what the push needs
    there (objects it found there and did not send, or a pack it found whole and sent only
    the index of) may have gone meanwhile, taken by a remote gc that listed the remote before
    the push's pinned manifests arrived. Send what is missing now, once; if it goes again,
    fail rather than let git record a push the remote cannot serve."""
    say = (lambda line: None) if quiet else (lambda line: print(f"gitmodel: {line}", file=sys.stderr))
    for attempt in range(2):
        view.refresh(transfer.settled_listing(view.backend, say, note))
        gone = [oid for oid in oids if oid not in view.entries]
        if not gone:
            return
        if attempt == 0:
            again = transfer.upload(store, view, gone, quiet=quiet)
            stats.objects, stats.bytes = stats.objects + again.objects, stats.bytes + again.bytes
            stats.packs += again.packs
    raise NotPushable(f"{len(gone)} object(s) this push needs on remote {view} went missing from it "
                      "while it ran, twice (a gc of the remote running at the same time?)",
                      "The push did not complete and git was not told it had. Run it again")


def _announce(view: RemoteView, manifest_ids: list[bytes], note: str | None = None) -> str | None:
    """Write this push's note (again, given its name)."""
    return transfer.announce_push(view.backend, manifest_ids, note) if manifest_ids else None


def _sweep_push_notes(view: RemoteView, note: str | None) -> None:
    """Remove pushes' notes a day old on the remote's clock (this push's note, as the last
    listing shows it, tells the time there), if this client may: credentials that only add
    leave them to a gc."""
    now = view.listing.pushing.get(note) if note and view.listing is not None else None
    for void in transfer.void_push_notes(view.listing, now, transfer.PUSH_NOTE_SWEEP):
        transfer.remove_quietly(view.backend, void)


PIN_AGE = 3600.0      # seconds; far below a remote gc's grace period (a day by default)


def _to_pin(store: Store, view: RemoteView, manifest_ids: list[bytes]) -> list[bytes]:
    """The manifests (held locally) whose every copy on the remote is older than PIN_AGE."""
    old_before = time.time() - PIN_AGE
    mtimes = view.listing.mtimes if view.listing is not None else {}

    def old(oid: bytes) -> bool:
        copies = view.entries.copies(oid)
        return bool(copies) and all((mtimes.get(e.pack) or 0) < old_before for e in copies)
    return [oid for oid in manifest_ids if old(oid) and store.has(oid)]


@dataclass
class FetchResult:
    stats: TransferStats = field(default_factory=TransferStats)
    failed: dict[str, str] = field(default_factory=dict)     # content id -> why it is incomplete


def fetch(store: Store, view: RemoteView, checkpoints: Checkpoints, quiet: bool = False,
          sizes: dict[str, int] | None = None) -> FetchResult:
    """Bring what these checkpoints need and the store lacks. Each checkpoint succeeds or fails
    on its own: `failed` names those left incomplete, with the reason; all else is stored.
    `sizes`: the file size each checkpoint's pointer gives (content id -> bytes), where known:
    a manifest listing more chunks than such a file has is refused before it is decoded."""
    manifest_ids = stored.content_ids(checkpoints)
    result = FetchResult()
    if complete(store, checkpoints):
        return result
    absent = set(store.missing(manifest_ids))
    failed: dict[bytes, str] = {}
    bounds = {bytes.fromhex(c): n for c, n in (sizes or {}).items()}
    remote = transfer.read_manifests(view, [m for m in manifest_ids if m in absent], failed, bounds)

    def read_manifest(oid: bytes) -> Manifest:
        if oid in remote:
            entry, payload = remote[oid]
            return Manifest.decode(codec.decode(entry.encoding, payload, entry.raw_length))
        if oid in failed:
            raise RemoteError(failed[oid])
        return store.read_manifest(oid)

    need = stored.needed(manifest_ids, read_manifest)
    # The bases of deltas held here, too: their pack may be the one that went missing. Not a
    # manifest whose read from the remote failed: its chunks are not being fetched, and a
    # store never holds a manifest without them.
    wanted = [oid for oid in need.objects if oid not in failed]
    result.stats = transfer.download(store, view, store.with_bases(wanted), quiet=quiet,
                                     known=remote, sizes=bounds)
    failed.update(result.stats.failed)
    stranded = _without_bases(store, need.objects, failed)
    if stranded:
        stranded = _fetch_instead(store, view, stranded, result.stats, failed, quiet)
    for oid, why in {**need.unreadable, **failed, **stranded}.items():
        for manifest in need.needed_by.get(oid, [oid] if oid in need.manifests else []):
            result.failed.setdefault(manifest.hex(), why)
    return result


def complete(store: Store, checkpoints: Checkpoints) -> bool:
    """Whether the store holds everything these checkpoints need (nothing to fetch)."""
    manifest_ids = stored.content_ids(checkpoints)
    return not store.missing(manifest_ids) and \
        not store.missing(store.with_bases(stored.needed(manifest_ids, store.read_manifest).chunks))


def _without_bases(store: Store, oids: list[bytes], failed: dict[bytes, str]) -> dict[bytes, str]:
    """Those of these objects stored here as deltas whose bases are still missing (their pack
    was lost, and the fetch could not bring them), with why: the checkpoints needing them are
    not complete, though each of their own objects is here."""
    lacking = set(store.missing(store.with_bases(oids)))
    if not lacking:
        return {}
    out = {}
    for oid in oids:
        gone = [b for b in store.with_bases([oid])[1:] if b in lacking]
        if gone:
            out[oid] = (f"chunk {oid.hex()} is stored here as a difference from chunk "
                        f"{gone[0].hex()}, which the store lacks and the fetch could not bring"
                        + (f" ({failed[gone[0]]})" if gone[0] in failed else "")
                        + (f"; nor the chunk itself ({failed[oid]})" if oid in failed else ""))
    return out


def _fetch_instead(store: Store, view: RemoteView, stranded: dict[bytes, str], stats: TransferStats,
                   failed: dict[bytes, str], quiet: bool) -> dict[bytes, str]:
    """Deltas here whose bases are lost here and on the remote (a push sends a delta whole when
    the remote lacks its base; a version never pushed): the remote's own copy of each object
    is fetched beside the one here, whole copies first, then copies the remote holds as
    deltas (their bases are among the whole ones just fetched, or good here), and once one
    is stored (verified), the copy here is marked damaged, never to be read again (gc removes
    it). Returns those still stranded."""
    for whole in (True, False):
        wanted = [oid for oid in stranded if view.entries.copies(oid) and whole == any(
            e.encoding != codec.DELTA for e in view.entries.copies(oid))]
        if not wanted:
            continue
        before = {oid: {entry.pack for entry in store.copies(oid)} for oid in wanted}
        more = transfer.download(store, view, wanted, quiet=quiet, again=frozenset(wanted))
        stats.objects, stats.bytes, stats.packs = (stats.objects + more.objects, stats.bytes + more.bytes,
                                                   stats.packs + more.packs)
        stats.failed.update(more.failed)
        failed.update(more.failed)
        store.refresh()
        for oid in wanted:
            if oid not in more.failed and {e.pack for e in store.copies(oid)} - before[oid]:
                for pack in before[oid]:
                    store.mark_damaged(oid, pack)
        stranded = _without_bases(store, list(stranded), failed)
    return stranded


def fetch_all(store: Store, view: RemoteView, checkpoints: Checkpoints, quiet: bool = False,
              sizes: dict[str, int] | None = None) -> TransferStats:
    """`fetch`, failing (after storing everything that did arrive) if any checkpoint is left
    incomplete."""
    result = fetch(store, view, checkpoints, quiet, sizes)
    if result.failed:
        content, why = next(iter(result.failed.items()))
        raise RemoteError(f"{len(result.failed)} checkpoint(s) could not be fetched completely "
                          f"(e.g. {quote_path(checkpoints.get(content, content[:16]))}): {why}",
                          "Everything that arrived is kept; a repeated fetch asks only for the rest")
    return result.stats
