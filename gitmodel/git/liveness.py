"""Which checkpoints a repository still needs: the pointers in everything git itself keeps.

Git's own reachability decides (`git rev-list --objects --all --reflog --indexed-objects`,
replace refs off):
every ref (branches, tags, remote-tracking refs, the stash, notes), every entry the reflogs
still hold, and the HEAD and index (conflict stages included) of every worktree; plus what
an operation in progress in any worktree stands on (MERGE_HEAD, ..., a rebase's autostash).
Blobs small enough to be pointers are read; those that are pointers name the live
checkpoints.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gitmodel import pointer as pointers
from gitmodel.errors import GitmodelError
from gitmodel.git.repo import common_dir, open_repository, run_git
from gitmodel.process import child_environment

# What an operation in progress stands on, in any worktree's git directory: the heads being
# merged, picked or rebased, and a rebase's or merge's autostash, the commit that holds the
# work tree's changes until the operation ends (no ref names it before then). ORIG_HEAD is not
# among them: it is what a finished reset or rebase left behind, and git's own gc does not
# keep it either.
PENDING = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD", "MERGE_AUTOSTASH",
           "rebase-merge/autostash", "rebase-apply/autostash")
_OID = re.compile(r"^[0-9a-f]{40,64}\b", re.M)


class LivenessError(GitmodelError):
    pass


def live_checkpoints(cwd: Path | str | None = None, revs: list[str] | None = None,
                     damaged: list | None = None, sizes: dict[str, int] | None = None) -> dict[str, str]:
    """{content id (hex): a path it is found at} of every checkpoint git keeps, or with `revs`
    only those the history of these revisions references (no reflogs, no index). A damaged
    pointer from which no content id can be read names nothing to keep: it is appended to
    `damaged` (history.DamagedPointer, with the commits that hold it), if given. `sizes`
    receives the file size pointers give each (pointer.note_size); one named only by a
    damaged pointer's content line has none."""
    if revs is None:
        args = ["--all", "--reflog", "--indexed-objects", *_pending_heads(cwd)]
    else:
        args = list(revs)
        for rev in args:
            if run_git("rev-parse", "-q", "--verify", f"{rev}^{{object}}", cwd=cwd, check=False).returncode:
                raise LivenessError(f"unknown revision {rev!r}", "Nothing was removed. Name a "
                                    "commit, branch or tag this repository has")
    import pygit2
    limit = f"--filter=blob:limit={pointers.MAX_POINTER_SIZE}"     # larger blobs are not pointers
    # Replace refs and the old graft file off, as in git's own gc: a graft or replaced commit
    # hides history git still keeps (and a clone without them still reads); the replacements
    # are walked anyway from their refs.
    listing = run_git("--no-replace-objects", "rev-list", "--objects", limit, *args, "--",
                      cwd=cwd, check=False, env=child_environment(GIT_GRAFT_FILE=os.devnull))
    if listing.returncode != 0:
        raise LivenessError(f"git rev-list failed: {listing.stderr.decode(errors='replace').strip()}",
                            "Nothing was removed. Check the repository with `git fsck`")
    repository = open_repository(cwd)
    found: dict[str, str] = {}
    seen: set[bytes] = set()
    for line in listing.stdout.splitlines():
        oid_hex, _, path = line.partition(b" ")
        if oid_hex in seen:
            continue
        seen.add(oid_hex)
        try:
            oid = pygit2.Oid(hex=oid_hex.decode())
            kind, size = repository.odb.read_header(oid)
        except (ValueError, KeyError):
            continue
        if kind != pygit2.GIT_OBJECT_BLOB or size > pointers.MAX_POINTER_SIZE:
            continue
        data = repository[oid].data
        conflicted = data.startswith(b"<<<<<<< ")      # pointers git merged as text, committed
        if not pointers.is_pointer_prefix(data[:len(pointers.MAGIC_PREFIX)]) and not conflicted:
            continue
        try:
            ptr, error = pointers.sniff(data), None
        except pointers.PointerError as err:
            ptr, error = None, err
        if ptr is None:
            # Damaged (edited, a merge resolved by hand as text) or between conflict markers:
            # every content line that still reads names a checkpoint it may have been meant
            # for, and is kept. One without a content id names nothing gc could keep: no
            # reader can resolve it either, and refusing until every reflog that holds it
            # expires (or `git reflog expire --expire=now --all`, which drops the reflogs'
            # protection of everything else) would keep nothing safer. It is reported.
            contents = _CONTENT.findall(bytes(data))
            for content in contents:
                found.setdefault(content.decode().lower(), os.fsdecode(path))
            if contents or error is None:
                continue
            holders = _holders(cwd, oid_hex.decode())
            place = (f"commit{'s' if ', ' in holders else ''} {holders}" if holders else
                     "an index (of this or another worktree)")
            if pointers.newer_version(data):       # not damaged: read by a newer gitmodel
                raise LivenessError(f"{os.fsdecode(path) or oid_hex.decode()} in {place} is a pointer "
                                    f"of a newer gitmodel (blob {oid_hex.decode()[:12]}): {error}",
                                    "Nothing was removed: what it names cannot be read here. Run "
                                    "`pip install --upgrade gitmodel`, then gc again") from None
            if damaged is not None:
                from gitmodel.git.history import DamagedPointer
                damaged.append(DamagedPointer(os.fsdecode(path) or oid_hex.decode(), oid_hex.decode(),
                                              str(error), place=place))
            continue
        found.setdefault(ptr.content, os.fsdecode(path))
        if sizes is not None:
            pointers.note_size(sizes, ptr)
    return found


# A content line as written, or edited by hand (spaces, capitals, CRLF): what it names is kept
_CONTENT = re.compile(rb"^[ \t]*content[ \t]+([0-9a-fA-F]{64})[ \t\r]*$", re.M | re.I)


def _holders(cwd, blob: str) -> str:
    """The commits (of every ref and reflog) that bring a blob in, briefly; '' if none."""
    result = run_git("log", "--all", "--reflog", "--format=commit %h", "--raw", "--no-abbrev",
                     f"--find-object={blob}", cwd=cwd, check=False)
    found, current = [], None
    for line in result.stdout.decode(errors="replace").splitlines() if result.returncode == 0 else ():
        if line.startswith("commit "):
            current = line.split()[1][:12]
        elif line.startswith(":") and len(line.split()) > 3 and line.split()[3] == blob \
                and current and current not in found:
            found.append(current)
    return ", ".join(found[:3]) + (" …" if len(found) > 3 else "")


def _pending_heads(cwd: Path | str | None) -> list[str]:
    """The commits that operations in progress, in this worktree or any other, stand on."""
    common = common_dir(cwd)
    worktrees = common / "worktrees"
    git_dirs = [common, *sorted(p for p in worktrees.iterdir() if p.is_dir())] \
        if worktrees.is_dir() else [common]
    named = []
    for git_dir in git_dirs:
        for name in PENDING:
            try:
                text = (git_dir / name).read_text(encoding="ascii", errors="replace")
            except OSError:                     # absent: no such operation there
                continue
            named += _OID.findall(text)                   # MERGE_HEAD: one a line
    heads = []
    for name in dict.fromkeys(named):
        result = run_git("rev-parse", "--verify", "-q", f"{name}^{{commit}}", cwd=cwd, check=False)
        if result.returncode == 0:
            heads.append(result.stdout.decode().strip())
    return heads
