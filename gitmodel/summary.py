"""What a review says first: the counts, the alarms, the changes rolled up by module, the
largest changes. Computed from a FileDiff alone (no tensor data); report.py words it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gitmodel.metrics import METRIC, NumberDiff
from gitmodel.modules import BLOCK_ORDER, layer_span, place
from gitmodel.review import FileDiff, TensorDiff

NORM_JUMP = 2.0          # a norm that grew or shrank by more than this factor is an alarm
ROUNDING = 1.001         # the most two norms rounded to four significant digits can skew it
TOP_TENSORS = 3

SORT_KEYS = ("change", "order", "name", "max-abs", "changed", "cosine")


def sorted_tensors(tensors: list[TensorDiff], by: str = "change") -> list[TensorDiff]:
    """Tensors in the reviewer's order: `change` (largest ‖Δ‖/‖W‖ first, then added and
    removed), `order` (as in the file), `name`, `max-abs`, `changed` (fraction of elements)
    or `cosine` (least similar first)."""
    def measure(t: TensorDiff) -> float | None:
        c = t.change
        if by == "change":
            return t.relative
        if by == "max-abs":
            return c.max_abs if c else None
        if by == "changed":
            return c.changed_fraction if c else None
        return -c.cosine if c and c.cosine is not None else None   # cosine: smallest first

    if by == "order":
        return sorted(tensors, key=lambda t: t.order)
    if by == "name":
        return sorted(tensors, key=lambda t: t.name)
    if by not in SORT_KEYS:
        raise ValueError(f"unknown sort key {by!r}")

    def key(t: TensorDiff):
        value = measure(t)
        missing = value is None or math.isnan(value)
        return (missing, -(value or 0.0) if not missing else 0.0, t.order)
    return sorted(tensors, key=key)


@dataclass
class Alarm:
    kind: str                   # "nonfinite", "norm", "dtype/shape"
    tensor: str
    detail: str
    change: str = ""            # for dtype/shape: the change alone ("F32 → BF16"), to group by


@dataclass
class Group:
    """Tensors of one kind of block: in one stack of layers, or outside any (stack None)."""
    stack: str | None
    block: str
    total: int = 0
    changed: int = 0                               # changed, added or removed
    added: int = 0
    removed: int = 0
    layers: set[int] = field(default_factory=set)  # every layer of the stack seen in the group
    changed_layers: set[int] = field(default_factory=set)
    largest: TensorDiff | None = None

    @property
    def label(self) -> str:
        if self.stack is None:
            return "final norm" if self.block == "norm" else self.block
        return f"{self.stack or 'layers'} {layer_span(sorted(self.layers))} · {self.block}"


@dataclass
class Summary:
    counts: dict[str, int]
    elements_changed: int             # elements of changed and added tensors
    elements_total: int               # elements of the new version (the old one if removed)
    alarms: list[Alarm]
    groups: list[Group]
    top: list[TensorDiff]
    metrics: list[NumberDiff]         # the metrics, changed or not
    params_changed: list[NumberDiff]
    params_unchanged: int


def summarize(diff: FileDiff, numbers: list[NumberDiff] | None = None, top: int = TOP_TENSORS) -> Summary:
    """The summary of one checkpoint's diff; `numbers` are the metrics and parameters shown
    with it (its own by default)."""
    numbers = diff.numbers if numbers is None else numbers
    counts = {s: diff.count(s) for s in ("changed", "added", "removed", "unchanged")}
    if diff.shards is not None:        # a sharded checkpoint: tensors now in another file
        counts["moved"] = diff.moved
    touched = [t for t in diff.tensors if t.status != "unchanged"]
    elements_total = sum((t.new or t.old).elements for t in diff.tensors if t.status != "removed") \
        or sum(t.old.elements for t in diff.tensors if t.old)
    elements_changed = sum(t.new.elements for t in touched if t.new is not None)

    alarms: list[Alarm] = []
    for t in touched:
        if t.new_nonfinite:
            alarms.append(Alarm("nonfinite", t.name, f"{t.new_nonfinite:,} "
                                f"element{'s' if t.new_nonfinite != 1 else ''}"))
    for t in touched:
        if t.status != "changed" or not (t.old and t.new) or str(t.old) == str(t.new):
            continue
        what = f"{t.old.dtype} → {t.new.dtype}" if t.old.shape == t.new.shape else f"{t.old} → {t.new}"
        alarms.append(Alarm("dtype/shape", t.name, f"{t.old} → {t.new}", what))
    for t in touched:
        if t.status == "changed" and t.old and t.new and t.old.norm and t.new.norm is not None:
            ratio = t.new.norm / t.old.norm
            # The pointers' norms have four digits: an exact doubling can read 2.0003
            if ratio > NORM_JUMP * ROUNDING or ratio < 1 / (NORM_JUMP * ROUNDING):
                alarms.append(Alarm("norm", t.name, f"{t.old.norm:.3g} → {t.new.norm:.3g}, ×{ratio:.3g}"))

    groups: dict[tuple, Group] = {}
    for t in sorted(diff.tensors, key=lambda t: t.order):
        where = place(t.name)
        group = groups.setdefault((where.stack, where.block), Group(where.stack, where.block))
        group.total += 1
        if where.layer is not None:
            group.layers.add(where.layer)
        if t.status == "unchanged":
            continue
        group.changed += 1
        group.added += t.status == "added"
        group.removed += t.status == "removed"
        if where.layer is not None:
            group.changed_layers.add(where.layer)
        if t.relative is not None and (group.largest is None or group.largest.relative is None
                                       or t.relative > group.largest.relative):
            group.largest = t
        elif group.largest is None:
            group.largest = t
    stacks = list(dict.fromkeys(g.stack for g in groups.values() if g.stack is not None))

    def rank(g: Group):
        if g.stack is None:        # embeddings before the layers, the rest after
            return (0 if g.block == "embeddings" else 2, 0, BLOCK_ORDER.index(g.block))
        return (1, stacks.index(g.stack), BLOCK_ORDER.index(g.block))

    ranked = [t for t in sorted_tensors(touched, "change") if t.status == "changed" and t.relative]
    params = [n for n in numbers if n.kind != METRIC]
    return Summary(counts, elements_changed, elements_total, alarms,
                   sorted(groups.values(), key=rank), ranked[:top],
                   [n for n in numbers if n.kind == METRIC],
                   [n for n in params if n.changed], sum(1 for n in params if not n.changed))
