"""Finding the repository and its gitmodel store."""

from __future__ import annotations

import subprocess
from pathlib import Path


class NotARepository(Exception):
    pass


def _rev_parse(*args: str, cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", *args], cwd=cwd, capture_output=True,
                             text=True, check=True)
    except subprocess.CalledProcessError:
        raise NotARepository("not inside a git repository") from None
    return out.stdout.strip()


def toplevel(cwd: str | Path | None = None) -> Path:
    return Path(_rev_parse("--show-toplevel", cwd=cwd))


def common_dir(cwd: str | Path | None = None) -> Path:
    """The git directory shared by every worktree of the repository."""
    return Path(_rev_parse("--path-format=absolute", "--git-common-dir", cwd=cwd))


def store_dir(cwd: str | Path | None = None) -> Path:
    return common_dir(cwd) / "gitmodel"
