"""What a remote holds: the union of its pack indexes, cached locally. Cache layout:
docs/formats.md §5.

Pack indexes are immutable and named by their content, so the cache never goes stale: a
refresh lists the remote's packs once and downloads only indexes not seen before. Packs that
disappeared from the listing drop out of the view.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from gitmodel.remote.backend import REMOTE_NAME, Listing, RemoteError, Retrying, marker_repair
from gitmodel.store import files
from gitmodel.store.objects import MARKER, VERSION, check_version
from gitmodel.store.pack import PackError, verify_index
from gitmodel.store.table import ObjectTable

PARALLEL = 8


VANISHED = "its index vanished while listing"   # removed meanwhile (a gc): not damage


class RemoteView:
    def __init__(self, backend: Retrying, store_root: Path,
                 permissions: files.Permissions | None = None):
        self.backend = backend
        self._permissions = permissions or files.Permissions()
        key = blake3.blake3(backend.url.encode()).hexdigest()[:16]
        self.cache_dir = Path(store_root) / "remotes" / key
        self.entries = ObjectTable()
        self.packs: set[str] = set()
        self.damaged: dict[str, str] = {}   # listed indexes that failed verification, and why
        self._bad_there: set[str] = set()   # indexes whose copy there failed, though cached
        self.listing: Listing | None = None
        self._checked_version = False

    def __str__(self) -> str:
        return str(self.backend)

    @property
    def name(self) -> str:
        return self.backend.name

    def refresh(self, listing: Listing | None = None, recheck: bool = False) -> "RemoteView":
        """Read the listing (or take one just made) and the indexes not yet cached; with
        `recheck`, every index again (a check of the remote: the cache holds the copy this
        clone read or wrote, which damage to the remote's copy since then leaves as it was)."""
        if not self._checked_version:
            check_version(self.backend.read_marker(), f"remote {self}", **marker_repair(self.backend))
            self._checked_version = True
        listing = listing or self.backend.list_packs()
        if listing.temporaries:
            self.backend.sweep(listing)
        names = listing.published
        fresh = sorted(n for n in names if recheck or not (self.cache_dir / f"{n}.idx").is_file())
        vanished: set[str] = set()
        with ThreadPoolExecutor(PARALLEL) as pool:
            for name, data in zip(fresh, pool.map(self._fetch, fresh)):
                if isinstance(data, bytes):
                    self._cache(name, data)
                    self._bad_there.discard(name)
                elif data == VANISHED:        # removed since the listing (a gc): gone, not damaged
                    self.damaged[name] = data
                    vanished.add(name)
                else:
                    self.damaged[name] = data
                    self._bad_there.add(name)
        entries, packs, indexes = ObjectTable(), set(), []
        for name in sorted(names):
            path = self.cache_dir / f"{name}.idx"
            if name in self._bad_there or name in vanished:
                continue                  # readers see the remote's copy, not the cached one
            try:
                indexes.append((name, *verify_index(name, path.read_bytes())))
            except (OSError, PackError) as err:
                self.damaged.setdefault(name, str(err))
                path.unlink(missing_ok=True)
                continue
            self.damaged.pop(name, None)
            packs.add(name)
        entries.add_indexes(indexes)
        self.entries, self.packs, self.listing = entries, packs, listing
        self.damaged = {name: why for name, why in self.damaged.items() if name in names}
        return self

    def add(self, name: str, index: bytes) -> None:
        """Record a pack this client just published."""
        self._cache(name, index)
        self.entries.add_indexes([(name, *verify_index(name, index))])
        self.packs.add(name)

    def damaged_indexes(self) -> list[str]:
        """The listed indexes that failed their check (not those a gc removed meanwhile)."""
        return sorted(name for name, why in self.damaged.items() if why != VANISHED)

    def restore_index(self, name: str) -> bool:
        """Upload the cached copy of a pack's index over a damaged one on the remote, when the
        cache holds a good copy; whether it did."""
        try:
            data = (self.cache_dir / f"{name}.idx").read_bytes()
            verify_index(name, data)
        except (OSError, PackError):
            return False
        self.backend.put_index(name, data)
        self._bad_there.discard(name)
        return True

    def create(self) -> None:
        """Before the first upload to a remote that is new: its version marker."""
        if self.listing is not None and not self.listing.exists and not self.packs:
            if self.backend.read_marker() is None:
                self.backend.write_marker(MARKER.format(VERSION))

    def _fetch(self, name: str) -> bytes | str:
        """The index's bytes, or why it cannot be used (damaged, or still being written by
        another client: either way not visible)."""
        try:
            data = self.backend.read_index(name)
            verify_index(name, data)
            return data
        except FileNotFoundError:
            return VANISHED
        except PackError as err:
            return str(err)

    def _cache(self, name: str, data: bytes) -> None:
        self._permissions.make_dir(self.cache_dir)
        files.write_durably(self.cache_dir / f"{name}.idx", data, self._permissions.file(0o644))

    def describe_missing(self, count: int, first: bytes) -> str:
        """Why objects are not on this remote, as well as can be told."""
        if self.listing is not None and not self.listing.exists:
            if not REMOTE_NAME.fullmatch(self.name):      # named by its URL: nothing configured
                return (f"remote {self} has no packs at all (is the URL right? has anything been "
                        "pushed there?); it was named by its URL here, not configured: if that "
                        "is wrong, run the command again with the right one")
            return (f"remote {self} has no packs at all (is the URL right? has anything been "
                    "pushed there?); if its URL is wrong, set the right one for this clone with "
                    f"`gitmodel remote add {self.name} URL --local` (a checkout or `git reset "
                    "--hard` puts the committed `.gitmodel` back before it restores files) and "
                    f"commit the right one later (`gitmodel remote add {self.name} URL`)")
        text = f"remote {self} lacks {count} object(s) (first {first.hex()})"
        damaged = self.damaged_indexes()
        if damaged:
            names = ", ".join(damaged[:3])
            return (f"{text}, and {len(damaged)} of its pack indexes are damaged ({names}): "
                    f"they may be there. `gitmodel fsck --remote {self.name}` checks it")
        return (f"{text}: they were never pushed there (push from a clone that has them: "
                "`gitmodel push --all`), or were removed")


__all__ = ["RemoteView", "RemoteError"]
