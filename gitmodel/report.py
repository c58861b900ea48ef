"""Rendering checkpoint diffs: a terminal table, Markdown for pull-request comments, JSON."""

from __future__ import annotations

import json
import math

from gitmodel.pointer import format_number
from gitmodel.review import FileDiff, TensorDiff

_COLOURS = {"added": "32", "removed": "31", "changed": "33"}


def _num(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value * 100:.3g}%"
    if kind == "cos":
        return f"{value:.6f}"
    return f"{value:.3g}"


def _change_cells(t: TensorDiff) -> list[str]:
    c = t.change
    if c is None:
        return [t.note or "", "", "", "", ""]
    return [_num(c.relative_l2, "g"), _num(c.max_abs, "g"), _num(c.cosine, "cos"),
            _num(c.changed_fraction, "pct"), str(c.new_nonfinite or 0)]


HEAD = ["tensor", "status", "dtype/shape", "‖Δ‖/‖W‖", "max|Δ|", "cosine", "changed", "new NaN/Inf"]


def _rows(diff: FileDiff, all_tensors: bool) -> list[list[str]]:
    rows = []
    for t in diff.tensors:
        if t.status == "unchanged" and not all_tensors:
            continue
        shape = t.new or t.old or ""
        if t.status == "changed" and t.old != t.new:
            shape = f"{t.old} → {t.new}"
        rows.append([t.name, t.status, shape, *_change_cells(t)])
    return rows


def _summary(diff: FileDiff) -> str:
    parts = [f"{diff.count(s)} {s}" for s in ("changed", "added", "removed", "unchanged")]
    fmt = diff.new_format or diff.old_format
    if diff.old_format and diff.new_format and diff.old_format != diff.new_format:
        fmt = f"{diff.old_format} → {diff.new_format}"
    return f"{fmt}; tensors: " + ", ".join(parts)


def _metric_rows(diff: FileDiff) -> list[list[str]]:
    rows = []
    for key, old, new in diff.metrics:
        change = "–"
        if old is not None and new is not None:
            change = format_number(new - old)
            if not change.startswith("-"):
                change = "+" + change
        rows.append([key, "–" if old is None else format_number(old),
                     "–" if new is None else format_number(new), change])
    return rows


def text(diffs: list[FileDiff], colour: bool = False, all_tensors: bool = False) -> str:
    out = []
    for diff in diffs:
        out.append(f"{diff.path}: {_summary(diff)}" + (" (identical)" if diff.note == "identical" else ""))
        rows = _rows(diff, all_tensors)
        if rows:
            out += _table(HEAD, rows, colour)
        metrics = _metric_rows(diff)
        if metrics:
            out += _table(["metric", "old", "new", "change"], metrics, False)
        out.append("")
    return "\n".join(out)


def _table(head: list[str], rows: list[list[str]], colour: bool) -> list[str]:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = ["  " + line(head)]
    for row in rows:
        rendered = "  " + line(row)
        code = _COLOURS.get(row[1]) if colour and len(row) > 1 else None
        out.append(f"\x1b[{code}m{rendered}\x1b[0m" if code else rendered)
    return out


def _md_escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(c) for c in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def markdown(diffs: list[FileDiff], all_tensors: bool = False) -> str:
    out = ["## Model changes", ""]
    for diff in diffs:
        out.append(f"### `{diff.path}`")
        out.append("")
        out.append(_summary(diff) + (" (identical)" if diff.note == "identical" else ""))
        out.append("")
        rows = _rows(diff, all_tensors)
        if rows:
            out += _md_table(HEAD, [[f"`{r[0]}`", *r[1:]] for r in rows])
            out.append("")
        metrics = _metric_rows(diff)
        if metrics:
            out += _md_table(["Metric", "Old", "New", "Change"], metrics)
            out.append("")
    return "\n".join(out)


def to_json(diffs: list[FileDiff]) -> str:
    """JSON with non-finite numbers as null (JSON has no NaN or Infinity)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    return json.dumps(clean([d.to_json() for d in diffs]), indent=2)


def log_lines(versions: list) -> list[str]:
    """`gitmodel log`: one line per (commit, pointer), newest first."""
    import datetime
    lines = []
    for commit, ptr in versions:
        when = datetime.datetime.fromtimestamp(commit.commit_time, datetime.timezone.utc)
        metrics = "  ".join(f"{k}={format_number(v)}" for k, v in ptr.metrics)
        params = sum(ptr.params().values())
        subject = commit.message.splitlines()[0] if commit.message else ""
        lines.append(f"{str(commit.id)[:10]}  {when:%Y-%m-%d %H:%M}  {ptr.size:>12} B  "
                     f"{len(ptr.tensors):>5} tensors  {params:>12} params  {metrics}".rstrip()
                     + f"  {subject}")
    return lines
