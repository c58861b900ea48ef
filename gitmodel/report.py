"""Rendering a review: a terminal report, Markdown for pull-request comments, JSON.

Every report reads top-down in the same order (docs/review.md): per checkpoint, one paragraph
(alarms, counts, metrics, modules, largest changes), the metrics and the changed parameters,
then every changed tensor in the order the reviewer chose (collapsed in Markdown)."""

from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import asdict, replace

from gitmodel.metrics import METRIC, NumberDiff
from gitmodel.modules import layer_span, place
from gitmodel.pointer import format_number, quote_name
from gitmodel.quoting import quote_path
from gitmodel.review import NO_NUMBERS_FOR, SHARD, FileDiff, Review, TensorDiff, by_occurrence
from gitmodel.summary import Alarm, Summary, sorted_tensors, summarize

_COLOURS = {"added": "32", "removed": "31", "changed": "33"}
NAMES_PER_ALARM = 3
METRICS_IN_SUMMARY = 3
WRAP = 100
NAME_WIDTH = 80              # longer tensor names are shown with their middle elided
# A Markdown review is posted as one pull-request comment, and GitHub takes up to 65,536
# characters: the tensor tables stop short of that, saying how many rows they leave out.
MARKDOWN_BUDGET = 60_000

SORT_TITLES = {"change": "largest ‖Δ‖/‖W‖ first", "order": "in file order", "name": "by name",
               "max-abs": "largest max|Δ| first", "changed": "most elements changed first",
               "cosine": "least similar first"}


# ----------------------------------------------------------------------------- cells

def _num(value: float | None, kind: str = "g") -> str:
    if value is None:
        return "–"
    if value == math.inf and kind == "g":
        return "from 0"                      # ‖Δ‖/‖W‖ of a tensor that was all zeros
    if kind == "pct":
        return f"{value * 100:.3g}%"
    if kind == "cos":
        return f"{value:.6f}"
    return f"{value:.3g}"


def _count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _unbounded(t: TensorDiff) -> bool:
    """Whether every element that changed went to or from NaN or ±Inf: no finite size."""
    return t.change is not None and t.change.unbounded > 0 and t.change.relative_l2 == math.inf


def _relative(t: TensorDiff) -> str:
    if _unbounded(t):
        return "NaN/Inf"
    value = t.relative
    return "–" if value is None else ("≥" if t.estimated else "") + _num(value)


HEAD = ["tensor", "status", "dtype/shape", "‖Δ‖/‖W‖", "max|Δ|", "cosine", "changed", "new NaN/Inf"]


def _tensor_row(t: TensorDiff, md: bool = False) -> list[str]:
    shape = str(t.new or t.old or "")
    if t.status == "changed" and str(t.old) != str(t.new):
        shape = f"{t.old} → {t.new}"
    note = t.note
    if note.startswith(NO_NUMBERS_FOR):
        note = NO_NUMBERS_FOR + _dtype(note[len(NO_NUMBERS_FOR):], md)
    c = t.change
    if c is None:
        cells = [_relative(t) if t.relative is not None else note, "", "", "",
                 str(t.new_nonfinite) if t.new_nonfinite else ""]
    elif _unbounded(t):
        cells = ["NaN/Inf", "NaN/Inf", "–", _num(c.changed_fraction, "pct"), str(c.new_nonfinite or 0)]
    else:
        cells = [_relative(t), _num(c.max_abs), _num(c.cosine, "cos"),
                 _num(c.changed_fraction, "pct"), str(c.new_nonfinite or 0)]
    return [_shown(t.name), t.status, _dtype_words(shape, md), *cells]


# Text a Markdown renderer shows as it is: ASCII letters, digits, `.`, `_`, `/` and `-`,
# starting with a letter or digit (no HTML, link, code, math, escape or entity can start
# there), with no `_` after `.`, `/` or `-` (only such a `_` could open emphasis) and no
# `www.` (an autolink).
_MD_PLAIN = re.compile(r"(?![^A-Za-z0-9])(?!.*[./-]_)(?!.*www\.)[A-Za-z0-9._/-]+", re.IGNORECASE)


def _label(text: str, md: bool) -> str:
    """Text a checkpoint or a metrics file wrote (a metric or parameter key, the stack of
    layers a tensor name starts with) as reports show it: quoted as the pointer quotes names
    (no control character reaches a terminal); in Markdown, unless it is a plain word, a code
    span of that (no HTML or link reaches a pull-request comment). Tensor names: `_q`."""
    if not md:
        return quote_name(text)
    return text if _MD_PLAIN.fullmatch(text) else _code(quote_name(text))


def _dtype(name: str, md: bool) -> str:
    """A dtype or format name as a pointer gives it, any [A-Za-z0-9_]+: as it is, but in
    Markdown as `_label` shows names (`__x__` would be bold)."""
    return _label(name, md) if md else name


def _dtype_words(text: str, md: bool) -> str:
    """Dtypes and shapes as reviews word them ("F32 [4] → BF16 [4]", "F32 → BF16"), each
    dtype as `_dtype` shows it."""
    if not md:
        return text
    return " ".join(w if w == "→" or w.startswith("[") else _dtype(w, md) for w in text.split(" "))


def _path(path: str, md: bool) -> str:
    """A path from git (a checkpoint's, a metrics file's) as git shows it (`quote_path`); in
    Markdown, a code span of that unless it is a plain word."""
    if not md:
        return quote_path(path)
    return path if _MD_PLAIN.fullmatch(path) else _code(quote_path(path))


def _stack(stack: str | None, md: bool) -> str:
    """A stack of layers as reports name it; `layers` for layers named by a number alone."""
    return _label(stack, md) if stack else "layers"


def _shown(name: str) -> str:
    """A tensor name as reports show it: quoted as the pointer quotes it, its middle elided
    past NAME_WIDTH characters (one long name would widen every row of a table). The JSON
    report keeps every name whole."""
    quoted = quote_name(name)
    if len(quoted) <= NAME_WIDTH:
        return quoted
    keep = (NAME_WIDTH - 1) // 2
    return f"{quoted[:keep]}…{quoted[-keep:]}"


def _tensor_rows(diff: FileDiff, all_tensors: bool, sort: str, md: bool = False) -> tuple[list[str], list[list[str]]]:
    """The tensor table's head and rows; a `shard` column where a tensor of a sharded
    checkpoint moved to another file."""
    shown = sorted_tensors([t for t in diff.tensors if all_tensors or t.status != "unchanged"], sort)
    if not any(t.moved_from for t in shown):
        return HEAD, [_tensor_row(t, md) for t in shown]
    return HEAD + ["shard"], [_tensor_row(t, md) + [_moved(t, md)] for t in shown]


def _moved(t: TensorDiff, md: bool) -> str:
    """Where a tensor moved: `00003-of-00004 → 00002-of-00002` between files of one folder,
    stem and extension, else their paths."""
    if not t.moved_from:
        return ""
    (a, x), (b, y) = (path.rpartition("/")[::2] for path in (t.moved_from, t.shard))
    x, y = SHARD.fullmatch(x), SHARD.fullmatch(y)
    if a == b and x and y and (x["stem"], x["ext"]) == (y["stem"], y["ext"]):
        return f"{x['index']}-of-{x['count']} → {y['index']}-of-{y['count']}"
    return f"{_path(t.moved_from, md)} → {_path(t.shard, md)}"


def _change(n: NumberDiff) -> str:
    if n.old is None or n.new is None or not n.changed:
        return "–" if n.old is None or n.new is None else "0"
    change = format_number(n.new - n.old)
    change = change if change.startswith("-") else "+" + change
    if n.old and math.isfinite(n.old) and math.isfinite(n.new):
        change += f" ({(n.new - n.old) / abs(n.old) * 100:+.3g}%)"
    return change


def _value(v: float | None) -> str:
    return "–" if v is None else format_number(v)


def _number_tables(numbers: list[NumberDiff], all_params: bool, md: bool) -> list[tuple[list[str], list[list[str]], str]]:
    """(head, rows, note below) for the metrics table and the parameters table (keys as
    `_label` shows them)."""
    sources = len({n.source for n in numbers}) > 1
    tables = []
    metrics = [n for n in numbers if n.kind == METRIC]
    if metrics:
        rows = [[_label(n.key, md), _value(n.old), _value(n.new), _change(n), n.verdict()] for n in metrics]
        head = ["Metric", "Old", "New", "Change", ""]
        if not any(r[-1] for r in rows):
            head, rows = head[:-1], [r[:-1] for r in rows]
        if sources:
            head, rows = head + ["Source"], [r + [_path(n.source, md)] for r, n in zip(rows, metrics)]
        tables.append((head, rows, ""))
    params = [n for n in numbers if n.kind != METRIC]
    shown = [n for n in params if all_params or n.changed]
    if shown:
        head = ["Parameter", "Old", "New", "Change"] + (["Source"] if sources else [])
        rows = [[_label(n.key, md), _value(n.old), _value(n.new), _change(n)] + ([_path(n.source, md)] if sources else [])
                for n in shown]
        hidden = len(params) - len(shown)
        tables.append((head, rows, f"{hidden} parameter{'s' if hidden != 1 else ''} unchanged."
                       if hidden else ""))
    elif params:
        tables.append(([], [], f"{len(params)} parameter{'s' if len(params) != 1 else ''}, none changed."))
    return tables


# ----------------------------------------------------------------------------- the paragraph

def _names(items: list, code: bool, render) -> str:
    shown = [render(x, code) for x in items[:NAMES_PER_ALARM]]
    if len(items) > NAMES_PER_ALARM:
        shown.append(f"{len(items) - NAMES_PER_ALARM} more")
    return ", ".join(shown)


def _q(name: str, code: bool) -> str:
    """A tensor name in prose: quoted as the pointer quotes it (no raw newlines or tabs), as
    Markdown code if `code`."""
    return _code(_shown(name)) if code else _shown(name)


def _code(text: str) -> str:
    """A Markdown code span wide enough for the backticks `text` holds."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def _b(text: str, md: bool) -> str:
    return f"**{text}**" if md else text


def paragraph(s: Summary, md: bool) -> str:
    """The opening paragraph of one checkpoint's review: alarms, counts, metrics, modules,
    largest changes (docs/review.md §2)."""
    bound = lambda t: t is not None and t.estimated and t.relative is not None    # noqa: E731
    estimated = any(map(bound, s.top)) or any(bound(g.largest) for g in s.groups)
    mark = "≥" if estimated else ""
    sentences = [_alarms(s, md), _counts(s, md), _metrics(s, md), _modules(s, md, mark),
                 _largest(s, md, mark),
                 "(≥: lower bounds from the pointers' norms, where tensor data could not be "
                 "compared.)" if estimated else ""]
    return " ".join(x for x in sentences if x)


def _alarms(s: Summary, md: bool) -> str:
    kinds = {"nonfinite": "new NaN/Inf", "norm": "norm jumped", "dtype/shape": "dtype or shape changed"}
    alarms = []
    for kind, label in kinds.items():
        found = [a for a in s.alarms if a.kind == kind]
        if kind == "dtype/shape" and len(found) > NAMES_PER_ALARM:     # a cast: say it once
            changes: dict[str, int] = {}
            for a in found:
                changes[a.change] = changes.get(a.change, 0) + 1
            alarms.append(f"{_b(label, md)}: " + ", ".join(f"{_dtype_words(c, md)} in {n} "
                                                          f"tensor{'s' if n != 1 else ''}"
                                                          for c, n in changes.items()))
        elif found:
            alarms.append(f"{_b(label, md)} in " +
                          _names(found, md, lambda a, c: f"{_q(a.tensor, c)} ({_detail(a, c)})"))
    return ("⚠ " if md else "WARNING: ") + "; ".join(alarms) + "." if alarms else ""


def _detail(a: Alarm, md: bool) -> str:
    return _dtype_words(a.detail, md) if a.kind == "dtype/shape" else a.detail


def _counts(s: Summary, md: bool) -> str:
    c = s.counts
    total = c["changed"] + c["unchanged"] + c["added"]
    if total and c["added"] == total:                  # a new file: nothing to compare with
        weights = f" ({_count(s.elements_total)} weights)" if s.elements_total else ""
        return f"{_b(f'{total} tensors, all new', md)}{weights}."
    head = f"{c['changed']} of {total} tensors changed" if total else "no tensors"
    rest = [f"{c['added']} added" if c["added"] else "", f"{c['removed']} removed" if c["removed"] else ""]
    rest = [r for r in rest if r] or ["none added or removed"]
    touched = "weights changed or new" if c["added"] else "weights"
    weights = f" ({_count(s.elements_changed)} of {_count(s.elements_total)} {touched})" if s.elements_total else ""
    moved = f"; {c['moved']} moved to another shard" if c.get("moved") else ""
    return f"{_b(head, md)}{weights}, {', '.join(rest)}{moved}."


def _metrics(s: Summary, md: bool) -> str:
    moved = [m for m in s.metrics if m.changed]
    if not moved:
        return f"{_b('Metrics', md)}: unchanged." if s.metrics else ""
    verdicts = [m.verdict() for m in moved]
    tally = ", ".join(f"{verdicts.count(v)} {v}" for v in ("better", "worse") if v in verdicts)
    items = [f"{_label(m.key, md)} {_value(m.old)} → {_value(m.new)}" + (f" ({m.verdict()})" if m.verdict() else "")
             for m in moved[:METRICS_IN_SUMMARY]]
    if len(moved) > METRICS_IN_SUMMARY:
        items.append(f"{len(moved) - METRICS_IN_SUMMARY} more")
    return f"{_b('Metrics', md)}" + (f" ({tally})" if tally else "") + ": " + ", ".join(items) + "."


def _modules(s: Summary, md: bool, mark: str) -> str:
    """Changed groups, those of one stack of layers together; then the unchanged ones (a
    stack with nothing changed named once)."""
    stacks: dict[str | None, list] = {}
    for g in s.groups:
        if g.stack is not None:
            stacks.setdefault(g.stack, []).append(g)
    span = {stack: f"{_stack(stack, md)} {layer_span(sorted(set().union(*(g.layers for g in gs))))}"
            for stack, gs in stacks.items()}
    changed: list[tuple[str | None, list[str]]] = []
    unchanged: list[str] = []
    for g in s.groups:
        if not g.changed:
            if g.stack is None:
                unchanged.append(g.label)
            elif any(other.changed for other in stacks[g.stack]):
                unchanged.append(f"{_stack(g.stack, md)} {g.block}")
            elif span[g.stack] not in unchanged:
                unchanged.append(span[g.stack])
            continue
        alone = g.stack is not None and g.block == "other" and len(stacks[g.stack]) == 1
        item = f"{g.label if g.stack is None else g.block} ({_group_detail(g, md, mark)})" if not alone \
            else f"({_group_detail(g, md, mark)})"      # plain layers: their names say no more
        if g.stack is not None and changed and changed[-1][0] == g.stack:
            changed[-1][1].append(item)
        else:
            changed.append((g.stack, [item]))
    if not changed:
        return ""
    parts = [", ".join(items) if stack is None else
             f"{span[stack]}{' ' if items[0].startswith('(') else ': '}" + ", ".join(items)
             for stack, items in changed]
    return f"{_b('Changed', md)}: " + "; ".join(parts) + "." + \
        (" Unchanged: " + ", ".join(unchanged) + "." if unchanged else "")


def _group_detail(g, md: bool, mark: str) -> str:
    detail = f"{g.changed}/{g.total}"
    if g.stack is not None and g.changed_layers != g.layers:
        detail += f" in {_layer_words(g.changed_layers)}"
    detail += "".join(f", {n} {what}" for n, what in ((g.added, "added"), (g.removed, "removed")) if n)
    largest = g.largest
    if largest is not None and _unbounded(largest):
        detail += f", {_q(largest.name, md)} to or from NaN/Inf"
    elif largest is not None and largest.relative == math.inf:
        detail += f", {_q(largest.name, md)} was all zeros"
    elif largest is not None and largest.relative == 0 and not largest.estimated:
        detail += ", values equal"          # bytes changed, numbers not: a lossless cast
    elif largest is not None and largest.relative is not None:
        detail += f", up to {mark}{_num(largest.relative)}"
        layer = place(largest.name).layer
        if layer is not None and len(g.changed_layers) > 1:
            detail += f" in layer {layer}"
    return detail


def _largest(s: Summary, md: bool, mark: str) -> str:
    if not s.top:
        return ""
    return f"{_b('Largest', md)} ‖Δ‖/‖W‖: " + ", ".join(
        f"{_q(t.name, md)} " + ("(to or from NaN/Inf)" if _unbounded(t) else
                                "(was all zeros)" if t.relative == math.inf else f"{mark}{_num(t.relative)}")
        for t in s.top) + "."


def _layer_words(layers: set[int]) -> str:
    return ("layer " if len(layers) == 1 else "layers ") + layer_span(sorted(layers))


# ----------------------------------------------------------------------------- text

def _table(head: list[str], rows: list[list[str]], colour: bool = False) -> list[str]:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = ["  " + line(head)]
    for row in rows:
        rendered = "  " + line(row)
        code = _COLOURS.get(row[1]) if colour and len(row) > 1 else None
        out.append(f"\x1b[{code}m{rendered}\x1b[0m" if code else rendered)
    return out


def _sections(review: Review) -> list[tuple[FileDiff | None, list[NumberDiff]]]:
    """(checkpoint, numbers shown with it): the metrics files' numbers go with the one
    checkpoint compared, or form their own section first when there are several or none."""
    if len(review.files) == 1:
        return [(review.files[0], review.files[0].numbers + review.numbers)]
    out = [(None, review.numbers)] if any(n.changed for n in review.numbers) else []
    return out + [(d, d.numbers) for d in review.files]


def _title(diff: FileDiff, md: bool = False) -> str:
    old, new = (_dtype(f, md) if f else f for f in (diff.old_format, diff.new_format))
    fmt = new or old
    if old and new and old != new:
        fmt = f"{old} → {new}"
    if diff.shards is not None:            # a sharded checkpoint: its files on each side
        old, new = (f"{n} shard{'s' if n != 1 else ''}" for n in diff.shards)
        fmt += f", {old if old == new or not diff.shards[1] else new if not diff.shards[0] else f'{old} → {new}'}"
    new_file = ", new file" if diff.shards is None else ", new"
    state = new_file if diff.old_format is None else ", deleted" if diff.new_format is None else ""
    return fmt + state + (", identical" if diff.note == "identical" else "")


def _opening(diff: FileDiff, numbers: list[NumberDiff], md: bool) -> str:
    """The paragraph; for a file with no tensors gitmodel reads (no known format, a compressed
    archive), what happened to its bytes, which is all a review can say of it."""
    if diff.tensors:
        return paragraph(summarize(diff, numbers), md)
    if diff.old_size is None:
        said = f"New file of {diff.new_size or 0:,} bytes"
    elif diff.new_size is None:
        said = f"Deleted: it had {diff.old_size:,} bytes"
    elif diff.note == "identical":
        said = "Content unchanged"
    else:
        said = f"Content changed ({diff.old_size:,} → {diff.new_size:,} bytes)"
    return _b(said, md) + "; no tensors gitmodel can read in it, so no numbers."


def text(review: Review, colour: bool = False, all_tensors: bool = False, sort: str = "change") -> str:
    out = []
    for diff, numbers in _sections(review):
        out.append(f"{quote_path(diff.path)} ({_title(diff)})" if diff else "metrics and params files")
        if diff is not None:
            out += textwrap.wrap(_opening(diff, numbers, md=False), WRAP,
                                 initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
        for head, rows, note in _number_tables(numbers, all_tensors, md=False):
            if rows:
                out.append("")
                out += _table(head, rows)
            if note:
                out.append(f"  {note}")
        if diff is not None:
            head, rows = _tensor_rows(diff, all_tensors, sort)
            if rows:
                out.append("")
                out += _table(head, rows, colour)
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- Markdown

def _md_escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(c) for c in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def markdown(review: Review, all_tensors: bool = False, sort: str = "change") -> str:
    """The review in Markdown, within MARKDOWN_BUDGET characters: the checkpoints' headings and
    paragraphs first (those that do not fit are left out, counted), then the metric and
    parameter tables (in half the room left, if there are tensor tables), then the tensor
    tables share the room left, a row each in turn; a table cut short says how many rows it
    leaves out."""
    sections = []                # (heading and paragraph, number tables, tensor table, title words)
    for diff, numbers in _sections(review):
        head = [f"### {_code(quote_path(diff.path))} ({_title(diff, md=True)})" if diff else
                "### Metrics and params files", ""]
        if diff is not None:
            head += [_opening(diff, numbers, md=True), ""]
        tables = [(_md_table(columns, rows) if rows else [], note)
                  for columns, rows, note in _number_tables(numbers, all_tensors, md=True)]
        columns, rows = _tensor_rows(diff, all_tensors, sort, md=True) if diff is not None else (HEAD, [])
        table = _md_table(columns, [[_code(r[0]), *r[1:]] for r in rows]) if rows else []
        what = "tensors" if all_tensors else "changed, added and removed tensors"
        sections.append((head, tables, table, what))
    size = lambda lines: sum(len(line) + 1 for line in lines)     # noqa: E731
    cut_note = 200                       # a cut table's note, at most
    # A tensor table's <details> lines and its note, at most (the longest summary it can have)
    wrapper = size(["<details><summary>The first 999999 of 999999 changed, added and removed "
                    f"tensors, {max(SORT_TITLES.values(), key=len)}</summary>", "", "", "</details>",
                    ""]) + cut_note
    out = ["## Model changes", ""]
    room = MARKDOWN_BUDGET - 200 - size(out)
    kept = []
    for section in sections:             # headings, paragraphs and every table's head first
        head, tables, table, _ = section
        need = size(head) + sum(size(t[:2]) + len(note) + 8 + (cut_note if t else 0) for t, note in tables) \
            + (wrapper + size(table[:3]) if table else 0)       # its largest change at least
        if need <= room:                 # one that fits may follow one that does not
            room -= need
            kept.append(section)

    def rows_that_fit(table: list[str], spare: int = 0) -> int:
        """Rows of `table` that fit in the room left but `spare`; the room they take."""
        nonlocal room
        shown = 2                        # the head and the rule, counted above
        while shown < len(table) and len(table[shown]) + 1 <= room - spare:
            room -= len(table[shown]) + 1
            shown += 1
        return shown
    # Metric and parameter tables may take half the room: the tensors' rows need the rest.
    spare = room // 2 if any(table for _, _, table, _ in kept) else 0
    numbers_shown = [[rows_that_fit(t, spare) for t, _ in tables] for _, tables, _, _ in kept]
    # The tensor tables share the rest row by row, each its largest changes first: with many
    # checkpoints, every one shows its top rows rather than the first few all of theirs.
    room += sum(size(table[2:3]) for _, _, table, _ in kept)     # reserved for them above
    tensor_rows = [2 if table else 0 for _, _, table, _ in kept]
    while True:
        grew = False
        for i, (_, _, table, _) in enumerate(kept):
            if table and tensor_rows[i] < len(table) and len(table[tensor_rows[i]]) + 1 <= room:
                room -= len(table[tensor_rows[i]]) + 1
                tensor_rows[i] += 1
                grew = True
        if not grew:
            break
    for (head, tables, table, what), shown_rows, rows in zip(kept, numbers_shown, tensor_rows):
        out += head
        for (number_table, note), shown in zip(tables, shown_rows):
            if number_table:
                out += number_table[:shown] + [""]
                if shown < len(number_table):
                    out += [f"_{len(number_table) - shown} more row(s) not shown: a pull-request "
                            "comment holds 65,536 characters. `gitmodel diff --format json` "
                            "lists them._", ""]
            if note:
                out += [f"_{note}_", ""]
        if not table:
            continue
        total, left = len(table) - 2, len(table) - rows
        title = f"All {total} {what}" if not left else f"The first {total - left} of {total} {what}"
        out += [f"<details><summary>{title}, {SORT_TITLES[sort]}</summary>", ""]
        out += table[:rows] if rows > 2 else []
        if left:
            out += ["", f"_{left} more not shown: a pull-request comment holds 65,536 "
                    "characters. `gitmodel diff --format json` lists every tensor._"]
        out += ["", "</details>", ""]
    if not sections:                     # a comment posted for every pull request says so
        out += ["No checkpoint, metrics or params file changed.", ""]
    if len(kept) < len(sections):
        out += [f"_{len(sections) - len(kept)} more section(s) not shown: a pull-request "
                "comment holds 65,536 characters. `gitmodel diff --format json` lists them._", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- JSON

def to_json(review: Review, sort: str = "change") -> str:
    """JSON with non-finite numbers as null (JSON has no NaN or Infinity)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [clean(v) for v in value]
        return value

    checkpoints = []
    for diff in review.files:
        s = summarize(diff)
        ordered = replace(diff, tensors=sorted_tensors(diff.tensors, sort))
        data = ordered.to_json()
        data["summary"] = {
            "counts": s.counts, "elements_changed": s.elements_changed,
            "elements_total": s.elements_total, "alarms": [asdict(a) for a in s.alarms],
            "modules": [{"label": g.label, "stack": g.stack, "block": g.block, "changed": g.changed,
                         "total": g.total, "changed_layers": sorted(g.changed_layers),
                         "largest": g.largest.name if g.largest else None,
                         "largest_relative": g.largest.relative if g.largest else None}
                        for g in s.groups],
            "top": [t.name for t in s.top]}
        checkpoints.append(data)
    numbers = [dict(asdict(n), verdict=n.verdict()) for n in review.numbers]
    return json.dumps(clean({"checkpoints": checkpoints, "numbers": numbers}), indent=2)


# ----------------------------------------------------------------------------- log

def _tensor_counts(old, new) -> str:
    """Counts such as "2 changed, 1 added" between two versions; names are paired by
    occurrence, as in a diff."""
    before, after = by_occurrence(old.tensors)[0], by_occurrence(new.tensors)[0]
    changed = sum(key in before and (before[key].digest, before[key].dtype, before[key].shape)
                  != (t.digest, t.dtype, t.shape) for key, t in after.items())
    added = sum(key not in before for key in after)
    removed = sum(key not in after for key in before)
    parts = [f"{changed} changed"] + [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed")) if n]
    return ", ".join(parts)


def log_lines(versions: list) -> list[str]:
    """`gitmodel log`: per version (newest first) a line with the commit, size, tensors and
    how many changed, were added and were removed since the version before (and the path it
    was renamed from), then its metrics and its parameters."""
    import datetime
    lines = []
    for i, version in enumerate(versions):
        commit, ptr = version.commit, version.pointer
        older = versions[i + 1] if i + 1 < len(versions) else None
        when = datetime.datetime.fromtimestamp(commit.commit_time, datetime.timezone.utc)
        subject = commit.message.splitlines()[0] if commit.message else ""
        if older is None:
            moved = "first version"
        else:
            moved = _tensor_counts(older.pointer, ptr)
            if older.path != version.path:
                moved = f"renamed from {quote_path(older.path)}; {moved}"
        lines.append(f"{str(commit.id)[:10]}  {when:%Y-%m-%d %H:%M}  {_count(ptr.size)}B  "
                     f"{len(ptr.tensors)} tensors ({moved})  {subject}".rstrip())
        metrics = [(k, v) for k, (v, kind) in version.numbers.items() if kind == METRIC]
        params = [(k, v) for k, (v, kind) in version.numbers.items() if kind != METRIC]
        if metrics:
            lines.append("    metrics  " + "  ".join(f"{quote_name(k)}={format_number(v)}" for k, v in metrics))
        if params:
            lines.append("    params   " + "  ".join(f"{quote_name(k)}={format_number(v)}" for k, v in params))
    return lines
