"""Checking a store: every object decodes to bytes matching its id, every manifest's chunks exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gitmodel.store.objects import MANIFEST, Store, StoreError


@dataclass
class FsckReport:
    objects: int = 0
    manifests: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def check(store: Store, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    report = FsckReport()
    store.refresh()
    entries = store.entries()
    for done, (oid, entry) in enumerate(entries, start=1):
        try:
            data = store.read_copy(oid, entry)     # each copy, not whichever read() picks
        except StoreError as err:
            report.problems.append(f"{entry.pack}: {err}")
            continue
        report.objects += 1
        report.bytes += len(data)
        if entry.kind == MANIFEST:
            report.manifests += 1
            try:
                chunks = store.read_manifest(oid).chunks
            except StoreError as err:
                report.problems.append(str(err))
                continue
            absent = store.missing(dict.fromkeys(cid for cid, _ in chunks))
            if absent:
                report.problems.append(f"manifest {oid.hex()} lacks {len(absent)} chunk(s), "
                                       f"first {absent[0].hex()}")
        if progress:
            progress(done, len(entries))
    return report
