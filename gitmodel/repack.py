"""Repack: store older versions of a checkpoint as deltas against newer ones.

`git add` stores every new chunk whole (byte planes, compressed), so adding never reads an
earlier version. A repack then takes each path's versions, oldest first, in groups of
`keyframes`: the last version of each group, and the newest version, are **keyframes** and
stay whole; every other version is a delta against the keyframe that closes its group. A
chunk of a tensor that exists with the same name, dtype, shape and length in that keyframe
becomes its difference from the bytes at the same place there, when that is smaller. A tensor
the keyframe holds otherwise (a bf16 export as the newest version) is kept whole in the newest
version of the group that has it, and that one is the base for the older ones. So a fresh
clone of the newest version fetches no deltas, and reading any version decodes at most one
base per chunk. A path no longer checked out (a shard a re-shard replaced) has no newer
version of its own: its newest group is planned against the files of its model that are
(`retired`), each tensor against the file that holds it now. Reasons and figures:
docs/design.md ("Deltas").

Packs are immutable: the packs holding re-encoded chunks are rewritten whole into new packs
(every other record copied as it is, each verified), published (fsynced), and only then are
the old packs removed. Every object stays readable throughout; a reader that meets a removed
pack reloads the pack list (Store.read_checked). One repack runs at a time per store.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gitmodel import checkpoint, stored
from gitmodel.errors import GitmodelError
from gitmodel.formats import DTYPE_BITS
from gitmodel.store import codec
from gitmodel.store.objects import CHUNK, CorruptObject, MissingObjects, Store, StoreError, check_record
from gitmodel.store.gc import Written, set_aside
from gitmodel.store.pack import Entry, record_head, scan

KEYFRAMES = 8           # versions per group: one whole (the group's newest), the rest deltas
WORTH = 0.9             # a delta replaces a whole chunk only below this fraction of its size


class RepackError(GitmodelError):
    pass


@dataclass(frozen=True)
class Delta:
    bases: tuple[bytes, ...]     # chunks of the newer version covering this chunk's bytes
    skip: int                    # where this chunk starts in the bases' concatenation
    width: int                   # element width: differences are taken element by element
    lead: int                    # bytes before the chunk's first whole element


@dataclass
class Plan:
    """For each chunk of the histories: a Delta to encode it as, or None to keep it whole."""
    chunks: dict[bytes, Delta | None] = field(default_factory=dict)
    width: dict[bytes, int] = field(default_factory=dict)   # element width of tensor chunks
    skipped: list[str] = field(default_factory=list)     # versions not in the store, why
    outside: set[bytes] = field(default_factory=set)     # in `chunks` only as bases of deltas
                                                         # of versions no history holds


@dataclass
class RepackReport:
    planned: int = 0             # chunks planned as deltas
    encoded: int = 0             # chunks whose stored form changed
    packs_before: int = 0        # packs rewritten
    packs_after: int = 0         # packs written
    bytes_before: int = 0        # size of the rewritten packs
    bytes_after: int = 0         # size of the packs written
    damaged: list[str] = field(default_factory=list)     # packs left alone: a record is bad
    skipped: list[str] = field(default_factory=list)


def keyframe_of(index: int, count: int, keyframes: int) -> int:
    """The position of the keyframe serving version `index` of `count` (oldest first): the
    last of its group of `keyframes`, or the newest version. Positions count from the oldest
    version, so a new version changes the plan only for the newest group."""
    if keyframes <= 1:
        return index
    return min(index // keyframes * keyframes + keyframes - 1, count - 1)


def plan(store: Store, histories: Iterable[list[str]], keyframes: int = KEYFRAMES,
         whole: Iterable[str] = (), based: Iterable[tuple[list[str], str]] = (),
         retired: Iterable[tuple[list[str], list[str]]] = ()) -> Plan:
    """Decide each chunk's encoding. `histories`: for each path, the content ids of its
    versions, newest first; `whole`: versions to keep whole besides the keyframes (what is
    checked out); `based`: histories of paths with a declared base model, each with the
    base's content id: every version of those is encoded against the base, which stays
    whole; `retired`: histories of paths no longer checked out, each with the checked-out
    files of the same model, against which its newest group is encoded. Other chunks are
    decided at their newest appearance, against their keyframe."""
    retired = [(list(reversed(h)), successors) for h, successors in retired if h]
    histories = [(list(reversed(h)), None) for h in histories if h] + retired  # oldest first
    result = Plan()
    for content in [*(base for _, base in based), *whole]:
        try:
            for cid, _ in store.read_manifest(bytes.fromhex(content)).chunks:
                result.chunks[cid] = None
        except StoreError as err:
            result.skipped.append(f"{content[:16]}: {err}")
    opened: dict[str, tuple | None] = {}

    def version(content: str):
        if content not in opened:
            opened[content] = _version(store, content, result)
        return opened[content]

    groups = [(("based", j), base, content) for j, (history, base) in enumerate(based)
              for content in history]
    for h, (versions, successors) in enumerate(histories):
        count = len(versions)
        for i in range(count - 1, -1, -1):
            key = keyframe_of(i, count, keyframes)
            if successors is not None and key == count - 1:
                groups.append(((h, key), successors, versions[i]))
            elif key == i:
                try:
                    for cid, _ in store.read_manifest(bytes.fromhex(versions[i])).chunks:
                        result.chunks[cid] = None
                except StoreError as err:
                    result.skipped.append(f"{versions[i][:16]}: {err}")
            else:
                groups.append(((h, key), versions[key], versions[i]))
    current, stand_ins = None, {}
    for group, key, older in groups:    # declared bases, then newest groups: shared chunks get newer bases
        if group != current:            # a group's versions come together: the last one's go
            current, stand_ins = group, {}
            base = _tensors(*map(version, key if isinstance(key, list) else [key]))
        this = version(older)
        if base and this is not None:
            _plan_against(base, this, result, stand_ins)
        if len(opened) > 4:                   # keep the open versions' tables bounded
            opened.pop(next(iter(opened)))
    _keep_bases_whole(store, result)
    return result


def _keep_bases_whole(store: Store, result: Plan) -> None:
    """A delta this plan leaves as it is (its version left every history: a reflog's, a
    stash's) keeps its bases, and they stay whole, or become whole if an older repack chained
    them: planned as deltas themselves, they would make chains that grow with every repack."""
    for oid, entry in store.entries():
        if entry.encoding == codec.DELTA and oid not in result.chunks:
            for base in store.copy_bases(oid, entry):
                if base not in result.chunks:
                    result.outside.add(base)
                if result.chunks.get(base, 0) is not None:
                    result.chunks[base] = None


def _version(store: Store, content: str, result: Plan):
    try:
        file = stored.StoredFile(store, content)
        places = stored.locate_tensors(file)
        for place in places.values():
            for cid in stored.tensor_chunks(file, place):
                result.width.setdefault(cid, _width(place))
        return file, places
    except (StoreError, ValueError) as err:
        result.skipped.append(f"{content[:16]}: {err}")
        return None


def _tensors(*versions) -> dict[str, tuple[stored.StoredFile, stored.Placed]]:
    """{tensor name: (file, place)} over the opened versions of one or more files (a model's
    shards), the first file holding a name giving it; the versions that did not open are
    left out."""
    found: dict = {}
    for opened in versions:
        if opened is not None:
            file, places = opened
            for name, place in places.items():
                found.setdefault(name, (file, place))
    return found


def _plan_against(keyframe: dict, older, result: Plan, stand_ins: dict) -> None:
    """Decide the chunks of `older`'s tensors against the same tensors in `keyframe`
    (`_tensors`). A tensor the keyframe lacks or holds with another dtype, shape or length (a
    version exported in bf16, a resized vocabulary) is stored whole in the newest version of
    the group that has it, and that version's tensor is the base of the older ones:
    `stand_ins` maps such names to (file, place), filled newest first."""
    old_file, old_places = older
    for name, place in old_places.items():
        base_file, match = keyframe.get(name, (None, None))
        if not _same_shape(match, place):
            base_file, match = stand_ins.get(name, (None, None))
        if not _same_shape(match, place):
            stand_ins[name] = (old_file, place)
            for cid, _, _ in _spans(old_file, place):
                result.chunks.setdefault(cid, None)
            continue
        width = _width(place)
        base_spans = _spans(base_file, match)
        for cid, start, length in _spans(old_file, place):
            if cid in result.chunks:
                continue                   # a keyframe's, or decided at a newer appearance
            covering = [(b, s) for b, s, n in base_spans if s < start + length and start < s + n]
            ids = tuple(b for b, _ in covering)
            if ids and len(ids) <= codec.MAX_BASES and all(result.chunks.get(b, 0) is None for b in ids):
                result.chunks[cid] = Delta(ids, start - covering[0][1], width, -start % width)
            else:
                result.chunks[cid] = None


def _same_shape(match: stored.Placed | None, place: stored.Placed) -> bool:
    return match is not None and (match.tensor.dtype, match.tensor.shape, match.length) == \
        (place.tensor.dtype, place.tensor.shape, place.length)


def _spans(file: stored.StoredFile, place: stored.Placed) -> list[tuple[bytes, int, int]]:
    """(chunk id, start within the tensor, length) of a tensor's chunks. Where each lies in
    this tensor: a chunk may also open another tensor (tied weights, zeros), and measured
    from there it would make a delta against bytes before the base tensor's start."""
    return [(cid, start - place.offset, length)
            for cid, start, length in file.spans_in(place.offset, place.length)]


def _width(place: stored.Placed) -> int:
    bits = DTYPE_BITS.get(place.tensor.dtype, 8)
    return bits // 8 if bits % 8 == 0 and bits >= 16 else 1


# ----------------------------------------------------------------------------- rewriting

def repack(store: Store, histories: Iterable[list[str]], keyframes: int = KEYFRAMES,
           progress: Callable[[str], None] = lambda line: None, whole: Iterable[str] = (),
           based: Iterable[tuple[list[str], str]] = (),
           retired: Iterable[tuple[list[str], list[str]]] = ()) -> RepackReport:
    """Re-encode the histories' chunks as the plan says, rewriting the packs that hold them."""
    lock = _lock(store)
    try:
        store.hold_writer_lock()    # from before planning: a gc waits rather than remove its packs
        store.reload()
        decided = plan(store, histories, keyframes, whole, based, retired)
        report = RepackReport(planned=sum(d is not None for d in decided.chunks.values()),
                              skipped=decided.skipped)
        changes = _changes(store, decided)
        packs = sorted({e.pack for oid in changes for e in store.copies(oid)})
        if not packs:
            return report
        progress(f"re-encoding {len(changes)} chunk(s) in {len(packs)} pack(s)")
        ages = _ages(store, packs)
        writer = store.writer()
        rewritten = []
        aside = set_aside(store)           # copied as they are, they could close a cycle
        written = Written()
        try:
            for i, pack in enumerate(packs, 1):
                if _rewrite_pack(store, pack, decided, changes, writer, report, aside, written):
                    rewritten.append(pack)
                store.publish(writer)      # packs of one source each: each keeps its time
                progress(f"pack {i}/{len(packs)}")
            store.publish(writer)          # fsynced and visible before any old pack goes
        except BaseException:
            writer.abort()
            raise
        _keep_ages(store, writer.published, ages)
        for name, entries in writer.published:
            report.packs_after += 1
            report.bytes_after += (store.pack_dir / f"{name}.pack").stat().st_size
        written = {name for name, _ in writer.published}
        old = [p for p in rewritten if p not in written]       # never the same bytes twice
        for pack in old:
            report.packs_before += 1
            report.bytes_before += (store.pack_dir / f"{pack}.pack").stat().st_size
        store.remove_packs(old)
        return report
    finally:
        os.close(lock)


def _ages(store: Store, packs: list[str]) -> dict[str, float]:
    ages = {}
    for pack in packs:
        try:
            ages[pack] = (store.pack_dir / f"{pack}.pack").stat().st_mtime
        except FileNotFoundError:
            continue
    return ages


def _keep_ages(store: Store, published: list, ages: dict[str, float]) -> None:
    """Give each new pack the time of the pack its records came from (each rewrites one):
    gc keeps what was stored in the last DAYS days by pack times, and a rewrite is not a
    store (else each push's repack would keep dropped versions another DAYS days, and one
    pack mixing old records with the day's would keep them too)."""
    for name, entries in published:
        times = [ages[e.pack] for oid in entries for e in store.copies(oid) if e.pack in ages]
        if times:
            for ext in ("pack", "idx"):
                os.utime(store.pack_dir / f"{name}.{ext}", (time.time(), max(times)))


def _lock(store: Store) -> int:
    fd = store.try_lock("repack.lock")
    if fd is None:
        raise RepackError("another repack of this store is running",
                          "Nothing was changed. Wait for it to finish")
    return fd


MEMO_BYTES = 256 << 20     # deltas computed while planning kept for the rewrite, at most


def _changes(store: Store, decided: Plan) -> dict[bytes, tuple[int, bytes] | None]:
    """Chunks whose stored copy is not what the plan wants: planned deltas stored whole (when
    the delta is worth it) or against other bases, and planned whole chunks stored as deltas.
    A delta nobody planned (its version left every history) keeps its base. Each maps to its
    new (encoding, payload) when that was computed to decide (up to MEMO_BYTES), else None."""
    changes: dict[bytes, tuple[int, bytes] | None] = {}
    candidates, rebased = [], []
    # Every copy counts, not just the one reads find first: a repack cut short leaves chunks
    # both whole and as deltas, and a copy left as it was could close a cycle of deltas.
    forms = {cid: _forms(store, cid) for cid in decided.chunks}
    for cid, delta in decided.chunks.items():
        stored = forms[cid]
        if not stored:
            continue
        if delta is None:
            if any(stored):
                changes[cid] = None
        elif any(bases != delta.bases for bases in stored if bases):
            rebased.append(cid)
        elif not all(stored):
            candidates.append(cid)
    from gitmodel.remote.transfer import ordered
    kept = 0

    def decide(cids: list[bytes], worth) -> None:
        nonlocal kept
        batches = [cids[i:i + 16] for i in range(0, len(cids), 16)]
        for found in ordered(checkpoint.pool(), worth, batches, window=4):
            for cid, encoded in found:
                keep = encoded is not None and kept + len(encoded[1]) <= MEMO_BYTES
                changes[cid] = encoded if keep else None
                kept += len(encoded[1]) if keep else 0

    def planned(cid: bytes):
        return _encoded(store, store.read(cid), decided.chunks[cid], decided.width.get(cid, 1))

    # Whole chunks planned as deltas change only if the delta is worth it.
    decide(candidates, lambda batch: [(cid, e) for cid in batch
                                      if (e := planned(cid))[0] == codec.DELTA])
    # A delta planned against other bases (a newer keyframe) keeps its stored form if its
    # bases are chunks of versions in the histories that stay whole, and the planned delta is
    # no smaller: against a keyframe of another model (training started again), it would be
    # stored whole. Bases of versions no history holds any more must not be kept alive.
    def stays_whole(base: bytes) -> bool:
        if base not in decided.chunks or base in decided.outside or not forms[base]:
            return False
        return decided.chunks[base] is None or (base not in changes and not any(forms[base]))

    def rebase(batch):
        found = []
        for cid in batch:
            stored = [bases for bases in forms[cid] if bases]
            if len(set(stored)) > 1 or not all(stays_whole(b) for bases in stored for b in bases):
                found.append((cid, None))
                continue
            encoded = planned(cid)
            if encoded[0] == codec.DELTA and len(encoded[1]) < store.locate(cid).stored_length:
                found.append((cid, encoded))
        return found
    decide(rebased, rebase)
    return changes


def _forms(store: Store, cid: bytes) -> list[tuple[bytes, ...] | None]:
    """How each copy of the chunk is stored: its bases if a delta, None if whole; a copy
    whose header does not read counts as a delta of no chunk, to be changed (the rewrite then
    finds the damage and leaves its pack as it is)."""
    forms = []
    for entry in store.copies(cid):
        try:
            forms.append(tuple(store.copy_bases(cid, entry)) or None)
        except (StoreError, OSError):
            forms.append((b"",))
    return forms


def _rewrite_pack(store: Store, pack: str, decided: Plan,
                  changes: dict[bytes, tuple[int, bytes] | None], writer, report: RepackReport,
                  aside: set[tuple[bytes, str]] = frozenset(), written: Written | None = None) -> bool:
    """Copy the pack's records into the writer, re-encoding those in `changes` and leaving out
    those `aside` (gc.set_aside) and those `written` makes redundant; False (and the pack is
    kept) if a record is damaged."""
    written = Written() if written is None else written
    path = store.pack_dir / f"{pack}.pack"
    records = []
    with open(path, "rb") as f:
        for oid, entry, record in scan(f.read):
            if (oid, pack) in aside:
                continue
            entry = Entry(pack, entry.offset, entry.stored_length, entry.raw_length, entry.kind,
                          entry.encoding)
            records.append((oid, entry, record))
    batches = [records[i:i + 16] for i in range(0, len(records), 16)]

    def encode(batch):
        out = []
        for oid, entry, record in batch:
            try:
                data = check_record(oid, entry, record, store.bases)
            except (CorruptObject, MissingObjects) as err:
                return None, f"{pack}: {err}"
            if oid in changes and entry.kind == CHUNK:
                width = decided.width.get(oid) or _stored_width(entry, record)
                encoded = changes[oid] or _encoded(store, data, decided.chunks.get(oid), width)
                out.append((oid, entry.kind, *encoded, entry.raw_length, True))
            else:
                out.append((oid, entry.kind, entry.encoding, record[record_head.size:],
                            entry.raw_length, False))
        return out, None

    from gitmodel.remote.transfer import ordered
    results = list(ordered(checkpoint.pool(), encode, batches, window=4))
    bad = next((why for out, why in results if out is None), None)
    if bad is not None:
        report.damaged.append(bad)
        return False
    for out, _ in results:
        for oid, kind, encoding, payload, raw_length, changed in out:
            if written.redundant(oid, encoding):
                continue
            writer.add(oid, kind, encoding, raw_length, payload)
            written.add(oid, encoding)
            report.encoded += changed
    return True


def _stored_width(entry: Entry, record: bytes) -> int:
    """The element width a delta records of its chunk (a version not opened by the plan, e.g.
    a keyframe now, still gets its byte planes when stored whole again); 1 for others."""
    if entry.encoding != codec.DELTA:
        return 1
    try:
        return codec.delta_elements(memoryview(record)[record_head.size:])[0]
    except codec.CodecError:
        return 1


def _encoded(store: Store, data, delta: Delta | None, width: int) -> tuple[int, bytes]:
    """The chunk's new (encoding, payload): the planned delta when it is worth it, else whole."""
    whole = codec.encode(data, width)
    if delta is None:
        return whole
    base = b"".join(store.read(b) for b in delta.bases)      # checked: the delta is made once
    payload = codec.encode_delta(data, base, list(delta.bases), delta.skip, width, delta.lead)
    if len(payload) < WORTH * len(whole[1]):
        return codec.DELTA, payload
    return whole
