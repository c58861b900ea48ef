"""The merge driver git calls when both branches changed a tracked checkpoint.

Git hands us the three pointers (%O base, %A ours, %B theirs) and stores whatever we leave in
%A without cleaning it. Until tensor-wise merging exists, a checkpoint changed on both sides is
a conflict: %A keeps our pointer (so the work tree keeps our checkpoint) and the user picks a
side. Without this driver git would merge the pointer texts line by line and could produce a
pointer whose tensor table disagrees with its content.
"""

from __future__ import annotations

import sys
from pathlib import Path


def merge(base: Path, ours: Path, theirs: Path, path: str) -> int:
    if ours.read_bytes() == theirs.read_bytes():
        return 0
    sys.stderr.write(
        f"gitmodel: {path}: both sides changed this checkpoint. Keep one with "
        f"`git checkout --ours -- {path}` or `git checkout --theirs -- {path}`, then `git add`.\n")
    return 1
