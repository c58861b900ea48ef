"""The work tree: files left as pointers, put back through git so its index stays in step."""

from __future__ import annotations

import os
from pathlib import Path

from gitmodel.errors import GitmodelError
from gitmodel.git import repo


class RestoreError(GitmodelError):
    pass


def restore(paths: list[str], cwd: Path | None = None) -> None:
    """Replace pointer files in the work tree by their checkpoints: remove them, then check them
    out again from the index. Paths are passed literally (a name like `a[1].pt` must not match
    `a1.pt`)."""
    top = repo.toplevel(cwd)
    for path in paths:
        (top / path).unlink(missing_ok=True)
    listing = b"".join(os.fsencode(path) + b"\0" for path in paths)
    result = repo.run_git("--literal-pathspecs", "checkout", "--pathspec-from-file=-",
                          "--pathspec-file-nul", cwd=top, input=listing,
                          env=repo.without_skip_smudge(), check=False, capture=False)
    if result.returncode != 0:
        raise RestoreError("git checkout could not restore some files (see above)",
                           "They are safe in git and in the store; once the cause is fixed, "
                           "`git checkout -- PATH` (or `git reset --hard`) writes them")
