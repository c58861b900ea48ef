"""Running a repack in a repository: which versions each path has, which are checked out,
which declare a base model (from git), and the settings (`gitmodel.keyframes`,
`gitmodel.delta`). The re-encoding itself is gitmodel/repack.py."""

from __future__ import annotations

import sys

from gitmodel.errors import GitmodelError
from gitmodel.git import history, repo


def deltas_enabled(cwd=None) -> bool:
    """Whether pushes and gc repack first (`git config gitmodel.delta`, default true)."""
    return repo.config_bool("gitmodel.delta", True, cwd=cwd)


def keyframes_setting(given: int | None, cwd=None) -> int:
    from gitmodel import repack
    if given is None:
        setting = repo.config_get("gitmodel.keyframes", cwd=cwd)
        try:
            given = int(setting) if setting else repack.KEYFRAMES
        except ValueError:
            raise GitmodelError(f"git config gitmodel.keyframes is {setting!r}, not a number",
                                "Set it to a whole number (1 stores every version whole)") from None
    if given < 1:
        raise GitmodelError(f"--keyframes must be at least 1, not {given}")
    return given


def repack(session, keyframes: int | None = None, quiet: bool = False):
    """Repack the session's store over the repository's histories; returns the RepackReport."""
    from gitmodel import repack as repacker
    keyframes = keyframes_setting(keyframes, session.cwd)
    repository = repo.open_repository(session.cwd)
    histories = history.versions_by_path(repository)
    declared, problems = history.declared_bases(repository, histories)
    say = (lambda line: None) if quiet else (lambda line: print(f"gitmodel: repack: {line}", file=sys.stderr))
    for problem in problems:
        print(f"gitmodel: warning: {problem}; its versions are repacked as if it declared none",
              file=sys.stderr)
    own = {path: versions for path, versions in histories.items() if path not in declared}
    based = [(histories[path], base) for path, base in declared.items()]
    whole = history.checked_out(repository) - {c for path in declared for c in histories[path]}
    return repacker.repack(session.store, own.values(), keyframes, say, whole=whole, based=based)


def before_push(session) -> None:
    """Older versions become deltas, so the remote receives them small. A failure only warns:
    the push is right without it, only larger."""
    if not deltas_enabled(session.cwd):
        return
    try:
        repack(session, None, quiet=True)
    except GitmodelError as err:
        print(f"gitmodel: warning: not repacked before the push: {err.full()}", file=sys.stderr)
