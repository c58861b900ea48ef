"""Pictures for a review (matplotlib, an optional dependency): where a model moved, layer by
layer, and how its metrics and parameters went over commits. Each function returns the
figure, so tests can read what it shows; `save` writes it."""

from __future__ import annotations

import math
from pathlib import Path

from gitmodel.errors import GitmodelError
from gitmodel.metrics import METRIC, better
from gitmodel.modules import BLOCK_ORDER, place
from gitmodel.pointer import quote_name
from gitmodel.quoting import quote_path

UNCHANGED, ABSENT = "#e4e4e4", "#ffffff"
MAX_BARS = 30                 # tensors outside the layers drawn as bars, largest first
MAX_PANELS = 12               # metrics panels; parameters get as many again at most
PANEL_COLUMNS = 3


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GitmodelError("--plot needs matplotlib", "pip install 'gitmodel[plot]'") from None
    return plt


# What matplotlib writes, by file name suffix.
IMAGE_SUFFIXES = {".png", ".svg", ".svgz", ".pdf", ".jpg", ".jpeg", ".tif", ".tiff", ".webp",
                  ".eps", ".ps", ".pgf", ".raw", ".rgba"}


def check_path(out: Path) -> None:
    """Raise GitmodelError unless `out` names an image matplotlib can write (checked before the
    work it would show)."""
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise GitmodelError(f"--plot {out}: the name must end in an image format "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})", "Nothing was written")
    if not out.parent.is_dir():
        raise GitmodelError(f"--plot {out}: there is no folder {out.parent}", "Nothing was written")


def save(fig, out: Path) -> None:
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.15)   # long labels stay whole
    _pyplot().close(fig)


# ----------------------------------------------------------------------------- diff --plot

def _grid(tensors: list) -> dict:
    """{stack: (roles, layers, {(role, layer): tensors})} of the tensors inside layers."""
    stacks: dict = {}
    for t in tensors:
        where = place(t.name)
        if where.layer is None:
            continue
        roles, layers, cells = stacks.setdefault(where.stack, ({}, set(), {}))
        roles.setdefault(where.role, (BLOCK_ORDER.index(where.block), len(roles)))
        layers.add(where.layer)
        cells.setdefault((where.role, where.layer), []).append(t)
    return stacks


def _cell(found: list) -> tuple[float, str]:
    """(value, marker) of one heatmap cell: the largest change among its tensors (several
    when names hold more numbers, as experts); nan for unchanged; a marker for tensors added
    (+), removed (−), retyped (≠) or with new NaN/Inf (!)."""
    value, marker = math.nan, ""
    for t in found:
        if t.new_nonfinite:
            marker = "!"
        if t.status == "added":
            marker = "+"
        elif t.status == "removed":
            marker = "−"
        elif t.status == "changed":
            if str(t.old) != str(t.new) and marker != "!":
                marker = "≠"
            r = t.relative
            value = max(value if not math.isnan(value) else 0.0, r if r is not None else 0.0)
    return value, marker


def changes_by_layer(files: list):
    """One heatmap per stack of layers (rows: the tensor's role in its layer, in block order;
    columns: layers; colour: ‖Δ‖/‖W‖ on a log scale, grey where unchanged), and bars for the
    tensors outside the layers. Several checkpoints are drawn one under the other."""
    plt = _pyplot()
    from matplotlib import colors, gridspec, patheffects, ticker
    import numpy as np

    panels = []               # (kind, path, payload, height in rows)
    for diff in files:
        if not any(t.status != "unchanged" for t in diff.tensors):
            continue
        for stack, (roles, layers, cells) in _grid(diff.tensors).items():
            order = sorted(roles, key=lambda r: roles[r])
            panels.append(("heat", diff, (stack, order, sorted(layers), cells), len(order)))
        outside = [t for t in diff.tensors if place(t.name).layer is None and t.status != "unchanged"]
        if outside:
            outside.sort(key=lambda t: -(t.relative or 0.0))
            panels.append(("bars", diff, outside[:MAX_BARS], min(len(outside), MAX_BARS)))
    if not panels:
        raise GitmodelError("nothing to plot: no checkpoint changed")

    def scale(tensors) -> tuple[float, float]:
        values = [t.relative for t in tensors if t.status == "changed" and t.relative is not None
                  and 0 < t.relative < math.inf]
        top = max(values, default=1.0)
        low = max(min(values, default=top / 10), top / 1e4)
        return (top / 10 if low >= top else low), top

    # The heatmaps' colours span the changes inside the layers only: one outlier outside them
    # (a new head) would otherwise wash the layers out; bars show their own lengths.
    low, top = scale([t for d in files for t in d.tensors if place(t.name).layer is not None])
    bar_low, bar_top = scale([t for d in files for t in d.tensors if place(t.name).layer is None])
    norm = colors.LogNorm(vmin=low, vmax=top)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad=UNCHANGED)
    estimated = any(t.estimated for d in files for t in d.tensors if t.status == "changed")
    measure = "|Δ‖W‖|/‖W‖ (lower bound: data not compared)" if estimated else "‖Δ‖/‖W‖"

    heights = [max(h, 2) * 0.26 for _, _, _, h in panels]
    fig = plt.figure(figsize=(11, sum(heights) + 0.85 * len(panels) + 0.4))
    gap = 0.85                                   # inches between panels: a title and tick labels
    grid = gridspec.GridSpec(len(panels), 2, height_ratios=heights, width_ratios=[60, 1],
                             hspace=gap / (sum(heights) / len(heights)), wspace=0.02, figure=fig)
    image = None
    for i, (kind, diff, payload, _) in enumerate(panels):
        ax = fig.add_subplot(grid[i, 0])
        if kind == "heat":
            stack, order, layers, cells = payload
            span = list(range(layers[0], layers[-1] + 1))
            data = np.full((len(order), len(span)), math.nan)
            present = np.zeros(data.shape, bool)
            for (role, layer), found in cells.items():
                r, c = order.index(role), span.index(layer)
                value, marker = _cell(found)
                data[r, c], present[r, c] = value, True
                if marker:
                    ax.text(c, r, marker, ha="center", va="center", fontsize=9, fontweight="bold",
                            color="white", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
            shown = np.ma.masked_invalid(np.where(data > 0, data, np.where(np.isnan(data), np.nan, low)))
            image = ax.imshow(shown, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            if not present.all():        # a role a layer lacks stays white, not "unchanged"
                ax.imshow(np.ma.masked_where(present, np.ones(data.shape)), aspect="auto",
                          cmap=colors.ListedColormap([ABSENT]), interpolation="nearest")
            ax.set_yticks(range(len(order)), [_name(o) for o in order], fontsize=7)
            step = max(1, math.ceil(len(span) / 20))
            ax.set_xticks(range(0, len(span), step), [str(span[j]) for j in range(0, len(span), step)],
                          fontsize=7)
            ax.set_xlabel("layer", fontsize=8)
            ax.set_title(f"{_text(quote_path(diff.path))} · {_name(stack) if stack else 'layers'}: {measure} per layer",
                         fontsize=9, loc="left")
        else:
            names = [t.name for t in payload][::-1]
            widths = [(t.relative or 0.0) for t in payload][::-1]
            widths = [w if 0 < w < math.inf else bar_low for w in widths]   # "from 0": drawn short
            ax.barh(range(len(names)), widths, color="#d9822b", edgecolor="#7a4a1c", linewidth=0.4)
            ax.set_xscale("log")
            ax.set_xlim(bar_low / 2, bar_top * 2)
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_yticks(range(len(names)), [_text(_bar_label(t)) for t in payload][::-1], fontsize=7)
            ax.set_xlabel(measure, fontsize=8)
            ax.set_title(f"{_text(quote_path(diff.path))}: tensors outside the layers", fontsize=9, loc="left")
        ax.tick_params(length=2, labelsize=7)
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[:, 1]))
        short = "|Δ‖W‖|/‖W‖, a lower bound" if estimated else measure   # the titles say why
        bar.set_label(f"{short}, log scale", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        fig.text(0.27, 0.004, "grey: unchanged   white: no such tensor   ! new NaN/Inf   + added   "
                 "− removed   ≠ dtype or shape changed", fontsize=7, color="#444444")
    tall = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.27, right=0.93, top=1 - 0.3 / tall, bottom=0.55 / tall)
    return fig


def _shown(text: str) -> str:
    """Text matplotlib can draw: a file name that is not UTF-8 (its bytes kept as surrogate
    escapes) shows a replacement character where git would show an octal escape."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:            # a lone surrogate from a header's JSON escape
        return text.encode("utf-8", "replace").decode("utf-8")


def _text(text: str) -> str:
    """Text from a checkpoint, a metrics file or git (names, keys, paths) as matplotlib draws
    it as it is: `$` escaped, which would start mathtext (and a formula that does not parse
    fails the whole picture)."""
    return _shown(text).replace("$", r"\$")


def _name(text: str) -> str:
    """A tensor name, a part of one or a key: quoted as the pointer quotes names (control
    characters escaped, as in the text report), then as `_text`."""
    return _text(quote_name(text))


def _bar_label(t) -> str:
    mark = {"added": " (added)", "removed": " (removed)"}.get(t.status, "")
    if t.status == "changed" and str(t.old) != str(t.new):
        mark = " (dtype/shape)"
    if t.new_nonfinite:
        mark += " (new NaN/Inf)"
    if t.relative == math.inf:
        mark += " (was all zeros)"
    return quote_name(t.name) + mark


# ----------------------------------------------------------------------------- log --plot

def numbers_over_commits(versions: list, title: str):
    """Each metric on its own axis over commits (oldest first), then each parameter that
    varies, apart and drawn as steps; constant parameters are listed beneath."""
    metric_keys = list(dict.fromkeys(k for v in versions for k, (_, kind) in v.numbers.items() if kind == METRIC))
    param_keys = list(dict.fromkeys(k for v in versions for k, (_, kind) in v.numbers.items() if kind != METRIC))
    varying = [k for k in param_keys if len({v.numbers.get(k, (None,))[0] for v in versions}) > 1]
    constant = [k for k in param_keys if k not in varying]
    if not metric_keys and not param_keys:
        raise GitmodelError(f"no metrics or parameters recorded in the versions of {title}",
                            "see docs/review.md: metadata, checkpoint scalars, or a metrics "
                            "file named in .gitmodel")
    plt = _pyplot()
    shown_metrics, shown_params = metric_keys[:MAX_PANELS], varying[:MAX_PANELS]
    labels = [str(v.commit.id)[:7] for v in versions]
    rows_m = math.ceil(len(shown_metrics) / PANEL_COLUMNS)
    rows_p = math.ceil(len(shown_params) / PANEL_COLUMNS)
    columns = min(PANEL_COLUMNS, max(len(shown_metrics), len(shown_params), 1))
    fig = plt.figure(figsize=(4.2 * columns, 2.9 * (rows_m + rows_p) + 1.0))
    grid = fig.add_gridspec(max(rows_m + rows_p, 1), columns, hspace=0.95, wspace=0.35)

    def panel(index: int, row_offset: int, key: str, is_metric: bool):
        ax = fig.add_subplot(grid[row_offset + index // columns, index % columns])
        points = [(i, v.numbers[key][0]) for i, v in enumerate(versions) if key in v.numbers]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if is_metric:
            ax.plot(xs, ys, marker="o", color="tab:blue", label=_name(key))
            way = better(key)
            hint = " (lower is better)" if way < 0 else " (higher is better)" if way > 0 else ""
            ax.set_title(f"{_name(key)}{hint}", fontsize=9)
        else:
            ax.step(xs, ys, where="post", marker="o", color="tab:grey", label=_name(key))
            ax.set_title(f"parameter: {_name(key)}", fontsize=9)
        ax.set_ylabel(_name(key), fontsize=8)
        ticks = range(0, len(labels), max(1, math.ceil(len(labels) / 8)))
        ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=40, ha="right", fontsize=7)
        ax.set_xlim(-0.3, len(labels) - 0.7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)

    for i, key in enumerate(shown_metrics):
        panel(i, 0, key, True)
    for i, key in enumerate(shown_params):
        panel(i, rows_m, key, False)
    notes = []
    if constant:
        notes.append("constant: " + ", ".join(f"{_name(k)}={versions[-1].numbers.get(k, (math.nan,))[0]:g}"
                                              for k in constant[:8]) + (" …" if len(constant) > 8 else ""))
    left_out = len(metric_keys) - len(shown_metrics) + len(varying) - len(shown_params)
    if left_out:
        notes.append(f"{left_out} more not drawn (see gitmodel log)")
    fig.suptitle(f"{_text(quote_path(title))}: metrics" + (" and parameters" if shown_params else "") + " by commit",
                 fontsize=11)
    if notes:
        fig.text(0.01, 0.005, "; ".join(notes), fontsize=7, color="#555555")
    return fig
