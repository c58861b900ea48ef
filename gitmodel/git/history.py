"""Finding the checkpoints (pointer blobs) that commits reference, in-process with pygit2.

A commit's history references the pointers its commits introduce: for each commit, the blobs
it adds or changes against its first parent (a root commit: its whole tree). A push needs those
of every commit reachable from the pushed tips; a checkout or fetch needs the pointers in the
trees of the commits asked for. A blob that looks like a pointer but does not parse is
reported, not skipped silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pygit2

from gitmodel import pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.git.repo import commit as _commit, index_entries, pointer_blob, prefetch_pointers
from gitmodel.pointer import Pointer
from gitmodel.quoting import quote_path


class HistoryError(GitmodelError):
    pass


INDEX = "the index"         # where a damaged pointer outside any commit is
WORK_TREE = "the work tree"


@dataclass
class DamagedPointer:
    """A blob that starts like a pointer but does not parse, as history holds it: the oldest
    commit (of those walked) that introduced it, its path there, and why it does not parse;
    or, outside any commit, where it is (`place`: the index). It names no checkpoint: there
    is nothing to check, fetch or upload for it."""
    path: str
    blob: str
    why: str
    commit: str | None = None        # None: not from a commit (the index, a tag of a tree)
    commits: int = 1                 # how many walked commits introduced it
    place: str | None = None         # where it is when not in a commit: INDEX

    def where(self) -> str:
        if self.commit:
            return f"{quote_path(self.path)} in commit {self.commit[:12]}"
        return f"{quote_path(self.path)} in {self.place}" if self.place else quote_path(self.path)

    def __str__(self) -> str:
        again = f" (and in {self.commits - 1} later commit(s))" if self.commits > 1 else ""
        blob = f" (blob {self.blob[:12]})" if self.blob else ""       # a work-tree file is no blob
        return f"{self.where()}{again} is a damaged pointer{blob}: {self.why}"

    def harm(self) -> str:
        """What it breaks, where it is."""
        if self.commit:
            return "a checkout of that commit fails on it, and a push of it is refused"
        if self.place == INDEX:
            return "a checkout of the file from the index fails on it, and a commit would put it in history"
        if self.place == WORK_TREE:
            return "`git add` would store its text as a file of its own, not the checkpoint"
        return "a checkout of it fails"

    def rewrite_hint(self) -> str:
        """How to rewrite the commit that holds it: restoring the file in a later commit
        leaves the damaged one in history, where every push of it finds it again."""
        if self.commit is None:
            return (f"Restore the pointer from a commit that holds a good one (`git checkout REV "
                    f"-- {quote_path(self.path)}`), or add the checkpoint again")
        c, path = self.commit[:12], quote_path(self.path)
        start = f"{c}^" if self.commit_has_parent else "--root"
        good = f"{c}^" if self.commit_has_parent else "GOOD"
        return (f"Rewrite that commit (a checkout of it fails, so the rebase leaves pointers in "
                f"the work tree): `GITMODEL_SKIP_SMUDGE=1 git rebase -i {start}`, mark {c} `edit`; "
                f"`git checkout {good} -- {path}` (a commit with a good pointer of it), `git commit "
                f"--amend --no-edit --allow-empty`, `GITMODEL_SKIP_SMUDGE=1 git rebase --continue` "
                "(`GITMODEL_SKIP_SMUDGE=1 git rebase --skip` for a later commit that only restored "
                "the file, now empty); then `gitmodel pull` writes the files left as pointers")

    commit_has_parent: bool = True


def _pointer(repo: pygit2.Repository, oid: pygit2.Oid, path: str, found: dict,
             damaged: dict | None = None, commit=None) -> None:
    """Read one blob into `found`. A damaged pointer raises HistoryError, or with `damaged`
    ({blob: DamagedPointer}) is recorded there, with the commit it was found in."""
    if oid in found:
        if damaged is not None and oid in damaged and commit is not None:
            item = damaged[oid]             # walked newest first: the oldest commit is the last
            item.commits += 1
            item.commit, item.path, item.commit_has_parent = str(commit.id), path, bool(commit.parents)
        return
    try:
        ptr = pointer_blob(repo, oid, path, fetch=False)
    except pointers.PointerError as err:
        item = DamagedPointer(path, str(oid), why_damaged(err), str(commit.id) if commit is not None else None,
                              commit_has_parent=bool(commit.parents) if commit is not None else True)
        if damaged is None:
            mends = ". Restoring it in a new commit mends the work tree, not the commit that " \
                    "holds it" if item.commit else ""
            raise HistoryError(str(item), f"{item.rewrite_hint()}{mends}") from None
        damaged[oid] = item
        found[oid] = None
        return
    found[oid] = (path, ptr) if ptr is not None else None


def why_damaged(err: pointers.PointerError) -> str:
    """Why a blob does not parse, without the blob's name that repo.pointer_blob puts first."""
    return str(err).split(" is a damaged pointer: ", 1)[-1]


def _read(repo: pygit2.Repository, blobs: list, found: dict, fetch: bool,
          damaged: dict | None = None) -> None:
    """The pointers among these blobs ((path, blob id) or (path, blob id, commit)) into
    `found`. In a partial clone, blobs not fetched yet are fetched first (`fetch`, in one
    batch: the tracked paths' only) or skipped."""
    if fetch:
        prefetch_pointers(repo, [(item[0], item[1]) for item in blobs])
    for item in blobs:
        _pointer(repo, item[1], item[0], found, damaged, item[2] if len(item) > 2 else None)


def _result(found: dict, sizes: dict[str, int] | None = None) -> dict[str, str]:
    """{content id (hex): a path it was found at}, each checkpoint once; `sizes` receives
    each one's file size as its pointers give it (pointer.note_size)."""
    out: dict[str, str] = {}
    for item in found.values():
        if item is not None:
            out.setdefault(item[1].content, item[0])
            if sizes is not None:
                pointers.note_size(sizes, item[1])
    return out


def pointers_in_trees(repo: pygit2.Repository, revs: Iterable[str], fetch: bool = True,
                      damaged: list[DamagedPointer] | None = None,
                      sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Every checkpoint in the trees of these revisions (or the tree or file a revision that
    is no commit names); their file sizes into `sizes` (_result). A damaged pointer raises
    HistoryError, or with `damaged` is appended there, named with the commit that brought it
    in (the one a rewrite must mend)."""
    revs = list(revs)
    found: dict = {}
    bad: dict | None = {} if damaged is not None else None
    for rev in revs:
        files = files_named(repo, rev)
        if files is None:
            raise HistoryError(f"unknown revision {rev!r}")
        _read(repo, files, found, fetch, bad)
    if bad:
        damaged.extend(with_commits(repo, revs, bad))
    return _result(found, sizes)


def with_commits(repo: pygit2.Repository, revs: list[str], bad: dict) -> list[DamagedPointer]:
    """Damaged pointers found in trees, each with the oldest commit of these revisions'
    history that introduced it (a tree's damaged pointer came in earlier than its commit: a
    rewrite of the tip alone would keep it). Walked only when there is damage to name."""
    introduced: dict = {}
    _walk(repo, [rev for rev in revs if _commit(repo, rev) is not None], [], False, introduced)
    return [introduced.get(oid, item) for oid, item in bad.items()]


def damaged_at(repo: pygit2.Repository, rev: str, path: str, oid: pygit2.Oid,
               err: pointers.PointerError) -> DamagedPointer:
    """The damaged pointer `path` holds at a commit, named with the commit of its history
    that brought it in (the one a rewrite must mend)."""
    item = DamagedPointer(path, str(oid), why_damaged(err))
    return with_commits(repo, [rev], {oid: item})[0]


def files_named(repo: pygit2.Repository, rev: str) -> list[tuple[str, pygit2.Oid]] | None:
    """(path, blob id) of the files a revision names: a commit's or a tree's, or the blob
    itself (a tag may point at any of them: `git tag best HEAD:model.safetensors`, whose path
    is then the revision); None for an unknown revision."""
    try:
        obj = repo.revparse_single(rev)
        while obj.type == pygit2.GIT_OBJECT_TAG:
            obj = obj.peel(None)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if obj.type == pygit2.GIT_OBJECT_COMMIT:
        obj = obj.tree
    if obj.type == pygit2.GIT_OBJECT_TREE:
        return list(tree_blobs(repo, obj))
    return [(rev, obj.id)] if obj.type == pygit2.GIT_OBJECT_BLOB else []


def pointers_introduced(repo: pygit2.Repository, tips: Iterable[str],
                        known: Iterable[str] = (), fetch: bool = False,
                        damaged: list[DamagedPointer] | None = None,
                        sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Checkpoints added or changed by commits reachable from `tips` but not from `known`
    (revisions the other side has; ones unknown here are ignored). In a partial clone,
    pointer blobs it never fetched are fetched (`fetch`) or skipped: a push need not ask for
    them, as this clone cannot have made a checkpoint whose pointer it never held. A damaged
    pointer raises HistoryError naming its commit, or with `damaged` is appended there and
    the walk goes on. Their file sizes go into `sizes` (_result)."""
    return _result(_introduced(repo, tips, known, fetch, damaged), sizes)


def pointer_texts_introduced(repo: pygit2.Repository, tips: Iterable[str], known: Iterable[str] = (),
                             damaged: list[DamagedPointer] | None = None) -> list[tuple[str, Pointer]]:
    """(path, pointer) of each pointer blob those commits add or change."""
    return [item for item in _introduced(repo, tips, known, damaged=damaged).values() if item is not None]


def _introduced(repo: pygit2.Repository, tips: Iterable[str], known: Iterable[str],
                fetch: bool = False, damaged: list[DamagedPointer] | None = None) -> dict:
    bad: dict | None = {} if damaged is not None else None
    found = _walk(repo, tips, known, fetch, bad)
    if damaged is not None:
        damaged.extend(bad.values())
    return found


def _walk(repo: pygit2.Repository, tips: Iterable[str], known: Iterable[str], fetch: bool,
          damaged: dict | None) -> dict:
    tip_commits, found = [], {}
    for rev in tips:
        commit = _commit(repo, rev)
        if commit is not None:
            tip_commits.append(commit)
        else:                           # a tag of a tree or a file: all of it, as a root commit
            _read(repo, files_named(repo, rev) or [], found, fetch, damaged)
    if not tip_commits:
        return found
    walker = repo.walk(tip_commits[0].id, pygit2.enums.SortMode.TOPOLOGICAL)
    for commit in tip_commits[1:]:
        walker.push(commit.id)
    for rev in known:
        commit = _commit(repo, rev)
        if commit is not None:
            walker.hide(commit.id)
    blobs = []
    for commit in walker:
        if not commit.parents:
            blobs += [(path, oid, commit) for path, oid in tree_blobs(repo, commit.tree)]
            continue
        diff = repo.diff(commit.parents[0].tree, commit.tree)
        for delta in diff.deltas:
            if delta.status != pygit2.enums.DeltaStatus.DELETED and \
                    delta.new_file.mode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
                blobs.append((delta.new_file.path, delta.new_file.id, commit))
    _read(repo, blobs, found, fetch, damaged)
    return found


def pointers_for_push(repo: pygit2.Repository, lines: Iterable[str],
                      damaged: list[DamagedPointer] | None = None) -> dict[str, str]:
    """Every checkpoint in the history of the tips a push sends, from pre-push hook input
    lines `<local ref> <local sha> <remote ref> <remote sha>` (a deletion sends nothing). All
    of them, not only what is new to the git remote: whether the gitmodel remote has each is
    decided from its own indexes."""
    tips = [parts[1] for parts in (line.split() for line in lines)
            if len(parts) == 4 and parts[1].strip("0")]
    return pointers_introduced(repo, tips, damaged=damaged)


def pointers_new_to_remote(repo: pygit2.Repository, lines: Iterable[str],
                           damaged: list[DamagedPointer] | None = None) -> list[tuple[str, Pointer]]:
    """(path, pointer) of what a push's commits introduce that the remote's refs (as
    pre-push gives them) do not have in their history: what a remote gc could not yet know
    is live, and what this push shares for the first time."""
    parts = [line.split() for line in lines]
    tips = [p[1] for p in parts if len(p) == 4 and p[1].strip("0")]
    known = [p[3] for p in parts if len(p) == 4 and p[3].strip("0")]
    return pointer_texts_introduced(repo, tips, known, damaged)


def all_refs(repo: pygit2.Repository) -> list[str]:
    return [name for name in repo.references if not name.startswith("refs/remotes/")
            and name != "refs/stash"] or ["HEAD"]


def iter_work_tree_pointers(repo: pygit2.Repository,
                            damaged: list[DamagedPointer] | None = None) -> Iterator[tuple[str, Pointer]]:
    """(path, pointer) for index entries whose work-tree file is still exactly the pointer
    the index holds (a pointer file edited by hand is the user's change: left alone). Such
    a file whose pointer is damaged is skipped, or with `damaged` appended there."""
    root = Path(repo.workdir)
    for entry in index_entries(repo):
        if not entry.is_file:
            continue
        path = root / entry.path
        try:
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as f:
                if not pointers.is_pointer_prefix(f.read(len(pointers.MAGIC_PREFIX))):
                    continue
                f.seek(0)
                text = pointers.without_crlf(f.read(pointers.MAX_POINTER_SIZE + 1))
        except OSError:
            continue
        if pygit2.hash(text) != entry.id:
            continue
        try:
            ptr = pointers.sniff(text)
        except pointers.PointerError as err:
            if damaged is not None:
                damaged.append(DamagedPointer(entry.path, str(entry.id), str(err), place=INDEX))
            continue
        if ptr is not None:
            yield entry.path, ptr


def pointers_in_index(repo: pygit2.Repository, damaged: list[DamagedPointer] | None = None,
                      sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Every checkpoint the index holds (what the next commit would reference); their file
    sizes into `sizes` (_result). A damaged pointer raises HistoryError, or with `damaged` is
    appended there."""
    found: dict = {}
    bad: dict | None = {} if damaged is not None else None
    for entry in index_entries(repo):
        if entry.is_file:
            _pointer(repo, entry.id, entry.path, found, bad)
    if bad:
        damaged.extend(dataclasses.replace(item, place=INDEX) for item in bad.values())
    return _result(found, sizes)


def staged_only(repo: pygit2.Repository, staged: list[DamagedPointer]) -> list[DamagedPointer]:
    """Of the damaged pointers the index holds, those HEAD does not hold at the same path:
    one HEAD holds too is HEAD's, named with its commit, whose rewrite mends both."""
    head = {} if repo.head_is_unborn else dict(tree_blobs(repo, repo.head.peel(pygit2.Commit).tree))
    return [item for item in staged if str(head.get(item.path, "")) != item.blob]


def versions_by_path(repo: pygit2.Repository) -> dict[str, list[str]]:
    """Each path's checkpoints, newest first: what the index holds, then the versions commits
    reachable from any ref (remote-tracking ones too) introduced, children before parents,
    newer commits first. What the repack turns into deltas against newer versions."""
    found: dict = {}
    order: dict[str, list[str]] = {}

    skipped: dict = {}      # damaged pointers name no version: nothing to repack for them

    def seen(oid: pygit2.Oid, path: str) -> None:
        _pointer(repo, oid, path, found, skipped)
        item = found.get(oid)
        if item is not None and item[1].content not in order.setdefault(path, []):
            order[path].append(item[1].content)

    for entry in index_entries(repo):
        if entry.is_file:
            seen(entry.id, entry.path)
    tips = [ref.peel(pygit2.Commit).id for ref in (repo.references[name] for name in repo.references)
            if ref.name != "refs/stash" and _peels_to_commit(ref)]
    if not tips:
        return {path: contents for path, contents in order.items() if contents}
    walker = repo.walk(tips[0], pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    for tip in tips[1:]:
        walker.push(tip)
    for commit in walker:
        if not commit.parents:
            for path, oid in tree_blobs(repo, commit.tree, ""):
                seen(oid, path)
            continue
        for delta in repo.diff(commit.parents[0].tree, commit.tree).deltas:
            if delta.status != pygit2.enums.DeltaStatus.DELETED and \
                    delta.new_file.mode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
                seen(delta.new_file.id, delta.new_file.path)
    return {path: contents for path, contents in order.items() if contents}


def declared_bases(repo: pygit2.Repository, paths: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """For paths whose `delta-base` attribute names another tracked checkpoint (the base model
    they were fine-tuned from), that checkpoint's content id as the index (else HEAD) holds it;
    and why the others that declare one cannot use it."""
    import os
    from gitmodel.git.repo import run_git
    paths = list(paths)
    if not paths or repo.workdir is None:
        return {}, []
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths)
    fields = run_git("check-attr", "-z", "--stdin", "delta-base", cwd=repo.workdir,
                     input=listing, check=False).stdout.split(b"\0")
    wanted = {os.fsdecode(fields[i]): os.fsdecode(fields[i + 2]) for i in range(0, len(fields) - 2, 3)
              if fields[i + 2] not in (b"unspecified", b"unset", b"set", b"")}
    current = {}
    if not repo.head_is_unborn:
        for path, oid in tree_blobs(repo, repo.head.peel(pygit2.Commit).tree, ""):
            current[path] = oid
    for entry in index_entries(repo):
        if entry.is_file and entry.stage in (0, 2):          # during a conflict: ours
            current[entry.path] = entry.id
    found, problems = {}, []
    for path, base in wanted.items():
        oid = current.get(base)
        ptr = None
        if oid is not None:
            try:
                ptr = pointer_blob(repo, oid, base)
            except pointers.PointerError:
                ptr = None
        if ptr is None:
            problems.append(f"{path}: its delta-base {base} is not a checkpoint in HEAD or the index")
        elif base != path:
            found[path] = ptr.content
    return found, problems


def index_checkpoints(repo: pygit2.Repository) -> dict[str, str]:
    """{path: content id} of the checkpoints the index holds (damaged pointers skipped)."""
    found: dict = {}
    skipped: dict = {}
    out = {}
    for entry in index_entries(repo):
        if entry.is_file:
            _pointer(repo, entry.id, entry.path, found, skipped)
            if found.get(entry.id) is not None:
                out[entry.path] = found[entry.id][1].content
    return out


def checked_out(repo: pygit2.Repository) -> set[str]:
    """The checkpoints HEAD's tree and the index hold (kept whole by a repack). A damaged
    pointer there names no version to keep whole: skipped, as versions_by_path skips it."""
    found: dict = {}
    if not repo.head_is_unborn:
        _read(repo, files_named(repo, "HEAD") or [], found, True, {})
    return set(_result(found)) | set(index_checkpoints(repo).values())


def _peels_to_commit(ref) -> bool:
    try:
        ref.peel(pygit2.Commit)
        return True
    except (pygit2.InvalidSpecError, pygit2.GitError, ValueError, KeyError):   # a tag of a tree or blob
        return False


def tree_blobs(repo: pygit2.Repository, tree: pygit2.Tree,
               prefix: str = "") -> Iterator[tuple[str, pygit2.Oid]]:
    """(path, blob id) of every file in a tree, recursively."""
    for entry in tree:
        if entry.type_str == "tree":
            yield from tree_blobs(repo, repo[entry.id], f"{prefix}{entry.name}/")
        elif entry.type_str == "blob":
            yield prefix + entry.name, entry.id
