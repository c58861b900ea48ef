"""The work tree: files left as pointers, written from the store, and their index entries
kept in step."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gitmodel.errors import GitmodelError
from gitmodel.git import repo
from gitmodel.store import files

if TYPE_CHECKING:
    from gitmodel.stored import Fetch


class RestoreError(GitmodelError):
    pass


# ----------------------------------------------------------------------------- streaming

PARALLEL_FILES = 2


def materialize(store, repository, pointers: dict, say=lambda line: None,
                fetch: Fetch | None = None) -> list[str]:
    """Write each work-tree file left as a pointer (`pointers`: path -> Pointer, each the
    pointer the index holds) straight from the store, not through git, whose filter protocol
    holds a whole file in memory: memory stays at a few chunk batches whatever the file's
    size. Then the index entries get the new files' stat data, so git sees them clean without
    running the clean filter over every byte again. With `fetch` (Session.fetcher), a chunk
    found damaged here while a file is written is fetched and read again, as in a checkout
    (Restore.write_to). Returns the paths written; raises RestoreError after writing the
    rest if some could not be."""
    from concurrent.futures import ThreadPoolExecutor
    from gitmodel import checkpoint
    top = Path(repository.workdir)
    failed: dict[str, str] = {}
    written: dict[str, tuple] = {}            # path -> what the restored file is, to tell it

    def write(path: str) -> None:
        try:
            restore = checkpoint.Restore(pointers[path], store)
            with files.replacing(top / path) as out:
                restore.write_to(lambda *buffers: out.writelines(buffers), fetch=fetch)
                out.flush()
                written[path] = _signature(os.fstat(out.fileno()))
                # Another program may have put a file there since pull read the pointer (a
                # fetch takes a while): that file is the user's, not the pointer's.
                if not _holds(top / path, pointers[path]):
                    del written[path]
                    raise _Replaced
            say(f"restored {path} ({pointers[path].size / (1 << 20):.1f} MiB)")
        except _Replaced:
            print(f"gitmodel: warning: left {path} as it is: it was changed, replaced or "
                  "removed while pull ran", file=sys.stderr)
        except (GitmodelError, OSError) as err:
            failed[path] = err.full() if isinstance(err, GitmodelError) else str(err)

    files.sweep_beside([top / path for path in pointers])     # a killed pull's leftovers
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        list(pool.map(write, sorted(pointers)))
    if written:
        _refresh_index(repository, written)
    if failed:
        path, why = next(iter(failed.items()))
        raise RestoreError(f"{len(failed)} file(s) could not be restored (first: {path}: {why})",
                           "They stay pointers in the work tree, safe in git; once the cause is "
                           "fixed, `gitmodel pull` again")
    return sorted(written)


class _Replaced(Exception):
    """The work-tree file no longer holds the pointer pull read."""


def _signature(st: os.stat_result) -> tuple:
    """What tells a file apart from one written over it or put in its place since."""
    return st.st_ino, st.st_size, st.st_mtime_ns


def _holds(path: Path, ptr) -> bool:
    """Whether the work-tree file is still a copy of this pointer."""
    from gitmodel import pointer as pointers
    try:
        with open(path, "rb") as f:
            return pointers.sniff(pointers.without_crlf(f.read(pointers.MAX_POINTER_SIZE + 1))) == ptr
    except (OSError, pointers.PointerError):
        return False


def _refresh_index(repository, paths: dict[str, tuple]) -> None:
    """Give the index entries of freshly written files their stat data, keeping their blob
    ids: each file's pointer is a pure function of bytes the store just verified, so it is
    the blob the index holds. Git has no command that records stat data without hashing
    (`git update-index --refresh` would run the clean filter, which git feeds the whole file
    from memory), so the entries are written with libgit2's index_add through pygit2's C
    bindings. Where that is not possible, git refreshes them itself. `paths`: each file's
    signature when written; a file changed since keeps its entry as it was (git then reads
    it again: it is the user's)."""
    import time
    newest = max(mtime for _, _, mtime in paths.values()) / 1e9
    # A file as new as the index is "racily clean" to git, which would hash it again; git may
    # compare whole seconds, and file times come from a clock that lags by a tick.
    try:
        while time.time() < int(newest) + 1.1:
            time.sleep(0.05)
    except KeyboardInterrupt:
        # Written now, the entries are racily clean (git hashes those files once more), not
        # stale: left stale, git would call the restored files modified, and a second pull
        # would pass over them, as they no longer hold pointers.
        _refresh_now(repository, paths)
        raise
    _refresh_now(repository, paths)


def _refresh_now(repository, paths: dict[str, tuple]) -> None:
    try:
        _write_stat_data(repository, paths)
    except Exception as err:                  # an index libgit2 cannot write (split index...)
        listing = b"".join(os.fsencode(p) + b"\0" for p in paths)
        result = repo.run_git("update-index", "-q", "--refresh", "-z", "--stdin",
                              cwd=repository.workdir, input=listing, check=False)
        if result.returncode not in (0, 1):
            raise RestoreError(f"could not update the index after restoring files ({err})",
                               "The files are right; `git status` re-reads them") from None


# libgit2's index entry flags (git_index_entry_flag_t, git_index_entry_extended_flag_t)
ASSUME_UNCHANGED, EXTENDED, SKIP_WORKTREE, INTENT_TO_ADD = 0x8000, 0x4000, 1 << 14, 1 << 13


def _write_stat_data(repository, paths: dict[str, tuple]) -> None:
    from pygit2 import IndexEntry
    from pygit2.ffi import C, ffi
    index = repository.index
    index.read()
    for path, signature in paths.items():
        entry = index[path]
        st = os.stat(Path(repository.workdir) / path)
        if _signature(st) != signature:       # written over, or replaced, since
            continue
        centry, keep = IndexEntry(path, entry.id, entry.mode)._to_c()
        old = C.git_index_get_bypath(index._index, os.fsencode(path), 0)
        if old != ffi.NULL:           # the user's assume-unchanged and skip-worktree bits stay
            centry.flags |= old.flags & ASSUME_UNCHANGED
            centry.flags_extended |= old.flags_extended & (SKIP_WORKTREE | INTENT_TO_ADD)
            if centry.flags_extended:       # else a version-4 index is written without them
                centry.flags |= EXTENDED
        centry.ctime.seconds, centry.ctime.nanoseconds = divmod(st.st_ctime_ns, 10**9)
        centry.mtime.seconds, centry.mtime.nanoseconds = divmod(st.st_mtime_ns, 10**9)
        centry.dev, centry.ino = st.st_dev & 0xFFFFFFFF, st.st_ino & 0xFFFFFFFF
        centry.uid, centry.gid = st.st_uid, st.st_gid
        centry.file_size = st.st_size & 0xFFFFFFFF
        if C.git_index_add(index._index, centry) != 0:
            raise OSError(f"libgit2 could not update the index entry of {path}")
        del keep
    index.write()
