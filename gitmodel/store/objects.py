"""The local object store: packs under one directory, a table of where each object is, and the
store's version marker. Layout: docs/formats.md §4.

Many processes may add at once: each writes its own temporary pack and publishes it by rename.
Two processes that store the same object both keep a copy; that wastes space, never loses
data, and the copies serve as spares. Nothing is modified in place.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import blake3

from gitmodel.errors import GitmodelError
from gitmodel.store import chunker, codec, files, manifest
from gitmodel.store.manifest import Manifest
from gitmodel.store.pack import (CHUNK, MANIFEST, Entry, PackError, PackWriter, encode_index,
                                 publish_into, record_head, scan, verify_index)
from gitmodel.store.table import ObjectTable

# Version 2 has version 1's layout; its writers leave push notes and wait for gc notes on a
# remote (docs/formats.md §5), which a remote gc relies on: marking a remote 2 keeps gitmodel
# versions that do neither from writing there. Both are read.
VERSION = 2
READS = (1, 2)
MARKER = "gitmodel store {}\n"

# Every writer of chunk records (clean, a merge's result written out, migrate, repack's deltas,
# which keep their chunk's length) stores chunks the chunker cut: no chunk is longer. A record
# claiming more is damage (or a remote written to cost memory), refused before decoding.
MAX_CHUNK = chunker.MAX_SIZE

# Deltas refer to chunks of newer versions; longer chains than this are damage (or a cycle).
MAX_CHAIN = 64
# Decoded bases kept for the next delta: neighbouring chunks share their bases, so what the
# batches in flight need is enough; more is memory touched for nothing (page faults).
BASE_CACHE_BYTES = 8 << 20

# Writers hold this shared, gc exclusive (store/gc.py).
GC_LOCK = "gc.lock"
RETIRED_FOR = 60.0        # seconds a reload keeps the pack files it let go of open (see there)

REPAIR_HINT = "Run `gitmodel fsck` to see what is damaged and `gitmodel fsck --repair` to repair it"


class StoreError(GitmodelError):
    pass


class StoreVersionError(StoreError):
    """Data written by a newer gitmodel: nothing is wrong with it, and nothing is written."""

    def __init__(self, what: str, found: str):
        super().__init__(f"{what} was written by a newer gitmodel ({found}; this gitmodel reads "
                         f"store versions {' and '.join(map(str, READS))})",
                         "Nothing was changed. Upgrade gitmodel: pip install --upgrade gitmodel")


class MissingObjects(StoreError):
    def __init__(self, oids: list[bytes], hint: str | None = None):
        self.oids = oids
        super().__init__(f"{len(oids)} object(s) missing, first {oids[0].hex()}", hint)


class MissingBase(MissingObjects):
    """A chunk stored as a delta whose base the store lacks: the chunk is not damaged."""

    def __init__(self, oid: bytes, bases: list[bytes]):
        self.oid = oid
        super().__init__(bases, "Fetch it again (`gitmodel fetch`), or run `gitmodel fsck` to see "
                         "what else depends on it")
        self.args = (f"chunk {oid.hex()} is stored as a difference from chunk {bases[0].hex()}, "
                     "which the store lacks",)


def goes_round(oid: bytes, based_on: dict[bytes, list[bytes]], ends: set[bytes]) -> bool:
    """Whether following the deltas from `oid` (`based_on`: each delta's bases) comes back
    to a chunk on the way, or goes on past MAX_CHAIN. `ends` gathers the chunks whose deltas
    were found to end in whole ones (shared between calls, so each is walked once)."""
    path: list[bytes] = []

    def walk(at: bytes) -> bool:
        if at in ends:
            return False
        if at in path or len(path) > MAX_CHAIN:
            return True
        path.append(at)
        try:
            if any(walk(base) for base in based_on.get(at, ())):
                return True
        finally:
            path.pop()
        ends.add(at)
        return False
    return walk(oid)


class CorruptObject(StoreError):
    def __init__(self, oid: bytes, why: str):
        self.oid = oid
        super().__init__(f"object {oid.hex()} is corrupt: {why}", REPAIR_HINT)


class ChainTooLong(CorruptObject):
    """A delta whose bases are deltas, MAX_CHAIN deep: given up at once, not retried through
    every other path (each level doubling the work), and no copy is blamed for it."""

    def __init__(self, oid: bytes):
        super().__init__(oid, f"its deltas chain more than {MAX_CHAIN} deep (a cycle, or chains "
                              "an older gitmodel's repack could leave)")
        self.hint = ("Run `gitmodel repack`: it rewrites chains an older gitmodel left as "
                     "differences of whole chunks. If it fails the same way, `gitmodel fsck` says "
                     "what else is damaged")


def marker_version(text: str | None) -> int | None:
    """The version a marker names (1 for no marker: a store from before markers existed);
    None for one that names none."""
    if text is None:
        return 1
    words = text.split()
    if len(words) == 3 and words[:2] == ["gitmodel", "store"] and words[2].isdigit():
        return int(words[2])
    return None


def check_version(text: str | None, what: str, path: str = "", fsck: str = "gitmodel fsck --all",
                  local: bool = True) -> None:
    """Refuse a store or remote whose version marker this gitmodel does not know. No marker:
    a store from before markers existed, which is version 1. `path`: the marker's (a file
    here, or on a remote that is not a folder its URL), to name in the repair of one that is
    empty or garbled (every version writes `gitmodel store N`, so such a marker is damage,
    not a newer gitmodel's); `fsck`: the command that then checks what the marker covers."""
    found = marker_version(text)
    if found in READS:
        return
    if found is not None:
        raise StoreVersionError(what, f"store version {found}")
    import shlex
    line = MARKER.format(VERSION).strip()
    if path and local:
        write = f"`printf '{line}\\n' > {shlex.quote(path)}`"
    elif path:
        write = f"into {path}, with the storage's own tools"
    else:
        write = "into its `config` file"
    raise StoreError(f"{what} has an {'empty' if not text.strip() else 'unreadable'} version "
                     f"marker {text.strip()[:60]!r} (a crash or a disk fault: every gitmodel "
                     f"writes `{line}` or a later number there)",
                     f"Nothing was changed. Unless a newer gitmodel has used this store, write "
                     f"that line back ({write}), then `{fsck}` checks every pack")


class Store:
    """Packs in `<root>/packs`, temporary files in `<root>/tmp`; `permissions` gives the modes
    of what it creates (git's core.sharedRepository)."""

    def __init__(self, root: Path | str, permissions: files.Permissions | None = None):
        self.root = Path(root)
        self.pack_dir = self.root / "packs"
        self.tmp_dir = self.root / "tmp"
        self.permissions = permissions or files.Permissions()
        self._index = ObjectTable()
        self._loaded: set[str] = set()
        self._fds: dict[str, int] = {}
        self._retired: list[tuple[float, list[int]]] = []     # (when, pack files let go of)
        self._lock = threading.Lock()
        self._swept = False
        self._refreshing = threading.Lock()
        self.damaged_indexes: dict[str, str] = {}      # pack -> why its index is unusable
        self._bad: dict[bytes, set[str]] = {}          # object -> packs holding a bad copy
        self._unadoptable: set[str] = set()            # packs without index that failed a rebuild
        self._base_cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._base_cache_bytes = 0
        self._chain = threading.local()
        self._gc_lock: int | None = None     # held shared from the first writer, or by gc
        if self.root.is_symlink() and not self.root.exists():
            raise StoreError(f"the store {self.root} is a symbolic link to "
                             f"{os.readlink(self.root)}, which does not exist (an unmounted disk?)",
                             "Nothing was read or written. Make the link's target available, or "
                             "remove the link to start an empty store")
        check_version(self._read_marker(), f"the store {self.root}", str(self.root / "config"))
        self._load_bad()
        self.refresh()

    def _read_marker(self) -> str | None:
        try:
            return (self.root / "config").read_text(errors="replace")
        except FileNotFoundError:
            return None

    def _create(self) -> None:
        """Make the store's directories, and its version marker when the store is new."""
        if self.pack_dir.is_dir() and self.tmp_dir.is_dir():
            return
        new = not self.pack_dir.is_dir()
        self.permissions.make_dir(self.pack_dir)
        self.permissions.make_dir(self.tmp_dir)
        if new and not (self.root / "config").exists():
            files.write_durably(self.root / "config", MARKER.format(VERSION).encode(),
                                self.permissions.file(0o644))

    # ----- index -----

    def refresh(self) -> None:
        """Pick up packs published since the last look (by this or another process). An
        index that fails its check costs only the objects it lists (see damaged_indexes);
        a pack whose index a crash kept from being published is indexed again."""
        try:
            names = os.listdir(self.pack_dir)
        except FileNotFoundError:
            return
        indexed = {n[:-4] for n in names if n.startswith("pack-") and n.endswith(".idx")}
        packs = {n[:-5] for n in names if n.startswith("pack-") and n.endswith(".pack")}
        with self._refreshing:              # threads refreshing at once add each pack once
            fresh = []
            # An index without its pack lists objects that are not here: trusting it would let
            # an add skip storing them. (A pack published meanwhile is picked up next time.)
            for name in sorted((indexed & packs) - self._loaded):
                try:
                    fresh.append((name, *verify_index(name, (self.pack_dir / f"{name}.idx").read_bytes())))
                    self.damaged_indexes.pop(name, None)
                except (PackError, OSError) as err:
                    self.damaged_indexes[name] = str(err)
            self._index.add_indexes(fresh)
            self._loaded.update(name for name, _, _ in fresh)
        for name in sorted(packs - indexed - self._unadoptable):
            self._adopt_orphan(name)

    def reload(self) -> None:
        """Forget every pack and read the indexes again (after packs were moved away)."""
        with self._refreshing:
            self._index, self._loaded = ObjectTable(), set()
            self.damaged_indexes = {}
        self._retire_fds()
        self.refresh()

    def _retire_fds(self) -> None:
        """Stop using the open files of packs removed since they were opened, without closing
        them yet: another thread may have just been handed one to read, and a closed
        descriptor's number is soon another file's. They are closed by close(), or by a later
        reload once RETIRED_FOR seconds old. Packs still there keep their descriptors."""
        import time
        now = time.monotonic()
        with self._lock:
            old = [fds for when, fds in self._retired if now - when > RETIRED_FOR]
            self._retired = [(when, fds) for when, fds in self._retired if now - when <= RETIRED_FOR]
            gone = {pack: fd for pack, fd in self._fds.items() if os.fstat(fd).st_nlink == 0}
            self._retired.append((now, list(gone.values())))
            self._fds = {pack: fd for pack, fd in self._fds.items() if pack not in gone}
        for fd in (fd for fds in old for fd in fds):
            os.close(fd)

    def _adopt_orphan(self, name: str) -> None:
        """Index a pack that a crash left without its index, if it is whole and its records
        give exactly the index its name commits to; otherwise leave it to fsck. Done holding
        the pack's lock: its publisher holds that until the index is in place, and a removal
        from before its index goes until the pack is gone, so neither is taken for a crash."""
        path, index_path = self.pack_dir / f"{name}.pack", self.pack_dir / f"{name}.idx"
        held = files.claim(path)
        if held is None:
            return
        try:
            if index_path.exists():
                return                 # published or adopted meanwhile: the next refresh loads it
            try:
                index = rebuild_index(path, self.bases)
            except (OSError, PackError, StoreError):
                index = None
            if index is None or index[0] != name:
                self._unadoptable.add(name)       # once per process; fsck --repair sees to it
                return
            try:
                files.write_durably(index_path, index[1], self.permissions.file(),
                                    tmp_dir=self.tmp_dir if self.tmp_dir.is_dir() else None)
            except OSError:
                return
        finally:
            os.close(held)
        with self._refreshing:
            if name not in self._loaded:
                self._index.add_indexes([(name, *verify_index(name, index[1]))])
                self._loaded.add(name)

    def has(self, oid: bytes) -> bool:
        """Whether the store holds a copy of the object not known to be damaged."""
        if oid not in self._bad:
            return oid in self._index
        return any(e.pack not in self._bad[oid] for e in self._index.copies(oid))

    def copies(self, oid: bytes) -> list[Entry]:
        """Every copy of the object, good or not."""
        return self._index.copies(oid)

    def _lock_file(self, name: str) -> int:
        """The store's lock file `name`, opened read-only: flock needs no more."""
        return self._shared_file(name, os.O_RDONLY)

    def _shared_file(self, name: str, flags: int) -> int:
        """The store's file `name` that every process opens (created if needed). Its mode is
        the store's, not the umask's: in a group-shared store every member must open it."""
        fd = os.open(self.root / name, flags | os.O_CREAT, self.permissions.file(0o644))
        if self.permissions.shared:
            try:
                os.fchmod(fd, self.permissions.file(0o644))
            except OSError:
                pass                  # another member's file: its creator set the mode
        return fd

    def try_lock(self, name: str) -> int | None:
        """An exclusive flock on the store file `name` (created if needed), as an open
        descriptor to close when done; None when another process holds it."""
        import fcntl
        self._create()
        fd = self._lock_file(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def hold_writer_lock(self) -> None:
        """Take the shared side of the gc lock, kept until release(): objects this process
        stores (and what it decided not to store because the store had it) stay until the
        process is done, which for git's filter is after git has written its index. Opened
        read-only: flock needs no write access, so users sharing a store can all take it."""
        if self._gc_lock is not None:
            return
        import fcntl
        self._create()
        fd = self._lock_file(GC_LOCK)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                import sys
                sys.stderr.write(f"gitmodel: waiting for a gc of {self.root} to finish\n")
                sys.stderr.flush()
                fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._gc_lock = fd
        # A gc that ran since the table was read may have removed packs it lists: objects it
        # finds there must not count as stored (an add would then not store them again).
        try:
            listed = {n[:-4] for n in os.listdir(self.pack_dir) if n.endswith(".idx")}
        except FileNotFoundError:
            listed = set()
        if self._loaded - listed:
            self.reload()

    def lock_for_gc(self, wait: float, say: Callable[[str], None] = lambda line: None) -> None:
        """Take the gc lock exclusively: no other process is writing, or will until close().
        Waits up to `wait` seconds for writers (git commands, fetches) to finish."""
        import fcntl
        import time
        if self._gc_lock is not None:
            raise StoreError("this process has written to the store; gc needs a fresh one")
        self._create()
        fd = self._lock_file(GC_LOCK)
        deadline, told = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreError(f"other processes are writing to {self.root} (a git "
                                     "command, fetch or repack) and did not finish within "
                                     f"{wait:g} s",
                                     "Nothing was removed. Run gc again when they are done "
                                     "(--wait SECONDS waits longer)") from None
                if not told:
                    say("waiting for the processes writing to the store to finish")
                    told = True
                time.sleep(0.1)
        self._gc_lock = fd
        # What the writers published before letting go: listed now, or a gc that waited would
        # take their packs for ones it never heard of (neither recent nor referenced).
        self.reload()

    def locate(self, oid: bytes) -> Entry | None:
        if oid not in self._bad:                # the common case: the first copy, one lookup
            return self._index.get(oid)
        copies = self._good_copies(oid)
        return copies[0] if copies else None

    def locate_whole(self, oid: bytes) -> Entry | None:
        """A good copy, a whole one if there is one: what is sent to a remote. Bases are whole
        by design; a repack cut short leaves chunks both whole and as deltas, whose delta
        copies, sent, could be deltas of each other there."""
        entry = self.locate(oid)
        if entry is None or entry.encoding != codec.DELTA:
            return entry
        return next((e for e in self._good_copies(oid) if e.encoding != codec.DELTA), entry)

    def bases_to_send(self, oid: bytes) -> list[bytes]:
        """The bases of the copy sent to a remote (locate_whole's): none if whole or absent."""
        entry = self.locate_whole(oid)
        return self.copy_bases(oid, entry) if entry is not None else []

    def missing(self, oids) -> list[bytes]:
        """The given ids the store has no good copy of, looking again on disk first."""
        absent = [oid for oid in oids if not self.has(oid)]
        if absent:
            self.refresh()
            absent = [oid for oid in absent if not self.has(oid)]
        return absent

    def packs(self) -> list[str]:
        return sorted(self._loaded)

    def entries(self) -> list[tuple[bytes, Entry]]:
        """Every object with its location (an object in two packs twice), in pack order."""
        return sorted(self._index.items(), key=lambda item: (item[1].pack, item[1].offset))

    # ----- damaged copies -----

    def _load_bad(self) -> None:
        try:
            text = (self.root / "damaged").read_text(errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            oid, _, pack = line.partition(" ")
            if len(oid) == 64 and pack.startswith("pack-"):
                try:
                    self._bad.setdefault(bytes.fromhex(oid), set()).add(pack)
                except ValueError:
                    continue

    def mark_damaged(self, oid: bytes, pack: str) -> None:
        """Remember that this pack's copy of the object is bad: no later add trusts it, so
        adding the file again from a good copy (or fetching it) stores a good copy."""
        with self._lock:
            if pack in self._bad.get(oid, ()):
                return
            self._bad.setdefault(oid, set()).add(pack)
            try:
                with self._damaged_lock():
                    fd = self._shared_file("damaged", os.O_WRONLY | os.O_APPEND)
                    try:
                        os.write(fd, f"{oid.hex()} {pack}\n".encode())
                    finally:
                        os.close(fd)
            except OSError:
                pass                       # still known to this process; fsck finds it again

    def damaged(self) -> dict[bytes, set[str]]:
        """Objects with a copy found bad, and the packs holding those copies."""
        return {oid: set(packs) for oid, packs in self._bad.items()}

    def forget_damaged(self, packs: set[str] = frozenset(),
                       copies: set[tuple[bytes, str]] = frozenset()) -> None:
        """Drop what was remembered about copies in these packs (they are gone), and about
        these (object, pack) copies (they read well again: their base is back)."""
        with self._lock, self._damaged_lock():
            self._load_bad()                 # with what other processes found since it was read
            for oid in list(self._bad):
                self._bad[oid] = {pack for pack in self._bad[oid]
                                  if pack not in packs and (oid, pack) not in copies}
                if not self._bad[oid]:
                    del self._bad[oid]
            lines = "".join(f"{oid.hex()} {pack}\n" for oid, ps in self._bad.items() for pack in sorted(ps))
            if lines:
                files.write_durably(self.root / "damaged", lines.encode(), self.permissions.file(0o644))
            else:
                (self.root / "damaged").unlink(missing_ok=True)

    @contextmanager
    def _damaged_lock(self):
        """`damaged` is appended to by any process and rewritten by the one removing packs:
        both hold this lock, so no line appended meanwhile is lost to the rewrite."""
        import fcntl
        fd = self._lock_file("damaged.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove_packs(self, names: Iterable[str]) -> None:
        """Remove packs whose objects are garbage or have copies in packs already published:
        each index first (the pack turns invisible), then the pack; then the directory is
        fsynced, what was remembered about their damaged copies dropped, and the table read
        again. A reader that listed one of them reloads (PackGone)."""
        names = set(names)
        for name in sorted(names):
            self._remove_pack(name)
        if names:
            files.fsync_dir(self.pack_dir)
            self.forget_damaged(names)
        self.reload()

    def _remove_pack(self, name: str) -> None:
        """Index, then pack, holding the pack's lock throughout: a process that meets the pack
        without its index meanwhile leaves it alone instead of indexing it again (which would
        leave an index listing objects that are gone)."""
        pack = self.pack_dir / f"{name}.pack"
        try:
            held = os.open(pack, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            held = None
        try:
            if held is not None:
                files.lock(held)           # waits for an adoption under way to finish
            (self.pack_dir / f"{name}.idx").unlink(missing_ok=True)
            pack.unlink(missing_ok=True)
        finally:
            if held is not None:
                os.close(held)

    def _good_copies(self, oid: bytes) -> list[Entry]:
        copies = self._index.copies(oid)
        bad = self._bad.get(oid)
        return [e for e in copies if e.pack not in bad] if bad else copies

    # ----- writing -----

    def writer(self) -> PackWriter:
        self._create()
        self.hold_writer_lock()
        self.sweep_tmp()
        return PackWriter(self.tmp_dir, publish_into(self.pack_dir, self.permissions),
                          make_dir=self.permissions.make_dir)

    def sweep_tmp(self) -> None:
        """Once per process, before writing there: remove what killed writers left in tmp/
        (packs being written, packs being uploaded)."""
        if not self._swept:
            self._swept = True
            files.sweep(self.tmp_dir)

    def publish(self, writer: PackWriter) -> None:
        """Finish the writer's packs and make their objects visible to this Store."""
        for name, entries in writer.finish():
            with self._refreshing:
                if name not in self._loaded:
                    self._index.add_entries(name, entries)
                    self._loaded.add(name)

    # ----- reading -----

    def read(self, oid: bytes, out=None) -> bytes:
        """The object's bytes, verified against its id; with `out` (a writable buffer of the
        object's length), decoded into it and returned as it."""
        return self.read_checked(oid, out)[2]

    def read_checked(self, oid: bytes, out=None, whole: bool = False) -> tuple[Entry, bytes, bytes]:
        """(index entry, record as stored, bytes) of the object, verified (decoded into `out`
        if given, which holds garbage if no copy is good). A copy that fails
        its check is remembered as damaged and another copy serves, if any pack holds one
        (looking again on disk, where a repair or a re-add may have put one); if none is good,
        the first copy's error is raised. With `whole`, whole copies are tried first
        (locate_whole)."""
        errors: list[CorruptObject] = []
        tried: set[Entry] = set()

        def attempt(entry: Entry):
            tried.add(entry)
            try:
                record = self._read_record(oid, entry)
                return entry, record, self._check(oid, entry, record, out)
            except ChainTooLong:
                raise
            except CorruptObject as err:
                if err.oid == oid:             # else a base's fault: this copy may be fine
                    self.mark_damaged(oid, entry.pack)
                errors.append(err)
            except (MissingObjects, PackGone) as err:
                errors.append(err)
            return None

        if oid not in self._bad:                  # the common case: one lookup, one read
            entry = self.locate_whole(oid) if whole else self._index.get(oid)
            found = attempt(entry) if entry is not None else None
            if found:
                return found
        for round in range(2):
            copies = self._good_copies(oid)
            if whole:
                copies.sort(key=lambda e: e.encoding == codec.DELTA)
            copies += [e for e in self._index.copies(oid) if e not in copies]   # known bad: last
            for entry in copies:
                found = attempt(entry) if entry not in tried else None
                if found:
                    return found
            if round == 0:
                if any(isinstance(e, PackGone) for e in errors):
                    self.reload()              # a repack replaced packs since they were listed
                else:
                    self.refresh()
        if not errors or all(isinstance(e, PackGone) for e in errors):
            raise MissingObjects([oid])
        raise next(e for e in errors if not isinstance(e, PackGone))

    def read_run(self, chunks: list[tuple[bytes, int]]) -> list:
        """The bytes of consecutive chunks of one file, (id, length) each, every one verified.
        Chunks stored as deltas are decoded side by side into one buffer and their differences
        undone together (codec.undo_differences), which spares the many short steps of
        undoing each alone. Anything out of the ordinary on that path (a copy known bad, a
        record that does not parse, a result that fails its check) sends the chunk through
        `read`, whose repairs and errors then apply. So does the whole run if a chunk's length
        is not the one the index has (a manifest that lies about it: the caller's check says
        so) or the chunk has a copy known bad."""
        plan, size = [], 0             # (id, length, start, delta payload or None, its lead)
        for oid, length in chunks:
            entry = self._index.get(oid) if oid not in self._bad else None
            if entry is None or entry.raw_length != length or length > MAX_CHUNK:
                return [self.read(oid) for oid, _ in chunks]
            payload, lead = self._delta_payload(oid, entry)
            plan.append((oid, length, size, payload, lead))
            size += length
        first = next((start + lead for _, _, start, payload, lead in plan if payload is not None), None)
        if first is None:                                    # no deltas: as `read` has it
            return [self.read(oid) for oid, _, _, _, _ in plan]
        out = codec.uninitialised(size, aligned_at=first)    # word arithmetic runs aligned
        ref = codec.uninitialised(size, aligned_at=first)
        pieces, decoded = [], []
        for i, (oid, length, start, payload, _) in enumerate(plan):
            if payload is None:
                continue
            try:
                width, lead = codec.decode_differences(payload, length, self.bases,
                                                       out[start:start + length], ref[start:start + length])
            except (StoreError, codec.CodecError):
                continue                                     # read alone below
            pieces.append((start, length, width, lead))
            decoded.append(i)
        codec.undo_differences(out, ref, pieces)
        good = {i for i, (start, length, _, _) in zip(decoded, pieces)
                if blake3.blake3(out[start:start + length]).digest() == plan[i][0]}
        return [out[start:start + length] if i in good else self.read(oid, out[start:start + length])
                for i, (oid, length, start, _, _) in enumerate(plan)]

    def _delta_payload(self, oid: bytes, entry: Entry) -> tuple[memoryview | None, int]:
        """(payload, lead) of this copy if it is a delta whose record reads and whose header
        agrees with the index; (None, 0) otherwise."""
        if entry.encoding != codec.DELTA:
            return None, 0
        try:
            record = self._read_record(oid, entry)
            if not _header_agrees(oid, entry, record):
                return None, 0
            payload = memoryview(record)[record_head.size:]
            return payload, codec.delta_elements(payload)[1]
        except (StoreError, codec.CodecError):
            return None, 0

    def read_copy(self, oid: bytes, entry: Entry) -> bytes:
        """The bytes of this one copy of the object, verified (for checking every copy)."""
        return self._check(oid, entry, self._read_record(oid, entry))

    def _check(self, oid: bytes, entry: Entry, record: bytes, out=None) -> bytes:
        """check_record with this store's bases; a delta that fails its check has its bases
        checked, so a bad base (not the delta) is named."""
        try:
            return check_record(oid, entry, record, self.bases, out)
        except ChainTooLong:
            raise
        except CorruptObject as err:
            if err.oid == oid and entry.encoding == codec.DELTA:
                try:
                    ids = codec.delta_bases(memoryview(record)[record_head.size:])
                except codec.CodecError:
                    raise err from None
                self.verify_bases(ids)
            raise

    def bases(self, oids: list[bytes]) -> list[bytes]:
        """The bytes of a delta's base chunks, for check_record. Read without checking each
        against its id: the delta's own check covers them (a wrong base gives a wrong
        chunk), and `verify_bases` says which is to blame when that check fails. Raises
        MissingObjects when one is absent."""
        depth = getattr(self._chain, "depth", 0)
        if depth >= MAX_CHAIN:
            raise ChainTooLong(oids[0])
        self._chain.depth = depth + 1
        try:
            return [self._base(oid) for oid in oids]
        finally:
            self._chain.depth = depth

    def verify_bases(self, oids: list[bytes]) -> None:
        """Check a delta's bases against their ids (after the delta failed its check): raises
        CorruptObject naming the first bad one, and forgets any cached copy."""
        with self._lock:
            for oid in oids:
                if oid in self._base_cache:
                    self._base_cache_bytes -= len(self._base_cache.pop(oid))
        for oid in oids:
            self.read(oid)

    def _base(self, oid: bytes) -> bytes | bytearray:
        with self._lock:
            data = self._base_cache.get(oid)
            if data is not None:
                self._base_cache.move_to_end(oid)
                return data
        data = self._read_unchecked(oid)
        with self._lock:
            if oid not in self._base_cache:
                self._base_cache[oid] = data
                self._base_cache_bytes += len(data)
                while self._base_cache_bytes > BASE_CACHE_BYTES:
                    self._base_cache_bytes -= len(self._base_cache.popitem(last=False)[1])
        return data

    def _read_unchecked(self, oid: bytes) -> bytes | bytearray:
        """A good copy's bytes, decoded but not hashed (a base, checked through its delta).
        Whole copies first: a base is whole by design (docs/design.md "Deltas"), and a
        repack cut short leaves chunks stored both whole and as deltas, which must not lead
        a read round a cycle while a whole copy sits unread."""
        for round in range(2):
            for entry in sorted(self._good_copies(oid), key=lambda e: e.encoding == codec.DELTA):
                try:
                    record = self._read_record(oid, entry)
                    if not _header_agrees(oid, entry, record):
                        continue
                    refuse_oversized(oid, entry)
                    return codec.decode(entry.encoding, memoryview(record)[record_head.size:],
                                        entry.raw_length, self.bases)
                except ChainTooLong:
                    raise
                except (CorruptObject, PackGone, codec.CodecError):
                    continue
            if round == 0:
                self.refresh()
        return bytes(self.read(oid))        # the checked path: its error says what is wrong

    def delta_bases(self, oid: bytes) -> list[bytes]:
        """The chunks the object's stored copy is a difference from (none unless a delta)."""
        try:
            return self._delta_bases(oid)
        except FileNotFoundError:        # a repack removed a listed pack: list them again
            self.reload()
            return self._delta_bases(oid)

    def _delta_bases(self, oid: bytes) -> list[bytes]:
        entry = self.locate(oid)
        if entry is None or entry.encoding != codec.DELTA:
            return []
        return self._delta_bases_of(oid, entry)

    def copy_bases(self, oid: bytes, entry: Entry) -> list[bytes]:
        """The bases of this one copy of the object (none if it is whole): an object can be
        stored in several packs, not always encoded alike (a repack cut short)."""
        return self._delta_bases_of(oid, entry) if entry.encoding == codec.DELTA else []

    def _delta_bases_of(self, oid: bytes, entry: Entry) -> list[bytes]:
        fd = self._fd(entry.pack)
        at = entry.offset + record_head.size
        payload = os.pread(fd, min(codec.delta_header_length(4), entry.stored_length), at)
        if payload and codec.delta_header_length(payload[0]) > len(payload):   # more bases
            payload = os.pread(fd, min(codec.delta_header_length(payload[0]), entry.stored_length), at)
        try:
            return codec.delta_bases(payload)
        except codec.CodecError as err:
            raise CorruptObject(oid, str(err)) from None

    def prepare_reads(self, oids) -> list[bytes]:
        """Before reading these objects one by one: ask the kernel to read ahead their records
        and, level by level, those of the bases their deltas need, then return every one of
        them the store has no good copy of (looking again on disk first). What `prefetch`,
        `with_bases` and `missing` do together, with one lookup per object."""
        oids = list(oids)
        try:
            absent = self._prepare_reads(oids)
        except FileNotFoundError:        # a repack removed a listed pack: list them again
            self.reload()
            absent = self._prepare_reads(oids)
        if absent:
            self.refresh()
            absent = self._prepare_reads(absent)
        return absent

    def _prepare_reads(self, oids) -> list[bytes]:
        level, absent = list(dict.fromkeys(oids)), []
        seen = set(level)
        while level:
            found = []
            for oid in level:
                entry = self.locate(oid)
                if entry is None:
                    absent.append(oid)
                else:
                    found.append((oid, entry))
            self._advise(entry for _, entry in found)
            level = []
            for oid, entry in found:
                if entry.encoding == codec.DELTA:
                    for base in self._delta_bases_of(oid, entry):
                        if base not in seen:
                            seen.add(base)
                            level.append(base)
        return absent

    def prefetch(self, oids) -> None:
        """Ask the kernel to start reading these objects' records (a restore about to read
        them one by one: a cold read then waits for one readahead, not for each record)."""
        self._advise(entry for entry in map(self.locate, oids) if entry is not None)

    def _advise(self, entries: Iterable[Entry]) -> None:
        spans: dict[str, list[list[int]]] = {}
        for entry in entries:
            end = entry.offset + record_head.size + entry.stored_length
            runs = spans.setdefault(entry.pack, [])
            if runs and entry.offset - runs[-1][1] <= 1 << 20 and entry.offset >= runs[-1][0]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([entry.offset, end])
        for pack, runs in spans.items():
            try:
                fd = self._fd(pack)
                for start, end in runs:
                    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_WILLNEED)
            except (OSError, AttributeError):
                continue                  # only a hint

    def with_bases(self, oids) -> list[bytes]:
        """The objects and, transitively, the chunks their stored copies are deltas of (bases
        after what needs them). Objects the store lacks have no bases listed."""
        out = dict.fromkeys(oids)
        todo = list(out)
        while todo:
            for base in self.delta_bases(todo.pop()):
                if base not in out:
                    out[base] = None
                    todo.append(base)
        return list(out)

    def record(self, oid: bytes, entry: Entry) -> bytes:
        """One copy's record as stored, unchecked (to copy it, or read what a delta cites)."""
        return self._read_record(oid, entry)

    def _read_record(self, oid: bytes, entry: Entry) -> bytes:
        size = record_head.size + entry.stored_length
        try:
            fd = self._fd(entry.pack)
        except FileNotFoundError:
            raise PackGone(entry.pack) from None
        try:
            record = os.pread(fd, size, entry.offset)
        except OSError as err:
            raise CorruptObject(oid, f"cannot read {entry.pack}.pack: {err.strerror}") from None
        if len(record) != size:
            raise CorruptObject(oid, f"{entry.pack}.pack is truncated")
        return record

    def read_manifest(self, oid: bytes) -> Manifest:
        entry, _, data = self.read_checked(oid)
        if entry.kind != MANIFEST:
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
        """Close the pack files (reopened on the next read)."""
        with self._lock:
            for fd in [*self._fds.values(), *(fd for _, fds in self._retired for fd in fds)]:
                os.close(fd)
            self._fds.clear()
            self._retired.clear()

    def release(self) -> None:
        """Close the pack files and let go of the gc lock (writing takes it again)."""
        self.close()
        if self._gc_lock is not None:
            os.close(self._gc_lock)
            self._gc_lock = None


class PackGone(StoreError):
    """A pack listed when the store was opened was replaced since (by a repack)."""


def check_record(oid: bytes, entry: Entry, record: bytes | memoryview,
                 bases: codec.Bases | None = None, out=None, size: int | None = None) -> bytes:
    """The object's bytes from its stored record, after checking the record header against the
    index entry and the decoded bytes against the id. `bases` reads a delta's bases (e.g.
    Store.bases); `out`, if given, receives the bytes (codec.decode). Raises CorruptObject,
    MissingObjects for a delta whose base is absent, or StoreVersionError for an encoding
    this version does not know. `size`: for a manifest, the size of the file a pointer says it
    is for (a manifest listing more chunks than that file can have is refused undecoded), or
    manifest.UNNAMED for one from a remote that no pointer names."""
    if len(record) != record_head.size + entry.stored_length:
        raise CorruptObject(oid, f"record in {entry.pack}.pack has the wrong length")
    if not _header_agrees(oid, entry, record):
        raise CorruptObject(oid, f"record header in {entry.pack}.pack disagrees with its index")
    refuse_oversized(oid, entry, record, size)
    if out is not None and len(out) != entry.raw_length:
        out = None                       # a caller told the wrong length: its own check says so
    try:
        data = codec.decode(entry.encoding, memoryview(record)[record_head.size:], entry.raw_length,
                            _bases_of(oid, bases), out)
    except codec.UnknownEncoding:
        raise StoreVersionError(f"object {oid.hex()} in {entry.pack}.pack",
                                f"chunk encoding {entry.encoding}") from None
    except codec.CodecError as err:
        raise CorruptObject(oid, str(err)) from None
    if blake3.blake3(data).digest() != oid:
        raise CorruptObject(oid, "content does not match its id")
    return data


def refuse_oversized(oid: bytes, entry: Entry, record: bytes | memoryview | None = None,
                     size: int | None = None) -> None:
    """Raise CorruptObject for a record whose raw length no writer gives its kind, before
    anything is decoded or allocated for it (docs/formats.md §3, "Bounds"): a manifest by its
    own first bytes (and `size`, its file's, when a pointer says, or manifest.UNNAMED), a
    chunk by MAX_CHUNK."""
    if entry.kind == MANIFEST and record is not None:
        if entry.encoding == codec.DELTA:
            raise CorruptObject(oid, "a manifest stored as a difference (manifests are stored whole)")
        try:
            head = codec.head(entry.encoding, memoryview(record)[record_head.size:],
                              entry.raw_length, manifest.HEAD_SIZE)
            manifest.check_head(head, entry.raw_length, size)
        except codec.UnknownEncoding:
            raise StoreVersionError(f"object {oid.hex()} in {entry.pack}.pack",
                                    f"chunk encoding {entry.encoding}") from None
        except (codec.CodecError, manifest.ManifestError) as err:
            raise CorruptObject(oid, str(err)) from None
    elif entry.kind != MANIFEST and entry.raw_length > MAX_CHUNK:
        raise CorruptObject(oid, f"its record claims {entry.raw_length} bytes, more than any "
                                 f"chunk holds ({MAX_CHUNK}); not decoded")


def _header_agrees(oid: bytes, entry: Entry, record: bytes | memoryview) -> bool:
    """Whether a record (of the entry's length) starts with the header its index entry implies."""
    return record_head.unpack_from(record) == (oid, entry.kind, entry.encoding, entry.raw_length,
                                               entry.stored_length)


def _bases_of(oid: bytes, bases: codec.Bases | None) -> codec.Bases:
    def read(ids: list[bytes]) -> bytes:
        if bases is None:
            raise MissingBase(oid, ids)
        try:
            return bases(ids)
        except MissingBase:
            raise
        except MissingObjects as err:
            raise MissingBase(oid, err.oids) from None
    return read


def rebuild_index(path: Path, bases: codec.Bases | None = None) -> tuple[str, bytes] | None:
    """(pack name, index bytes) rebuilt by walking a pack's records, each verified (deltas
    against `bases`, or against whole chunks of this same pack, where a delta may come before
    its base); None if any record is damaged or the pack is cut short (its good records can
    still be salvaged)."""
    entries: dict[bytes, Entry] = {}
    deltas: list[tuple[bytes, Entry]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = len(b"GMPACK01")
        for oid, entry, record in scan(f.read):
            if entry.encoding == codec.DELTA:
                deltas.append((oid, entry))         # checked once every record is known
            else:
                try:
                    check_record(oid, entry, record, bases)
                except CorruptObject:
                    return None
            entries.setdefault(oid, entry)
            end = entry.offset + len(record)
        if end != size:
            return None

        def record_of(entry: Entry) -> bytes:
            return os.pread(f.fileno(), record_head.size + entry.stored_length, entry.offset)

        resolving: list[bytes] = []          # the chain being followed: a cycle is damage

        def here_or_elsewhere(ids: list[bytes]) -> list:
            out = []
            for cid in ids:
                own = entries.get(cid)
                if own is not None and (cid in resolving or len(resolving) > MAX_CHAIN):
                    raise CorruptObject(cid, "a cycle of deltas")
                if own is not None:
                    resolving.append(cid)
                    try:
                        out.append(check_record(cid, own, record_of(own), here_or_elsewhere))
                    finally:
                        resolving.pop()
                elif bases is not None:
                    out.extend(bases([cid]))
                else:
                    raise MissingObjects([cid])
            return out

        for oid, entry in deltas:
            try:
                check_record(oid, entry, record_of(entry), here_or_elsewhere)
            except CorruptObject:
                return None
    return encode_index(entries)


__all__ = ["CHUNK", "MANIFEST", "CorruptObject", "check_record", "MissingBase", "MissingObjects", "Store",
           "StoreError", "StoreVersionError"]
