"""What `gitmodel ls-files` and `gitmodel status` report: each tracked checkpoint, where its
bytes are (work tree, local store), and what is staged, modified or not yet pushed."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gitmodel import checkpoint, pointer as pointers, stored
from gitmodel.errors import GitmodelError
from gitmodel.git import history, revisions
from gitmodel.git.repo import commit, index_entries, open_repository, pointer_blob, run_git
from gitmodel.store.objects import Store, StoreError

# Where a checkpoint's bytes are.
FILE, MODIFIED, POINTER, ABSENT = "file", "modified", "pointer", "absent"  # in the work tree
COMPLETE, PARTIAL, MISSING = "complete", "partial", "missing"  # in the local store


@dataclass
class Listed:
    path: str
    size: int
    content: str
    work_tree: str          # FILE (its bytes), MODIFIED (another version's), POINTER (left as a
                            # pointer) or ABSENT
    store: str              # COMPLETE, PARTIAL (some chunks missing) or MISSING
    stage: str = ""         # in a conflict: base, ours or theirs (the index's stages 1-3)

    def as_dict(self) -> dict:
        return asdict(self)


def ls_files(repository, store: Store, rev: str | None = None,
             damaged: list | None = None) -> list[Listed]:
    """The checkpoints of a revision's tree, or (no `rev`) of the index, by path (a
    conflicted path's base, ours and theirs in that order). A damaged pointer raises, or
    with `damaged` is appended there (history.DamagedPointer) and left out."""
    found = list(_pointers(repository, rev, stages=True, damaged=damaged))
    bare = repository.workdir is None
    differ = set() if bare or not found else \
        set(revisions.changed_paths(Path(repository.workdir), [rev] if rev else [], False, []))
    held = _work_tree_contents(repository, store, {path for path, _, stage in found if stage})
    return sorted((Listed(path, ptr.size, ptr.content,
                          _work_tree(repository, path, held[path] != ptr.content if path in held else path in differ),
                          store_state(store, ptr.content), STAGES[stage]) for path, ptr, stage in found),
                  key=lambda item: (item.path, list(STAGES.values()).index(item.stage)))


def _work_tree_contents(repository, store: Store, conflicted: set[str]) -> dict[str, str]:
    """The content id of each conflicted path's work-tree file (git lists a conflicted path as
    changed whatever the file holds, so each stage's row is compared with the file itself:
    one read of it, storing nothing). Paths whose file is absent are left out."""
    held = {}
    for path in sorted(conflicted) if repository.workdir is not None else ():
        try:
            ptr = revisions.pointer_at(repository, revisions.WORK_TREE, path, store)
        except (GitmodelError, OSError, ValueError):
            continue
        if ptr is not None:
            held[path] = ptr.content
    return held


STAGES = {0: "", 1: "base", 2: "ours", 3: "theirs"}


def _pointers(repository, rev: str | None, stages: bool = False, damaged: list | None = None):
    """(path, pointer) of the checkpoints in a revision's tree, or (no `rev`) the index;
    with `stages`, (path, pointer, index stage). A damaged pointer raises PointerError, or
    with `damaged` is appended there, where it is named (the commit that brought it into
    the revision's tree, or the index), and the others go on."""
    if rev is None:
        blobs = [(entry.path, entry.id, entry.stage) for entry in index_entries(repository) if entry.is_file]
    else:
        found = commit(repository, rev)
        if found is None:
            raise revisions.RevisionError(f"unknown revision {rev!r}")
        blobs = [(path, oid, 0) for path, oid in history.tree_blobs(repository, found.tree)]
    bad: dict = {}
    for path, oid, stage in blobs:
        try:
            ptr = pointer_blob(repository, oid, path)
        except pointers.PointerError as err:
            if damaged is None:
                raise
            bad.setdefault(oid, history.DamagedPointer(path, str(oid), history.why_damaged(err),
                                                       place=history.INDEX if rev is None else None))
            continue
        if ptr is not None:
            yield (path, ptr, stage) if stages else (path, ptr)
    if bad:
        damaged.extend(bad.values() if rev is None else history.with_commits(repository, [rev], bad))


def _work_tree(repository, path: str, differs: bool) -> str:
    if repository.workdir is None:
        return ABSENT                                    # a bare repository
    file = Path(repository.workdir) / path
    try:
        if file.is_symlink() or not file.is_file():
            return ABSENT
        if pointers.sniff_file(file) is not None:
            return POINTER
        return MODIFIED if differs else FILE
    except (OSError, pointers.PointerError):
        return FILE


def store_state(store: Store, content: str) -> str:
    """Whether the store holds the checkpoint: its manifest and every chunk (and base)."""
    oid = bytes.fromhex(content)
    if store.missing([oid]):
        return MISSING
    try:
        need = stored.needed([oid], store.read_manifest)
    except StoreError:
        return PARTIAL
    if need.unreadable or store.missing(store.with_bases(need.chunks)):
        return PARTIAL
    return COMPLETE


@dataclass
class Status:
    staged: list[dict] = field(default_factory=list)       # path, old, new (content ids or None), old_damaged
    modified: list[str] = field(default_factory=list)      # work tree differs from the index
    deleted: list[str] = field(default_factory=list)       # in the index, not in the work tree
    untracked: list[str] = field(default_factory=list)     # new files gitmodel would store
    unmerged: list[str] = field(default_factory=list)      # conflicted in a merge in progress
    deleted_by_one_side: list[str] = field(default_factory=list)   # of those, deleted on a side
    mixed: list[dict] = field(default_factory=list)        # path, why: a staged pointer of two versions
    unpushed: list[dict] = field(default_factory=list)     # path, content: in no remote-tracking ref
    remote: str | None = None                               # the default gitmodel remote
    not_on_remote: list[dict] = field(default_factory=list)  # path, content, in_local_store
    remote_error: str | None = None                         # why it could not be asked
    store_bytes: int = 0
    reclaimable_bytes: int = 0
    store_error: str | None = None                          # why gc could not estimate it
    pointers_in_work_tree: list[str] = field(default_factory=list)
    pointers_untracked: list[str] = field(default_factory=list)  # pointers no filter attribute names
    raw: list[str] = field(default_factory=list)           # tracked, staged as the file itself
    # path, commit (None: not committed), where, blob, why, repair: in the branches' history,
    # HEAD or the index
    damaged_pointers: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def status(session) -> Status:
    from gitmodel.git import gc as git_gc, liveness
    from gitmodel.store import gc
    repository = open_repository(session.cwd)
    if repository.workdir is None:
        raise GitmodelError("gitmodel status needs a work tree, and this is a bare repository",
                            "`gitmodel ls-files REV` lists a revision's checkpoints, "
                            "`gitmodel fsck` checks what HEAD needs")
    result = Status()
    staged_damage: list = []           # damaged pointers in the index, and in HEAD's tree
    index = dict(_pointers(repository, None, damaged=staged_damage))
    head_damage: list = []
    head_pointers = {} if repository.head_is_unborn else \
        dict(_pointers(repository, "HEAD", damaged=head_damage))
    head = {path: ptr.content for path, ptr in head_pointers.items()}
    conflicted = revisions.unmerged(repository)
    result.unmerged = sorted(conflicted)
    result.deleted_by_one_side = sorted(path for path, (_, ours, theirs) in conflicted.items()
                                        if ours is None or theirs is None)
    # A damaged pointer names no checkpoint, so neither side of its path can be compared: it
    # is listed with the damaged pointers, not as a checkpoint staged or deleted.
    # A readable pointer staged over HEAD's damaged one is staged, from a damaged pointer
    # (never `new`: HEAD has the file).
    unreadable = {d.path for d in staged_damage}
    damaged_in_head = {d.path for d in head_damage}
    for path in sorted((set(index) | set(head) | damaged_in_head) - set(result.unmerged) - unreadable):
        new = index[path].content if path in index else None
        if head.get(path) != new or path in damaged_in_head:
            result.staged.append({"path": path, "old": head.get(path), "new": new,
                                  "old_damaged": path in damaged_in_head})
    for path in sorted(set(index) - set(result.unmerged)):   # pointers staged, even in part
        if index[path] != head_pointers.get(path):            # (committed: the pre-push hook's)
            why = checkpoint.pointer_mismatch(index[path], session.store)
            if why is not None:
                result.mixed.append({"path": path, "why": why})
    workdir = Path(repository.workdir)
    merged = [p for p in sorted(index) if p not in result.unmerged]   # the others git cannot clean
    if merged:
        tracked = revisions.tracked_paths(workdir, merged)
        changed = [p for p in revisions.changed_paths(workdir, [], False, merged) if p in tracked]
        result.deleted = [p for p in changed if not (workdir / p).exists()]
        result.modified = [p for p in changed if p not in result.deleted]
    others = [os.fsdecode(p) for p in run_git("ls-files", "-z", "--others", "--exclude-standard",
                                              cwd=workdir).stdout.split(b"\0") if p]
    if others:
        result.untracked = sorted(revisions.tracked_paths(workdir, others))
    # Those `gitmodel pull` restores: a pointer file that is not the index's is a change
    # (listed as modified), left alone.
    left = [path for path, _ in history.iter_work_tree_pointers(repository) if path in index]
    tracked = revisions.tracked_paths(workdir, left)
    result.pointers_in_work_tree = sorted(path for path in left if path in tracked)
    # A restored file git would not clean (its .gitattributes line gone) would be committed raw
    result.pointers_untracked = sorted(path for path in left if path not in tracked)
    # Committed before the path was tracked, or with filter.gitmodel.required false after a
    # failed clean: git holds the whole file, not a pointer.
    result.raw = [p for p in revisions.raw_in_index(repository, workdir) if p not in result.unmerged]
    local = [name for name in repository.references if name.startswith("refs/heads/")]
    pushed = [name for name in repository.references if name.startswith("refs/remotes/")]
    if pushed or local:
        introduced = history.pointers_introduced(repository, local, pushed, damaged=[])
        result.unpushed = [{"path": path, "content": content}
                           for content, path in sorted(introduced.items(), key=lambda kv: kv[1])]
    damaged: list = []              # named once, with their commits; they hold no checkpoint
    if local:
        in_history = history.pointers_introduced(repository, local, damaged=damaged)
    # HEAD's (a detached HEAD's commits are on no branch), then what the index alone holds:
    # a damaged pointer the index holds as HEAD does is HEAD's, mended by rewriting its commit.
    named = {d.blob for d in damaged}
    damaged += [d for d in head_damage if d.blob not in named]
    damaged += history.staged_only(repository, staged_damage)
    result.damaged_pointers = [{"path": d.path, "commit": d.commit, "where": d.where(), "blob": d.blob,
                                "why": d.why, "repair": d.rewrite_hint()} for d in damaged]
    if local:
        _compare_with_remote(session, in_history, result)
    store = session.store
    result.store_bytes = gc.store_bytes(store)
    try:
        live = [bytes.fromhex(c) for c in liveness.live_checkpoints(session.cwd)]
        recent = gc.recent_objects(store, git_gc.keep_recent_days(None, session.cwd))
        result.reclaimable_bytes = gc.collect(store, live, recent, dry_run=True).reclaimed
    except GitmodelError as err:                  # damage gc will not work around: say so
        result.store_error = err.full()
    return result


def _compare_with_remote(session, found: dict[str, str], result: Status) -> None:
    """The checkpoints of the local branches' history (`found`: {content: path}) that the
    default gitmodel remote lacks (from its indexes: one listing, and the indexes not seen
    before)."""
    try:
        view = session.default_view()
        if view is None:
            return
        result.remote = view.name
        view.refresh()
    except (GitmodelError, OSError) as err:
        result.remote_error = err.full() if isinstance(err, GitmodelError) else str(err)
        return
    lacking = [(content, path) for content, path in sorted(found.items(), key=lambda kv: kv[1])
               if not _all_there(session.store, view, bytes.fromhex(content))]
    absent = set(session.store.missing([bytes.fromhex(c) for c, _ in lacking]))
    result.not_on_remote = [{"path": path, "content": content,
                             "in_local_store": bytes.fromhex(content) not in absent}
                            for content, path in lacking]


def _all_there(store, view, manifest_id: bytes) -> bool:
    """Whether the remote's indexes list a checkpoint's manifest and, where the local store
    holds the manifest to tell them, every chunk of it (a remote that lost a pack of chunks
    still lists the manifest)."""
    if manifest_id not in view.entries:
        return False
    try:
        chunks = store.read_manifest(manifest_id).chunks
    except (GitmodelError, ValueError):
        return True                      # not here to tell (a clone without it): as listed
    return all(cid in view.entries for cid, _ in chunks)


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

