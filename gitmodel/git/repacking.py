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
    retired = _retired(own, history.index_checkpoints(repository))
    return repacker.repack(session.store, [v for path, v in own.items() if path not in retired],
                           keyframes, say, whole=whole, based=based, retired=retired.values())


def _retired(histories: dict[str, list[str]], current: dict[str, str]) -> dict[str, tuple]:
    """{path: (its history, the content ids of its model's files in the index)} for the paths
    the index no longer holds whose model it still does: the shards a re-shard replaced, a
    single file saved as shards, or shards merged back into one file."""
    models: dict[tuple, list[str]] = {}
    for path, content in current.items():
        models.setdefault(_model(path), []).append(content)
    return {path: (versions, models[_model(path)]) for path, versions in histories.items()
            if path not in current and _model(path) in models}


def _model(path: str) -> tuple[str, str, str]:
    """(folder, stem, extension): what the files of one model share, a single file `STEM.EXT`
    or its shards `STEM-I-of-N.EXT` (revisions.shard_key)."""
    from gitmodel.git.revisions import shard_key
    shard = shard_key(path)
    if shard is not None:
        return shard
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    return (folder, stem, dot + ext) if dot else (folder, name, "")


def before_push(session) -> None:
    """Older versions become deltas, so the remote receives them small."""
    if deltas_enabled(session.cwd):
        repack_or_warn(session, "before the push",
                       lambda line: print(f"gitmodel: {line}", file=sys.stderr))


def repack_or_warn(session, when: str, say):
    """Repack for a push or a gc, which are right without it, only larger: a failure, even a
    defect of the repack's own, warns and lets them go on (a repack cut short leaves the store
    whole: its new packs are published before the old ones go). The report, or None."""
    try:
        return repack(session, None, quiet=True)
    except GitmodelError as err:
        say(f"warning: not repacked {when}: {err.full()}")
    except Exception as err:                     # noqa: BLE001 (not a KeyboardInterrupt)
        say(f"warning: not repacked {when}: internal error: {type(err).__name__}: {err}. This "
            "is a bug in gitmodel (`GITMODEL_DEBUG=1 gitmodel repack` shows where); "
            "`git config gitmodel.delta false` turns repacking off meanwhile")
    return None
