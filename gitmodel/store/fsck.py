"""Checking a store, and repairing what can be repaired.

The check decodes every copy of every object against its id, verifies every index, and finds
what a crash or a full disk can leave: packs without an index, indexes without a pack,
temporary files. Repair rebuilds an index from its pack (packs are self-describing), copies
the good records of a damaged pack into a new pack, and moves the damaged files aside into
`quarantine/` (never deleting them): damage costs only the objects that are really bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from gitmodel.store import codec, files
from gitmodel.store.objects import (MANIFEST, CorruptObject, MissingBase, PackGone, Store, StoreError,
                                    StoreVersionError, check_record, rebuild_index)
from gitmodel.store.pack import PackError, record_head, scan

DAMAGED_OBJECT = "damaged object"
DAMAGED_INDEX = "damaged index"
PACK_WITHOUT_INDEX = "pack without index"
INDEX_WITHOUT_PACK = "index without pack"
LEFTOVER = "leftover temporary file"
MISSING_BASE = "delta without its base"
DAMAGED_BASE = "delta of a damaged chunk"


@dataclass
class Problem:
    kind: str
    name: str                  # the pack (or temporary file) concerned
    detail: str
    oid: bytes | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}: {self.detail}"


@dataclass
class FsckReport:
    objects: int = 0
    manifests: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    newer: list[str] = field(default_factory=list)      # objects in encodings of a newer gitmodel
    set_aside: int = 0      # copies whose bases fail them, of objects with a good copy: not needed
    unmarked: set[tuple[bytes, str]] = field(default_factory=set)   # marked damaged, read well

    def of(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]


def check(store: Store, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    report = FsckReport()
    store.refresh()
    names = set(os.listdir(store.pack_dir)) if store.pack_dir.is_dir() else set()
    for pack, why in sorted(store.damaged_indexes.items()):
        if f"{pack}.pack" in names:
            report.problems.append(Problem(DAMAGED_INDEX, pack, f"{why}; its pack is there, so "
                                           "`gitmodel fsck --repair` can rebuild it"))
        else:
            report.problems.append(Problem(INDEX_WITHOUT_PACK, pack, f"{why}, and its pack is gone"))
    for name in sorted(names):
        stem, _, ext = name.rpartition(".")
        if ext == "pack" and f"{stem}.idx" not in names and not files.in_use(store.pack_dir / name):
            report.problems.append(Problem(PACK_WITHOUT_INDEX, stem, "invisible until indexed"))
        if ext == "idx" and f"{stem}.pack" not in names and stem not in store.damaged_indexes:
            report.problems.append(Problem(INDEX_WITHOUT_PACK, stem, "the objects it lists are lost "
                                           "here"))
    if store.tmp_dir.is_dir():
        for path in sorted(store.tmp_dir.iterdir()):
            if path.is_file() and not files.in_use(path):
                report.problems.append(Problem(LEFTOVER, f"tmp/{path.name}",
                                               f"{path.stat().st_size} bytes nobody is writing "
                                               "(`gitmodel fsck --repair` removes it)"))
    entries = store.entries()
    marked = store.damaged()
    good: set[bytes] = set()                          # objects with a copy that reads well
    failed_by_base: list[tuple[bytes, str, Problem]] = []
    for done, (oid, entry) in enumerate(entries, start=1):
        if f"{entry.pack}.pack" not in names:
            continue                            # reported above, as an index without a pack
        try:
            data = store.read_copy(oid, entry)     # each copy, not whichever read() picks
        except StoreVersionError as err:
            report.newer.append(str(err))
            continue
        except PackGone:
            continue                            # removed since listed (a gc or repack): not damage
        except (MissingBase, CorruptObject) as err:
            if isinstance(err, MissingBase):            # the copy is fine, its base is not
                failed_by_base.append((oid, entry.pack, Problem(MISSING_BASE, entry.pack, str(err), oid)))
            elif err.oid != oid:                         # the same: err names the base
                failed_by_base.append((oid, entry.pack, Problem(
                    DAMAGED_BASE, entry.pack, f"chunk {oid.hex()} is stored as a difference from "
                    f"chunk {err.oid.hex()}, whose copy here is damaged", oid)))
            else:
                store.mark_damaged(oid, entry.pack)
                report.problems.append(Problem(DAMAGED_OBJECT, entry.pack, str(err), oid))
            continue
        except StoreError as err:
            store.mark_damaged(oid, entry.pack)
            report.problems.append(Problem(DAMAGED_OBJECT, entry.pack, str(err), oid))
            continue
        good.add(oid)
        if entry.pack in marked.get(oid, ()):
            report.unmarked.add((oid, entry.pack))   # marked, but it reads: its base is back
        report.objects += 1
        report.bytes += len(data)
        report.manifests += entry.kind == MANIFEST
        if progress:
            progress(done, len(entries))
    if report.unmarked:
        try:
            store.forget_damaged(copies=report.unmarked)
        except OSError:
            pass                        # a read-only store: the marks only cost reads
    for oid, pack, problem in failed_by_base:
        if oid in good:                 # another copy serves: this one is set aside for gc
            store.mark_damaged(oid, pack)
            report.set_aside += 1
        else:
            report.problems.append(problem)
    return report


@dataclass
class RepairReport:
    rebuilt: list[str] = field(default_factory=list)        # indexes rebuilt from their packs
    salvaged: list[str] = field(default_factory=list)       # packs whose good records were copied
    quarantined: list[str] = field(default_factory=list)    # files moved into quarantine/
    removed: list[str] = field(default_factory=list)        # dead temporary files
    lost: set[bytes] = field(default_factory=set)           # objects left with no good copy


def repair(store: Store, report: FsckReport, log: Callable[[str], None] = lambda line: None) -> RepairReport:
    """Repair what `check` found. Nothing is deleted but dead temporary files: damaged packs and
    indexes go to `quarantine/`, after their good records are in a new pack."""
    result = RepairReport()
    damaged_packs = {p.name for p in report.of(DAMAGED_OBJECT)}
    unindexed = {p.name for p in report.of(DAMAGED_INDEX) + report.of(PACK_WITHOUT_INDEX)}
    for pack in sorted(unindexed):
        path = store.pack_dir / f"{pack}.pack"
        held = files.claim(path)           # as Store does when it adopts a pack (see there)
        if held is None:
            log(f"{pack}: left alone, another process is publishing or removing it")
            continue
        try:
            try:
                rebuilt = rebuild_index(path, store.bases)
            except (OSError, PackError):
                rebuilt = None
            except MissingBase as err:             # intact, but unverifiable yet: keep it whole
                log(f"{pack}: left without an index: {err.full()}")
                continue
            if rebuilt is not None and rebuilt[0] == pack:
                files.write_durably(store.pack_dir / f"{pack}.idx", rebuilt[1], store.permissions.file())
                result.rebuilt.append(pack)
                log(f"rebuilt the index of {pack} from its pack")
            else:
                damaged_packs.add(pack)
        finally:
            os.close(held)
    for pack in sorted(damaged_packs):
        _salvage(store, pack, result, log)
    for problem in report.of(INDEX_WITHOUT_PACK):
        _quarantine(store, f"{problem.name}.idx", result)
    for problem in report.of(LEFTOVER):
        if files.remove_if_dead(store.root / problem.name, grace=0):
            result.removed.append(problem.name)
    store.forget_damaged(set(damaged_packs) | {p.name for p in report.of(INDEX_WITHOUT_PACK)})
    store.reload()
    lost = {p.oid for p in report.of(DAMAGED_OBJECT)}
    result.lost = set(store.missing(sorted(lost)))
    return result


def _salvage(store: Store, pack: str, result: RepairReport, log: Callable[[str], None]) -> None:
    """Copy the pack's good records into a new pack, then move the pack and its index aside."""
    path = store.pack_dir / f"{pack}.pack"
    kept = bad = 0
    listed = {oid for oid, entry in store.entries() if entry.pack == pack}   # as its index says
    writer = store.writer()
    try:
        with open(path, "rb") as f:
            for oid, entry, record in scan(f.read):
                try:
                    check_record(oid, entry, record, store.bases)
                except (StoreError, StoreVersionError) as err:
                    if not _base_at_fault(store, err, entry, record):
                        bad += 1
                        continue                   # else intact: kept for when its base is good
                writer.add(oid, entry.kind, entry.encoding, entry.raw_length, record[record_head.size:])
                kept += 1
        store.publish(writer)              # fsynced and visible before the old pack moves
    except (OSError, PackError) as err:
        writer.abort()
        log(f"could not read {pack}.pack ({err}); moving it aside")
    _quarantine(store, f"{pack}.pack", result)
    _quarantine(store, f"{pack}.idx", result)
    result.salvaged.append(pack)
    lost = max(bad, len(listed) - kept)       # records past a cut are neither good nor read
    log(f"{pack}: {kept} good object(s) copied into a new pack, {lost} damaged or cut off; "
        "the old pack is in quarantine/")


def _base_at_fault(store: Store, err: Exception, entry, record: bytes) -> bool:
    """Whether a delta failed its check because of a base (absent, or failing its own check),
    not because of its own bytes."""
    if isinstance(err, MissingBase):
        return True
    if not isinstance(err, CorruptObject) or entry.encoding != codec.DELTA:
        return False
    try:
        ids = codec.delta_bases(memoryview(record)[record_head.size:])
    except codec.CodecError:
        return False
    try:
        store.verify_bases(ids)
    except StoreError:
        return True
    return False


def _quarantine(store: Store, name: str, result: RepairReport) -> None:
    source = store.pack_dir / name
    if not source.exists():
        return
    target_dir = store.root / "quarantine"
    store.permissions.make_dir(target_dir)
    os.replace(source, target_dir / name)
    files.fsync_dir(store.pack_dir)
    result.quarantined.append(name)

