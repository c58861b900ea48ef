"""Pointers of tracked files at a revision, in the index, or in the work tree (for diff, show, log)."""

from __future__ import annotations

import os
import posixpath
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitmodel.errors import GitmodelError
from gitmodel import checkpoint, pointer as pointers
from gitmodel.git import history
from gitmodel.git.history import DamagedPointer
from gitmodel.git.repo import (commit, index_entries, open_repository, pointer_blob, prefix, run_git,
                               toplevel)
from gitmodel.pointer import Pointer
from gitmodel.process import child_environment
from gitmodel.store.objects import Store

WORK_TREE, INDEX = None, ":index"      # the two sides that are not revisions


class RevisionError(GitmodelError):
    pass


def pointer_at(repo: pygit2.Repository, side: str | None, path: str, store: Store,
               tracked: bool = True) -> Pointer | None:
    """The pointer of `path` on one side: a revision, INDEX, or WORK_TREE (whose file, if
    `tracked` by gitmodel, gets its pointer computed, storing nothing, unless it is a pointer
    already). None if absent or not a checkpoint."""
    if side is WORK_TREE:
        if repo.workdir is None:
            raise RevisionError(f"{path}: a bare repository has no work tree",
                                "Name a version in it: REV:PATH (HEAD:PATH, say)")
        file = Path(repo.workdir) / path
        if file.is_symlink() or not file.is_file():     # git keeps a link as a link, never cleaned
            return None
        try:
            ptr = pointers.sniff_file(file)
        except pointers.PointerError as err:
            raise _damaged(DamagedPointer(path, "", str(err), place=history.WORK_TREE)) from None
        if ptr is not None or not tracked:
            return ptr
        with open(file, "rb") as f:
            text = checkpoint.clean(f, store, write=False)
        return pointers.parse(text) if text else None
    oid = _blob_at(repo, side, path)
    try:
        return pointer_blob(repo, oid, path) if oid is not None else None
    except pointers.PointerError as err:
        # The index's, if HEAD holds it too, is HEAD's: rewriting the commit mends both
        if side is INDEX and (repo.head_is_unborn or _blob_at(repo, "HEAD", path) != oid):
            raise _damaged(DamagedPointer(path, str(oid), history.why_damaged(err),
                                          place=history.INDEX)) from None
        raise _damaged(history.damaged_at(repo, "HEAD" if side is INDEX else side, path, oid, err)) from None


def _damaged(item: DamagedPointer) -> RevisionError:
    """A damaged pointer a command that reads one file met, said as everywhere else: where,
    what it breaks and its repair."""
    return RevisionError(f"{item}. It names no checkpoint, so there is nothing to read for it; "
                         f"{item.harm()}", item.rewrite_hint())


def _blob_at(repo: pygit2.Repository, side: str, path: str) -> pygit2.Oid | None:
    """The blob of `path` at a revision or in the index (during a conflict: ours)."""
    if side is INDEX:
        entry = index_entry(repo, path)
        return entry.id if entry is not None else None
    found = commit(repo, side)
    try:
        return found.tree[path].id if found is not None else None
    except KeyError:
        return None


def committed_raw(repo: pygit2.Repository, side: str | None, path: str, store: Store,
                  folder: Path, copies: dict[str, str]) -> Pointer | None:
    """The pointer of a tracked file that git holds as it is, not as a pointer (committed
    before it was tracked), computed without storing it from a copy of its bytes written into
    `folder` and named in `copies` ({content id: file}) for reading its tensors. None if the
    side has no such file."""
    oid = _blob_at(repo, side, path) if side is not WORK_TREE else None
    if oid is None or pointer_blob(repo, oid, path) is not None:
        return None
    copy = folder / str(oid)                # one copy per blob, whatever side names it
    with open(copy, "w+b") as f:            # streamed: the file may be larger than memory
        result = subprocess.run(["git", "cat-file", "blob", str(oid)], cwd=repo.workdir, stdout=f,
                                stderr=subprocess.PIPE, env=child_environment())
        if result.returncode != 0:
            return None
        f.seek(0)
        text = checkpoint.clean(f, store, write=False)
    ptr = pointers.parse(text) if text else None
    if ptr is not None:
        copies.setdefault(ptr.content, str(copy))
    return ptr


def index_entry(repo: pygit2.Repository, path: str):
    """The index entry of `path`; during a merge conflict, ours (stage 2)."""
    found = {entry.stage: entry for entry in index_entries(repo, path) if entry.path == path}
    return found.get(0, found.get(2))


def unmerged(repo: pygit2.Repository) -> dict[str, tuple]:
    """{path: (base, ours, theirs) index entries, None where absent} of conflicted paths."""
    found: dict[str, list] = {}
    for entry in index_entries(repo):
        if entry.stage:
            found.setdefault(entry.path, [None, None, None])[entry.stage - 1] = entry
    return {path: tuple(entries) for path, entries in found.items()}


def from_cwd(path: str, cwd: Path | None = None) -> str:
    """A path given relative to the current directory (or absolute), made relative to the top
    of the work tree (what git objects and the index use)."""
    if os.path.isabs(path):
        top = os.path.realpath(toplevel(cwd))
        path = os.path.relpath(os.path.realpath(path), top)
        joined = posixpath.normpath(path.replace(os.sep, "/"))
    else:
        joined = posixpath.normpath(posixpath.join(prefix(cwd), path))
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
    if commit(repo, rev) is None:
        raise RevisionError(f"unknown revision {rev!r}")


def expand_range(repo: pygit2.Repository, revs: list[str]) -> list[str]:
    """`A..B` as `A B`, and `A...B` as the merge base of A and B, then B (what `git diff`
    makes of them: a pull request's change is `main...HEAD`); an empty end is HEAD."""
    if len(revs) != 1 or ".." not in revs[0]:
        return revs
    three = "..." in revs[0]
    a, b = (end or "HEAD" for end in revs[0].split("..." if three else "..", 1))
    if not three:
        return [a, b]
    for rev in (a, b):
        check_revision(repo, rev)
    base = repo.merge_base(commit(repo, a).id, commit(repo, b).id)
    if base is None:
        raise RevisionError(f"{a} and {b} have no common ancestor")
    return [str(base), b]


def changed_paths(workdir: Path, revs: list[str], cached: bool, paths: list[str]) -> list[str]:
    """What `git diff --name-only` lists for these arguments (git applies its own stat cache
    and runs the clean filter where a work-tree file changed)."""
    args = ["diff", "--name-only", "-z", "--no-renames"] + (["--cached"] if cached else [])
    env = child_environment(GITMODEL_NO_STORE="1")       # git cleans changed files: store nothing
    result = run_git(*args, *revs, "--", *paths, cwd=workdir, env=env, check=False)
    if result.returncode != 0:
        raise RevisionError(result.stderr.decode(errors="replace").strip())
    return [os.fsdecode(p) for p in result.stdout.split(b"\0") if p]


def changes(workdir: Path, revs: list[str], cached: bool, paths: list[str]) -> list[tuple[str, str]]:
    """(old path, new path) of what `git diff -M` lists for these arguments: the same path
    twice, or a rename (git's own detection, on the pointers' text: a checkpoint moved as it
    was is a rename)."""
    args = ["diff", "--name-status", "-z", "-M"] + (["--cached"] if cached else [])
    env = child_environment(GITMODEL_NO_STORE="1")       # git cleans changed files: store nothing
    result = run_git(*args, *revs, "--", *paths, cwd=workdir, env=env, check=False)
    if result.returncode != 0:
        raise RevisionError(result.stderr.decode(errors="replace").strip())
    fields = [os.fsdecode(f) for f in result.stdout.split(b"\0")]
    out, i = [], 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        if status[:1] in ("R", "C"):
            out.append((fields[i + 1], fields[i + 2]) if status[:1] == "R" else (fields[i + 2], fields[i + 2]))
            i += 3
        else:
            out.append((fields[i + 1], fields[i + 1]))
            i += 2
    return out


def tracked_paths(workdir: Path | None, paths: list[str], drivers: tuple[str, ...] = ("gitmodel",),
                  cached: bool = False) -> set[str]:
    """The paths whose `filter` attribute is gitmodel, or one of `drivers` (one `git check-attr`;
    with `cached`, by the index's .gitattributes files only)."""
    if not paths:
        return set()
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths)
    result = run_git("check-attr", "-z", "--stdin", *(["--cached"] if cached else []), "filter",
                     cwd=workdir, input=listing)
    fields = result.stdout.split(b"\0")
    return {os.fsdecode(fields[i]) for i in range(0, len(fields) - 2, 3)
            if os.fsdecode(fields[i + 2]) in drivers}


def raw_in_index(repo: pygit2.Repository, workdir: Path) -> list[str]:
    """Tracked paths whose staged blob is the file itself, not a pointer (committed before
    the path was tracked): `git add --renormalize` stores them. Reads the headers of large
    blobs only, and skips blobs a partial clone has not fetched."""
    entries = {e.path: e.id for e in index_entries(repo) if e.is_file}
    raw = []
    for path in sorted(tracked_paths(workdir, list(entries))):
        try:
            _, size = repo.odb.read_header(entries[path])
        except KeyError:
            continue
        if size > pointers.MAX_POINTER_SIZE or not pointers.is_pointer_prefix(repo[entries[path]].data[:64]):
            raw.append(path)
    return raw


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
    """(commit, path, pointer) for each commit reachable from `rev` that changed `path`'s
    checkpoint, newest first (first-parent view of each commit). Like `git log --follow`, a
    commit that renamed the file (git's rename detection on the pointers) continues the
    history under the old path."""
    start = commit(repo, rev)
    if start is None:
        raise RevisionError(f"unknown revision {rev!r}")

    def blob_id(commit, name):
        try:
            return commit.tree[name].id
        except KeyError:
            return None

    count = 0
    for found in repo.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME):
        current = blob_id(found, path)
        if current is None:
            continue
        parents = found.parents
        if parents and any(blob_id(p, path) == current for p in parents):
            continue
        introduced = parents and all(blob_id(p, path) is None for p in parents)
        was = _renamed_from(repo, parents[0], found, path) if introduced else None
        ptr = pointer_blob(repo, current, path)
        if ptr is not None and (was is None or blob_id(parents[0], was) != current):
            yield found, path, ptr
            count += 1
            if limit is not None and count >= limit:
                return
        if was is not None:
            path = was


def _renamed_from(repo: pygit2.Repository, parent, found, path: str) -> str | None:
    """The path `path` had in `parent`, when `found` renamed it there: git's own rename
    detection (libgit2's would need blob contents a partial clone does not have)."""
    try:
        pairs = changes(Path(repo.workdir or repo.path), [str(parent.id), str(found.id)], False, [])
    except RevisionError:
        return None
    return next((was for was, now in pairs if now == path and was != path), None)


def diff(session, revs: list[str], cached: bool, paths: list[str], numbers: bool = True):
    """`gitmodel diff`: a Review of each checkpoint that differs between the two sides git
    diff would compare for these arguments, with the numbers of the metrics and params files
    `.gitmodel` names."""
    from gitmodel import review
    from gitmodel.git import metrics_files
    repository = open_repository()
    revs = expand_range(repository, revs)
    for rev in revs:
        check_revision(repository, rev)
    old_side, new_side = sides(revs, cached)
    chosen = metrics_files.settings()
    store = session.store
    fetch = session.fetcher() if numbers else None
    pairs = changes(Path.cwd(), revs, cached, paths)
    conflicted = unmerged(repository) if not revs else {}
    groups = sharded(pairs, lambda: files_at(Path.cwd(), old_side, paths), set(conflicted))
    grouped = {pair: group for group in groups for pair in group.pairs}
    tracked = tracked_paths(Path(repository.workdir or repository.path),
                            list(dict.fromkeys([p for pair in pairs for p in pair] +
                                               [p for group in groups for p in group.unchanged])))
    diffs = []
    with tempfile.TemporaryDirectory(prefix="gitmodel-diff-") as folder:
        copies: dict[str, str] = {}          # files committed raw: {content id: a copy}

        def version(side, name: str) -> Pointer | None:
            found = pointer_at(repository, side, name, store, name in tracked)
            if found is None and name in tracked:
                found = committed_raw(repository, side, name, store, Path(folder), copies)
            return found

        def on_disk(new: Pointer | None, path: str) -> dict[str, str] | None:
            return {**copies, **(_on_disk(repository, new, new_side, path) or {})} or None

        def shards_diff(group: Shards):
            # An unchanged file is the same on both sides: read once, from the old (never the
            # work tree, whose files would be read whole for their pointers)
            same = {name: version(old_side, name) for name in group.unchanged}
            old = _in_shard_order({**{name: version(old_side, name) for name in group.old}, **same})
            new = _in_shard_order({**{name: version(new_side, name) for name in group.new}, **same})
            if not old and not new:
                return None                         # no checkpoints
            if len({*old, *new}) == 1:              # one checkpoint among the files: as a file
                (path,) = {*old, *new}
                return review.diff_pointers(path, old.get(path), new.get(path), store, numbers, fetch,
                                            on_disk(new.get(path), path), chosen.rules)
            found = {**copies}
            for name, ptr in new.items():
                found.update(_on_disk(repository, ptr, new_side, name) or {})
            return review.diff_shards(group.label(old, new), old, new, store, numbers, fetch,
                                      found or None, chosen.rules)

        shown: set[int] = set()
        for was, path in dict.fromkeys(pairs):
            group = grouped.get((was, path))
            if group is not None:                       # one section for all the model's files
                if id(group) not in shown:
                    shown.add(id(group))
                    diffs += filter(None, [shards_diff(group)])
                continue
            if path in conflicted and was == path:      # a merge in progress: ours against theirs
                _, ours, theirs = conflicted[path]
                old = pointer_blob(repository, ours.id, path) if ours is not None else None
                new = pointer_blob(repository, theirs.id, path) if theirs is not None else None
                if old is not None or new is not None:
                    diffs.append(review.diff_pointers(f"{path} (unmerged: ours → theirs)", old, new,
                                                      store, numbers, fetch, rules=chosen.rules))
                continue
            old, new = version(old_side, was), version(new_side, path)
            if old is None and new is None:
                continue                                  # not a checkpoint
            label = path if was == path else f"{was} → {path}"    # renamed: old path's against new's
            diffs.append(review.diff_pointers(label, old, new, store, numbers, fetch,
                                              on_disk(new, path), chosen.rules))
    shared = metrics_files.compare(repository, old_side, new_side, chosen)
    if not diffs and not any(n.changed for n in shared):
        shared = []
    return review.Review(diffs, shared)


@dataclass
class Shards:
    """The files of one sharded checkpoint in a diff: those git lists as changed on each side,
    the pairs it listed them in, and the files of the model it does not list (unchanged)."""
    old: set[str] = field(default_factory=set)
    new: set[str] = field(default_factory=set)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    unchanged: set[str] = field(default_factory=set)

    def label(self, old: dict, new: dict) -> str:
        """`model-*-of-00004.safetensors`, or `… → model-*-of-00002.safetensors` where the
        files' folder, stem or count changed."""
        before, after = _shards_label(old), _shards_label(new)
        return before if before == after or not after else after if not before else f"{before} → {after}"


def _shard_name(path: str):
    """(folder, match of review.SHARD) of a shard's path; None for another file's."""
    from gitmodel.review import SHARD
    folder, _, name = path.rpartition("/")
    found = SHARD.fullmatch(name)
    return (folder, found) if found else None


def shard_key(path: str) -> tuple[str, str, str] | None:
    """(folder, stem, extension) shared by the files of one sharded checkpoint."""
    shard = _shard_name(path)
    return (shard[0], shard[1]["stem"], shard[1]["ext"]) if shard else None


def _in_shard_order(side: dict[str, Pointer | None]) -> dict[str, Pointer]:
    """The checkpoints among the files of a side, in model order: by file name, the shard
    index as a number."""
    def order(path: str):
        folder, found = _shard_name(path)
        return folder, found["stem"], found["ext"], int(found["count"]), int(found["index"])
    return {path: side[path] for path in sorted(side, key=order) if side[path] is not None}


def _shards_label(side: dict) -> str:
    counts: dict[tuple[str, str, str], set[str]] = {}
    for path in side:
        folder, found = _shard_name(path)
        counts.setdefault((folder, found["stem"], found["ext"]), set()).add(found["count"])
    return ", ".join(f"{folder + '/' if folder else ''}{stem}-*-of-{next(iter(n)) if len(n) == 1 else '*'}{ext}"
                     for (folder, stem, ext), n in counts.items())


def sharded(pairs: list[tuple[str, str]], listed, skip: set[str]) -> list[Shards]:
    """The sharded checkpoints among `pairs` (git diff -M's (old path, new path)): files of one
    folder named `STEM-I-of-N.EXT` with the same stem and extension, whatever N (a re-shard
    changes it), are one model. git's rename detection pairs any two shards whose pointers
    look alike: such a pair joins their models instead. `listed()` names the old side's files
    (within the diff's paths); those of a model that git does not list are unchanged. A model
    whose files come to one path stays a file (a shard's path given alone). `skip`: paths
    left as they are (conflicted)."""
    parent: dict[tuple, tuple] = {}

    def root(key):
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    ours = [(was, path) for was, path in pairs if was not in skip and path not in skip
            and shard_key(was) and shard_key(path)]
    for was, path in ours:
        a, b = root(shard_key(was)), root(shard_key(path))
        if a != b:
            parent[a] = b
    groups: dict[tuple, Shards] = {}
    for was, path in ours:
        group = groups.setdefault(root(shard_key(path)), Shards())
        group.old.add(was)
        group.new.add(path)
        group.pairs.append((was, path))
    if not groups:
        return []
    mentioned = {p for pair in pairs for p in pair}
    for path in listed():
        key = shard_key(path)
        if key is not None and root(key) in groups and path not in mentioned:
            groups[root(key)].unchanged.add(path)
    return [g for g in groups.values() if len(g.old | g.new | g.unchanged) > 1]


def files_at(workdir: Path, side: str, paths: list[str]) -> list[str]:
    """The files at a revision or in the index (INDEX) that the pathspecs `paths` name (every
    file without), from the top of the work tree."""
    if side is INDEX:
        args = ["ls-files", "-z", "--cached", "--full-name"]
    else:                           # (ls-tree takes no wildcards: a diff from the empty tree)
        empty = run_git("hash-object", "-t", "tree", "--stdin", input=b"", cwd=workdir).stdout.decode().strip()
        args = ["diff", "--name-only", "-z", "--no-renames", empty, side]
    result = run_git(*args, "--", *paths, cwd=workdir, check=False)
    if result.returncode != 0:
        raise RevisionError(result.stderr.decode(errors="replace").strip())
    return list(dict.fromkeys(os.fsdecode(p) for p in result.stdout.split(b"\0") if p))


def _on_disk(repository, new: Pointer | None, new_side, path: str) -> dict[str, str] | None:
    """The work-tree file to read the new version from (its pointer was computed, not stored)."""
    if new is None or new_side is not WORK_TREE:
        return None
    return {new.content: str(Path(repository.workdir) / path)}


def versions_of(repository: pygit2.Repository, path: str, rev: str = "HEAD", limit: int | None = None):
    """`gitmodel log`: a review.Version for each version of `path`, newest first."""
    from gitmodel import review
    from gitmodel.git import metrics_files
    chosen = metrics_files.settings()
    return [review.Version(found, ptr, metrics_files.of_version(repository, found, ptr, chosen), at)
            for found, at, ptr in history_of(repository, path, rev, limit)]
