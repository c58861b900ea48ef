"""Progress bars on stderr, shown only on a terminal and never with -q."""

from __future__ import annotations

import sys


def bar(total: int, label: str, quiet: bool = False):
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())
