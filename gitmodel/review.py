"""Comparing two versions of a checkpoint: which tensors changed, and by how much.

Tensors are matched by name. Equal digests mean equal bytes, so only tensors whose digests
differ are read, and only their chunks (through `stored.StoredFile`), in blocks of
BLOCK_ELEMENTS, so memory stays bounded however large a tensor is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from gitmodel.formats import DTYPE_BITS
from gitmodel.pointer import Pointer, TensorLine
from gitmodel.stats import STATS_DTYPES, floats
from gitmodel.store.objects import Store
from gitmodel.stored import Fetch, FileOnDisk, Placed, StoredFile, locate_tensors

BLOCK_ELEMENTS = 1 << 20
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
NUMERIC_DTYPES = FLOAT_DTYPES | {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}


# ----------------------------------------------------------------------------- numbers

def _as_float(data: bytes, dtype: str):
    import numpy as np
    if dtype in STATS_DTYPES:
        return floats(data, dtype).astype(np.float64)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return _f8_table(dtype)[np.frombuffer(data, np.uint8)]
    kinds = {"I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "u1", "U16": "<u2",
             "U32": "<u4", "U64": "<u8", "BOOL": "u1"}
    return np.frombuffer(data, kinds[dtype]).astype(np.float64)


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


def compare_tensor(old: StoredFile, a: Placed, new: StoredFile, b: Placed) -> Change:
    import numpy as np
    dtype = a.tensor.dtype
    width = DTYPE_BITS[dtype] // 8
    count = a.length // width
    delta2 = old2 = new2 = dot = 0.0
    max_abs, changed, nonfinite = 0.0, 0, 0
    step = BLOCK_ELEMENTS * width
    for start in range(0, count * width, step):
        n = min(step, count * width - start)
        x = _as_float(old.read_at(a.offset + start, n), dtype)
        y = _as_float(new.read_at(b.offset + start, n), dtype)
        finite = np.isfinite(x) & np.isfinite(y)
        nonfinite += int(np.count_nonzero(np.isfinite(x) & ~np.isfinite(y)))
        changed += int(np.count_nonzero((x != y) & ~(np.isnan(x) & np.isnan(y))))
        x, y = x[finite], y[finite]
        d = y - x
        delta2 += float(d @ d)
        old2 += float(x @ x)
        new2 += float(y @ y)
        dot += float(x @ y)
        if d.size:
            max_abs = max(max_abs, float(np.abs(d).max()))
    return Change(
        relative_l2=math.sqrt(delta2) / math.sqrt(old2) if old2 else (0.0 if not delta2 else math.inf),
        max_abs=max_abs,
        cosine=dot / math.sqrt(old2 * new2) if old2 and new2 else None,
        changed_fraction=changed / count if count else 0.0,
        new_nonfinite=nonfinite,
    )


# ----------------------------------------------------------------------------- files

@dataclass
class TensorDiff:
    name: str
    status: str                          # added, removed, changed, unchanged
    old: str | None = None               # "DTYPE [shape]"
    new: str | None = None
    change: Change | None = None
    note: str = ""                       # e.g. why no numbers


@dataclass
class FileDiff:
    path: str
    old_format: str | None
    new_format: str | None
    tensors: list[TensorDiff] = field(default_factory=list)
    metrics: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    note: str = ""

    def count(self, status: str) -> int:
        return sum(1 for t in self.tensors if t.status == status)

    def to_json(self) -> dict:
        return asdict(self)


def _describe(t: TensorLine) -> str:
    return f"{t.dtype} [{','.join(map(str, t.shape))}]"


def diff_pointers(path: str, old: Pointer | None, new: Pointer | None, store: Store | None,
                  numbers: bool = True, fetch: Fetch | None = None,
                  on_disk: dict[str, str] | None = None) -> FileDiff:
    """Compare two versions (None: the file does not exist on that side). With `fetch`,
    objects missing locally are fetched: the manifests, the chunks holding the format's
    headers, then in one batch the chunks of the changed tensors only. `on_disk` names files
    to read a version from instead of the store ({content id: path}: a work-tree file whose
    pointer was computed without storing it)."""
    result = FileDiff(path, old.format if old else None, new.format if new else None)
    old_tensors = {t.name: t for t in (old.tensors if old else ())}
    new_tensors = {t.name: t for t in (new.tensors if new else ())}
    files: dict[str, StoredFile] = {}
    places: dict[str, dict[str, Placed]] = {}

    def placed(ptr: Pointer) -> tuple[StoredFile, dict[str, Placed]]:
        if ptr.content not in files and on_disk and ptr.content in on_disk:
            files[ptr.content] = FileOnDisk(on_disk[ptr.content])
            places[ptr.content] = locate_tensors(files[ptr.content])
        if ptr.content not in files:
            manifest = bytes.fromhex(ptr.content)
            if fetch is not None and store.missing([manifest]):
                fetch([manifest])
            files[ptr.content] = StoredFile(store, ptr.content, fetch)
            places[ptr.content] = locate_tensors(files[ptr.content])
        return files[ptr.content], places[ptr.content]

    to_compare: list[tuple[TensorDiff, StoredFile, Placed, StoredFile, Placed]] = []

    for name, t in old_tensors.items():
        if name not in new_tensors:
            result.tensors.append(TensorDiff(name, "removed", old=_describe(t)))
    for name, t in new_tensors.items():
        before = old_tensors.get(name)
        if before is None:
            result.tensors.append(TensorDiff(name, "added", new=_describe(t)))
            continue
        entry = TensorDiff(name, "unchanged" if before.digest == t.digest else "changed",
                           old=_describe(before), new=_describe(t))
        result.tensors.append(entry)
        if entry.status == "unchanged" or not numbers:
            continue
        if (before.dtype, before.shape) != (t.dtype, t.shape):
            entry.note = "dtype or shape changed"
        elif t.dtype not in NUMERIC_DTYPES:
            entry.note = f"no numbers for {t.dtype}"
        elif store is None:
            entry.note = "store unavailable"
        else:
            old_file, old_places = placed(old)
            new_file, new_places = placed(new)
            a, b = old_places.get(name), new_places.get(name)
            if a is None or b is None or a.length != b.length:
                entry.note = "tensor not located in the file"
            else:
                to_compare.append((entry, old_file, a, new_file, b))
    for file in files.values():             # one fetch per version for all changed tensors
        file.prefetch([(p.offset, p.length) for _, f, p, _, _ in to_compare if f is file] +
                      [(p.offset, p.length) for _, _, _, f, p in to_compare if f is file])
    try:
        for entry, old_file, a, new_file, b in to_compare:
            entry.change = compare_tensor(old_file, a, new_file, b)
    finally:
        for file in files.values():
            if isinstance(file, FileOnDisk):
                file.close()
    old_metrics = dict(old.metrics if old else ())
    new_metrics = dict(new.metrics if new else ())
    for key in sorted(set(old_metrics) | set(new_metrics)):
        result.metrics.append((key, old_metrics.get(key), new_metrics.get(key)))
    if old and new and old.content == new.content:
        result.note = "identical"
    return result
