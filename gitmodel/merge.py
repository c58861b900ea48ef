"""Merging checkpoints tensor by tensor: git's three-way merge, or several models at once.
The rules and the exact arithmetic: docs/merge.md.

A merge first decides, from the pointers alone, where each tensor of the result comes from: an
input (unchanged, or changed on one side only), a strategy's arithmetic, or nowhere (a
conflict). The result keeps the layout (every byte outside tensor data) of the input whose
layout changed, or of ours; where that layout cannot hold the merged tensors, a safetensors
file gets a new header and other formats conflict. When no tensor is computed and the format
needs no checksums rewritten, the result's chunk list is spliced from the inputs' and no
tensor data is read; otherwise the result is written out as a stream and cleaned like any
file, so its pointer is always what `git add` of the merged file would give.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import blake3

from gitmodel import checkpoint, stored
from gitmodel.errors import GitmodelError
from gitmodel.formats import DTYPE_BITS, PeekableStream, numpy_files
from gitmodel.pointer import Pointer, TensorLine
from gitmodel.scratch import scratch
from gitmodel.store import codec
from gitmodel.store.manifest import Chunks, Manifest
from gitmodel.store.objects import MANIFEST, Store
from gitmodel.stored import Placed, StoredFile

STRATEGIES = ("conflict", "ours", "theirs", "average", "task-arithmetic", "ties", "dare")
ARITHMETIC = ("average", "task-arithmetic", "ties", "dare")
NEEDS_BASE = ("task-arithmetic", "ties", "dare")
FLOATS = ("F64", "F32", "F16", "BF16")
ZIP_FORMATS = ("pytorch", "npz")
BLOCK = 1 << 20                  # elements per block of arithmetic


class MergeError(GitmodelError):
    pass


@dataclass(frozen=True)
class Strategy:
    """What to do with a tensor changed differently by several inputs."""
    name: str = "conflict"
    weights: tuple[float, ...] | None = None     # one per input; default all 1
    scale: float = 1.0                           # λ of task-arithmetic, ties and dare
    density: float = 0.5                         # fraction kept by ties and dare
    seed: int = 0                                # dare's drops

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise MergeError(f"unknown merge strategy {self.name!r}",
                             f"Use one of: {', '.join(STRATEGIES)}")
        if not 0 < self.density <= 1:
            raise MergeError(f"density {self.density} is not in (0, 1]")
        if not math.isfinite(self.scale):
            raise MergeError(f"merge scale {self.scale} is not a finite number")
        if self.weights is not None and not all(map(math.isfinite, self.weights)):
            raise MergeError(f"merge weights {','.join(map(str, self.weights))} are not all finite numbers")

    def check(self, inputs: int) -> None:
        """Raise MergeError unless the weights fit `inputs` inputs (for strategies that use
        them)."""
        if self.weights is None or self.name not in ARITHMETIC:
            return
        if len(self.weights) != inputs:
            raise MergeError(f"{len(self.weights)} merge weight(s) for {inputs} inputs",
                             "Give one weight per input, in their order (ours first)")
        if self.name == "average" and sum(self.weights) == 0:
            raise MergeError("the merge weights of an average add up to 0")
        if not math.isfinite(sum(map(abs, self.weights))):       # each finite, the sum not
            raise MergeError(f"the merge weights {','.join(map(str, self.weights))} add up to more "
                             "than a float64 holds", "Give smaller weights (an average's result "
                             "depends only on their ratios)")

    def weight(self, i: int) -> float:
        return self.weights[i] if self.weights else 1.0


@dataclass
class Conflict:
    name: str
    reason: str
    changes: list[float | None] = field(default_factory=list)   # ‖xᵢ − base‖ / ‖base‖


@dataclass
class Decision:
    name: str
    action: str                  # keep, take, compute, remove, conflict
    source: int | None = None    # the input whose bytes are taken
    reason: str = ""


@dataclass
class Result:
    pointer: Pointer | None                       # None when there are conflicts
    conflicts: list[Conflict] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    how: str = ""                                 # splice, rewrite or new header


# ----------------------------------------------------------------------------- decisions

def _versions(ptr: Pointer | None) -> dict[str, tuple]:
    return {t.name: (t.dtype, t.shape, t.digest) for t in (ptr.tensors if ptr else ())}


def _lines(ptr: Pointer | None) -> dict[str, TensorLine]:
    return {t.name: t for t in (ptr.tensors if ptr else ())}


# Same bytes: fn(name, i, j), i and j inputs (None: the base), True when that tensor's bytes are
# equal on both (read from the store).
SameBytes = Callable[[str, "int | None", "int | None"], bool]


def decide(base: Pointer | None, inputs: list[Pointer | None], strategy: Strategy,
           same: SameBytes | None = None) -> list[Decision]:
    """Where each tensor of the result comes from, by name: the three-way rule, then the
    strategy for tensors the inputs changed differently.

    Versions are compared by dtype, shape and digest: equal digests, equal bytes. Different
    digests need not mean different bytes: a pointer written before the chunk sizes changed
    (docs/formats.md §2.1) gives the same bytes another digest. So where digests alone would
    leave a tensor to the strategy (several inputs changed it, differently), an input whose
    bytes are the base's counts as unchanged, and inputs with equal bytes as one change,
    once `same` has compared the bytes (only where the lines' statistics allow equal bytes)."""
    base_v, base_l = _versions(base), _lines(base)
    input_v = [_versions(p) for p in inputs]
    input_l = [_lines(p) for p in inputs]
    names = list(dict.fromkeys(n for v in input_v + [base_v] for n in v))
    decisions = []
    for name in names:
        b = base_v.get(name)
        vs = [v.get(name) for v in input_v]
        changed = [i for i, v in enumerate(vs) if v != b]
        if same is not None and len({vs[i] for i in changed}) > 1:
            vs = _alike(name, b, vs, base_l.get(name), [lines.get(name) for lines in input_l], same)
            changed = [i for i, v in enumerate(vs) if v != b]
        if not changed:
            decisions.append(Decision(name, "keep" if b else "remove", 0 if b else None))
            continue
        if len({vs[i] for i in changed}) == 1:
            i = changed[0]
            decisions.append(Decision(name, "take" if vs[i] else "remove", i if vs[i] else None))
            continue
        decisions.append(_by_strategy(name, b, vs, strategy))
    return decisions


def _alike(name: str, b, vs: list, base_line: TensorLine | None, lines: list[TensorLine | None],
           same: SameBytes) -> list:
    """The inputs' versions of a tensor with equal bytes made equal versions: the base's where
    an input's bytes are the base's, else the first input's with those bytes."""
    vs = list(vs)
    for i, v in enumerate(vs):
        if v is not None and b is not None and v != b and _may_be_equal(base_line, lines[i]) \
                and same(name, None, i):
            vs[i] = b
    seen: list[int] = []                   # one input per distinct version left
    for i, v in enumerate(vs):
        if v is None or v == b:
            continue
        for r in seen:
            if vs[r] == v or (_may_be_equal(lines[r], lines[i]) and same(name, r, i)):
                vs[i] = vs[r]
                break
        else:
            seen.append(i)
    return vs


# Statistics that may tell two tensors' bytes apart (docs/formats.md §1). min, max and the
# counts are functions of the bytes alone, printed the same way by every version: equal bytes,
# equal values. norm is the root of a sum of positive terms added chunk by chunk, so another
# chunking moves its last bits, and the printed 4 digits by at most one unit of the last:
# NORM_TOLERANCE allows that, and more. mean and std are not compared: their sums can cancel,
# and another order of adding can then change their printed digits.
_COMPARED = ("norm", "min", "max", "zeros", "nan", "inf")
_COUNTS = ("zeros", "nan", "inf")       # absent: none
NORM_TOLERANCE = 2e-3


def _stat_values(line: TensorLine) -> dict[str, float]:
    out = {}
    for text in line.stats:
        key, _, value = text.partition("=")
        if key in _COMPARED:
            try:
                out[key] = float(value[:-1] if key == "zeros" and value.endswith("%") else value)
            except ValueError:              # edited by hand: as if absent
                continue
    return out


def _may_be_equal(a: TensorLine | None, b: TensorLine | None) -> bool:
    """Whether two tensor lines may describe equal bytes under different chunkings: same dtype
    and shape, and no statistic on both lines that differs beyond its rounding. A line
    without statistics (a dtype that has none, or a pointer from before they existed) rules
    nothing out."""
    if a is None or b is None or (a.dtype, a.shape) != (b.dtype, b.shape):
        return False
    if a.digest == b.digest:
        return True
    x, y = _stat_values(a), _stat_values(b)
    if not x or not y:
        return True
    for key in _COMPARED:
        if key in _COUNTS:
            p, q = x.get(key, 0.0), y.get(key, 0.0)
        elif key in x and key in y:
            p, q = x[key], y[key]
        else:
            continue
        if key != "norm":
            if p != q:
                return False
        elif math.isfinite(p) and math.isfinite(q) and abs(p - q) > NORM_TOLERANCE * max(abs(p), abs(q)):
            return False
    return True


REMOVED_AND_CHANGED = "removed on one side and changed on another"
CHANGED_BOTH = "changed differently on each side"      # the one conflict arithmetic settles


def _by_strategy(name: str, b, vs: list, strategy: Strategy) -> Decision:
    s = strategy.name
    if s in ("ours", "theirs"):
        i = 0 if s == "ours" else len(vs) - 1
        return Decision(name, "take" if vs[i] else "remove", i if vs[i] else None, f"strategy {s}")
    present = [v for v in vs if v is not None]
    if len(present) < len(vs):
        return Decision(name, "conflict", reason=REMOVED_AND_CHANGED)
    if len({(v[0], v[1]) for v in present}) > 1:
        return Decision(name, "conflict", reason="dtype or shape differs between the sides")
    dtype, shape = present[0][0], present[0][1]
    if dtype not in FLOATS:
        return Decision(name, "conflict", reason=f"{dtype} tensors are never merged arithmetically")
    if s == "conflict":
        return Decision(name, "conflict", reason=CHANGED_BOTH)
    if s in NEEDS_BASE and (b is None or (b[0], b[1]) != (dtype, shape)):
        return Decision(name, "conflict", reason=f"{s} needs the tensor in the common ancestor "
                        "with the same dtype and shape")
    return Decision(name, "compute", reason=f"strategy {s}")


# ----------------------------------------------------------------------------- inputs

class Side:
    """One input (or the base): its pointer, and random access to its stored bytes."""

    def __init__(self, label: str, ptr: Pointer, store: Store, fetch: stored.Fetch | None):
        self.label, self.pointer = label, ptr
        self._store, self._fetch = store, fetch
        self._file: StoredFile | None = None
        self._placed: dict[str, Placed] | None = None
        self._offsets: list[int] | None = None
        self._lines: dict[str, TensorLine] | None = None

    @property
    def lines(self) -> dict[str, TensorLine]:
        """The pointer's tensor lines by name (the first of a name): looked up once per tensor,
        which a scan of the table each time made quadratic in the tensor count."""
        if self._lines is None:
            self._lines = {}
            for t in self.pointer.tensors:
                self._lines.setdefault(t.name, t)
        return self._lines

    @property
    def file(self) -> StoredFile:
        if self._file is None:
            manifest = bytes.fromhex(self.pointer.content)
            if self._fetch is not None and self._store.missing([manifest]):
                self._fetch([manifest], {manifest: self.pointer.size})
            self._file = StoredFile(self._store, self.pointer.content, self._fetch)
        return self._file

    @property
    def placed(self) -> dict[str, Placed]:
        if self._placed is None:
            self._placed = stored.locate_tensors(self.file)
        return self._placed

    def frame(self) -> bytes:
        """An id of everything outside tensor data: equal frames, equal layouts. In a zip
        archive the entries' checksums and times do not count (a merge rewrites the one and
        keeps the template's other)."""
        shapes = "|".join(f"{t.name}:{t.dtype}:{t.shape}" for t in self.pointer.tensors)
        if self.pointer.format in ZIP_FORMATS:
            return blake3.blake3(_masked_outside(self) + shapes.encode()).digest()
        inside = {cid for p in self.placed.values() for cid in stored.tensor_chunks(self.file, p)}
        outside = b"".join(cid for cid, _ in self.file.chunks if cid not in inside)
        return blake3.blake3(outside + shapes.encode()).digest()

    def tensor(self, name: str, start: int, n: int) -> bytes:
        """Bytes of a tensor (already fetched); safe to call from several threads."""
        p = self.placed[name]
        return self.file.read_span(p.offset + start, n)

    def tensor_into(self, name: str, start: int, out) -> None:
        """Bytes [start, start + len(out)) of a tensor (already fetched) into `out`, a uint8
        array: each whole chunk decoded and verified in place, the partial ones at the ends
        copied in by numpy, which lets go of the GIL for the copy where joining bytes would
        hold it. Safe to call from several threads."""
        import numpy as np
        p = self.placed[name]
        offset, end = p.offset + start, p.offset + start + len(out)
        if start < 0 or start + len(out) > p.length or end > self.file.size:
            raise MergeError(f"read past the end of {name} in {self.label}")
        chunks, starts = self.file.chunks, self._chunk_starts()
        i, at = bisect.bisect_right(starts, offset) - 1, 0
        while offset < end:
            cid, length = chunks[i]
            first = offset - starts[i]
            take = min(length - first, end - offset)
            if take == length:                   # a whole chunk: decoded straight into place
                stored.read_chunk(self._store, cid, length, out[at:at + take])
            else:
                data = stored.read_chunk(self._store, cid, length)
                out[at:at + take] = np.frombuffer(data, np.uint8, count=take, offset=first)
            at, offset, i = at + take, offset + take, i + 1

    def _chunk_starts(self) -> list[int]:
        if self._offsets is None:
            self._offsets = _starts(self.file.chunks)
        return self._offsets


# An entry torch.save fills with a random number at every save: a mark of the save, not of
# the layout (a merge keeps ours').
_PER_SAVE = "/.data/serialization_id"


def _masked_outside(side: Side) -> bytes:
    """The bytes outside tensor data of a zip archive, checksum and time fields zeroed, and
    the data of entries that every save writes anew (_PER_SAVE)."""
    from gitmodel.formats import zip as zipfile
    try:
        found = zipfile.entries(side.file.read_at, side.file.size)
    except zipfile.ZipError:
        found = []
    fields = [(at, 4) for e in found for at in e.crc_fields + e.stamp_fields]
    fields += [(e.data_offset, e.size) for e in found if e.name.endswith(_PER_SAVE) and e.stored]
    out, at = bytearray(), 0
    places = sorted(side.placed.values(), key=lambda p: p.offset)
    for start, end in [(p.offset, p.offset + p.length) for p in places] + [(side.file.size, side.file.size)]:
        piece = bytearray(side.file.read_at(at, start - at))
        for offset, length in fields:
            if at <= offset < start:
                piece[offset - at:offset - at + length] = bytes(length)
        out += piece
        at = end
    return bytes(out)


# ----------------------------------------------------------------------------- merging

def merge(base: Pointer | None, inputs: list[Pointer], labels: list[str], store: Store,
          strategy: Strategy, fetch: stored.Fetch | None = None) -> Result:
    """Merge `inputs` (ours first, theirs last in a git merge) against `base`; store the result
    and return its pointer, or the conflicts (nothing stored for the result then)."""
    strategy.check(len(inputs))
    unreadable = _unmergeable(inputs, labels, strategy) or _ambiguous(base, inputs, labels)
    if unreadable:
        return Result(None, [Conflict("(format)", unreadable)])
    sides = [Side(label, ptr, store, fetch) for label, ptr in zip(labels, inputs)]
    base_side = Side("base", base, store, fetch) if base is not None else None
    same = lambda name, i, j: _same_bytes(base_side if i is None else sides[i], sides[j], name)
    decisions = decide(base, inputs, strategy, same)
    result = Result(None, decisions=decisions)
    for d in decisions:
        if d.action == "conflict":
            result.conflicts.append(Conflict(d.name, d.reason))
    template, layout_conflict = _template(base_side, sides, strategy)
    if layout_conflict:
        result.conflicts.append(Conflict("(layout)", layout_conflict))
    if result.conflicts:
        _measure(result.conflicts, base_side, sides)
        return result
    kept = [d for d in decisions if d.action != "remove"]
    if template is not None and _fits(template, kept, sides):
        if not any(d.action == "compute" for d in kept) and template.pointer.format not in ZIP_FORMATS:
            spliced = _splice(template, kept, sides, store)
            if spliced is not None:
                result.pointer, result.how = spliced, "splice"
                return result
        result.pointer, result.how = _rewrite(template, kept, sides, base_side, strategy, store), "rewrite"
        return result
    if all(s.pointer.format == "safetensors" for s in sides):
        metadata, notes = _merged_metadata(base_side, sides, strategy)
        if metadata is None:
            result.conflicts.append(Conflict("(metadata)", notes[0]))
            return result
        result.notes += notes
        result.pointer, result.how = _new_safetensors(kept, sides, base_side, strategy, metadata, store), "new header"
        return result
    fmt = sides[0].pointer.format
    result.conflicts.append(Conflict("(layout)", f"the merged tensors do not fit either side's {fmt} "
                                     "file, and gitmodel writes new headers only for safetensors"))
    return result


def _unmergeable(inputs: list[Pointer], labels: list[str], strategy: Strategy) -> str:
    """Why these inputs cannot be merged tensor by tensor ("" if they can): one is not a
    checkpoint gitmodel reads (a file of no known format, or one whose layout its bytes belie:
    truncated, damaged; one whose tensors it cannot read in place: a compressed npz, a
    big-endian file), or they are not all of one format. A conflict whatever the strategy, as
    taking one side whole would drop the other's changes unseen; except `ours` or `theirs`
    between files that are all of no known format, which is what those strategies mean for a
    file with no tensors."""
    if strategy.name in ("ours", "theirs") and all(p.format == "opaque" for p in inputs):
        return ""
    for label, ptr in zip(labels, inputs):
        if ptr.format == "opaque":
            return (f"{label} is not a checkpoint gitmodel can read tensor by tensor (no known "
                    "format, or a truncated or damaged file)")
        if not ptr.tensors and ptr.format == "npz":
            return f"{label} has no arrays gitmodel can read in place (a compressed npz?)"
        if not ptr.tensors and ptr.format != "safetensors":
            return (f"{label} lists no tensors gitmodel can read in place (a big-endian "
                    f"{ptr.format} file, or one that holds none)")
    formats = dict.fromkeys(ptr.format for ptr in inputs)
    if len(formats) > 1:
        return (", ".join(f"{label} is {ptr.format}" for label, ptr in zip(labels, inputs)) +
                ": a merge tensor by tensor needs one format")
    return ""


def _ambiguous(base: Pointer | None, inputs: list[Pointer], labels: list[str]) -> str:
    """Why tensors cannot be matched across the sides by name and byte position ("" if they
    can): a name that repeats in one file (GGUF allows it; a merge by name would see one of
    them), or arrays in Fortran order on one side and C order on another (the same element
    at other byte positions). A conflict whatever the strategy."""
    sides = list(zip(labels, inputs)) + ([("the common ancestor", base)] if base is not None else [])
    for label, ptr in sides:
        seen: set[str] = set()
        for t in ptr.tensors:
            if t.name in seen:
                return (f"{label} has several tensors named {t.name!r}: a merge matches tensors "
                        "by name, and could drop a change to one of them")
            seen.add(t.name)
    orders = {label: dict(ptr.metadata).get("fortran_order", "") for label, ptr in sides
              if ptr.format in ("npy", "npz")}
    listed = set(orders.values())     # a full list may leave out names that differ: no telling,
    commas = any("," in t.name for _, ptr in sides for t in ptr.tensors)   # nor with "," in a name
    if len(listed) > 1 or any(value and (commas or value.count(",") + 1 >= numpy_files.MAX_LISTED)
                              for value in listed):
        return ("the sides store arrays in different element orders (Fortran order on one, C "
                "order on another): the same element sits at other byte positions")
    return ""


FIRST_COMPARED = 1 << 20        # bytes: changed tensors differ in them, as a rule
COMPARED = 8 << 20              # bytes compared at a time after them


def _same_bytes(a: Side, b: Side, name: str) -> bool:
    """Whether a tensor's bytes are equal on two sides, read from the store (fetched if
    missing) and compared block by block: the first MiB first, where a tensor that changed
    almost always differs already; the rest, fetched in one batch per side, only then.
    False when either side cannot be read."""
    try:
        pa, pb = a.placed.get(name), b.placed.get(name)
        if pa is None or pb is None or pa.length != pb.length:
            return False
        at, step = 0, FIRST_COMPARED
        while at < pa.length:
            n = min(step, pa.length - at)
            if a.file.read_at(pa.offset + at, n) != b.file.read_at(pb.offset + at, n):
                return False
            at += n
            if step == FIRST_COMPARED and at < pa.length:
                a.file.prefetch([(pa.offset + at, pa.length - at)])
                b.file.prefetch([(pb.offset + at, pb.length - at)])
                step = COMPARED
        return True
    except GitmodelError:
        return False


def _template(base: Side | None, sides: list[Side], strategy: Strategy) -> tuple[Side | None, str]:
    """The input whose layout the result keeps: the one whose layout changed (all that changed
    changed it the same way), else ours. (None, "") when several changed it differently and
    only a new header can hold the result; (None, reason) for a conflict."""
    frames = [s.frame() for s in sides]
    base_frame = base.frame() if base is not None else None
    changed = [i for i, f in enumerate(frames) if f != base_frame]
    if not changed or (base is None and len(set(frames)) == 1):
        return sides[0], ""
    if len({frames[i] for i in changed}) == 1:
        return sides[changed[0]], ""
    if strategy.name in ("ours", "theirs"):
        return sides[0 if strategy.name == "ours" else -1], ""
    if all(s.pointer.format == "safetensors" for s in sides):
        return None, ""
    return None, ("the sides changed the file's layout (metadata or the set of tensors) "
                  "differently")


def _fits(template: Side, kept: list[Decision], sides: list[Side]) -> bool:
    """Whether the template's tensors are exactly the result's, with the same dtypes and shapes."""
    want = {}
    for d in kept:
        t = _line(sides, d)
        want[d.name] = (t.dtype, t.shape) if t else None
    have = {t.name: (t.dtype, t.shape) for t in template.pointer.tensors}
    return all(v is not None for v in want.values()) and want == have


def _line(sides: list[Side], d: Decision) -> TensorLine | None:
    """The pointer line of a tensor taken from an input (a computed one: any input's, for its
    dtype and shape)."""
    i = d.source if d.source is not None else 0
    return sides[i].lines.get(d.name)


def _splice(template: Side, kept: list[Decision], sides: list[Side], store: Store) -> Pointer | None:
    """The result as the template's chunk list with tensors' runs of chunks replaced by their
    source's: no tensor data is read. None when a tensor's bytes are not whole chunks in both
    files (then the result is written out instead)."""
    source = {d.name: d.source for d in kept}
    chunks = template.file.chunks
    starts = _starts(chunks)
    side_starts = {id(template): starts}
    replaced: list[tuple[int, int, Chunks]] = []
    for name, place in template.placed.items():
        side = sides[source[name]]
        if side is template:
            continue
        theirs = side.placed.get(name)
        first, last = _run(starts, place.offset, place.length)
        if theirs is None or theirs.length != place.length or first is None:
            return None
        if id(side) not in side_starts:
            side_starts[id(side)] = _starts(side.file.chunks)
        a, b = _run(side_starts[id(side)], theirs.offset, theirs.length)
        if a is None:
            return None
        replaced.append((first, last, side.file.chunks[a:b]))
    out: list[tuple[bytes, int]] = []
    at = 0
    for first, last, run in sorted(replaced, key=lambda r: r[:2]):
        out += chunks[at:first]
        out += run
        at = last
    out += chunks[at:]
    manifest = Manifest(template.file.size, out).encode()
    oid = blake3.blake3(manifest).digest()
    # Stored even when the store has it: the driver exits before git writes the index that
    # names the result, and meanwhile only gc's grace period for recent packs keeps it. An
    # old copy (from a merge done and undone long ago) is not recent.
    writer = store.writer()
    encoding, payload = codec.encode(manifest)
    writer.add(oid, MANIFEST, encoding, len(manifest), payload)
    store.publish(writer)
    lines = {d.name: _line(sides, d) for d in kept}
    tensors = tuple(lines[t.name] for t in template.pointer.tensors)
    ptr = template.pointer
    return Pointer(ptr.size, oid.hex(), ptr.format, tensors, ptr.metadata, ptr.metrics)


def _starts(chunks: list[tuple[bytes, int]]) -> list[int]:
    starts, offset = [], 0
    for _, length in chunks:
        starts.append(offset)
        offset += length
    starts.append(offset)
    return starts


def _run(starts: list[int], offset: int, length: int) -> tuple[int | None, int | None]:
    """The chunk indexes [first, last) covering exactly [offset, offset + length), or None."""
    first = bisect.bisect_left(starts, offset)
    last = bisect.bisect_left(starts, offset + length)
    if first >= len(starts) or starts[first] != offset or last >= len(starts) \
            or starts[last] != offset + length or (length == 0 and first != last):
        return None, None
    return first, last


# ----------------------------------------------------------------------------- writing out

class _Stream:
    """A file-like object reading from a generator of byte blocks (bytes-like or uint8
    arrays). Copies are numpy's, made without holding the GIL, so the pool's threads computing
    the next blocks run meanwhile."""

    def __init__(self, blocks: Iterator[bytes]):
        import numpy as np
        self._blocks, self._pending = blocks, np.empty(0, np.uint8)

    def readinto(self, view) -> int:
        import numpy as np
        target = np.frombuffer(view, np.uint8)
        filled = 0
        while filled < len(target):
            if not len(self._pending):
                block = next(self._blocks, None)
                if block is None:
                    break
                self._pending = np.frombuffer(block, np.uint8)
            take = min(len(self._pending), len(target) - filled)
            target[filled:filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take
        return filled

    def read(self, n: int) -> bytes:
        out = bytearray(n)
        return bytes(out[:self.readinto(memoryview(out))])


def _clean(blocks: Iterator[bytes], store: Store) -> Pointer:
    return checkpoint.clean_checkpoint(PeekableStream(_Stream(blocks)), store)


Piece = Callable[[], bytes]       # one block of the result, computed on demand
PIECE = 8 << 20                   # bytes copied per piece


def _tensor_pieces(d: Decision, sides: list[Side], base: Side | None, strategy: Strategy,
                   length: int) -> list[Piece]:
    if d.action == "compute":
        return _computed(d.name, sides, base, strategy)
    side = sides[d.source]
    return [partial(side.tensor, d.name, start, min(PIECE, length - start))
            for start in range(0, length, PIECE)]


def _template_pieces(template: Side, start: int, end: int, patches: dict[int, bytes]) -> list[Piece]:
    return [partial(_template_piece, template, at, min(at + PIECE, end), patches)
            for at in range(start, end, PIECE)]


def _template_piece(template: Side, start: int, end: int, patches: dict[int, bytes]) -> bytes:
    block = bytearray(template.file.read_span(start, end - start))
    for offset, value in patches.items():
        if start <= offset < end:
            block[offset - start:offset - start + 4] = value
    return bytes(block)


SWITCH_INTERVAL = 0.001           # seconds; the interpreter's default is 0.005


def _written(pieces: list[Piece], store: Store) -> Pointer:
    """Clean the result, its pieces computed on the pool a few ahead of the cleaning (across
    tensors, so small tensors do not stall it).

    Meanwhile the interpreter passes the GIL on every millisecond rather than every five: the
    three threads spend most of their time in numpy, zstd, blake3 and writes, which let go of
    the GIL, and each one coming back from such a call otherwise waits up to a whole switch
    interval for a thread running Python to give it up (1 GiB average merge: ~1.65 cores busy
    and 2.9 s by default, ~1.75 and 2.7 s so)."""
    import sys
    from gitmodel.remote.transfer import ordered
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
    try:
        return _clean(ordered(checkpoint.pool(), lambda piece: piece(), pieces, window=8), store)
    finally:
        sys.setswitchinterval(previous)


def _rewrite(template: Side, kept: list[Decision], sides: list[Side], base: Side | None,
             strategy: Strategy, store: Store) -> Pointer:
    """The template's bytes with tensor data replaced, checksums of zip entries rewritten."""
    by_name = {d.name: d for d in kept}
    places = sorted(template.placed.values(), key=lambda p: p.offset)
    replaced = [(p, by_name[p.tensor.name]) for p in places
                if by_name[p.tensor.name].source is None or sides[by_name[p.tensor.name].source] is not template]
    _prefetch([d for _, d in replaced], sides, base, template, [p for p, _ in replaced])
    patches = _zip_patches(template, replaced, sides, base, strategy) \
        if template.pointer.format in ZIP_FORMATS else {}
    pieces, at = [], 0
    for place, d in replaced:
        pieces += _template_pieces(template, at, place.offset, patches)
        pieces += _tensor_pieces(d, sides, base, strategy, place.length)
        at = place.offset + place.length
    pieces += _template_pieces(template, at, template.file.size, patches)
    ptr = _written(pieces, store)
    _check_digests(ptr, kept, sides, store)
    return ptr


def _zip_patches(template: Side, replaced: list[tuple[Placed, Decision]], sides: list[Side],
                 base: Side | None, strategy: Strategy) -> dict[int, bytes]:
    """New CRC-32 values for the zip entries whose data changed: {field offset: 4 bytes}."""
    import struct
    import zlib
    from gitmodel.formats import zip as zipfile
    try:
        entries = zipfile.entries(template.file.read_at, template.file.size)
    except zipfile.ZipError as err:
        raise MergeError(f"cannot rewrite the zip archive of {template.label}: {err}") from None
    patches = {}
    for entry in entries:
        inside = [(p, d) for p, d in replaced
                  if entry.data_offset <= p.offset and p.offset + p.length <= entry.data_offset + entry.size]
        if not inside:
            continue
        if not entry.stored:
            raise MergeError(f"{entry.name} in {template.label} is compressed; gitmodel rewrites "
                             "only stored entries")
        pieces, at = [], entry.data_offset
        for place, d in inside:
            pieces += _template_pieces(template, at, place.offset, {})
            pieces += _tensor_pieces(d, sides, base, strategy, place.length)
            at = place.offset + place.length
        pieces += _template_pieces(template, at, entry.data_offset + entry.size, {})
        crc = 0
        for piece in pieces:
            crc = zlib.crc32(piece(), crc)
        for offset in entry.crc_fields:
            patches[offset] = struct.pack("<I", crc)
    return patches


def gathered(names: list[str], files: list[Pointer], store: Store, fetch: stored.Fetch | None = None) -> Pointer:
    """A safetensors file of the tensors `names`, in that order, each one's bytes taken from
    the first of `files` holding it, under a new header with the first file's `__metadata__`;
    stored. One side of a sharded model laid out as a file of the other side (which
    re-sharded it), so that the two merge file by file."""
    sides = [Side(f"shard {i + 1}", ptr, store, fetch) for i, ptr in enumerate(files)]
    holder: dict[str, int] = {}
    for i, side in enumerate(sides):
        for t in side.pointer.tensors:
            holder.setdefault(t.name, i)
    kept = [Decision(name, "take", holder[name]) for name in names]
    return _new_safetensors(kept, sides, None, Strategy(), _safetensors_metadata(sides[0]), store, names)


def _new_safetensors(kept: list[Decision], sides: list[Side], base: Side | None, strategy: Strategy,
                     metadata: object, store: Store, order: list[str] | None = None) -> Pointer:
    """A safetensors file with a new header: ours' tensors in ours' order, then the others'
    (or in `order`)."""
    from gitmodel.formats import safetensors
    order = order or list(dict.fromkeys(t.name for side in sides for t in side.pointer.tensors))
    kept = sorted(kept, key=lambda d: order.index(d.name))
    lines = [_line(sides, d) for d in kept]
    # Sub-byte dtypes (F4, F6_*) end on a whole byte, as the format lays them out
    lengths = [(math.prod(t.shape) * DTYPE_BITS[t.dtype] + 7) // 8 for t in lines]
    head = safetensors.header([(t.name, t.dtype, t.shape, n) for t, n in zip(lines, lengths)], metadata)
    _prefetch(kept, sides, base)

    pieces = [lambda: head]
    for d, n in zip(kept, lengths):
        pieces += _tensor_pieces(d, sides, base, strategy, n)
    ptr = _written(pieces, store)
    _check_digests(ptr, kept, sides, store)
    return ptr


def _check_digests(ptr: Pointer, kept: list[Decision], sides: list[Side], store: Store) -> None:
    """Tensors taken whole must come out with their source's digest (a layout read wrongly
    would show here, before anything is committed), or, where the source's pointer was cut
    with other chunk sizes (docs/formats.md §2.1) and the digests differ, with its bytes."""
    digests = {t.name: t.digest for t in ptr.tensors}
    merged = None
    for d in kept:
        if d.action in ("keep", "take"):
            line = _line(sides, d)
            if digests.get(d.name) == line.digest:
                continue
            if d.name in digests:
                merged = merged or Side("the merged file", ptr, store, None)
                if _same_bytes(merged, sides[d.source], d.name):
                    continue
            raise MergeError(f"the merged file's {d.name} does not match {sides[d.source].label}'s",
                             "This is a bug in gitmodel; nothing was merged. Resolve by hand "
                             "with `git checkout --ours/--theirs -- PATH`")


def _prefetch(decisions: list[Decision], sides: list[Side], base: Side | None,
              template: Side | None = None, replaced: list[Placed] = ()) -> None:
    """Fetch, one batch per input, the chunks the result is read from: the tensors taken or
    computed, and what the template keeps (all of it but the replaced tensors)."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for d in decisions:
        users = [d.source] if d.source is not None else list(range(len(sides)))
        for i in users:
            p = sides[i].placed.get(d.name)
            if p is not None:
                wanted.setdefault(i, []).append((p.offset, p.length))
        if d.action == "compute" and base is not None and d.name in base.placed:
            p = base.placed[d.name]
            base.file.prefetch([(p.offset, p.length)])
    for i, ranges in wanted.items():
        sides[i].file.prefetch(ranges)
    if template is not None:
        kept, at = [], 0
        for p in sorted(replaced, key=lambda p: p.offset):
            kept.append((at, p.offset - at))
            at = p.offset + p.length
        kept.append((at, template.file.size - at))
        template.file.prefetch(kept)


def _merged_metadata(base: Side | None, sides: list[Side], strategy: Strategy) -> tuple[object, list[str]]:
    """safetensors `__metadata__` merged key by key with the three-way rule; keys changed
    differently take the strategy's side (ours for arithmetic strategies, said in a note).
    None for a conflict. The specification's values are strings, but a file may hold any JSON
    there: values are compared by their JSON text and kept as they are, and a `__metadata__`
    that is not a map (on any side) is merged the same way as one value."""
    import json
    found = [_safetensors_metadata(s) for s in sides]
    # A base of another format (a placeholder, a truncated copy) has no `__metadata__`: every
    # key counts as added, as a tensor the base lacks does
    base_found = _safetensors_metadata(base) if base is not None and base.pointer.format == "safetensors" else None
    whole = any(m is not None and not isinstance(m, dict) for m in found + [base_found])
    wrap = lambda m: {} if m is None else {None: m} if whole else m     # one value: key None
    maps, base_map = [wrap(m) for m in found], wrap(base_found)
    text = lambda m, key: json.dumps(m[key], sort_keys=True) if key in m else None
    out, notes = {}, []
    for key in dict.fromkeys(k for m in maps + [base_map] for k in m):
        what = "metadata (not a map)" if whole else f"metadata key {key!r}"
        b = text(base_map, key)
        vs = [text(m, key) for m in maps]
        changed = [i for i, v in enumerate(vs) if v != b]
        if not changed:
            source = base_map
        elif len({vs[i] for i in changed}) == 1:
            source = maps[changed[0]]
        elif strategy.name == "conflict":
            return None, [f"{what} changed differently on each side"]
        else:
            i = len(vs) - 1 if strategy.name == "theirs" else 0
            source = maps[i]
            notes.append(f"{what} changed differently: kept the value of {sides[i].label}")
        if key in source:
            out[key] = source[key]
    return (out.get(None, {}) if whole else out), notes


def _safetensors_metadata(side: Side) -> object:
    """The header's `__metadata__` as it is (None when absent or null)."""
    import json
    import struct
    head = side.file.read_at(0, 8)
    (length,) = struct.unpack("<Q", head)
    return json.loads(side.file.read_at(8, length)).get("__metadata__")


# ----------------------------------------------------------------------------- arithmetic

def _computed(name: str, sides: list[Side], base: Side | None, strategy: Strategy) -> list[Piece]:
    """The merged tensor's blocks, arithmetic in float64."""
    line = sides[0].lines[name]
    dtype, count = line.dtype, math.prod(line.shape)
    width = DTYPE_BITS[dtype] // 8
    thresholds = _thresholds(name, sides, base, strategy, count, width) \
        if strategy.name == "ties" else None

    def block(start: int):
        n = min(BLOCK, count - start)

        def raw(side: Side, slot) -> object:          # the block's bytes, in a scratch array
            out = scratch(f"merge.raw.{slot}", n * width, "u1")
            side.tensor_into(name, start * width, out)
            return out
        raws = [raw(side, i) for i, side in enumerate(sides)]
        if strategy.name == "average" and dtype in _NATIVE:
            out = _average(raws, [strategy.weight(i) for i in range(len(raws))], dtype, n)
            if out is not None:
                return out
        read = lambda data, slot: _as_float64(data, dtype, scratch(f"merge.{slot}", n, "f8"))
        xs = [read(data, i) for i, data in enumerate(raws)]
        b = read(raw(base, "base"), "base") if strategy.name in NEEDS_BASE else None
        return _from_float64(_combine(strategy, name, xs, b, start, thresholds), dtype)
    return [partial(block, start) for start in range(0, count, BLOCK)]


_NATIVE = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}     # dtypes numpy has


def _average(raws: list, weights: list[float], dtype: str, n: int):
    """`average` of one block of F64, F32 or F16 values, as _combine's float64 arithmetic
    gives it, bit for bit, in fewer passes: two float32 inputs of weight 1 in float32
    arithmetic (_midpoint32), others with the widening and the rounding done by the ufuncs'
    casts on the way in and out instead of separate passes over float64 copies. None for a
    block with a NaN in it: which NaN payload comes out depends on the order of the operands,
    and numpy's loops do not keep it alike (their in-place add takes the first operand's NaN
    in its vector body, the second's in its scalar tail), so such a block goes the float64
    way of _combine itself, as does a total weight of 0 or not finite, and a block whose sum
    is infinite (an infinite input, or a sum past float64's range, which _combine redoes)."""
    import numpy as np
    total = sum(weights)
    if not (math.isfinite(total) and total != 0) or not n:
        return None
    xs = [np.frombuffer(data, _NATIVE[dtype], count=n) for data in raws]
    if dtype == "F32" and len(xs) == 2 and weights[0] == weights[1] == 1:
        out = _midpoint32(xs[0], xs[1])
        return out.view(np.uint8) if out is not None else None
    acc = scratch("merge.sum", n, "f8")
    with np.errstate(invalid="ignore", over="ignore"):   # NaN, ±inf: sent the float64 way
        if weights[0] != 1:
            np.multiply(xs[0], weights[0], out=acc, dtype=np.float64)
            rest = 1
        elif len(xs) > 1 and weights[1] == 1:
            np.add(xs[0], xs[1], out=acc, dtype=np.float64)
            rest = 2
        else:
            np.copyto(acc, xs[0])
            rest = 1
        for x, w in zip(xs[rest:], weights[rest:]):
            if w != 1:
                term = scratch("merge.term", n, "f8")
                np.multiply(x, w, out=term, dtype=np.float64)
                np.add(acc, term, out=acc)
            else:
                np.add(acc, x, out=acc, dtype=np.float64)
    if not (np.isfinite(np.minimum.reduce(acc)) and np.isfinite(np.maximum.reduce(acc))):
        return None
    out = np.empty(n, _NATIVE[dtype])
    with np.errstate(over="ignore"):             # beyond the range: ±inf, as IEEE rounding
        np.divide(acc, total, out=out, dtype=np.float64, casting="same_kind")
    return out.view(np.uint8)


def _midpoint32(a, b):
    """(a + b) / 2 of two float32 arrays in float32 arithmetic, bit for bit what widening to
    float64, adding, halving and rounding once to float32 gives; None unless every result is
    finite (an infinite input, a sum that overflows float32, or a NaN: the float64 way then).

    Why: every float32 is a multiple of 2⁻¹⁴⁹ with a 24-bit significand. The float64 route
    gives RN₃₂(RN₆₄(a + b) / 2) = RN₃₂(RN₆₄((a + b) / 2)), halving being exact in float64.
    Where |a + b| >= 2⁻¹²⁵, rounding the sum of two 24-bit numbers to 53 bits and then to 24
    equals rounding it once to 24 (double rounding is innocuous for a sum when 53 >= 2·24 + 2,
    Figueroa 1995); below, a + b is a float32 itself (at most 24 significant bits), so RN₆₄
    is exact. Either way it is RN₃₂((a + b) / 2), the correctly rounded mean. This route
    takes s = RN₃₂(a + b), then RN₃₂(s / 2): if a + b is exact that is RN₃₂((a + b) / 2),
    subnormal results included; if not, |a + b| >= 2⁻¹²⁵ (below, every multiple of 2⁻¹⁴⁹ is
    a float32), so s / 2 is a normal number: halving is exact and commutes with the
    rounding. Signed zeros come out alike (the same IEEE operations); a sum that overflows
    is infinite here and not there, hence the check, which costs two reductions."""
    import numpy as np
    out = np.empty(len(a), np.float32)
    with np.errstate(all="ignore"):
        np.add(a, b, out=out)
        np.multiply(out, np.float32(0.5), out=out)
    if len(out) and not (np.isfinite(np.minimum.reduce(out)) and np.isfinite(np.maximum.reduce(out))):
        return None
    return out


def _combine(strategy: Strategy, name: str, xs: list, b, start: int, thresholds):
    """One block of the strategy's result, in float64 (docs/merge.md gives the formulas)."""
    import numpy as np
    s, scale = strategy.name, strategy.scale
    weights = [strategy.weight(i) for i in range(len(xs))]
    if s == "average":
        with np.errstate(over="ignore", invalid="ignore"):    # ∞ - ∞: NaN, as IEEE has it
            out = _weighted_sum(xs, weights)
            out /= sum(weights)
        lost = ~np.isfinite(out)
        if lost.any():
            # Σ wᵢxᵢ past float64's range though the inputs are finite (both DBL_MAX; or ∞ - ∞,
            # NaN, with weights of both signs): those elements again with the inputs scaled
            # down by a power of two that keeps every partial sum in range (exact), then back:
            # ∞ only if the average itself is past it
            lost &= np.logical_and.reduce([np.isfinite(x) for x in xs])
            shift = math.frexp(sum(map(abs, weights)))[1] + 1
            with np.errstate(over="ignore"):
                part = _weighted_sum([np.ldexp(x[lost], -shift) for x in xs], weights)
                part /= sum(weights)
                out[lost] = np.ldexp(part, shift)
        return out
    # The other strategies add changes to the base: each element's terms are kept or dropped
    # by masks taken from the values as they are, then the arithmetic is done.
    if s == "task-arithmetic":
        masks = [None] * len(xs)
    elif s == "ties":
        masks = _trimmed(xs, b, thresholds)
    else:
        masks = []
        for i, x in enumerate(xs):
            # The i-th input's draws for this block: its generator advanced past earlier blocks.
            bits = np.random.PCG64(_seed(strategy.seed, name, i))
            bits.advance(start)                  # one 64-bit draw per value
            masks.append(np.random.Generator(bits).random(len(x)) < strategy.density)
    with np.errstate(over="ignore", invalid="ignore"):
        out = _changes_added(s, xs, b, masks, weights, strategy)
    lost = ~np.isfinite(out)
    if lost.any():
        # A step past float64's range though every input is finite (values near DBL_MAX): those
        # elements again with everything scaled down by a power of two that keeps each step in
        # range (exact), then back, as for average; the masks stay those of the values.
        lost &= np.logical_and.reduce([np.isfinite(x) for x in xs] + [np.isfinite(b)])
        growth = 2 + 2 * abs(scale) * sum(map(abs, weights)) / (strategy.density if s == "dare" else 1)
        shift = math.frexp(growth)[1] + 1
        with np.errstate(over="ignore"):
            part = _changes_added(s, [np.ldexp(x[lost], -shift) for x in xs], np.ldexp(b[lost], -shift),
                                  [m if m is None else m[lost] for m in masks], weights, strategy)
            out[lost] = np.ldexp(part, shift)
    return out


def _changes_added(s: str, xs: list, b, masks: list, weights: list[float], strategy: Strategy):
    """b + λ·(the inputs' changes from b, masked and combined as the strategy says)."""
    import numpy as np
    scale = strategy.scale
    if s == "task-arithmetic":
        out = _weighted_sum([x - b for x in xs], weights)
        out *= scale
        out += b
        return out
    if s == "ties":
        return _ties(xs, b, np.array(weights), masks, scale)
    keep = strategy.density
    taus = [(x - b) * m / keep for x, m in zip(xs, masks)]
    out = b + scale * _weighted_sum(taus, weights)
    nan = np.isnan(b)
    for x in xs:
        nan |= np.isnan(x)
    return np.where(nan, np.nan, out)


def _weighted_sum(xs: list, weights: list[float]):
    """Σ wᵢxᵢ in order, in place where it can be (a weight of 1 multiplies nothing)."""
    out = xs[0] * weights[0] if weights[0] != 1 else xs[0].copy()
    for x, w in zip(xs[1:], weights[1:]):
        if w != 1:
            x = x * w
        out += x
    return out


def _trimmed(xs, b, thresholds) -> list:
    """Per input, where ties keeps its change: |δᵢ|, rounded to float32, at least its threshold."""
    import numpy as np
    with np.errstate(over="ignore", invalid="ignore"):
        return [np.abs(x - b).astype(np.float32) >= t for x, t in zip(xs, thresholds)]


def _ties(xs, b, weights, kept, scale):
    import numpy as np
    with np.errstate(invalid="ignore"):
        taus = [np.where(k, x - b, 0.0) for x, k in zip(xs, kept)]
        us = [w * tau for w, tau in zip(weights, taus)]
        sign = np.where(sum(us) >= 0, 1.0, -1.0)
        agree = [(u != 0) & (np.sign(u) == sign) for u in us]
        total = sum(np.where(a, u, 0.0) for a, u in zip(agree, us))
        divisor = sum(np.where(a, w, 0.0) for a, w in zip(agree, weights))
        merged = total / np.where(divisor == 0, 1.0, divisor)
        out = b + scale * merged
        nan = np.isnan(b) | np.any([np.isnan(x) for x in xs], axis=0)
    return np.where(nan, np.nan, out)


def _thresholds(name: str, sides: list[Side], base: Side, strategy: Strategy, count: int,
                width: int) -> list[float]:
    """Per input, the magnitude of its density·n-th largest |x − base| element (ties trim at
    it: every element at least as large is kept). Found exactly by two counting passes over
    the float32 bit patterns of |δ| (which order like the values), in bounded memory."""
    import numpy as np
    dtype = sides[0].lines[name].dtype
    k = max(1, math.floor(strategy.density * count))
    if strategy.density >= 1:
        return [0.0] * len(sides)

    def magnitudes(side: Side) -> Iterator:
        for start in range(0, count, BLOCK):
            n = min(BLOCK, count - start)
            x = _as_float64(side.tensor(name, start * width, n * width), dtype)
            bb = _as_float64(base.tensor(name, start * width, n * width), dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                d = np.abs(x - bb).astype(np.float32)
            yield np.nan_to_num(d, nan=0.0).view(np.uint32)

    out = []
    for side in sides:
        high = np.zeros(1 << 16, np.int64)
        for bits in magnitudes(side):
            high += np.bincount(bits >> 16, minlength=1 << 16)
        above = np.cumsum(high[::-1])                 # elements in or above each bucket
        bucket = (1 << 16) - 1 - int(np.searchsorted(above, k))
        rank = k - (int(above[(1 << 16) - 2 - bucket]) if bucket < (1 << 16) - 1 else 0)
        low = np.zeros(1 << 16, np.int64)
        for bits in magnitudes(side):
            mine = bits[(bits >> 16) == bucket]
            low += np.bincount(mine & 0xFFFF, minlength=1 << 16)
        below = np.cumsum(low[::-1])
        cut = (1 << 16) - 1 - int(np.searchsorted(below, rank))
        out.append(float(np.array([(bucket << 16) | cut], np.uint32).view(np.float32)[0]))
    return out


def _seed(seed: int, name: str, i: int) -> int:
    return int.from_bytes(blake3.blake3(f"{seed}\0{name}\0{i}".encode()).digest()[:8], "little")


def _as_float64(data: bytes, dtype: str, out=None):
    """The values as float64 (into `out`, a scratch array, when given)."""
    import numpy as np
    if dtype == "BF16":
        wide = np.left_shift(np.frombuffer(data, "<u2"), 16, dtype=np.uint32).view(np.float32)
    else:
        wide = np.frombuffer(data, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])
    if out is None:
        return wide.astype(np.float64)
    np.copyto(out, wide)
    return out


def _from_float64(x, dtype: str) -> bytes:
    """Round to the tensor's dtype, to nearest, ties to even (once: bf16 goes through float32
    rounded to odd, which makes the second rounding exact)."""
    import numpy as np
    if dtype in ("F64", "F32", "F16"):
        out = np.empty(x.shape, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])
        with np.errstate(over="ignore"):         # beyond the range: ±inf, as IEEE rounding
            np.copyto(out, x, casting="same_kind")
        return out.view(np.uint8).data
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
        bits = f.view(np.uint32).copy()
        back = f.astype(np.float64)
        inexact = (back != x) & np.isfinite(x) & np.isfinite(back)
        away = inexact & (np.abs(back) > np.abs(x))
        bits[away] -= 1                                   # truncate toward zero ...
        bits[inexact] |= 1                                # ... then make it odd
        nan = np.isnan(x)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = np.where(nan, 0x7FC0, rounded).astype("<u2")
    return rounded.tobytes()


def _measure(conflicts: list[Conflict], base: Side | None, sides: list[Side]) -> None:
    """Each side's relative L2 change against the base, for conflicting float tensors."""
    import numpy as np
    if base is None:
        return
    for c in conflicts:
        line = base.lines.get(c.name)
        if line is None or line.dtype not in FLOATS:
            continue
        width, count = DTYPE_BITS[line.dtype] // 8, math.prod(line.shape)
        for side in sides:
            other = side.lines.get(c.name)
            if other is None or (other.dtype, other.shape) != (line.dtype, line.shape):
                c.changes.append(None)
                continue
            try:
                delta2 = base2 = 0.0
                for start in range(0, count, BLOCK):
                    n = min(BLOCK, count - start)
                    b = _as_float64(base.tensor(c.name, start * width, n * width), line.dtype)
                    x = _as_float64(side.tensor(c.name, start * width, n * width), line.dtype)
                    delta2 += float(np.dot(x - b, x - b))
                    base2 += float(np.dot(b, b))
                c.changes.append(math.sqrt(delta2 / base2) if base2 else None)
            except GitmodelError:
                c.changes.append(None)
