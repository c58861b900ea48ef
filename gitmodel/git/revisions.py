"""Pointers of tracked files at a revision, in the index, or in the work tree (for diff, show, log)."""

from __future__ import annotations

import os
import posixpath
import subprocess
from pathlib import Path

import pygit2

from gitmodel import checkpoint, pointer as pointers
from gitmodel.pointer import Pointer
from gitmodel.store.objects import Store

WORK_TREE, INDEX = None, ":index"      # the two sides that are not revisions


class RevisionError(Exception):
    pass


def _from_blob(repo: pygit2.Repository, oid) -> Pointer | None:
    kind, size = repo.odb.read_header(oid)
    if kind != pygit2.GIT_OBJECT_BLOB or size > pointers.MAX_POINTER_SIZE:
        return None
    data = repo[oid].data
    if not pointers.is_pointer_prefix(data[:len(pointers.MAGIC_PREFIX)]):
        return None
    return pointers.parse(data)


def pointer_at(repo: pygit2.Repository, side: str | None, path: str, store: Store,
               tracked: bool = True) -> Pointer | None:
    """The pointer of `path` on one side: a revision, INDEX, or WORK_TREE (whose file, if
    `tracked` by gitmodel, is cleaned into the store unless it is a pointer already). None if
    absent or not a checkpoint."""
    if side is INDEX:
        entry = repo.index[path] if path in repo.index else None
        return _from_blob(repo, entry.id) if entry is not None else None
    if side is WORK_TREE:
        file = Path(repo.workdir) / path
        if not file.is_file():
            return None
        with open(file, "rb") as f:
            head = f.read(len(pointers.MAGIC_PREFIX))
            f.seek(0)
            if pointers.is_pointer_prefix(head):
                return pointers.parse(f.read(pointers.MAX_POINTER_SIZE + 1))
            if not tracked:
                return None
            text = checkpoint.clean(f, store)
        return pointers.parse(text) if text else None
    try:
        obj = repo.revparse_single(side).peel(pygit2.Commit).tree[path]
    except (KeyError, ValueError, pygit2.GitError):
        return None
    return _from_blob(repo, obj.id)


def from_cwd(path: str, cwd: Path | None = None) -> str:
    """A path given relative to the current directory, made relative to the top of the work
    tree (what git objects and the index use)."""
    out = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=cwd, capture_output=True, text=True)
    joined = posixpath.normpath(posixpath.join(out.stdout.strip(), path))
    if joined == ".." or joined.startswith("../"):
        raise RevisionError(f"{path} is outside the repository")
    return joined


def split_spec(spec: str, cwd: Path | None = None) -> tuple[str | None, str]:
    """`REV:PATH` as git reads it (PATH from the top, or from here when it starts with ./ or
    ../), or a bare work-tree PATH (from here): (revision or WORK_TREE, path from the top)."""
    rev, sep, path = spec.partition(":")
    if not sep:
        return WORK_TREE, from_cwd(spec, cwd)
    side = rev if rev else INDEX                      # `:PATH` is the index, as in git
    if path.startswith(("./", "../")):
        return side, from_cwd(path, cwd)
    return side, path


def check_revision(repo: pygit2.Repository, rev: str) -> None:
    try:
        repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise RevisionError(f"unknown revision {rev!r}") from None


def changed_paths(workdir: Path, revs: list[str], cached: bool, paths: list[str]) -> list[str]:
    """What `git diff --name-only` lists for these arguments (git applies its own stat cache
    and runs the clean filter where a work-tree file changed)."""
    args = ["git", "diff", "--name-only", "-z", "--no-renames"]
    if cached:
        args.append("--cached")
    result = subprocess.run(args + revs + ["--"] + paths, cwd=workdir, capture_output=True)
    if result.returncode != 0:
        raise RevisionError(result.stderr.decode(errors="replace").strip())
    return [os.fsdecode(p) for p in result.stdout.split(b"\0") if p]


def tracked_paths(workdir: Path, paths: list[str]) -> set[str]:
    """The paths whose `filter` attribute is gitmodel (one `git check-attr` for all)."""
    if not paths:
        return set()
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths)
    result = subprocess.run(["git", "check-attr", "-z", "--stdin", "filter"], cwd=workdir,
                            input=listing, capture_output=True)
    fields = result.stdout.split(b"\0")
    return {os.fsdecode(fields[i]) for i in range(0, len(fields) - 2, 3)
            if fields[i + 2] == b"gitmodel"}


def sides(revs: list[str], cached: bool) -> tuple[str | None, str | None]:
    """(old, new) sides with git diff's meaning of 0, 1 or 2 revisions and --cached."""
    if len(revs) > 2:
        raise RevisionError("at most two revisions")
    if len(revs) == 2:
        return revs[0], revs[1]
    if len(revs) == 1:
        return revs[0], INDEX if cached else WORK_TREE
    return ("HEAD", INDEX) if cached else (INDEX, WORK_TREE)


def history_of(repo: pygit2.Repository, path: str, rev: str = "HEAD", limit: int | None = None):
    """(commit, pointer) for each commit reachable from `rev` that changed `path`'s
    checkpoint, newest first (first-parent view of each commit)."""
    try:
        start = repo.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise RevisionError(f"unknown revision {rev!r}") from None

    def blob_id(commit):
        try:
            return commit.tree[path].id
        except KeyError:
            return None

    count = 0
    for commit in repo.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME):
        current = blob_id(commit)
        if current is None:
            continue
        parents = commit.parents
        if parents and any(blob_id(p) == current for p in parents):
            continue
        ptr = _from_blob(repo, current)
        if ptr is None:
            continue
        yield commit, ptr
        count += 1
        if limit is not None and count >= limit:
            return
