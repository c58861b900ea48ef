"""Where objects live: the entries of many pack indexes, searchable as one.

A store or a remote can hold thousands of packs and millions of objects, and every git command
that runs the filter opens the store, so one Python object per entry costs too much to load
(figures: docs/benchmarks.md). Here each pack's index entries stay in their on-disk layout, as
a numpy structured array sorted by id, with the ids' first 8 bytes beside them as integers to
bisect on. Packs added later form
more such runs; past MAX_RUNS, the newest ones are merged (a stable sort of sorted runs), a
large old run only once as much has been added after it. Readers take a snapshot of the list
of runs, and writers replace the list rather than change it, so lookups from worker threads
need no lock.
"""

from __future__ import annotations

import bisect
import struct
import threading
from typing import Iterator

import numpy as np

from gitmodel.store.pack import Entry

ENTRY = np.dtype([("oid", "V32"), ("offset", "<u8"), ("stored", "<u4"), ("raw", "<u4"),
                  ("kind", "u1"), ("encoding", "u1")])       # the .idx entry layout, 50 bytes
_ENTRY_FIELDS = struct.Struct("<QIIBB")                       # ENTRY after the id
MAX_RUNS = 8


class IdSearch:
    """Finds 32-byte ids inside fixed-size binary records (the rows of `rows`, ids at byte
    `at`), by bisecting the ids' first 8 bytes, sorted beside the records."""

    def __init__(self, rows: np.ndarray, at: int):
        prefixes = np.ascontiguousarray(rows[:, at:at + 8]).view(">u8").ravel().astype(np.uint64)
        self.order = np.argsort(prefixes, kind="stable").astype(np.uint32)  # sorted runs: linear
        self.prefixes = prefixes[self.order]
        # Lookups run once per chunk read or written, holding the GIL: bisecting memoryviews
        # of the same arrays gives plain ints, a third faster than numpy's scalars.
        self._sorted = memoryview(self.prefixes)
        self._rows_of = memoryview(self.order)
        self.row_bytes = memoryview(np.ascontiguousarray(rows).reshape(-1))   # rows, flat
        self._width, self._at = rows.shape[1], at

    def find(self, oid: bytes) -> Iterator[int]:
        """The rows holding `oid`."""
        key = int.from_bytes(oid[:8], "big")
        prefixes, i = self._sorted, bisect.bisect_left(self._sorted, key)
        while i < len(prefixes) and prefixes[i] == key:
            row = self._rows_of[i]
            at = row * self._width + self._at
            if self.row_bytes[at:at + 32] == oid:
                yield row
            i += 1

    def __len__(self) -> int:
        return len(self.order)


class _Run:
    """Entries of some packs, searchable by id."""

    def __init__(self, entries: np.ndarray, packs: np.ndarray):
        self.entries, self.packs = entries, packs
        self.search = IdSearch(entries.view(np.uint8).reshape(len(entries), ENTRY.itemsize), 0)
        # Entries are built per chunk read, holding the GIL: struct and memoryviews give
        # plain ints several times faster than numpy's record scalars.
        self._packs = memoryview(np.ascontiguousarray(packs, np.uint32))

    def find(self, oid: bytes) -> int:
        """The position of `oid` in `entries`, or -1."""
        return next(self.search.find(oid), -1)

    def entry(self, names: list[str], at: int) -> Entry:
        fields = _ENTRY_FIELDS.unpack_from(self.search.row_bytes, at * ENTRY.itemsize + 32)
        offset, stored, raw, kind, encoding = fields
        return Entry(names[self._packs[at]], offset, stored, raw, kind, encoding)


def _merge_newest(runs: list[_Run]) -> list[_Run]:
    """Merge the newest run with older ones while they are no larger than what is merged
    so far (and while too many runs remain): a large old run is rewritten only once as much
    has been added after it, so each entry is merged O(log n) times, not once per publish."""
    runs = list(runs)
    group = [runs.pop()]
    size = len(group[0].search)
    while runs and (len(runs) >= MAX_RUNS or len(runs[-1].search) <= size):
        group.append(runs.pop())
        size += len(group[-1].search)
    group.reverse()                          # oldest first
    runs.append(_Run(np.concatenate([r.entries for r in group]), np.concatenate([r.packs for r in group])))
    return runs


class ObjectTable:
    def __init__(self):
        self.names: list[str] = []          # pack number -> pack name
        self._runs: list[_Run] = []
        self._lock = threading.Lock()       # for writers only

    def add_indexes(self, indexes: list[tuple[str, bytes | memoryview, int]]) -> None:
        """Add verified index bodies: (pack name, the entries' bytes, their count) each, as
        `pack.verify_index` returns them."""
        self._add([(pack, np.frombuffer(body, ENTRY, count=count)) for pack, body, count in indexes])

    def add_entries(self, pack: str, entries: dict[bytes, Entry]) -> None:
        rows = np.array([(oid, e.offset, e.stored_length, e.raw_length, e.kind, e.encoding)
                         for oid, e in entries.items()], dtype=ENTRY)
        self._add([(pack, rows)])

    def _add(self, packs: list[tuple[str, np.ndarray]]) -> None:
        if not packs:
            return
        with self._lock:
            first = len(self.names)
            self.names = self.names + [pack for pack, _ in packs]
            numbers = [np.full(len(rows), first + i, np.uint32) for i, (_, rows) in enumerate(packs)]
            runs = self._runs + [_Run(np.concatenate([rows for _, rows in packs]), np.concatenate(numbers))]
            if len(runs) > MAX_RUNS:
                runs = _merge_newest(runs)
            self._runs = runs

    def get(self, oid: bytes) -> Entry | None:
        """One copy of the object, or None."""
        for run in reversed(self._runs):
            at = run.find(oid)
            if at >= 0:
                return run.entry(self.names, at)
        return None

    def copies(self, oid: bytes) -> list[Entry]:
        """Every copy of the object (packs written concurrently may hold the same one), the
        one `get` returns first."""
        return [run.entry(self.names, at) for run in reversed(self._runs) for at in run.search.find(oid)]

    def __contains__(self, oid: bytes) -> bool:
        return any(run.find(oid) >= 0 for run in self._runs)

    def __getitem__(self, oid: bytes) -> Entry:
        entry = self.get(oid)
        if entry is None:
            raise KeyError(oid)
        return entry

    def __len__(self) -> int:
        return sum(len(run.search) for run in self._runs)

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """Every (id, entry), an object in several packs once per pack, in no set order."""
        runs = self._runs
        names = self.names                  # read after the runs: it covers all their packs
        for run in runs:
            for row, pack in zip(run.entries.tolist(), run.packs.tolist()):
                oid, offset, stored, raw, kind, encoding = row
                yield bytes(oid), Entry(names[pack], offset, stored, raw, kind, encoding)
