"""Finding the checkpoints (pointer blobs) that commits reference, in-process with pygit2.

A push needs the pointers that the commits being pushed introduce: for each commit reachable
from the pushed tips but not from what the remote already has, the blobs it adds or changes
against its first parent (a root commit: its whole tree). A fetch needs the pointers in the
trees of the commits asked for. Blobs are recognised as pointers by size and first bytes, then
parsed; a blob that looks like a pointer but does not parse is reported, not skipped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pygit2

from gitmodel import pointer as pointers
from gitmodel.pointer import Pointer


class HistoryError(Exception):
    pass


def open_repository(cwd: Path | str | None = None) -> pygit2.Repository:
    path = pygit2.discover_repository(str(cwd or "."))
    if path is None:
        raise HistoryError("not inside a git repository")
    return pygit2.Repository(path)


def _commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit | None:
    try:
        return repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None


def _pointer(repo: pygit2.Repository, oid: pygit2.Oid, path: str, found: dict) -> None:
    if oid in found:
        return
    kind, size = repo.odb.read_header(oid)
    if kind != pygit2.GIT_OBJECT_BLOB or size > pointers.MAX_POINTER_SIZE:
        found[oid] = None
        return
    data = repo[oid].data
    if not pointers.is_pointer_prefix(data[:len(pointers.MAGIC_PREFIX)]):
        found[oid] = None
        return
    try:
        found[oid] = (path, pointers.parse(data))
    except pointers.PointerError as err:
        raise HistoryError(f"{path} (blob {oid}) is a damaged pointer: {err}") from None


def _walk_tree(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str, found: dict) -> None:
    for entry in tree:
        if entry.type_str == "tree":
            _walk_tree(repo, repo[entry.id], f"{prefix}{entry.name}/", found)
        elif entry.type_str == "blob":
            _pointer(repo, entry.id, prefix + entry.name, found)


def _result(found: dict) -> dict[str, str]:
    """{content id (hex): a path it was found at}, each checkpoint once."""
    out: dict[str, str] = {}
    for item in found.values():
        if item is not None:
            out.setdefault(item[1].content, item[0])
    return out


def pointers_in_trees(repo: pygit2.Repository, revs: Iterable[str]) -> dict[str, str]:
    """Every checkpoint in the trees of these revisions."""
    found: dict = {}
    for rev in revs:
        commit = _commit(repo, rev)
        if commit is None:
            raise HistoryError(f"unknown revision {rev!r}")
        _walk_tree(repo, commit.tree, "", found)
    return _result(found)


def pointers_introduced(repo: pygit2.Repository, tips: Iterable[str],
                        known: Iterable[str] = ()) -> dict[str, str]:
    """Checkpoints added or changed by commits reachable from `tips` but not from `known`
    (revisions the other side has; ones unknown here are ignored)."""
    tip_commits = [c for c in (_commit(repo, rev) for rev in tips) if c is not None]
    if not tip_commits:
        return {}
    walker = repo.walk(tip_commits[0].id, pygit2.enums.SortMode.TOPOLOGICAL)
    for commit in tip_commits[1:]:
        walker.push(commit.id)
    for rev in known:
        commit = _commit(repo, rev)
        if commit is not None:
            walker.hide(commit.id)
    found: dict = {}
    for commit in walker:
        if not commit.parents:
            _walk_tree(repo, commit.tree, "", found)
            continue
        diff = repo.diff(commit.parents[0].tree, commit.tree)
        for delta in diff.deltas:
            if delta.status != pygit2.enums.DeltaStatus.DELETED and \
                    delta.new_file.mode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
                _pointer(repo, delta.new_file.id, delta.new_file.path, found)
    return _result(found)


def all_refs(repo: pygit2.Repository) -> list[str]:
    return [name for name in repo.references if not name.startswith("refs/remotes/")
            and name != "refs/stash"] or ["HEAD"]


def remote_tracking(repo: pygit2.Repository, git_remote: str) -> list[str]:
    prefix = f"refs/remotes/{git_remote}/"
    return [name for name in repo.references if name.startswith(prefix)]


def iter_work_tree_pointers(repo: pygit2.Repository) -> Iterator[tuple[str, Pointer]]:
    """(path, pointer) for index entries whose work-tree file is still exactly the pointer
    the index holds (a pointer file edited by hand is the user's change: left alone)."""
    root = Path(repo.workdir)
    for entry in repo.index:
        path = root / entry.path
        try:
            if path.is_symlink() or path.stat().st_size > pointers.MAX_POINTER_SIZE:
                continue
            with path.open("rb") as f:
                head = f.read(len(pointers.MAGIC_PREFIX))
            if not pointers.is_pointer_prefix(head):
                continue
            data = path.read_bytes()
            if pygit2.hash(data) != entry.id:
                continue
            yield entry.path, pointers.parse(data)
        except (OSError, pointers.PointerError):
            continue
