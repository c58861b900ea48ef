"""Comparing two versions of a checkpoint: which tensors changed, and by how much.

Tensors are matched by name. Equal digests mean equal bytes, so only tensors whose digests
differ are read, and only their chunks (through `stored.StoredFile`), in blocks of
BLOCK_ELEMENTS, so memory stays bounded however large a tensor is.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from gitmodel import metrics
from gitmodel.formats import DTYPE_BITS, numpy_files
from gitmodel.metrics import NumberDiff, Rules
from gitmodel.pointer import Pointer, TensorLine
from gitmodel.stats import STATS_DTYPES, floats
from gitmodel.store.objects import Store
from gitmodel.stored import Fetch, FileOnDisk, Placed, StoredFile, locate_tensors

BLOCK_ELEMENTS = 1 << 20
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
NUMERIC_DTYPES = FLOAT_DTYPES | {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}
NO_NUMBERS_FOR = "no numbers for "      # a tensor's note, then the dtype (reports quote it)


# ----------------------------------------------------------------------------- numbers

_INTEGERS = {"I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "u1", "U16": "<u2",
             "U32": "<u4", "U64": "<u8", "BOOL": "u1"}
EXACT = 1 << 53             # integers beyond this lose their last digits as float64


def _as_float(data: bytes, dtype: str):
    import numpy as np
    if dtype in STATS_DTYPES:
        return floats(data, dtype).astype(np.float64)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return _f8_table(dtype)[np.frombuffer(data, np.uint8)]
    return np.frombuffer(data, _INTEGERS[dtype]).astype(np.float64)


def _exactly(old: bytes, a: str, new: bytes, b: str, x, y, finite, moved, d) -> None:
    """Where an integer tensor is compared (with another, or with floats), `moved` and `d`
    made exact, in place, for values past 2**53, which round alike as floats (a step counter
    of 2**62 + 1); floats that large are whole numbers."""
    import numpy as np
    big = finite & ((np.abs(x) >= EXACT) | (np.abs(y) >= EXACT))
    if not big.any():
        return
    xs = np.frombuffer(old, _INTEGERS[a]) if a in _INTEGERS else x
    ys = np.frombuffer(new, _INTEGERS[b]) if b in _INTEGERS else y
    for i in np.flatnonzero(big):           # few: compared as Python integers
        exact = int(ys[i]) - int(xs[i])
        moved[i], d[i] = exact != 0, float(exact)


SAFE_LOW, SAFE_HIGH = 2.0 ** -400, 2.0 ** 400     # squares and their sums stay in range


def _top(v) -> float:
    """The largest magnitude in v (0 if empty), without an array of magnitudes."""
    return max(float(v.max(initial=0.0)), -float(v.min(initial=0.0)))


class _Sums:
    """Σd², Σx², Σy² and Σxy over blocks, each vector kept divided by its own power of two,
    2**exp at least the largest magnitude met in it (Σxy by both x's and y's): float64
    squares of values past ~1e154 overflow, those of values below ~1e-162 vanish, and so
    would a change tiny beside the values (1.0 moving next to DBL_MAX) in their scale. The
    ratios take the powers of two back (relative_l2; the cosine's cancel)."""

    def __init__(self):
        self.exp: dict[str, int | None] = {"d": None, "x": None, "y": None}
        self.delta2 = self.old2 = self.new2 = self.dot = 0.0

    def add(self, x, y, d) -> None:
        import numpy as np
        halved, top = 0, _top(d)
        if math.isinf(top):                 # y - x past float64's range: d / 2, exactly
            d, halved = np.where(np.isfinite(d), d * 0.5, y * 0.5 - x * 0.5), 1
            top = _top(d)
        xs, ys = self._scaled("x", x, _top(x)), self._scaled("y", y, _top(y))
        ds = self._scaled("d", d, top, halved)
        self.delta2 += float(ds @ ds)
        self.old2 += float(xs @ xs)
        self.new2 += float(ys @ ys)
        self.dot += float(xs @ ys)

    def _scaled(self, key: str, v, top: float, halved: int = 0):
        """v (standing for v * 2**halved; `top` its largest magnitude) divided by 2**exp[key],
        which is raised first (and the sums holding it rescaled) when `top` is past it."""
        import numpy as np
        if top == 0.0:
            return v
        # Values as most weights are need no scaling (nor its passes over the data)
        want = (0 if SAFE_LOW <= top <= SAFE_HIGH else math.frexp(top)[1]) + halved
        have = self.exp[key]
        if have is None or want > have:
            if have is not None:
                shift = have - want
                if key == "d":
                    self.delta2 = math.ldexp(self.delta2, 2 * shift)
                elif key == "x":
                    self.old2, self.dot = math.ldexp(self.old2, 2 * shift), math.ldexp(self.dot, shift)
                else:
                    self.new2, self.dot = math.ldexp(self.new2, 2 * shift), math.ldexp(self.dot, shift)
            self.exp[key] = have = want
        return v if have == halved else np.ldexp(v, halved - have)

    def relative(self) -> float:
        """‖Δ‖ / ‖W‖ (Σx² not 0)."""
        ratio = math.sqrt(self.delta2) / math.sqrt(self.old2)
        try:
            return math.ldexp(ratio, (self.exp["d"] or 0) - (self.exp["x"] or 0))
        except OverflowError:               # a change past float64's range beside W
            return math.inf


_F8: dict = {}


def _f8_table(dtype: str):
    """float8 decoding tables: E4M3 (fn: no infinities, 0x7f/0xff NaN) and E5M2 (IEEE-like)."""
    import numpy as np
    if dtype not in _F8:
        exp_bits, man_bits, bias = (4, 3, 7) if dtype == "F8_E4M3" else (5, 2, 15)
        values = []
        for b in range(256):
            sign = -1.0 if b & 0x80 else 1.0
            e, m = (b >> man_bits) & ((1 << exp_bits) - 1), b & ((1 << man_bits) - 1)
            if dtype == "F8_E4M3" and e == 15 and m == 7:
                values.append(math.nan)
            elif dtype == "F8_E5M2" and e == 31:
                values.append(sign * math.inf if m == 0 else math.nan)
            elif e == 0:
                values.append(sign * m * 2.0 ** (1 - bias - man_bits))
            else:
                values.append(sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
        _F8[dtype] = np.array(values, dtype=np.float64)
    return _F8[dtype]


@dataclass
class Change:
    """How a tensor moved from old (W) to new (W'), Δ = W' - W."""
    relative_l2: float | None = None     # ‖Δ‖ / ‖W‖
    max_abs: float | None = None         # max |Δ|
    cosine: float | None = None          # cos(W, W')
    changed_fraction: float | None = None
    new_nonfinite: int | None = None     # elements finite in W, NaN or ±Inf in W'
    unbounded: int = 0                   # elements that changed to or from NaN or ±Inf (not
                                         # in the sizes above; ∞ when no other changed)


def compare_tensor(old: StoredFile, a: Placed, new: StoredFile, b: Placed) -> Change:
    """The change between two versions of a tensor of the same shape; the dtypes may differ
    (a cast to bf16 shows its rounding error)."""
    return compare_tensor_bytes(old, a, new, b)[0]


def compare_tensor_bytes(old: StoredFile, a: Placed, new: StoredFile, b: Placed) -> tuple[Change, bool]:
    """compare_tensor, and whether the two versions' bytes are equal (digests of pointers cut
    with other chunk sizes differ for equal bytes: docs/formats.md §2.1)."""
    import numpy as np
    wa, wb = DTYPE_BITS[a.tensor.dtype] // 8, DTYPE_BITS[b.tensor.dtype] // 8
    count = a.length // wa
    sums = _Sums()
    max_abs, changed, nonfinite, unbounded = 0.0, 0, 0, 0
    identical = a.tensor.dtype == b.tensor.dtype and a.length == b.length
    for start in range(0, count, BLOCK_ELEMENTS):
        n = min(BLOCK_ELEMENTS, count - start)
        raw_x = old.read_at(a.offset + start * wa, n * wa)
        raw_y = new.read_at(b.offset + start * wb, n * wb)
        identical = identical and raw_x == raw_y
        x, y = _as_float(raw_x, a.tensor.dtype), _as_float(raw_y, b.tensor.dtype)
        finite = np.isfinite(x) & np.isfinite(y)
        nonfinite += int(np.count_nonzero(np.isfinite(x) & ~np.isfinite(y)))
        moved = (x != y) & ~(np.isnan(x) & np.isnan(y))
        with np.errstate(over="ignore", invalid="ignore"):
            d = y - x
        if a.tensor.dtype in _INTEGERS or b.tensor.dtype in _INTEGERS:
            _exactly(raw_x, a.tensor.dtype, raw_y, b.tensor.dtype, x, y, finite, moved, d)
        changed += int(np.count_nonzero(moved))
        unbounded += int(np.count_nonzero(moved & ~finite))     # to or from NaN or ±Inf
        x, y, d = x[finite], y[finite], d[finite]
        sums.add(x, y, d)
        if d.size:
            max_abs = max(max_abs, float(np.abs(d).max()))
    delta2, old2, new2, dot = sums.delta2, sums.old2, sums.new2, sums.dot
    if unbounded and not delta2:   # every change is to or from NaN or ±Inf: no finite size
        return Change(math.inf, math.inf, None, changed / count, nonfinite, unbounded), identical
    return Change(
        relative_l2=sums.relative() if old2 else (0.0 if not delta2 else math.inf),
        max_abs=max_abs,
        cosine=dot / (math.sqrt(old2) * math.sqrt(new2)) if old2 and new2 else None,   # (the product
        # of the two sums underflows for tiny float64 values)
        changed_fraction=changed / count if count else 0.0,
        new_nonfinite=nonfinite,
    ), identical


# ----------------------------------------------------------------------------- files

@dataclass
class Side:
    """What a version's pointer line says of a tensor, without reading its data."""
    dtype: str
    shape: tuple[int, ...]
    norm: float | None = None            # None: no statistics for this dtype
    nonfinite: int = 0                   # NaN and ±Inf elements

    def __str__(self) -> str:
        return f"{self.dtype} [{','.join(map(str, self.shape))}]"

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class TensorDiff:
    name: str
    status: str                          # added, removed, changed, unchanged
    old: Side | None = None
    new: Side | None = None
    change: Change | None = None
    note: str = ""                       # e.g. why no numbers
    order: int = 0                       # position in the file (the new version's, else the old)
    shard: str = ""                      # of a sharded checkpoint: the file holding it (the new
                                         # version's, else the old)
    moved_from: str = ""                 # the old version's file, when it is another

    @property
    def relative(self) -> float | None:
        """‖Δ‖/‖W‖ when the data was compared; else its lower bound from the pointers'
        norms, |‖W'‖ - ‖W‖| / ‖W‖ (see `estimated`)."""
        if self.change is not None and self.change.relative_l2 is not None:
            return self.change.relative_l2
        if self.status == "changed" and self.old and self.new and self.old.norm and \
                self.new.norm is not None:
            return abs(self.new.norm - self.old.norm) / self.old.norm
        return None

    @property
    def estimated(self) -> bool:
        return self.status == "changed" and (self.change is None or self.change.relative_l2 is None)

    @property
    def new_nonfinite(self) -> int:
        """Elements NaN or ±Inf in the new version that were not: counted in the data when
        it was read, else the growth of the pointers' nan= and inf= counts."""
        if self.change is not None and self.change.new_nonfinite is not None:
            return self.change.new_nonfinite
        if self.new is None:
            return 0
        return max(0, self.new.nonfinite - (self.old.nonfinite if self.old else 0))


@dataclass
class FileDiff:
    path: str
    old_format: str | None
    new_format: str | None
    tensors: list[TensorDiff] = field(default_factory=list)
    numbers: list[NumberDiff] = field(default_factory=list)   # metrics and parameters
    note: str = ""
    old_size: int | None = None          # bytes of each version (None: no such version)
    new_size: int | None = None
    shards: tuple[int, int] | None = None  # a sharded checkpoint: its files on each side

    def count(self, status: str) -> int:
        return sum(1 for t in self.tensors if t.status == status)

    @property
    def moved(self) -> int:
        """Tensors now in another file of a sharded checkpoint."""
        return sum(1 for t in self.tensors if t.moved_from)

    def to_json(self) -> dict:
        out = asdict(self)
        for t, row in zip(self.tensors, out["tensors"]):
            row["relative"], row["estimated"] = t.relative, t.estimated
        if self.shards is None:         # a single file's JSON as it was before shards
            del out["shards"]
            for row in out["tensors"]:
                del row["shard"], row["moved_from"]
        for n, row in zip(self.numbers, out["numbers"]):
            row["verdict"] = n.verdict()
        return out


@dataclass
class Review:
    """A `gitmodel diff`: the checkpoints that differ, and the numbers of the metrics and
    params files `.gitmodel` names (which belong to the run, not to one checkpoint)."""
    files: list[FileDiff]
    numbers: list[NumberDiff] = field(default_factory=list)


@dataclass
class Version:
    """One version of a checkpoint in `gitmodel log`: its commit, its pointer, its numbers
    ({key: (value, METRIC or PARAM)}, the checkpoint's own and its metrics files') and its
    path at that commit (older versions of a renamed file have the old one)."""
    commit: object
    pointer: Pointer
    numbers: dict[str, tuple[float, str]] = field(default_factory=dict)
    path: str | None = None


def _side(t: TensorLine) -> Side:
    stats = dict(f.split("=", 1) for f in t.stats)
    nonfinite = sum(_number(stats.get(k, "0"), int) or 0 for k in ("nan", "inf"))
    return Side(t.dtype, t.shape, _number(stats.get("norm"), float), nonfinite)


def _number(text: str | None, kind):
    """A statistic as a number; None when absent or not one (a pointer edited by hand: the
    parser keeps fields as they are, so that such a pointer still checks out)."""
    try:
        return kind(text) if text is not None else None
    except ValueError:
        return None


def by_occurrence(tensors) -> tuple[dict[tuple[str, int], TensorLine], set[str]]:
    """{(name, occurrence): line}, and the names that occur more than once (a torch state
    dict with `a.b` and `a` → `b`, an npz with two entries of one name): the k-th of a name
    is compared with the k-th."""
    out, seen = {}, {}
    for t in tensors:
        k = seen.get(t.name, 0)
        seen[t.name] = k + 1
        out[(t.name, k)] = t
    return out, {name for name, n in seen.items() if n > 1}


def _element_order(ptr: Pointer, name: str) -> str | None:
    """"F" for a NumPy array stored in Fortran order, "C" for any other tensor, None when the
    pointer cannot tell: its list of Fortran-order arrays (comma-separated) is cut short and
    leaves the name out, or a name holding commas splits into pieces that include this one."""
    if ptr.format not in ("npy", "npz"):
        return "C"
    listed = _fortran_list(ptr)
    if "," in name:                 # listed only as pieces: it or its pieces' own arrays
        return None if f",{name}," in f",{listed}," else _unless_cut(listed)
    if name not in listed.split(","):
        return _unless_cut(listed)
    if any(name in t.name.split(",") for t in ptr.tensors if "," in t.name):
        return None
    return "F"


def _unless_cut(listed: str) -> str | None:
    """"C" for an array a full list of Fortran-order arrays leaves out; None if the list was
    cut short."""
    return None if listed.count(",") + 1 >= numpy_files.MAX_LISTED else "C"


def _fortran_list(ptr: Pointer) -> str:
    return dict(ptr.metadata).get("fortran_order", "")


def _orders_differ(old: Pointer, new: Pointer, name: str) -> bool:
    """Whether a tensor's elements lie in another order on each side (values then compare
    byte position by byte position only in one order): where a pointer cannot tell, unless
    both list the same arrays."""
    a, b = _element_order(old, name), _element_order(new, name)
    if a is None or b is None:
        return _fortran_list(old) != _fortran_list(new)
    return a != b


# A Hugging Face shard: `model-00001-of-00004.safetensors`, `pytorch_model-00002-of-00003.bin`
SHARD = re.compile(r"(?P<stem>.+)-(?P<index>[0-9]+)-of-(?P<count>[0-9]+)(?P<ext>\.[^./]+)")


def _files_holding(side: dict[str, Pointer]) -> dict[tuple[str, int], str]:
    """{(name, occurrence): the path of the file holding it} over a side's files, keyed as
    by_occurrence keys their tensors."""
    out, seen = {}, {}
    for path, ptr in side.items():
        for t in ptr.tensors:
            k = seen.get(t.name, 0)
            seen[t.name] = k + 1
            out[(t.name, k)] = path
    return out


def diff_pointers(path: str, old: Pointer | None, new: Pointer | None, store: Store | None,
                  numbers: bool = True, fetch: Fetch | None = None,
                  on_disk: dict[str, str] | None = None, rules: Rules = Rules()) -> FileDiff:
    """Compare two versions (None: the file does not exist on that side). With `fetch`,
    objects missing locally are fetched: the manifests, the chunks holding the format's
    headers, then in one batch the chunks of the changed tensors only. `on_disk` names files
    to read a version from instead of the store ({content id: path}: a work-tree file whose
    pointer was computed without storing it)."""
    result = _diff_files(path, {path: old} if old else {}, {path: new} if new else {}, store, numbers,
                         fetch, on_disk)
    result.numbers = metrics.compare(metrics.from_pointer(old), metrics.from_pointer(new), path, rules)
    return result


def diff_shards(path: str, old: dict[str, Pointer], new: dict[str, Pointer], store: Store | None,
                numbers: bool = True, fetch: Fetch | None = None,
                on_disk: dict[str, str] | None = None, rules: Rules = Rules()) -> FileDiff:
    """diff_pointers for a sharded checkpoint, its files on each side given as {path: pointer}
    in shard order (empty: no such version): one model, its tensors matched by name whichever
    file holds them, each tensor saying its file and, when it moved, the one it left."""
    result = _diff_files(path, old, new, store, numbers, fetch, on_disk, sharded=True)
    result.shards = (len(old), len(new))
    result.numbers = metrics.compare(shard_numbers(old), shard_numbers(new), path, rules)
    return result


def shard_numbers(side: dict[str, Pointer]) -> dict[str, float]:
    """The numbers of a sharded checkpoint: those metrics.from_pointer reads in each file, once
    for the model where the files that hold a key agree (Hugging Face writes the same
    metadata into every shard); where they differ, each file's as `key@INDEX`, the index of
    its file name (`val_loss@00002`)."""
    found: dict[str, dict[str, float]] = {}        # {key: {file's index: value}}
    for path, ptr in side.items():
        name = SHARD.fullmatch(path.rsplit("/", 1)[-1])
        index = name["index"] if name else path
        for key, value in metrics.from_pointer(ptr).items():
            found.setdefault(key, {})[index] = value
    out = {}
    for key, values in found.items():
        if len(set(values.values())) == 1:
            out[key] = next(iter(values.values()))
        else:
            out.update((f"{key}@{index}", value) for index, value in values.items())
    return out


def _diff_files(path: str, old: dict[str, Pointer], new: dict[str, Pointer], store: Store | None,
                numbers: bool, fetch: Fetch | None, on_disk: dict[str, str] | None,
                sharded: bool = False) -> FileDiff:
    """diff_pointers without the numbers, over the files of each side ({path: pointer}, in
    order; empty: no such version): tensors are matched by name across them all, and, if
    `sharded`, each says which file holds it."""
    first_old, first_new = next(iter(old.values()), None), next(iter(new.values()), None)
    result = FileDiff(path, first_old.format if first_old else None, first_new.format if first_new else None,
                      old_size=sum(p.size for p in old.values()) if old else None,
                      new_size=sum(p.size for p in new.values()) if new else None)
    old_tensors, old_repeated = by_occurrence(t for ptr in old.values() for t in ptr.tensors)
    new_tensors, new_repeated = by_occurrence(t for ptr in new.values() for t in ptr.tensors)
    old_in, new_in = _files_holding(old), _files_holding(new)
    repeated = old_repeated | new_repeated
    files: dict[str, StoredFile] = {}
    places: dict[str, dict[str, Placed]] = {}

    def placed(ptr: Pointer) -> tuple[StoredFile, dict[str, Placed]]:
        if ptr.content not in files and on_disk and ptr.content in on_disk:
            files[ptr.content] = FileOnDisk(on_disk[ptr.content])
            places[ptr.content] = locate_tensors(files[ptr.content])
        if ptr.content not in files:
            manifest = bytes.fromhex(ptr.content)
            if fetch is not None and store.missing([manifest]):
                fetch([manifest], {manifest: ptr.size})
            files[ptr.content] = StoredFile(store, ptr.content, fetch)
            places[ptr.content] = locate_tensors(files[ptr.content])
        return files[ptr.content], places[ptr.content]

    to_compare: list[tuple[TensorDiff, StoredFile, Placed, StoredFile, Placed]] = []

    for order, (key, t) in enumerate(new_tensors.items()):
        name = key[0]
        before = old_tensors.get(key)
        if before is None:
            result.tensors.append(TensorDiff(name, "added", new=_side(t), order=order,
                                             shard=new_in[key] if sharded else ""))
            continue
        same = (before.digest, before.dtype, before.shape) == (t.digest, t.dtype, t.shape)
        entry = TensorDiff(name, "unchanged" if same else "changed",     # (equal bytes read
                           old=_side(before), new=_side(t), order=order)  # as another dtype or shape)
        if sharded:
            entry.shard = new_in[key]
            entry.moved_from = old_in[key] if old_in[key] != new_in[key] else ""
        result.tensors.append(entry)
        if entry.status == "unchanged" or not numbers:
            continue
        if name in repeated:               # which bytes are which cannot be told by name
            entry.note = f"name repeated in the {'files' if sharded else 'file'}: no numbers"
        elif before.shape != t.shape:
            entry.note = "shape changed"
        elif t.dtype not in NUMERIC_DTYPES or before.dtype not in NUMERIC_DTYPES:
            entry.note = NO_NUMBERS_FOR + (t.dtype if t.dtype not in NUMERIC_DTYPES else before.dtype)
        elif _orders_differ(old[old_in[key]], new[new_in[key]], name):
            entry.note = "element order changed (Fortran/C): no numbers"   # same values, other places
        elif store is None:
            entry.note = "store unavailable"
        else:
            old_file, old_places = placed(old[old_in[key]])
            new_file, new_places = placed(new[new_in[key]])
            a, b = old_places.get(name), new_places.get(name)
            if a is None or b is None or a.length * DTYPE_BITS[t.dtype] != b.length * DTYPE_BITS[before.dtype]:
                entry.note = "tensor not located in the file"
            else:
                to_compare.append((entry, old_file, a, new_file, b))
    for file in files.values():             # one fetch per version for all changed tensors
        file.prefetch([(p.offset, p.length) for _, f, p, _, _ in to_compare if f is file] +
                      [(p.offset, p.length) for _, _, _, f, p in to_compare if f is file])
    try:
        for entry, old_file, a, new_file, b in to_compare:
            entry.change, identical = compare_tensor_bytes(old_file, a, new_file, b)
            if identical:           # other digests, same bytes: a version cut with other chunk sizes
                entry.status, entry.change = "unchanged", None
    finally:
        for file in files.values():
            if isinstance(file, FileOnDisk):
                file.close()
    # Removed tensors go where they stood in the old file, after the new file's tensors.
    for order, (key, t) in enumerate(old_tensors.items()):
        if key not in new_tensors:
            result.tensors.append(TensorDiff(key[0], "removed", old=_side(t), order=len(new_tensors) + order,
                                             shard=old_in[key] if sharded else ""))
    if old and [p.content for p in old.values()] == [p.content for p in new.values()]:
        result.note = "identical"
    return result
